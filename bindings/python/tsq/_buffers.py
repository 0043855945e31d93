"""Turning Python data into memory libtsq can use, with numpy optional.

* numpy float32 / uint8 / int8 arrays that are C-contiguous and aligned are
  used in place (their memory, obtained through the buffer protocol, is
  given to tsq_tensor_wrap); so are objects numpy can view without copying
  (``__array_interface__`` or ``__array__``, e.g. a CPU torch tensor, through
  np.asarray).
* Other buffers (array.array, bytearray, writable memoryview) of format
  'f', 'B' or 'b' are used in place too, through ctypes ``from_buffer``.
* Python lists (nested for several dimensions) and read-only non-numpy
  buffers are copied.
* Inputs of another numpy dtype, or non-contiguous, are converted (copied)
  when the call says which dtype it needs; outputs never are: an output must
  be usable in place, else ValueError.
"""

import array
import ctypes

from . import _ffi

try:                                        # numpy is optional
    import numpy as np
except ImportError:                         # pragma: no cover - depends on the host
    np = None

F32, U8, I8 = _ffi.TSQ_DTYPE_F32, _ffi.TSQ_DTYPE_U8, _ffi.TSQ_DTYPE_I8
DTYPES = (F32, U8, I8)
CTYPES = {F32: ctypes.c_float, U8: ctypes.c_uint8, I8: ctypes.c_int8}
ITEMSIZE = {F32: 4, U8: 1, I8: 1}
NAMES = {F32: "float32", U8: "uint8", I8: "int8"}
FORMATS = {F32: "f", U8: "B", I8: "b"}
TYPESTR = {F32: "<f4", U8: "|u1", I8: "|i1"}
_BY_NAME = {"float32": F32, "f32": F32, "f": F32, "float": F32,
            "uint8": U8, "u8": U8, "B": U8,
            "int8": I8, "i8": I8, "b": I8}


def dtype_code(dtype):
    """TSQ_DTYPE_* for a dtype given as that number, a name ("float32",
    "f32", "uint8", "u8", "int8", "i8"), a struct format ('f', 'B', 'b') or a
    numpy dtype. None stays None."""
    if dtype is None:
        return None
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        if dtype in DTYPES:
            return dtype
        raise ValueError("unknown dtype number %d (TSQ_DTYPE_F32/U8/I8 are %d/%d/%d)"
                         % (dtype, F32, U8, I8))
    name = dtype if isinstance(dtype, str) else None
    if name is None and np is not None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name is None and isinstance(dtype, type) and dtype in (float,):
        name = "float32"
    code = _BY_NAME.get(name)
    if code is None:
        raise TypeError("libtsq tensors hold float32, uint8 or int8, not %r" % (dtype,))
    return code


def _format_dtype(fmt):
    """TSQ_DTYPE_* for a buffer format, or None."""
    if fmt and fmt[0] in "@=<":
        fmt = fmt[1:]
    return {"f": F32, "B": U8, "b": I8}.get(fmt)


class Memory(object):
    """Memory for a tensor: address, byte size, shape, dtype, and `keep`,
    the Python objects that own it (referenced as long as the tensor lives).
    `copied` tells whether the caller's data were copied, `readonly` whether
    libtsq must not write it."""

    __slots__ = ("address", "nbytes", "shape", "dtype", "keep", "copied", "readonly", "source",
                 "array")

    def __init__(self, address, nbytes, shape, dtype, keep, copied, readonly, source,
                 array=None):
        self.address = address
        self.nbytes = nbytes
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.keep = keep
        self.copied = copied
        self.readonly = readonly
        self.source = source
        self.array = array              # the numpy array whose memory is used, if any


def is_numpy(obj):
    return np is not None and isinstance(obj, np.ndarray)


def _numpy_like(obj):
    return np is not None and not isinstance(obj, (list, tuple, bytes, bytearray,
                                                   memoryview, array.array)) \
        and (hasattr(obj, "__array_interface__") or hasattr(obj, "__array_struct__")
             or hasattr(obj, "__array__"))


