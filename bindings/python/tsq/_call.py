"""Temporary tensors around one library call."""

import ctypes

from . import _buffers as B
from . import _ffi
from ._lib import TsqError, lib
from .tensor import Tensor, _shape_array


class _Temp(object):
    """A tensor handle that lives for one call only: it wraps a Python
    argument's memory and is destroyed when the call ends (by Call), so it
    needs no finaliser. Passed to the C calls like a Tensor."""

    __slots__ = ("_as_parameter_", "shape")

    def __init__(self, ptr, shape):
        self._as_parameter_ = ptr
        self.shape = shape

    def _check(self, status, call):
        if status:
            raw = lib.tsq_tensor_errmsg(self._as_parameter_)
            raise TsqError(status, raw.decode("utf-8", "replace") if raw else "", call)


class Call(object):
    """Collects the temporary tensors that wrap a call's Python arguments
    and destroys them when the call ends, whether it succeeded or raised.

    Results follow the main input: a Tensor input gives Tensor results; any
    other input gives numpy arrays when numpy is installed, else Tensors.
    Result Tensors made here are closed if the call fails."""

    def __init__(self, ctx, like=None):
        self.ctx = ctx
        self.temps = []             # raw tensor pointers to destroy
        self.keep = []              # the memory they use, alive until then
        self.fresh = []
        self.want_tensor = isinstance(like, Tensor) or B.np is None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for ptr in reversed(self.temps):
            lib.tsq_tensor_destroy(ptr)
        self.temps = []
        self.keep = []
        if exc_type is not None:
            for t in self.fresh:
                t.close()
        return False

    def _wrap(self, mem):
        shape, ndim = _shape_array(mem.shape)
        ptr = ctypes.POINTER(_ffi.tsq_tensor)()
        self.keep.append(mem.keep)
        self.ctx._check(lib.tsq_tensor_wrap(self.ctx.handle, mem.dtype, ndim, shape,
                                            ctypes.c_void_p(mem.address or None), mem.nbytes,
                                            ctypes.byref(ptr)), "tsq_tensor_wrap")
        self.temps.append(ptr)
        return _Temp(ptr, mem.shape)

    def input(self, obj, dtype=None, name="data"):
        """obj as a tensor argument (None stays None, a Tensor is used as is);
        `name` is the argument's name in error messages."""
        if obj is None or isinstance(obj, Tensor):
            return obj
        return self._wrap(B.memory_of(obj, dtype, name=name))

    def output(self, out, dtype, shape, name="out"):
        """(tensor to pass, object to return) for an output of `shape`:
        `out` itself when given (used in place, never copied), else a new
        numpy array or Tensor."""
        if out is not None:
            if isinstance(out, Tensor):
                return out, out
            return self._wrap(B.memory_of(out, dtype, writable=True, name=name)), out
        if self.want_tensor:
            t = Tensor.zeros(self.ctx, shape, dtype)
            self.fresh.append(t)
            return t, t
        arr = B.np.zeros(shape, dtype=B.NAMES[B.dtype_code(dtype)])
        return self._wrap(B.memory_of(arr, dtype, writable=True)), arr

    def take(self, ptr, as_array=None):
        """A tensor the library created for the caller: a Tensor, or (for
        non-Tensor inputs with numpy) a numpy copy, the tensor then freed."""
        t = Tensor._take(self.ctx, ptr)
        want = self.want_tensor if as_array is None else not as_array
        if want:
            self.fresh.append(t)
            return t
        try:
            return t.numpy(copy=True)
        finally:
            t.close()
