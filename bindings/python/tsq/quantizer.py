"""Step 1 of TSQ: the sparse activation quantizer (include/tsq/quantizer.h)."""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List,  # noqa: F401
                    Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401

import collections
import ctypes

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike, DTypeLike  # noqa: F401
from ._base import Handle, check_static
from ._call import Call
from ._keys import key_names, lookup
from ._lib import lib

__all__ = ["Quantizer", "LearnResult", "learn_codes", "EPS_MODES"]

EPS_MODES = {"fixed": _ffi.TSQ_EPS_FIXED, "sparsity": _ffi.TSQ_EPS_SPARSITY,
             "joint": _ffi.TSQ_EPS_JOINT, "plain": _ffi.TSQ_EPS_PLAIN}
_EPS_MODE_NAMES = dict((v, k) for k, v in EPS_MODES.items())

# "bits", "eps_mode", "eps", "sparsity", "hist_resolution" and the read-only
# "channels", "fitted", "observed".
_OPTIONS = key_names("TSQ_QUANTIZER_", 0x0200)

_EPS_AMBIGUOUS = ("Quantizer has no eps: fixed_eps is the \"fixed\" eps_mode's option, "
                  "fitted_eps the eps fit() found")

LearnResult = collections.namedtuple("LearnResult", "codes error sparsity")
LearnResult.__doc__ = """Result of Quantizer.learn_codes: the codes (or None),
the mean squared quantization error over all samples, and the fraction of
zero codes (see quantizer.h for the exact definitions)."""


def _option_value(key, value):
    if key == _ffi.TSQ_QUANTIZER_EPS_MODE and isinstance(value, str):
        return float(lookup(EPS_MODES, value, "eps mode"))
    return B.real_arg(value, "value")


