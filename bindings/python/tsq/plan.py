"""Packed low-bit inference: packed weights, integer GEMM kernels,
thresholds and im2col on codes (include/tsq/plan.h)."""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List,  # noqa: F401
                    Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401
    from .nn import Net  # noqa: F401

import ctypes
import numbers

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike, DTypeLike  # noqa: F401
from ._base import Handle, check_static
from ._call import Call
from ._keys import key_names, lookup
from ._lib import lib

__all__ = ["KERNELS", "LAYOUTS", "kernel_name", "kernel_available", "available_kernels",
           "PackedWeights", "Thresholds", "lowbit_kernel_select", "lowbit_workspace_size",
           "lowbit_gemm", "lowbit_gemm_threshold", "im2col_codes", "Plan"]

KERNELS = {"auto": _ffi.TSQ_KERNEL_AUTO, "ref": _ffi.TSQ_KERNEL_REF,
           "avx2": _ffi.TSQ_KERNEL_AVX2, "vnni": _ffi.TSQ_KERNEL_VNNI,
           "vpopcnt": _ffi.TSQ_KERNEL_VPOPCNT}
LAYOUTS = {"nchw": _ffi.TSQ_LAYOUT_NCHW, "nhwc": _ffi.TSQ_LAYOUT_NHWC}
# "rows", "cols", "weight_bits", "bytes".
_PACKED_KEYS = key_names("TSQ_PACKED_", 0x0800)
# "channels", "code_bits".
_THRESHOLDS_KEYS = key_names("TSQ_THRESHOLDS_", 0x0900)
# "lowbit_layers", "fused_thresholds", "packed_bytes", "packed_fp32_bytes",
# "float_bytes", "input_size", "output_size", "stages".
_PLAN_KEYS = key_names("TSQ_PLAN_", 0x0700)


def _kernel(k):
    return lookup(KERNELS, k, "kernel", "kernel")


def _pair(v, what="stride/pad"):
    if isinstance(v, (tuple, list)):
        return B.int_arg(v[0], what), B.int_arg(v[1], what)
    return B.int_arg(v, what), B.int_arg(v, what)


def kernel_name(kernel: Union[str, int]) -> str:
    """The name of a TSQ_KERNEL_* value ("auto", "ref", "avx2", ...)."""
    return lib.tsq_kernel_name(_kernel(kernel)).decode()


def kernel_available(kernel: Union[str, int]) -> bool:
    """True if this CPU can run the kernel ("avx2", TSQ_KERNEL_VNNI...)."""
    v = ctypes.c_int32()
    check_static(lib.tsq_kernel_available(_kernel(kernel), ctypes.byref(v)),
                 "tsq_kernel_available")
    return bool(v.value)


def available_kernels() -> List[str]:
    """Names of the kernels this CPU can run."""
    return [name for name, k in sorted(KERNELS.items(), key=lambda kv: kv[1])
            if kernel_available(k)]


class PackedWeights(Handle):
    """Low-bit weights w (K x N int8, values in the weight_bits alphabet)
    packed into bit planes (tsq_packed_weights). Immutable: shareable by
    threads, each passing its own Context to the kernels."""

    _destroy_name = "tsq_packed_weights_destroy"
    _errmsg_name = None             # errors go on the context

    def __init__(self, ctx: Context, w: ArrayLike, weight_bits: int = 2) -> None:
        out = ctypes.POINTER(_ffi.tsq_packed_weights)()
        with Call(ctx) as c:
            ctx._check(lib.tsq_packed_weights_create(ctx.handle, c.input(w, B.I8, "w"),
                                                     B.int_arg(weight_bits, "weight_bits"),
                                                     ctypes.byref(out)),
                       "tsq_packed_weights_create")
        self._adopt(ctx, out)

    def get(self, key: Union[str, int]) -> int:
        """A property: "rows" (K), "cols" (N), "weight_bits", "bytes" (or a
        TSQ_PACKED_* number)."""
        k = lookup(_PACKED_KEYS, key, "packed-weights key")
        v = ctypes.c_int64()
        check_static(lib.tsq_packed_weights_get(self.handle, k, ctypes.byref(v)),
                     "tsq_packed_weights_get")
        return v.value

    rows = property(lambda self: self.get("rows"), doc="K, the reduction length.")
    cols = property(lambda self: self.get("cols"), doc="N, the output channels.")
    weight_bits = property(lambda self: self.get("weight_bits"), doc="Bits per weight.")
    nbytes = property(lambda self: self.get("bytes"), doc="Bytes of packed data.")

    def unpack(self, out: Optional[ArrayLike] = None) -> Any:
        """The weights back as K x N int8 (a round trip of the packing)."""
        with Call(self._ctx, like=out) as c:
            if out is None and B.np is None:
                c.want_tensor = True
            wt, result = c.output(out, B.I8, (self.rows, self.cols))
            wt._check(lib.tsq_packed_weights_unpack(self.handle, wt),
                      "tsq_packed_weights_unpack")   # the message is on w
        return result

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.PackedWeights closed>"
        return "<tsq.PackedWeights %dx%d %d-bit>" % (self.rows, self.cols, self.weight_bits)


