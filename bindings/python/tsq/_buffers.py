"""Turning Python data into memory libtsq can use, with numpy optional.

The one rule for array arguments (docs/python.md, "Which inputs are
accepted"). Each argument has a tensor type, float32, uint8 (activation
codes) or int8 (weight codes), and:

* data of exactly that type (numpy float32 / uint8 / int8, C-contiguous and
  aligned, or a buffer of format 'f' / 'B' / 'b') are used in place: no copy;
* float32 arguments also take float16 and float64 arrays and lists of
  Python numbers, converted (copied) with the usual rounding to float32;
  a finite value too large for float32 raises ValueError;
* uint8 and int8 arguments also take integer arrays of any width and float
  arrays, converted (copied) only when every value is an integer inside the
  type's range (0..255, -128..127): 300 or 0.5 raise ValueError, they are
  never wrapped or truncated;
* anything else (bool, complex, strings, objects, an integer array for a
  float32 argument) raises TypeError naming the argument;
* inputs that are not C-contiguous or not aligned are copied; outputs
  never are: an output must be usable in place, else ValueError.

Index arrays (labels, positions, accumulators: int32/int64) take integer
data in the type's range, refuse floats, bools and complex with TypeError;
float parameter arrays (thresholds) follow the float32 rule.
"""

import array
import ctypes
from typing import Any, Union

ArrayLike = Any
"""What an array argument takes: a numpy array, a Tensor, a buffer
(array.array, bytearray, memoryview), a (nested) list, or an object numpy
views without a copy (a CPU torch tensor); see the module's rule."""

DTypeLike = Union[str, int, Any]
"""A tensor type: "float32", "uint8", "int8" (or "f32", "u8", "i8"), a
TSQ_DTYPE_* number or a numpy dtype."""

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


def int_arg(value, name):
    """value as an int: Python and numpy integers; bool, float, str... raise
    TypeError naming the argument (2.7 is never truncated to 2)."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("%s must be an integer, not %s %r" % (name, type(value).__name__, value))
    return int(value)


def real_arg(value, name):
    """value as a float: Python and numpy integers and floats; bool,
    complex, str... raise TypeError naming the argument."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s must be a real number, not %s %r"
                        % (name, type(value).__name__, value))
    return float(value)


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


_RANGES = {U8: (0, 255), I8: (-128, 127)}


def _first_bad(arr, bad):
    """'index (i, j) = value' of the first true element of the mask bad."""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    where = idx[0] if len(idx) == 1 else idx
    return "%s = %r" % (where, arr[idx].item())


def convert_numpy(arr, dtype, name):
    """arr as a C-contiguous numpy array of the tensor type `dtype`, by the
    module's rule: a TypeError for the wrong kind of data, a ValueError for a
    value the type cannot hold exactly (integers) or at all (float32)."""
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError("%s: numpy %s data cannot be %s (give %s data)"
                        % (name, arr.dtype, NAMES[dtype], _WANT[dtype]))
    if dtype == F32:
        if kind != "f":
            raise TypeError("%s: numpy %s data for a float32 argument; convert it yourself "
                            "(astype(np.float32)) if that is what you mean" % (name, arr.dtype))
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(arr, dtype=np.float32)
        bad = np.isinf(out) & np.isfinite(arr)
        if bad.any():
            raise ValueError("%s: element %s is too large for float32"
                             % (name, _first_bad(arr, bad)))
        return out
    lo, hi = _RANGES[dtype]
    if kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < lo) | (arr > hi)
        what = "not an integer in %d..%d (never truncated)" % (lo, hi)
    else:
        bad = (arr < lo) | (arr > hi)
        what = "outside %d..%d (never wrapped)" % (lo, hi)
    if bad.any():
        raise ValueError("%s: element %s is %s: %s data"
                         % (name, _first_bad(arr, bad), what, NAMES[dtype]))
    return np.ascontiguousarray(arr, dtype=NAMES[dtype])


_WANT = {F32: "float32, float16 or float64", U8: "uint8 (or integer-valued numbers in 0..255)",
         I8: "int8 (or integer-valued numbers in -128..127)"}