class Quantizer(Handle):
    """The sparse activation quantizer of TSQ step 1 (tsq_quantizer).

    k(x) = 0 if x <= eps, else clamp(floor(x / delta + 1/2), 1, 2^bits - 1);
    the quantized value is k * delta. Per tensor (channels=0) or per
    channel along axis 1 (channels=C).

    Args:
        ctx: the Context.
        bits: activation bits, 1..8.
        channels: 0 per tensor, C per channel.
        **options: eps_mode ("joint", "fixed", "sparsity", "plain"), eps
            (the fixed mode's eps; read back as fixed_eps), sparsity,
            hist_resolution (see quantizer.h).

    After fit(): fitted_eps, fitted_delta (or get_channel(c)).

    Typical use::

        q = tsq.Quantizer(ctx, bits=2)
        for batch in batches: q.observe(batch)
        q.fit()
        codes = q.encode(x)
    """

    _destroy_name = "tsq_quantizer_destroy"
    _errmsg_name = "tsq_quantizer_errmsg"

    def __init__(self, ctx: Context, bits: int = 2, channels: int = 0, **options: Any) -> None:
        out = ctypes.POINTER(_ffi.tsq_quantizer)()
        ctx._check(lib.tsq_quantizer_create(ctx.handle, B.int_arg(bits, "bits"),
                                            B.int_arg(channels, "channels"),
                                            ctypes.byref(out)), "tsq_quantizer_create")
        self._adopt(ctx, out)
        try:
            for k, v in options.items():
                self.set_option(k, v)
        except BaseException:
            self.close()
            raise

    # ---- options ---------------------------------------------------------

    def set_option(self, key: Union[str, int], value: Union[float, str]) -> None:
        """Sets an option (tsq_quantizer_set_option): key a name ("bits",
        "eps_mode", "eps", "sparsity", "hist_resolution") or a
        TSQ_QUANTIZER_* number; eps_mode may be a name ("joint", ...)."""
        k = lookup(_OPTIONS, key, "quantizer option")
        self._call("tsq_quantizer_set_option", k, _option_value(k, value))

    def get_option(self, key: Union[str, int]) -> float:
        """Reads an option, as a float (tsq_quantizer_get_option; the keys
        of set_option and the read-only "channels", "fitted", "observed")."""
        v = ctypes.c_double()
        self._call("tsq_quantizer_get_option", lookup(_OPTIONS, key, "quantizer option"),
                   ctypes.byref(v))
        return v.value

    @staticmethod
    def option_bounds(key: Union[str, int]) -> Tuple[float, float]:
        """The inclusive (lo, hi) range of an option
        (tsq_quantizer_option_bounds)."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_quantizer_option_bounds(lookup(_OPTIONS, key, "quantizer option"),
                                                    ctypes.byref(lo), ctypes.byref(hi)),
                     "tsq_quantizer_option_bounds")
        return lo.value, hi.value

    @property
    def bits(self):
        """Activation bits n (codes 0 .. 2^n - 1)."""
        return int(self.get_option("bits"))

    @bits.setter
    def bits(self, v):
        self.set_option("bits", v)

    @property
    def eps_mode(self):
        """How fit() chooses eps: "joint", "fixed", "sparsity" or "plain"."""
        return _EPS_MODE_NAMES.get(int(self.get_option("eps_mode")))

    @eps_mode.setter
    def eps_mode(self, v):
        self.set_option("eps_mode", v)

    @property
    def fixed_eps(self):
        """The eps that the "fixed" eps_mode uses (an option, set before
        fit()). Not the fitted eps: that is fitted_eps / get_channel()."""
        return self.get_option("eps")

    @fixed_eps.setter
    def fixed_eps(self, v):
        self.set_option("eps", v)

    @property
    def eps(self):
        """Not an attribute: raises AttributeError naming fixed_eps (the
        "fixed" mode's option) and fitted_eps (the fitted eps), so that
        neither reading nor assigning ``q.eps`` silently means one of them."""
        raise AttributeError(_EPS_AMBIGUOUS)

    @eps.setter
    def eps(self, v):
        raise AttributeError(_EPS_AMBIGUOUS)

    @property
    def fitted_eps(self):
        """The fitted eps: a float per tensor, a list per channel; None
        before the quantizer is fitted."""
        if not self.fitted:
            return None
        v = [e for e, _ in self.parameters()]
        return v[0] if self.channels == 0 else v

    @property
    def fitted_delta(self):
        """The fitted delta (step between levels), like fitted_eps."""
        if not self.fitted:
            return None
        v = [d for _, d in self.parameters()]
        return v[0] if self.channels == 0 else v

    @property
    def sparsity(self):
        """Target zero fraction of the "sparsity" mode."""
        return self.get_option("sparsity")

    @sparsity.setter
    def sparsity(self, v):
        self.set_option("sparsity", v)

    @property
    def hist_resolution(self):
        """Histogram resolution (0 automatic, else 1..10)."""
        return int(self.get_option("hist_resolution"))

    @hist_resolution.setter
    def hist_resolution(self, v):
        self.set_option("hist_resolution", v)

    @property
    def channels(self):
        """Channel count (0 for a per-tensor quantizer). Read-only."""
        return int(self.get_option("channels"))

    @property
    def fitted(self):
        """True once every channel has parameters. Read-only."""
        return bool(self.get_option("fitted"))

    @property
    def observed(self):
        """Samples observed since the last reset. Read-only."""
        return int(self.get_option("observed"))

    # ---- statistics and fitting -------------------------------------------

    def observe(self, x: ArrayLike) -> "Quantizer":
        """Adds the samples of x (float32 data or Tensor) to the statistics."""
        with Call(self._ctx) as c:
            self._call("tsq_quantizer_observe", c.input(x, B.F32, "x"))
        return self

    def reset(self) -> "Quantizer":
        """Drops the statistics (keeps the options and parameters)."""
        self._call("tsq_quantizer_reset")
        return self

    def fit(self) -> "Quantizer":
        """Fits (eps, delta) of every channel from the statistics."""
        self._call("tsq_quantizer_fit")
        return self

    def set_channel(self, c: int, eps: float, delta: float) -> "Quantizer":
        """Sets channel c's (eps, delta) by hand (per tensor: c = 0)."""
        self._call("tsq_quantizer_set_channel", B.int_arg(c, "c"), B.real_arg(eps, "eps"),
                   B.real_arg(delta, "delta"))
        return self

    def get_channel(self, c: int = 0) -> Tuple:
        """Channel c's (eps, delta) as floats."""
        eps, delta = ctypes.c_float(), ctypes.c_float()
        self._call("tsq_quantizer_get_channel", B.int_arg(c, "c"), ctypes.byref(eps),
                   ctypes.byref(delta))
        return eps.value, delta.value

    def parameters(self) -> List[Tuple[float, float]]:
        """[(eps, delta)] of every channel (one pair per tensor)."""
        return [self.get_channel(c) for c in range(max(self.channels, 1))]

    # ---- elementwise calls -------------------------------------------------

    def _unary(self, name, x, xdtype, ydtype, out, xname="x"):
        with Call(self._ctx, like=x) as c:
            xt = c.input(x, xdtype, xname)
            yt, result = c.output(out, ydtype, xt.shape)
            self._call(name, xt, yt)
        return result

    def forward(self, x: ArrayLike, out: Optional[ArrayLike] = None) -> Any:
        """The quantized values k(x) * delta (float32, x's shape). out may be
        x itself (in place)."""
        if out is not None and out is x:
            with Call(self._ctx, like=x) as c:
                xt, result = c.output(x, B.F32, None)      # in place: never a copy
                self._call("tsq_quantizer_forward", xt, xt)
            return result
        return self._unary("tsq_quantizer_forward", x, B.F32, B.F32, out)

    def encode(self, x: ArrayLike, out: Optional[ArrayLike] = None) -> Any:
        """The codes k(x) (uint8, x's shape)."""
        return self._unary("tsq_quantizer_encode", x, B.F32, B.U8, out)

    def decode(self, codes: ArrayLike, out: Optional[ArrayLike] = None) -> Any:
        """The values codes * delta (float32, the codes' shape)."""
        return self._unary("tsq_quantizer_decode", codes, B.U8, B.F32, out, "codes")

    def backward(self, x: ArrayLike, grad_out: ArrayLike, out: Optional[ArrayLike] = None) -> Any:
        """The straight-through estimator: grad_out where
        0 < x < (2^bits - 1) delta, else 0 (float32). out may be grad_out."""
        with Call(self._ctx, like=x) as c:
            xt = c.input(x, B.F32, "x")
            if out is not None and out is grad_out:
                gt, result = c.output(grad_out, B.F32, None)   # in place: never a copy
                dt = gt
            else:
                gt = c.input(grad_out, B.F32, "grad_out")
                dt, result = c.output(out, B.F32, xt.shape)
            self._call("tsq_quantizer_backward", xt, gt, dt)
        return result

    def learn_codes(self, x: Optional[ArrayLike] = None,
                    codes: Union[bool, ArrayLike] = True) -> Any:
        """Step 1 in one call (tsq_learn_codes): fits (eps, delta) on the
        samples of x (or, with x None, on the observed statistics) and
        returns LearnResult(codes, error, sparsity). codes=True returns the
        codes of x, False skips them, or give an output array/Tensor."""
        err, sp = ctypes.c_double(), ctypes.c_double()
        with Call(self._ctx, like=x) as c:
            xt = c.input(x, B.F32, "x")
            ct, result = None, None
            if xt is not None and codes is not False and codes is not None:
                ct, result = c.output(None if codes is True else codes, B.U8, xt.shape)
            elif codes is not True and codes is not False and codes is not None:
                ct = c.input(codes, B.U8, "codes")       # refused by the library: no x
            self._call("tsq_learn_codes", xt, ct, ctypes.byref(err), ctypes.byref(sp))
        return LearnResult(result, err.value, sp.value)

    # ---- serialisation -----------------------------------------------------

    def save(self) -> bytes:
        """The quantizer's options and parameters as bytes ("TSQQ" format)."""
        size = ctypes.c_uint64()
        self._call("tsq_quantizer_save", None, 0, ctypes.byref(size))
        buf = (ctypes.c_char * size.value)()
        self._call("tsq_quantizer_save", buf, size.value, ctypes.byref(size))
        return bytes(buf[:size.value])

    @classmethod
    def load(cls, ctx: Context, data: ArrayLike) -> "Quantizer":
        """A new quantizer from bytes made by save() (no statistics)."""
        data = bytes(data)
        out = ctypes.POINTER(_ffi.tsq_quantizer)()
        ctx._check(lib.tsq_quantizer_load(ctx.handle, data, len(data), ctypes.byref(out)),
                   "tsq_quantizer_load")
        q = cls.__new__(cls)
        q._adopt(ctx, out)
        return q

    def __deepcopy__(self, memo):
        """copy.deepcopy(q): a new quantizer with the same options and
        parameters (through save/load; the statistics are not copied)."""
        return Quantizer.load(self._ctx, self.save())

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Quantizer closed>"
        head = "<tsq.Quantizer bits=%d %s eps_mode=%s" % (
            self.bits, "per-tensor" if self.channels == 0 else "channels=%d" % self.channels,
            self.eps_mode)
        if self.eps_mode == "fixed":
            head += " fixed_eps=%.4g" % self.fixed_eps
        if not self.fitted:
            return head + " not fitted, %d samples observed>" % self.observed
        pairs = self.parameters()
        shown = ", ".join("(%.4g, %.4g)" % p for p in pairs[:3])
        if self.channels == 0:
            return head + " eps=%.4g delta=%.4g>" % pairs[0]
        return head + " (eps, delta)=[%s%s]>" % (shown, ", ..." if len(pairs) > 3 else "")


def learn_codes(quantizer: Quantizer, x: Optional[ArrayLike] = None,
                codes: Union[bool, ArrayLike] = True) -> Any:
    """tsq_learn_codes: the same as quantizer.learn_codes(x, codes)."""
    return quantizer.learn_codes(x, codes)