def _float_arg(values, name):
    if values is None:
        return None, 0, None
    return B.typed_array(ctypes.c_float, values, name=name)


class Thresholds(Handle):
    """The integer thresholds of "affine, then quantize" per output channel
    (tsq_thresholds): alpha, bias (None for 0), and the quantizer's eps and
    delta, one value for all channels or one per channel. Immutable."""

    _destroy_name = "tsq_thresholds_destroy"
    _errmsg_name = None

    def __init__(self, ctx: Context, alpha: ArrayLike, bias: ArrayLike, code_bits: int, eps: float,
                 delta: float) -> None:
        a, n, ka = _float_arg(alpha, "alpha")
        b, nb, kb = _float_arg(bias, "bias")
        if isinstance(eps, numbers.Real):
            eps = [eps]
        if isinstance(delta, numbers.Real):
            delta = [delta]
        e, ne, ke = _float_arg(eps, "eps")
        d, nd, kd = _float_arg(delta, "delta")
        if ne != nd:
            raise ValueError("eps and delta must have the same length (1 or one per channel)")
        out = ctypes.POINTER(_ffi.tsq_thresholds)()
        ctx._check(lib.tsq_thresholds_create(ctx.handle, n, a, b,
                                             B.int_arg(code_bits, "code_bits"), e, d, ne,
                                             ctypes.byref(out)), "tsq_thresholds_create")
        self._adopt(ctx, out)

    def get(self, key: Union[str, int]) -> int:
        """"channels" or "code_bits" (or a TSQ_THRESHOLDS_* number)."""
        k = lookup(_THRESHOLDS_KEYS, key, "thresholds key")
        v = ctypes.c_int64()
        check_static(lib.tsq_thresholds_get(self.handle, k, ctypes.byref(v)),
                     "tsq_thresholds_get")
        return v.value

    channels = property(lambda self: self.get("channels"), doc="Output channels.")
    code_bits = property(lambda self: self.get("code_bits"), doc="Output code bits n.")

    def channel(self, c: int) -> Tuple[int, int, List[int]]:
        """(direction, top, thresholds list) of channel c: the code of acc
        is min(#{m : a >= t[m-1]}, top) with a = acc if direction > 0 else
        ~acc."""
        cap = (1 << self.code_bits) - 1
        t = (ctypes.c_int32 * cap)()
        direction, top = ctypes.c_int32(), ctypes.c_int32()
        check_static(lib.tsq_thresholds_channel(self.handle, B.int_arg(c, "c"),
                                                ctypes.byref(direction),
                                                ctypes.byref(top), t, cap),
                     "tsq_thresholds_channel")
        return direction.value, top.value, list(t)

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Thresholds closed>"
        return "<tsq.Thresholds %d channels, %d-bit codes>" % (self.channels, self.code_bits)

    def apply(self, acc: ArrayLike, rows: int, kernel: Union[str, int] = 'auto',
              out: Optional[ArrayLike] = None, ctx: Optional[Context] = None) -> Any:
        """Codes (uint8, rows x channels) from int32 accumulators acc
        (rows x channels, row-major). ctx: the calling thread's context
        (default: the one this object was made from)."""
        ctx = ctx or self._ctx
        a, n, _keep = B.typed_array(ctypes.c_int32, acc, name="acc")
        with Call(ctx, like=out) as c:
            ot, result = c.output(out, B.U8, (B.int_arg(rows, "rows"), self.channels))
            ctx._check(lib.tsq_thresholds_apply(ctx.handle, self.handle, a, n,
                                                B.int_arg(rows, "rows"), _kernel(kernel), ot),
                       "tsq_thresholds_apply")
        return result


