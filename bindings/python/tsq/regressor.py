"""Step 2 of TSQ: the low-bit weight regressor (include/tsq/regressor.h)."""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List,  # noqa: F401
                    Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401
    from .quantizer import Quantizer  # noqa: F401

import collections
import ctypes

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike, DTypeLike  # noqa: F401
from ._base import Handle, check_static
from ._call import Call
from ._keys import key_names, lookup
from ._lib import lib
from .tensor import Tensor

__all__ = ["Regressor", "FitResult", "fit_transform", "LOSSES", "HISTORY_SERIES"]

LOSSES = {"quantized": _ffi.TSQ_LOSS_QUANTIZED, "linear": _ffi.TSQ_LOSS_LINEAR}
_LOSS_NAMES = dict((v, k) for k, v in LOSSES.items())
HISTORY_SERIES = {"objective": _ffi.TSQ_HISTORY_OBJECTIVE, "best": _ffi.TSQ_HISTORY_BEST,
                  "relaxed": _ffi.TSQ_HISTORY_RELAXED, "lambda": _ffi.TSQ_HISTORY_LAMBDA}
_STATS_MODES = {"add": _ffi.TSQ_STATS_ADD, "replace": _ffi.TSQ_STATS_REPLACE}

# "weight_bits", "offset", "loss", "rounds", "linear_rounds", "sweeps",
# "lambda0", "lambda_growth", "tolerance", "batch_rows", "margin", "polish",
# "restarts".
_OPTIONS = key_names("TSQ_REGRESSOR_", 0x0300)

FitResult = collections.namedtuple("FitResult", "weights alpha bias objective")
FitResult.__doc__ = """Result of a step-2 fit: weights (d x C int8 codes w),
alpha (C float32 scales), bias (C float32 offsets b) and the objective."""


def _pair(v, what):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError("%s must be an int or a pair" % what)
        return B.int_arg(v[0], what), B.int_arg(v[1], what)
    return B.int_arg(v, what), B.int_arg(v, what)


def _dim(t, axis, default=1):
    shape = t.shape
    return shape[axis] if len(shape) > axis else default