def _from_numpy(arr, dtype, writable, name="data"):
    have = _NP_CODES.get(arr.dtype)         # native byte order only
    if dtype is None and have is None and arr.dtype.kind == "f":
        dtype = F32                     # float64, float16: converted (copied)
    if dtype is None:
        if have is None:
            raise TypeError("%s: numpy %s data have no libtsq tensor type (float32, uint8, "
                            "int8); convert them first" % (name, arr.dtype))
        dtype = have
    usable = have == dtype and arr.flags.c_contiguous and arr.flags.aligned
    if writable:
        if not usable or not arr.flags.writeable:
            raise ValueError("%s: an output array must be a writable, C-contiguous, aligned "
                             "numpy %s array (got %s%s)" % (
                                 name, NAMES[dtype], arr.dtype,
                                 "" if arr.flags.c_contiguous else ", not C-contiguous"))
    copied = False
    source = arr
    if not usable:
        arr = convert_numpy(arr, dtype, name)
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


def _flatten(data, dtype, name="data"):
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
    check_numbers(flat, dtype, name)
    return flat, tuple(shape)


def check_numbers(flat, dtype, name):
    """The list rule: float32 (and float64, dtype None) take int and float
    (not bool, not complex), float32 within its range; uint8/int8 take int,
    or a float holding an integer, in range."""
    import math
    import numbers
    for i, v in enumerate(flat):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError("%s: element %d is %r (a %s): %s data take real numbers"
                            % (name, i, v, type(v).__name__, NAMES.get(dtype, "float64")))
        if dtype is None:
            continue
        if dtype == F32:
            if math.isfinite(v) and abs(float(v)) > 3.4028234663852886e38:
                raise ValueError("%s: element %d = %r is too large for float32" % (name, i, v))
            continue
        lo, hi = _RANGES[dtype]
        if not isinstance(v, numbers.Integral) and not (math.isfinite(v) and v == int(v)):
            raise ValueError("%s: element %d = %r is not an integer (%s data)"
                             % (name, i, v, NAMES[dtype]))
        if not lo <= v <= hi:
            raise ValueError("%s: element %d = %r is outside %d..%d (%s data)"
                             % (name, i, v, lo, hi, NAMES[dtype]))


def _from_list(data, dtype, name="data"):
    if dtype is None:
        dtype = F32
    flat, shape = _flatten(data, dtype, name)
    if dtype != F32:
        flat = [int(v) for v in flat]
    buf = (CTYPES[dtype] * max(len(flat), 1))(*flat)
    return Memory(ctypes.addressof(buf), len(flat) * ITEMSIZE[dtype], shape or (len(flat),),
                  dtype, buf, True, False, data)