_NP_CODES = {}
if np is not None:
    _NP_CODES = {np.dtype("float32"): F32, np.dtype("uint8"): U8, np.dtype("int8"): I8}


def _from_numpy(arr, dtype, writable):
    have = _NP_CODES.get(arr.dtype)         # native byte order only
    if dtype is None and have is None and arr.dtype.kind == "f":
        dtype = F32                     # float64, float16: converted (copied)
    if dtype is None:
        if have is None:
            raise TypeError("numpy dtype %s has no libtsq tensor type (float32, uint8, int8); "
                            "convert it first" % arr.dtype)
        dtype = have
    usable = have == dtype and arr.flags.c_contiguous and arr.flags.aligned
    if writable:
        if not usable or not arr.flags.writeable:
            raise ValueError("an output array must be a writable, C-contiguous, aligned "
                             "numpy %s array (got %s%s)" % (
                                 NAMES[dtype], arr.dtype,
                                 "" if arr.flags.c_contiguous else ", not C-contiguous"))
    copied = False
    source = arr
    if not usable:
        arr = np.ascontiguousarray(arr, dtype=NAMES[dtype])
        copied = True
    shape = arr.shape if arr.ndim else (1,)
    if arr.flags.writeable and arr.nbytes:
        # The buffer protocol: the export also stops numpy from resizing or
        # freeing the array's memory while the tensor uses it.
        cbuf = (ctypes.c_char * arr.nbytes).from_buffer(arr)
        return Memory(ctypes.addressof(cbuf), arr.nbytes, shape, dtype, (arr, cbuf), copied,
                      False, source, arr)
    # read-only arrays (inputs only) cannot be exported writable: their
    # address comes from the array interface
    return Memory(arr.__array_interface__["data"][0], arr.nbytes, shape, dtype, arr, copied,
                  not arr.flags.writeable, source, arr)


def _flatten(data, dtype):
    """A nested list -> (flat list, shape); checks it is rectangular."""
    shape = []
    probe = data
    while isinstance(probe, (list, tuple)):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = []

    def walk(node, depth):
        if depth == len(shape):
            if isinstance(node, (list, tuple)):
                raise ValueError("ragged nested list: more levels than the first element has")
            flat.append(node)
            return
        if not isinstance(node, (list, tuple)) or len(node) != shape[depth]:
            raise ValueError("ragged nested list: every row must have %d elements"
                             % shape[depth])
        for item in node:
            walk(item, depth + 1)
    walk(data, 0)
    if dtype != F32:
        lo, hi = (0, 255) if dtype == U8 else (-128, 127)
        for v in flat:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError("%s tensors hold integers in %d..%d, got %r"
                                 % (NAMES[dtype], lo, hi, v))
    return flat, tuple(shape)


def _from_list(data, dtype):
    if dtype is None:
        dtype = F32
    flat, shape = _flatten(data, dtype)
    buf = (CTYPES[dtype] * max(len(flat), 1))(*flat)
    return Memory(ctypes.addressof(buf), len(flat) * ITEMSIZE[dtype], shape or (len(flat),),
                  dtype, buf, True, False, data)