class Regressor(Handle):
    """The step-2 regressor (tsq_regressor): low-bit weights w, scales alpha
    and offsets b per output channel minimising ||y - Q(alpha X w + b)||^2
    (or the linear loss), see regressor.h.

    Args:
        ctx: the Context.
        **options: weight_bits, offset, loss ("quantized" or "linear"),
            rounds, linear_rounds, sweeps, lambda0, lambda_growth, tolerance,
            batch_rows, margin, polish, restarts (bounds:
            Regressor.option_bounds(name)).

    In-memory fit: ``reg.set_quantizer(q); r = reg.fit_transform(X, Y, W_init)``.
    Streamed (data larger than memory, or several processes):
    ``reg.begin(d, C)``; per pass ``reg.feed(X, Y)`` for each batch, optionally
    ``reg.stats_import(allreduce(reg.stats_export()), "replace")``, then
    ``reg.end_pass()`` until it returns True; then ``reg.result()``.
    With ``reg.set_share(i, n)`` before begin, each process solves a block of
    the channels and, after every end_pass, ``reg.share_import(allgather(
    reg.share_export(i)))`` completes the pass and says whether it is done.
    """

    _destroy_name = "tsq_regressor_destroy"
    _errmsg_name = "tsq_regressor_errmsg"

    def __init__(self, ctx: Context, **options: Any) -> None:
        out = ctypes.POINTER(_ffi.tsq_regressor)()
        ctx._check(lib.tsq_regressor_create(ctx.handle, ctypes.byref(out)),
                   "tsq_regressor_create")
        self._adopt(ctx, out)
        self._dims = None
        try:
            for k, v in options.items():
                self.set_option(k, v)
        except BaseException:
            self.close()
            raise

    @classmethod
    def _view(cls, ctx, ptr, owner):
        r = cls._new_borrowed(ctx, ptr, owner)
        r._dims = None
        return r

    # ---- options ---------------------------------------------------------

    def set_option(self, key: Union[str, int], value: Union[float, str]) -> None:
        """Sets an option (tsq_regressor_set_option) by name (see the class
        doc) or TSQ_REGRESSOR_* number; loss may be "quantized" or "linear"."""
        k = lookup(_OPTIONS, key, "regressor option")
        if k == _ffi.TSQ_REGRESSOR_LOSS and isinstance(value, str):
            value = lookup(LOSSES, value, "loss")
        self._call("tsq_regressor_set_option", k, B.real_arg(value, "value"))

    def get_option(self, key: Union[str, int]) -> float:
        """Reads an option, as a float (tsq_regressor_get_option)."""
        v = ctypes.c_double()
        self._call("tsq_regressor_get_option", lookup(_OPTIONS, key, "regressor option"),
                   ctypes.byref(v))
        return v.value

    @staticmethod
    def option_bounds(key: Union[str, int]) -> Tuple[float, float]:
        """The inclusive (lo, hi) range of an option
        (tsq_regressor_option_bounds)."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_regressor_option_bounds(lookup(_OPTIONS, key, "regressor option"),
                                                    ctypes.byref(lo), ctypes.byref(hi)),
                     "tsq_regressor_option_bounds")
        return lo.value, hi.value

    @property
    def weight_bits(self):
        """k of the symmetric k-bit alphabet (0 while a custom one is set)."""
        return int(self.get_option("weight_bits"))

    @weight_bits.setter
    def weight_bits(self, v):
        self.set_option("weight_bits", v)

    @property
    def loss(self):
        """"quantized" (TSQ) or "linear" (GPTQ/BitSplit objective)."""
        return _LOSS_NAMES.get(int(self.get_option("loss")))

    @loss.setter
    def loss(self, v):
        self.set_option("loss", v)

    @property
    def alphabet(self):
        """The weight alphabet S, ascending (settable to a custom list of
        integers in -128..127)."""
        count = ctypes.c_int32()
        self._call("tsq_regressor_get_alphabet", None, 0, ctypes.byref(count))
        vals = (ctypes.c_int32 * max(count.value, 1))()
        self._call("tsq_regressor_get_alphabet", vals, count.value, ctypes.byref(count))
        return [vals[i] for i in range(count.value)]

    @alphabet.setter
    def alphabet(self, values):
        arr, n, _keep = B.typed_array(ctypes.c_int32, values, name="alphabet")
        self._call("tsq_regressor_set_alphabet", arr, n)

    def set_quantizer(self, quantizer: Quantizer) -> "Regressor":
        """Copies the fitted output quantizer's (bits, eps, delta) into the
        regressor."""
        self._call("tsq_regressor_set_quantizer", quantizer)
        return self

    def set_levels(self, bits: int, eps: float, delta: float) -> "Regressor":
        """Sets a per-tensor output quantizer directly."""
        self._call("tsq_regressor_set_levels", B.int_arg(bits, "bits"), B.real_arg(eps, "eps"),
                   B.real_arg(delta, "delta"))
        return self

    # ---- in-memory fit -----------------------------------------------------

    def fit_transform(self, X: ArrayLike, Y: Optional[ArrayLike] = None,
                      W_init: Optional[ArrayLike] = None, P: Optional[ArrayLike] = None,
                      out: Optional[ArrayLike] = None) -> Any:
        """Step 2 on in-memory data (tsq_fit_transform).

        X: N x d codes (uint8) or floats; Y: N x C step-1 codes; W_init:
        d x C float32 start weights; P: N x C pre-activations. Returns
        FitResult(weights d x C int8, alpha C, bias C, objective). `out` may
        be a (weights, alpha, bias) triple of arrays/Tensors to fill."""
        obj = ctypes.c_double()
        with Call(self._ctx, like=X) as c:
            xt = c.input(X, None, "X")
            yt = c.input(Y, _y_dtype(Y), "Y")
            wt = c.input(W_init, B.F32, "W_init")
            pt = c.input(P, B.F32, "P")
            d = _dim(xt, 1)
            C = next((_dim(t, 1) for t in (yt, wt, pt) if t is not None), 1)
            wo, ao, bo = out if out is not None else (None, None, None)
            W, Wr = c.output(wo, B.I8, (d, C))
            A, Ar = c.output(ao, B.F32, (C,))
            Bt, Br = c.output(bo, B.F32, (C,))
            self._call("tsq_fit_transform", xt, yt, wt, pt, W, A, Bt, ctypes.byref(obj))
        self._dims = (d, C)
        return FitResult(Wr, Ar, Br, obj.value)

    # ---- streamed fit --------------------------------------------------------

    def begin(self, d: int, C: int, W_init: Optional[ArrayLike] = None,
              with_preact: bool = False) -> "Regressor":
        """Starts a streamed fit of a layer with d inputs and C outputs."""
        with Call(self._ctx) as c:
            self._call("tsq_regressor_begin", B.int_arg(d, "d"), B.int_arg(C, "C"),
                       c.input(W_init, B.F32, "W_init"),
                       1 if with_preact is True else (0 if with_preact is False
                                                      else B.int_arg(with_preact, "with_preact")))
        self._dims = (B.int_arg(d, "d"), B.int_arg(C, "C"))
        return self

    def feed(self, X: ArrayLike, Y: Optional[ArrayLike] = None,
             P: Optional[ArrayLike] = None) -> "Regressor":
        """Adds one batch (X n x d, Y n x C codes, P n x C) to the pass."""
        with Call(self._ctx) as c:
            self._call("tsq_regressor_feed", c.input(X, None, "X"),
                       c.input(Y, _y_dtype(Y), "Y"), c.input(P, B.F32, "P"))
        return self

    def end_pass(self) -> bool:
        """Ends the pass; True when the fit is finished."""
        done = ctypes.c_int32()
        self._call("tsq_regressor_end_pass", ctypes.byref(done))
        return bool(done.value)

    def stats_size(self) -> int:
        """The number of doubles in the current pass's sums."""
        v = ctypes.c_int64()
        self._call("tsq_regressor_stats_size", ctypes.byref(v))
        return v.value

    def stats_export(self, out: Optional[ArrayLike] = None) -> Any:
        """The current pass's sums as float64: a new numpy array (array.array
        'd' without numpy), or written straight into `out` (a C-contiguous
        float64 numpy array or array.array('d') of stats_size() entries)."""
        if out is None:
            out = B.new_array("d", (self.stats_size(),))
        ptr, n, _keep = _double_buffer(out, writable=True)
        self._call("tsq_regressor_stats_export", ptr, n)
        return out

    def stats_import(self, data: ArrayLike, mode: str = 'add') -> "Regressor":
        """Adds ("add") the float64 array `data` to the pass's sums, or
        replaces them by it ("replace"), e.g. the MPI_Allreduce sum of every
        process's stats_export(). A C-contiguous float64 numpy array or
        array.array('d') is read in place."""
        ptr, n, _keep = _double_buffer(data, writable=False)
        self._call("tsq_regressor_stats_import", ptr, n,
                   lookup(_STATS_MODES, mode, "stats mode"))
        return self

    def set_share(self, index: int, count: int) -> "Regressor":
        """Makes the next begun fit solve only share `index` of `count` of the
        channels (a contiguous block); the processes then exchange their
        blocks after every end_pass (share_export, share_import). The fit is
        bit for bit the one with count = 1 (the default), on every process."""
        self._call("tsq_regressor_set_share", B.int_arg(index, "index"),
                   B.int_arg(count, "count"))
        return self

    def share_size(self, share: int) -> int:
        """The number of doubles in share `share`'s part of the pass's results
        (after an end_pass of a shared fit)."""
        v = ctypes.c_int64()
        self._call("tsq_regressor_share_size", B.int_arg(share, "share"), ctypes.byref(v))
        return v.value

    def share_export(self, share: int, out: Optional[ArrayLike] = None) -> Any:
        """This regressor's part (it is share `share`) as float64: a new array,
        or written into `out` (C-contiguous float64 of share_size(share))."""
        if out is None:
            out = B.new_array("d", (self.share_size(share),))
        ptr, n, _keep = _double_buffer(out, writable=True)
        self._call("tsq_regressor_share_export", ptr, n)
        return out

    def share_import(self, data: ArrayLike) -> bool:
        """Takes every share's part, concatenated in share order (e.g. an MPI
        Allgatherv), completes the pass; True when the fit is finished."""
        ptr, n, _keep = _double_buffer(data, writable=False)
        done = ctypes.c_int32()
        self._call("tsq_regressor_share_import", ptr, n, ctypes.byref(done))
        return bool(done.value)

    def result(self, out: Optional[ArrayLike] = None) -> FitResult:
        """The finished fit's FitResult (after end_pass returned True or
        fit_transform). `out`: optional (weights, alpha, bias) to fill."""
        d, C = self._dims or (1, 1)
        obj = ctypes.c_double()
        with Call(self._ctx, like=out[0] if out else None) as c:
            wo, ao, bo = out if out is not None else (None, None, None)
            W, Wr = c.output(wo, B.I8, (d, C))
            A, Ar = c.output(ao, B.F32, (C,))
            Bt, Br = c.output(bo, B.F32, (C,))
            self._call("tsq_regressor_result", W, A, Bt, ctypes.byref(obj))
        return FitResult(Wr, Ar, Br, obj.value)

    def fit_stream(self, batches: Iterable[Any], d: int, C: int,
                   W_init: Optional[ArrayLike] = None, with_preact: bool = False,
                   reduce: Optional[Callable[[Any], Any]] = None,
                   max_passes: int = 100000) -> FitResult:
        """Runs the streamed protocol: begin, then passes over `batches` (a
        sequence re-read every pass, or a callable returning a new iterable
        of (X, Y) or (X, Y, P) tuples) until done. reduce: optional function
        taking this process's exported sums (float64 array) and returning the
        sums over all processes (e.g. an MPI Allreduce), imported with
        "replace" before each end_pass. Returns result()."""
        self.begin(d, C, W_init, with_preact)
        for _ in range(max_passes):
            for batch in (batches() if callable(batches) else batches):
                self.feed(*batch)
            if reduce is not None:
                self.stats_import(reduce(self.stats_export()), "replace")
            if self.end_pass():
                return self.result()
        raise RuntimeError("fit_stream: not done after %d passes" % max_passes)

    # ---- after a fit -------------------------------------------------------

    def history(self, series: Union[str, int] = 'objective') -> List[float]:
        """A per-iterate series of the current or last fit ("objective",
        "best", "relaxed", "lambda" or a TSQ_HISTORY_* number), as floats."""
        key = lookup(HISTORY_SERIES, series, "history series")
        count = ctypes.c_int32()
        self._call("tsq_regressor_history", key, None, 0, ctypes.byref(count))
        vals = (ctypes.c_double * max(count.value, 1))()
        self._call("tsq_regressor_history", key, vals, count.value, ctypes.byref(count))
        return [vals[i] for i in range(count.value)]

    def channel_objectives(self, count: Optional[int] = None) -> Any:
        """The objective of each channel's result (float64 array of C)."""
        if count is None:
            count = self._dims[1] if self._dims else 0
        out = B.new_array("d", (count,))
        self._call("tsq_regressor_channel_objectives", B.array_pointer(out, ctypes.c_double),
                   count)
        return out

    # ---- convolution rows (tsq_regressor_im2col_*; no regressor needed) ------

    @staticmethod
    def im2col_rows(ctx: Context, input: ArrayLike, kh: int, kw: int,
                    stride: Union[int, Tuple[int, int]] = 1, pad: Union[int, Tuple[int, int]] = 0,
                    positions: Optional[ArrayLike] = None) -> Any:
        """The regressor's X for a convolution (tsq_regressor_im2col_rows):
        input is N x C_in x H x W (uint8 or float32); returns rows x
        (C_in kh kw) of the input's dtype (a Tensor for a Tensor input, else
        a numpy array). positions: None for every output position, or
        N * npos indices (see im2col_sample_positions)."""
        sh, sw = _pair(stride, "stride")
        ph, pw = _pair(pad, "pad")
        out = ctypes.POINTER(_ffi.tsq_tensor)()
        with Call(ctx, like=input) as c:
            it = c.input(input, None, "input")
            pos, npos, _keep = _positions(positions, _dim(it, 0))
            ctx._check(lib.tsq_regressor_im2col_rows(ctx.handle, it, B.int_arg(kh, "kh"),
                                                     B.int_arg(kw, "kw"), sh, sw, ph, pw,
                                                     pos, npos, ctypes.byref(out)),
                       "tsq_regressor_im2col_rows")
            return c.take(out)

    @staticmethod
    def im2col_output_rows(ctx: Context, output: ArrayLike,
                           positions: Optional[ArrayLike] = None) -> Any:
        """The rows of a convolution's output N x C x OH x OW matching
        im2col_rows with the same positions
        (tsq_regressor_im2col_output_rows)."""
        out = ctypes.POINTER(_ffi.tsq_tensor)()
        with Call(ctx, like=output) as c:
            ot = c.input(output, None, "output")
            pos, npos, _keep = _positions(positions, _dim(ot, 0))
            ctx._check(lib.tsq_regressor_im2col_output_rows(ctx.handle, ot, pos, npos,
                                                            ctypes.byref(out)),
                       "tsq_regressor_im2col_output_rows")
            return c.take(out)

    @staticmethod
    def im2col_sample_positions(ctx: Context, images: int, total: int, npos: int) -> Any:
        """npos distinct random positions out of `total` per image, ascending
        (int64 array of images * npos; from the context's seed;
        tsq_regressor_im2col_sample_positions)."""
        images, npos = B.int_arg(images, "images"), B.int_arg(npos, "npos")
        count = images * npos if images > 0 and npos > 0 else 0
        out = B.new_array("q", (count,))
        ctx._check(lib.tsq_regressor_im2col_sample_positions(
            ctx.handle, images, B.int_arg(total, "total"), npos,
            B.array_pointer(out, ctypes.c_int64) if count else None),
            "tsq_regressor_im2col_sample_positions")
        return out

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Regressor closed>"
        bits = self.weight_bits
        fit = " d=%d C=%d" % self._dims if self._dims else ""
        return "<tsq.Regressor %s loss=%s rounds=%d%s>" % (
            "%d-bit weights" % bits if bits else "alphabet %s" % self.alphabet, self.loss,
            int(self.get_option("rounds")), fit)