def lowbit_kernel_select(ctx: Context, packed: PackedWeights, m: int, code_bits: int,
                         kernel: Union[str, int] = 'auto') -> str:
    """The kernel lowbit_gemm would use for m rows of code_bits codes (name)."""
    v = ctypes.c_int32()
    ctx._check(lib.tsq_lowbit_kernel_select(ctx.handle, packed, B.int_arg(m, "m"),
                                            B.int_arg(code_bits, "code_bits"),
                                            _kernel(kernel), ctypes.byref(v)),
               "tsq_lowbit_kernel_select")
    return kernel_name(v.value)


def lowbit_workspace_size(ctx: Context, packed: PackedWeights, m: int, code_bits: int,
                          kernel: Union[str, int] = 'auto') -> int:
    """Scratch bytes lowbit_gemm needs with these arguments and the
    context's thread count."""
    v = ctypes.c_uint64()
    ctx._check(lib.tsq_lowbit_workspace_size(ctx.handle, packed, B.int_arg(m, "m"),
                                             B.int_arg(code_bits, "code_bits"),
                                             _kernel(kernel), ctypes.byref(v)),
               "tsq_lowbit_workspace_size")
    return v.value


def _workspace(workspace):
    if workspace is None:
        return None, 0, None
    mv = memoryview(workspace)
    if mv.readonly or not mv.c_contiguous:
        raise ValueError("the workspace must be a writable contiguous buffer")
    cbuf = (ctypes.c_char * mv.nbytes).from_buffer(mv)
    return cbuf, mv.nbytes, (mv, cbuf)


def _rows(codes_t):
    shape = codes_t.shape
    return shape[0] if len(shape) == 2 else 1


def lowbit_gemm(ctx: Context, packed: PackedWeights, codes: ArrayLike, code_bits: int,
                kernel: Union[str, int] = 'auto', out: Optional[ArrayLike] = None,
                workspace: Optional[ArrayLike] = None) -> Any:
    """acc = codes (M x K uint8) times the packed weights (K x N), exactly,
    as int32 M x N (numpy; array.array('i') without numpy). out: an int32
    C-contiguous array to fill. workspace: an optional writable buffer of
    lowbit_workspace_size() bytes (then the call allocates nothing)."""
    with Call(ctx) as c:
        ct = c.input(codes, B.U8, "codes")
        m, ncols = _rows(ct), packed.cols
        if out is None:
            out = B.new_array("i", (m, ncols))
        ptr, n, _keep = _int32_out(out)
        ws, wn, _wkeep = _workspace(workspace)
        ctx._check(lib.tsq_lowbit_gemm(ctx.handle, packed, ct, B.int_arg(code_bits, "code_bits"),
                                       _kernel(kernel),
                                       ptr, n, ws, wn), "tsq_lowbit_gemm")
    return out


def _int32_out(out):
    if B.is_numpy(out):
        if out.dtype.name != "int32" or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("acc output must be a writable C-contiguous int32 array")
        return out.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), out.size, out
    ptr, n, keep = B.typed_array(ctypes.c_int32, out)
    if not isinstance(keep, tuple):
        raise ValueError("acc output must be an int32 numpy array or array.array('i')")
    return ptr, n, keep


def lowbit_gemm_threshold(ctx: Context, packed: PackedWeights, codes: ArrayLike, code_bits: int,
                          thresholds: Thresholds, kernel: Union[str, int] = 'auto',
                          out: Optional[ArrayLike] = None,
                          workspace: Optional[ArrayLike] = None) -> Any:
    """The fused hidden layer: output codes (uint8, M x N) of
    thresholds(codes x W)."""
    with Call(ctx, like=codes) as c:
        ct = c.input(codes, B.U8, "codes")
        ot, result = c.output(out, B.U8, (_rows(ct), packed.cols))
        ws, wn, _wkeep = _workspace(workspace)
        ctx._check(lib.tsq_lowbit_gemm_threshold(ctx.handle, packed, ct,
                                                 B.int_arg(code_bits, "code_bits"),
                                                 thresholds, _kernel(kernel), ot, ws, wn),
                   "tsq_lowbit_gemm_threshold")
    return result