def _from_buffer(obj, dtype, writable):
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError("cannot use %s as tensor data: give a numpy array, a buffer "
                        "(array.array, bytearray, memoryview) or a list" % type(obj).__name__)
    have = _format_dtype(mv.format)
    if have is None:
        raise TypeError("buffer format %r has no libtsq tensor type ('f' float32, "
                        "'B' uint8, 'b' int8)" % mv.format)
    if dtype is None:
        dtype = have
    if have != dtype:
        raise TypeError("buffer holds %s but %s is needed (without numpy, buffers are "
                        "not converted)" % (NAMES[have], NAMES[dtype]))
    shape = mv.shape if mv.ndim else (1,)
    if not mv.readonly and mv.c_contiguous and mv.nbytes > 0:
        cbuf = (ctypes.c_char * mv.nbytes).from_buffer(mv)
        addr = ctypes.addressof(cbuf)
        if addr % ITEMSIZE[dtype] == 0:
            return Memory(addr, mv.nbytes, shape, dtype, (mv, cbuf), False, False, obj)
        del cbuf
    if writable:
        raise ValueError("an output buffer must be writable, C-contiguous and aligned")
    raw = mv.tobytes()
    cbuf = (CTYPES[dtype] * max(len(raw) // ITEMSIZE[dtype], 1)).from_buffer_copy(
        raw if raw else b"\0" * ITEMSIZE[dtype])
    return Memory(ctypes.addressof(cbuf), len(raw), shape, dtype, cbuf, True, False, obj)


def memory_of(obj, dtype=None, writable=False):
    """The Memory for `obj` (see the module docstring). dtype: the
    TSQ_DTYPE_* needed, or None to take the data's own. writable: the
    memory is an output and must be used in place."""
    dtype = dtype_code(dtype)
    if is_numpy(obj):
        return _from_numpy(obj, dtype, writable)
    if isinstance(obj, (list, tuple)):
        if writable:
            raise ValueError("a list cannot receive an output; give a numpy array or a "
                             "writable buffer")
        return _from_list(obj, dtype)
    if _numpy_like(obj):
        return _from_numpy(np.asarray(obj), dtype, writable)
    return _from_buffer(obj, dtype, writable)


def _flat_list(seq):
    out = []
    for v in seq:
        if isinstance(v, (list, tuple)):
            out.extend(_flat_list(v))
        else:
            out.append(v)
    return out


def typed_array(ctype, values=None, count=None):
    """A ctypes array of `ctype` from a sequence or numpy array of values
    (zero-copy for a C-contiguous numpy array of the same type). Returns
    (pointer-compatible object, length, keep-alive)."""
    if values is None:
        arr = (ctype * max(count, 1))()
        return arr, count, arr
    np_type = {ctypes.c_int32: "int32", ctypes.c_int64: "int64", ctypes.c_float: "float32",
               ctypes.c_double: "float64"}[ctype]
    if np is not None and (is_numpy(values) or _numpy_like(values)):
        a = np.ascontiguousarray(values, dtype=np_type).reshape(-1)
        ptr = a.ctypes.data_as(ctypes.POINTER(ctype))
        return ptr, a.size, (a, ptr)
    if isinstance(values, (list, tuple)):
        seq = _flat_list(values)
    else:
        try:
            mv = memoryview(values)
        except TypeError:
            seq = list(values)
        else:
            want = {ctypes.c_int32: "i", ctypes.c_int64: "q", ctypes.c_float: "f",
                    ctypes.c_double: "d"}[ctype]
            fmt = mv.format.lstrip("@=<")
            if fmt == want or (want == "q" and fmt == "l" and ctypes.sizeof(ctypes.c_long) == 8) \
                    or (want == "i" and fmt == "l" and ctypes.sizeof(ctypes.c_long) == 4):
                if not mv.readonly and mv.c_contiguous:
                    n = mv.nbytes // ctypes.sizeof(ctype)
                    arr = (ctype * n).from_buffer(mv)
                    ptr = ctypes.cast(arr, ctypes.POINTER(ctype))
                    return ptr, n, (mv, arr, ptr)
            seq = _flat_list(mv.tolist())
    arr = (ctype * max(len(seq), 1))(*seq)
    return arr, len(seq), arr


def new_array(typecode, shape):
    """A new zeroed output array: numpy when available, else array.array
    (flat). typecode: 'i' int32, 'q' int64, 'd' float64, 'f' float32, 'B'."""
    count = 1
    for s in shape:
        count *= int(s)
    if np is not None:
        return np.zeros(shape, dtype={"i": "int32", "q": "int64", "d": "float64",
                                      "f": "float32", "B": "uint8"}[typecode])
    return array.array(typecode, bytes(count * array.array(typecode).itemsize))


def array_pointer(arr, ctype):
    """A ctypes pointer to the first element of a numpy array or an
    array.array made by new_array (the array must stay referenced)."""
    if is_numpy(arr):
        return arr.ctypes.data_as(ctypes.POINTER(ctype))
    addr, _ = arr.buffer_info()
    return ctypes.cast(ctypes.c_void_p(addr), ctypes.POINTER(ctype))