def _y_dtype(Y):
    """Y may be uint8 codes or float32 holding integer codes: keep a numpy
    array's own type when it is one of them, else convert to uint8."""
    if Y is None or isinstance(Y, Tensor):
        return None
    if B.is_numpy(Y):
        return None if Y.dtype.name in ("uint8", "float32") else B.U8
    return None


def _double_buffer(data, writable):
    """(double pointer, count, keep-alive) over float64 data in place."""
    if B.is_numpy(data):
        if data.dtype.name != "float64" or not data.flags.c_contiguous:
            if writable:
                raise ValueError("stats output must be a C-contiguous float64 array")
            data = B.np.ascontiguousarray(data, dtype="float64")
        return data.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), data.size, data
    ptr, n, keep = B.typed_array(ctypes.c_double, data)
    if writable and keep is not None and not isinstance(keep, tuple):
        raise ValueError("stats output must be a float64 numpy array or array.array('d')")
    return ptr, n, keep


def fit_transform(regressor: Regressor, X: ArrayLike, Y: Optional[ArrayLike] = None,
                  W_init: Optional[ArrayLike] = None, P: Optional[ArrayLike] = None) -> Any:
    """tsq_fit_transform: the same as regressor.fit_transform(...)."""
    return regressor.fit_transform(X, Y, W_init, P)


def _positions(positions, images):
    if positions is None:
        return None, 0, None
    ptr, n, keep = B.typed_array(ctypes.c_int64, positions, name="positions")
    return ptr, (n // images if images else 0), keep