def _from_buffer(obj, dtype, writable, name="data"):
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError("%s: cannot use %s as tensor data: give a numpy array, a buffer "
                        "(array.array, bytearray, memoryview) or a list"
                        % (name, type(obj).__name__))
    have = _format_dtype(mv.format)
    if have is None:
        raise TypeError("%s: buffer format %r has no libtsq tensor type ('f' float32, "
                        "'B' uint8, 'b' int8)" % (name, mv.format))
    if dtype is None:
        dtype = have
    if have != dtype:
        raise TypeError("%s: buffer holds %s but %s is needed (buffers are not converted)"
                        % (name, NAMES[have], NAMES[dtype]))
    shape = mv.shape if mv.ndim else (1,)
    if not mv.readonly and mv.c_contiguous and mv.nbytes > 0:
        cbuf = (ctypes.c_char * mv.nbytes).from_buffer(mv)
        addr = ctypes.addressof(cbuf)
        if addr % ITEMSIZE[dtype] == 0:
            return Memory(addr, mv.nbytes, shape, dtype, (mv, cbuf), False, False, obj)
        del cbuf
    if writable:
        raise ValueError("%s: an output buffer must be writable, C-contiguous and aligned"
                         % name)
    raw = mv.tobytes()
    cbuf = (CTYPES[dtype] * max(len(raw) // ITEMSIZE[dtype], 1)).from_buffer_copy(
        raw if raw else b"\0" * ITEMSIZE[dtype])
    return Memory(ctypes.addressof(cbuf), len(raw), shape, dtype, cbuf, True, False, obj)


def memory_of(obj, dtype=None, writable=False, name="data"):
    """The Memory for `obj` (see the module docstring). dtype: the
    TSQ_DTYPE_* needed, or None to take the data's own. writable: the
    memory is an output and must be used in place. name: the argument's
    name, for the error messages."""
    dtype = dtype_code(dtype)
    if isinstance(obj, str) or (not writable and isinstance(obj, (int, float, complex))):
        raise TypeError("%s: %s is not array data (give a numpy array, a buffer or a list)"
                        % (name, type(obj).__name__))
    if is_numpy(obj):
        return _from_numpy(obj, dtype, writable, name)
    if isinstance(obj, (list, tuple)):
        if writable:
            raise ValueError("%s: a list cannot receive an output; give a numpy array or a "
                             "writable buffer" % name)
        return _from_list(obj, dtype, name)
    if _numpy_like(obj):
        return _from_numpy(np.asarray(obj), dtype, writable, name)
    return _from_buffer(obj, dtype, writable, name)


def _flat_list(seq):
    out = []
    for v in seq:
        if isinstance(v, (list, tuple)):
            out.extend(_flat_list(v))
        else:
            out.append(v)
    return out


_INDEX_RANGES = {ctypes.c_int32: (-2 ** 31, 2 ** 31 - 1), ctypes.c_int64: (-2 ** 63, 2 ** 63 - 1)}


def _checked_index_array(a, ctype, name):
    """The index rule for numpy data: integers only, in the C type's range."""
    if a.dtype.kind not in "iu":
        raise TypeError("%s: %s data cannot be %s indices (give integers)"
                        % (name, a.dtype, "int32" if ctype is ctypes.c_int32 else "int64"))
    lo, hi = _INDEX_RANGES[ctype]
    if a.size and (a.min() < lo or a.max() > hi):
        bad = (a < lo) | (a > hi)
        raise ValueError("%s: element %s is outside the int%d range" % (
            name, _first_bad(a, bad), 32 if ctype is ctypes.c_int32 else 64))


def _check_index_list(seq, ctype, name):
    lo, hi = _INDEX_RANGES[ctype]
    for i, v in enumerate(seq):
        if isinstance(v, bool) or not isinstance(v, int) and not \
                (np is not None and isinstance(v, np.integer)):
            raise TypeError("%s: element %d is %r (a %s): give integers"
                            % (name, i, v, type(v).__name__))
        if not lo <= v <= hi:
            raise ValueError("%s: element %d = %r is outside the int%d range"
                             % (name, i, v, 32 if ctype is ctypes.c_int32 else 64))


def typed_array(ctype, values=None, count=None, name="values"):
    """A ctypes array of `ctype` from a sequence or numpy array of values
    (zero-copy for a C-contiguous numpy array of the same type), checked by
    the module's rule (integers for int32/int64, real numbers for
    float/double). Returns (pointer-compatible object, length, keep-alive)."""
    if values is None:
        arr = (ctype * max(count, 1))()
        return arr, count, arr
    np_type = {ctypes.c_int32: "int32", ctypes.c_int64: "int64", ctypes.c_float: "float32",
               ctypes.c_double: "float64"}[ctype]
    if np is not None and (is_numpy(values) or _numpy_like(values)):
        a = np.asarray(values)
        if ctype in _INDEX_RANGES:
            _checked_index_array(a, ctype, name)
            a = np.ascontiguousarray(a, dtype=np_type).reshape(-1)
        elif ctype is ctypes.c_float:
            a = convert_numpy(a, F32, name).reshape(-1)
        else:
            if a.dtype.kind != "f":
                raise TypeError("%s: %s data for a float64 argument" % (name, a.dtype))
            a = np.ascontiguousarray(a, dtype=np_type).reshape(-1)
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
    if ctype in _INDEX_RANGES:
        _check_index_list(seq, ctype, name)
    else:
        check_numbers(seq, F32 if ctype is ctypes.c_float else None, name)
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
