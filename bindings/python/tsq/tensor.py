"""Tensors: float32, uint8 and int8 arrays of 1 to 4 dimensions."""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List,  # noqa: F401
                    Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401

import ctypes

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike, DTypeLike  # noqa: F401
from ._base import Handle
from ._lib import lib

__all__ = ["Tensor", "as_tensor"]


def _shape_array(shape):
    shape = tuple(B.int_arg(s, "shape") for s in shape)
    return (ctypes.c_int64 * max(len(shape), 1))(*shape), len(shape)


class Tensor(Handle):
    """A libtsq tensor (tsq_tensor): float32, uint8 or int8, 1 to 4
    dimensions, row-major.

    ``Tensor(ctx, data, dtype=None)`` makes a tensor over `data`:

    * a numpy float32/uint8/int8 C-contiguous aligned array, or another
      buffer of format 'f', 'B' or 'b' (array.array, bytearray, writable
      memoryview), is used in place: no copy, writes through either side are
      seen by the other, and the tensor keeps the array alive;
    * a (nested) list, a read-only non-numpy buffer, or a numpy array of
      another dtype (with dtype given) or layout is copied.
      ``t.copied`` tells which happened.

    ``Tensor.zeros(ctx, shape, dtype)`` makes one that owns zeroed memory.

    Back to Python: ``t.numpy()`` (a zero-copy view that keeps the tensor
    alive; ``np.asarray(t)`` is the same), ``t.tolist()``,
    ``t.memoryview()`` (zero-copy, without numpy), ``t.tobytes()``.
    A view keeps the memory alive: it stays valid after ``close()``.
    """

    _destroy_name = "tsq_tensor_destroy"
    _errmsg_name = "tsq_tensor_errmsg"

    def __init__(self, ctx: Context, data: ArrayLike, dtype: Optional[DTypeLike] = None) -> None:
        mem = B.memory_of(data, dtype, name="data")
        self._wrap(ctx, mem)

    def _wrap(self, ctx, mem):
        shape, ndim = _shape_array(mem.shape)
        out = ctypes.POINTER(_ffi.tsq_tensor)()
        ctx._check(lib.tsq_tensor_wrap(ctx.handle, mem.dtype, ndim, shape,
                                       ctypes.c_void_p(mem.address or None), mem.nbytes,
                                       ctypes.byref(out)), "tsq_tensor_wrap")
        self._adopt(ctx, out, mem.keep)
        self._base = mem.keep
        self._array = mem.array
        self.copied = mem.copied
        self.readonly = mem.readonly
        self._source = mem.source

    @classmethod
    def zeros(cls, ctx: Context, shape: Union[int, Sequence[int]],
              dtype: DTypeLike = 'float32') -> "Tensor":
        """A tensor owning zero-filled memory (tsq_tensor_create)."""
        if isinstance(shape, int):
            shape = (shape,)
        arr, ndim = _shape_array(shape)
        out = ctypes.POINTER(_ffi.tsq_tensor)()
        ctx._check(lib.tsq_tensor_create(ctx.handle, B.dtype_code(dtype), ndim, arr,
                                         ctypes.byref(out)), "tsq_tensor_create")
        t = cls.__new__(cls)
        t._adopt(ctx, out)
        t._base = None
        t.copied = False
        t.readonly = False
        t._source = None
        return t

    @classmethod
    def _from_memory(cls, ctx, mem):
        t = cls.__new__(cls)
        t._wrap(ctx, mem)
        return t

    @classmethod
    def _take(cls, ctx, ptr):
        """Adopts a tensor the library created for the caller."""
        t = cls.__new__(cls)
        t._adopt(ctx, ptr)
        t._base = None
        t.copied = False
        t.readonly = False
        t._source = None
        return t

    @classmethod
    def _view(cls, ctx, ptr, owner):
        """A borrowed tensor (a layer parameter, say) owned by `owner`."""
        t = cls._new_borrowed(ctx, ptr, owner)
        t._base = None
        t.copied = False
        t.readonly = False
        t._source = None
        return t

    def _closed_hook(self):
        self._base = None               # releases a buffer export (array.array...)
        self._array = None
        self._source = None

    # ---- queries ---------------------------------------------------------

    @property
    def dtype_code(self):
        """TSQ_DTYPE_F32, TSQ_DTYPE_U8 or TSQ_DTYPE_I8."""
        v = ctypes.c_int32()
        self._call("tsq_tensor_dtype", ctypes.byref(v))
        return v.value

    @property
    def dtype(self):
        """"float32", "uint8" or "int8"."""
        return B.NAMES[self.dtype_code]

    @property
    def ndim(self):
        """Number of dimensions (1..4)."""
        v = ctypes.c_int32()
        self._call("tsq_tensor_ndim", ctypes.byref(v))
        return v.value

    @property
    def shape(self):
        """The dimensions, as a tuple."""
        arr = (ctypes.c_int64 * _ffi.TSQ_MAX_DIMS)()
        n = ctypes.c_int32()
        self._call("tsq_tensor_shape", arr, _ffi.TSQ_MAX_DIMS, ctypes.byref(n))
        return tuple(arr[i] for i in range(n.value))

    def dim(self, axis: int) -> int:
        """The size of one dimension (axis 0..ndim-1)."""
        v = ctypes.c_int64()
        self._call("tsq_tensor_dim", B.int_arg(axis, "axis"), ctypes.byref(v))
        return v.value

    @property
    def size(self):
        """The number of elements."""
        v = ctypes.c_int64()
        self._call("tsq_tensor_numel", ctypes.byref(v))
        return v.value

    numel = size

    @property
    def nbytes(self):
        """The byte size of the data."""
        v = ctypes.c_uint64()
        self._call("tsq_tensor_nbytes", ctypes.byref(v))
        return v.value

    @property
    def data_ptr(self):
        """The address of the first element (valid while the tensor lives)."""
        p = ctypes.c_void_p()
        self._call("tsq_tensor_data", ctypes.byref(p))
        return p.value

    @property
    def base(self):
        """The Python object whose memory this tensor uses (None when the
        tensor owns its memory)."""
        return self._source if not self.copied else None

    _array = None

    def __len__(self):
        return self.dim(0)

    # ---- changes ---------------------------------------------------------

    def reshape(self, *shape: Any) -> "Tensor":
        """Gives the tensor a new shape with the same element count, in
        place (the data do not move). Returns self."""
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        arr, ndim = _shape_array(shape)
        self._call("tsq_tensor_reshape", ndim, arr)
        return self

    def fill(self, value: float) -> "Tensor":
        """Sets every element to value (an integer in range for u8/i8)."""
        self._call("tsq_tensor_fill", B.real_arg(value, "value"))
        return self

    def count_nonfinite(self) -> int:
        """The number of NaN or infinite elements (0 for u8/i8)."""
        v = ctypes.c_int64()
        self._call("tsq_tensor_count_nonfinite", ctypes.byref(v))
        return v.value

    def copy_in(self, data: ArrayLike) -> "Tensor":
        """Copies `data` (same byte size; any buffer, numpy array or list of
        this dtype) into the tensor (tsq_tensor_copy_in)."""
        mem = B.memory_of(data, self.dtype_code, name="data")
        self._call("tsq_tensor_copy_in", ctypes.c_void_p(mem.address or None), mem.nbytes)
        return self

    def copy_out(self, buffer: ArrayLike) -> Any:
        """Copies the tensor's bytes into a writable buffer of at least
        nbytes bytes (tsq_tensor_copy_out). Returns the buffer."""
        mv = memoryview(buffer)
        if mv.readonly or not mv.c_contiguous:
            raise ValueError("copy_out needs a writable C-contiguous buffer")
        cbuf = (ctypes.c_char * mv.nbytes).from_buffer(mv) if mv.nbytes else None
        self._call("tsq_tensor_copy_out", cbuf, mv.nbytes)
        return buffer

    def tobytes(self) -> bytes:
        """The tensor's data as bytes (a copy)."""
        buf = bytearray(self.nbytes)
        self.copy_out(buf)
        return bytes(buf)

    # ---- views -----------------------------------------------------------

    def _cbuffer(self):
        code = self.dtype_code
        carr = (B.CTYPES[code] * self.size).from_address(self.data_ptr)
        carr._tsq_pin = self._pin()     # the view keeps the memory's owner alive
        return carr, code

    def memoryview(self) -> memoryview:
        """A zero-copy memoryview of the data with the tensor's shape and
        format ('f', 'B', 'b'). It keeps the memory alive: it stays valid
        after close() and after the ``with`` block."""
        carr, code = self._cbuffer()
        return memoryview(carr).cast("B").cast(B.FORMATS[code], self.shape)

    def __array__(self, dtype=None):
        """np.asarray(t): the same zero-copy view as t.numpy()."""
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def numpy(self, copy: bool = False) -> Any:
        """The data as a numpy array: a zero-copy view or, with copy=True,
        an independent copy. The view's base holds the memory's owner (the
        wrapped array, or the C object through a pin), so it stays valid
        after close() and after the ``with`` block; for a borrowed
        parameter tensor, the net refuses changes to its layer list while
        such views exist (they could free the memory)."""
        if B.np is None:
            raise RuntimeError("numpy is not installed; use tolist() or memoryview()")
        base = getattr(self, "_array", None)
        if base is not None and base.ctypes.data == self.data_ptr:
            arr = base.reshape(self.shape)  # a view of the wrapped array itself
        else:
            iface = {"version": 3, "shape": self.shape, "typestr": B.TYPESTR[self.dtype_code],
                     "data": (self.data_ptr, False)}
            arr = B.np.asarray(self._pin(interface=iface))
        return arr.copy() if copy else arr

    def tolist(self) -> Any:
        """The data as (nested) Python lists."""
        return self.memoryview().tolist()

    def __deepcopy__(self, memo):
        """A new tensor owning a copy of the data (same context)."""
        t = Tensor.zeros(self._ctx, self.shape, self.dtype)
        t.copy_in(self.tobytes() if B.np is None else self.numpy())
        return t

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Tensor closed>"
        return "<tsq.Tensor %s %s%s>" % (self.dtype, self.shape,
                                          "" if self.owned else " borrowed")


def as_tensor(ctx: Context, obj: ArrayLike, dtype: Optional[DTypeLike] = None,
              writable: bool = False) -> Tensor:
    """obj as a Tensor: a Tensor is returned as is (the library checks its
    dtype and reports a mismatch), anything else is wrapped with `dtype`
    (zero-copy when possible; an output, writable=True, must be usable in
    place)."""
    if isinstance(obj, Tensor):
        return obj
    return Tensor._from_memory(ctx, B.memory_of(obj, dtype, writable))