def im2col_codes(ctx: Context, codes: ArrayLike, kh: int, kw: int,
                 stride: Union[int, Tuple[int, int]] = 1, pad: Union[int, Tuple[int, int]] = 0,
                 layout: Union[str, int] = 'nchw', out: Optional[ArrayLike] = None) -> Any:
    """Unfolds uint8 codes (4-D, NCHW or NHWC) into the patch matrix
    (B*Ho*Wo) x (C*kh*kw), uint8."""
    sh, sw = _pair(stride)
    ph, pw = _pair(pad)
    lay = lookup(LAYOUTS, layout.lower() if isinstance(layout, str) else layout, "layout",
                 "layout")
    with Call(ctx, like=codes) as c:
        it = c.input(codes, B.U8, "codes")
        shape = it.shape
        if len(shape) == 4:
            if lay == _ffi.TSQ_LAYOUT_NHWC:
                b, h, w, ch = shape
            else:
                b, ch, h, w = shape
            ho = (h + 2 * ph - kh) // sh + 1 if sh > 0 else 0
            wo = (w + 2 * pw - kw) // sw + 1 if sw > 0 else 0
            oshape = (max(b * ho * wo, 1), max(ch * kh * kw, 1))
        else:
            oshape = (1, 1)             # the library reports the bad input
        ot, result = c.output(out, B.U8, oshape)
        ctx._check(lib.tsq_im2col_codes(ctx.handle, it, lay, B.int_arg(kh, "kh"),
                                        B.int_arg(kw, "kw"), sh, sw, ph, pw, ot),
                   "tsq_im2col_codes")
    return result


class Plan(Handle):
    """An inference plan made from a converted Net (tsq_plan): packed
    low-bit weights, integer thresholds between hidden layers, float first
    and last layers. Immutable: share it between threads, each calling
    run() with its own Context (errors go on that context). The net may be
    destroyed once the plan exists."""

    _destroy_name = "tsq_plan_destroy"
    _errmsg_name = None

    def __init__(self, ctx: Context, net: Net) -> None:
        out = ctypes.POINTER(_ffi.tsq_plan)()
        ctx._check(lib.tsq_plan_create(ctx.handle, net.handle, ctypes.byref(out)),
                   "tsq_plan_create")
        self._adopt(ctx, out)

    @classmethod
    def load(cls, ctx: Context, data: bytes) -> "Plan":
        """A plan straight from the bytes of a .tsq model file (what
        Net.save() returns), without building a Net (tsq_plan_load): the
        same plan, and the same outputs, as Plan(ctx, Net.load(ctx, data))."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data: expected bytes, bytearray or memoryview, not %s"
                            % type(data).__name__)
        data = bytes(data)
        out = ctypes.POINTER(_ffi.tsq_plan)()
        ctx._check(lib.tsq_plan_load(ctx.handle, data, len(data), ctypes.byref(out)),
                   "tsq_plan_load")
        plan = cls.__new__(cls)
        plan._adopt(ctx, out)
        return plan

    def get(self, key: Union[str, int]) -> int:
        """A figure of the plan: "packed_bytes", "float_bytes", "input_size",
        "output_size", "lowbit_layers", ... (or a TSQ_PLAN_* number)."""
        k = lookup(_PLAN_KEYS, key, "plan key")
        v = ctypes.c_int64()
        check_static(lib.tsq_plan_get(self.handle, k, ctypes.byref(v)), "tsq_plan_get")
        return v.value

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Plan closed>"
        return ("<tsq.Plan %d stages, %d low-bit layers (%d fused thresholds), inputs %d -> "
                "outputs %d, packed %d bytes + float %d bytes>" % (
                    self.get("stages"), self.get("lowbit_layers"), self.get("fused_thresholds"),
                    self.get("input_size"), self.get("output_size"), self.get("packed_bytes"),
                    self.get("float_bytes")))

    def workspace_size(self, batch: int, ctx: Optional[Context] = None) -> int:
        """Bytes of workspace run() needs for `batch` samples with ctx's
        thread count (default: the plan's context)."""
        ctx = ctx or self._ctx
        v = ctypes.c_uint64()
        ctx._check(lib.tsq_plan_workspace_size(ctx.handle, self.handle, B.int_arg(batch, "batch"),
                                               ctypes.byref(v)), "tsq_plan_workspace_size")
        return v.value

    def run(self, x: ArrayLike, out: Optional[ArrayLike] = None,
            workspace: Optional[ArrayLike] = None, ctx: Optional[Context] = None) -> Any:
        """Runs the plan on x (float32, N x sample shape) and returns the
        outputs (float32, N x outputs). workspace: an optional writable
        buffer of workspace_size(N) bytes (else the call allocates)."""
        ctx = ctx or self._ctx
        with Call(ctx, like=x) as c:
            xt = c.input(x, B.F32, "x")
            n = xt.shape[0]
            yt, result = c.output(out, B.F32, (n, self.get("output_size")))
            ws, wn, _keep = _workspace(workspace)
            ctx._check(lib.tsq_plan_run(ctx.handle, self.handle, xt, yt, ws, wn), "tsq_plan_run")
        return result
