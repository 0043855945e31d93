"""Network-level TSQ on a Net (include/tsq/nn.h): step 1 (learn_codes),
step 2 (fit_transform) with the net's regressor, their options, session
progress and history, batch-norm folding and the end of joint QAT. Net
takes these methods from _Conversion."""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple, TypeVar, Union

import collections
import ctypes

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike  # noqa: F401
from ._base import check_static
from ._call import Call
from ._lib import lib
from ._keys import key_names, lookup
from .regressor import HISTORY_SERIES, Regressor

# What a chaining method returns: the Net it was called on.
_Net = TypeVar("_Net", bound="_Conversion")

__all__ = ["TsqProgress"]

TsqProgress = collections.namedtuple("TsqProgress", "stage unit units passes")
TsqProgress.__doc__ = """A network-level TSQ session: stage ("idle",
"learning", "fitting"), the layer being fitted among `units`, its passes."""

# "act_bits", "per_channel", "eps_mode", "eps", "sparsity", "positions",
# "sequential".
_CONVERSION_OPTIONS = key_names("TSQ_NET_TSQ_", 0x0600)

_STAGES = {_ffi.TSQ_NET_TSQ_IDLE: "idle", _ffi.TSQ_NET_TSQ_LEARNING: "learning",
           _ffi.TSQ_NET_TSQ_FITTING: "fitting"}


class _Conversion(object):
    """Net's network-level TSQ methods (mixed into Net)."""

    def fold_batchnorm(self) -> int:
        """Folds every batch-norm after a dense/conv/low-bit layer into it
        and removes it. Returns the number folded."""
        folded = ctypes.c_int32()
        self._changing(self._call, "tsq_net_fold_batchnorm", ctypes.byref(folded))
        return folded.value

    def convert_qat(self) -> int:
        """Ends joint QAT: quantization-aware layers become low-bit ones
        (batch-norms folded). Returns the number converted."""
        converted = ctypes.c_int32()
        self._changing(self._call, "tsq_net_convert_qat", ctypes.byref(converted))
        return converted.value

    def set_conversion_option(self: _Net, key: Union[str, int],
                              value: Union[float, str]) -> _Net:
        """Sets a network-level TSQ option (tsq_net_set_conversion_option):
        "act_bits", "per_channel", "eps_mode" ("joint"... or a number),
        "eps", "sparsity", "positions", "sequential" (or a TSQ_NET_TSQ_*
        number)."""
        k = lookup(_CONVERSION_OPTIONS, key, "conversion option")
        if k == _ffi.TSQ_NET_TSQ_EPS_MODE and isinstance(value, str):
            from .quantizer import EPS_MODES
            value = lookup(EPS_MODES, value, "eps mode")
        self._call("tsq_net_set_conversion_option", k, B.real_arg(value, "value"))
        return self

    def get_conversion_option(self, key: Union[str, int]) -> float:
        """Reads a network-level TSQ option, as a float
        (tsq_net_get_conversion_option)."""
        v = ctypes.c_double()
        self._call("tsq_net_get_conversion_option",
                   lookup(_CONVERSION_OPTIONS, key, "conversion option"), ctypes.byref(v))
        return v.value

    @staticmethod
    def conversion_option_bounds(key: Union[str, int]) -> Tuple[float, float]:
        """The inclusive (lo, hi) range of a network-level TSQ option
        (tsq_net_conversion_option_bounds)."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_net_conversion_option_bounds(
            lookup(_CONVERSION_OPTIONS, key, "conversion option"),
            ctypes.byref(lo), ctypes.byref(hi)), "tsq_net_conversion_option_bounds")
        return lo.value, hi.value

    @property
    def tsq_regressor(self):
        """The Regressor (borrowed) that fit_transform uses: set its options
        (weight_bits, rounds, ...) before the session starts."""
        if self._regressor is None or self._regressor.closed:
            p = ctypes.POINTER(_ffi.tsq_regressor)()
            self._call("tsq_net_tsq_regressor", ctypes.byref(p))
            self._regressor = Regressor._view(self._ctx, p, self)
        return self._regressor

    def learn_codes(self, x: Optional[ArrayLike], last: bool = False) -> Any:
        """Step 1 on the net, one calibration batch per call (last=True on
        the final one, which fits and places the quantizers). Returns done."""
        done = ctypes.c_int32()
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            self._changing(self._call, "tsq_net_learn_codes", xt, 1 if last else 0,
                           ctypes.byref(done))
        return bool(done.value)

    def learn_codes_batches(self, batches: Iterable[Any]) -> Any:
        """learn_codes over a sequence of batches (the last marked)."""
        batches = list(batches)
        done = False
        for i, x in enumerate(batches):
            done = self.learn_codes(x, i == len(batches) - 1)
        return done

    def fit_transform(self, x: ArrayLike, last: bool = False) -> Any:
        """Step 2 on the net, one batch per call, last=True at the end of
        each pass, until it returns True (done)."""
        done = ctypes.c_int32()
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            self._changing(self._call, "tsq_net_fit_transform", xt, 1 if last else 0,
                           ctypes.byref(done))
        return bool(done.value)

    def fit_transform_batches(self, batches: Iterable[Any], max_passes: int = 100000) -> Any:
        """fit_transform pass after pass over a sequence of batches until
        done. Returns the number of passes."""
        batches = list(batches)
        for p in range(max_passes):
            for i, x in enumerate(batches):
                if self.fit_transform(x, i == len(batches) - 1):
                    return p + 1
        raise RuntimeError("fit_transform: not done after %d passes" % max_passes)

    def tsq_cancel(self: _Net) -> _Net:
        """Ends a running learn_codes / fit_transform session."""
        self._call("tsq_net_tsq_cancel")
        return self

    def tsq_progress(self) -> TsqProgress:
        """The session's TsqProgress(stage, unit, units, passes)."""
        st, unit, units, passes = (ctypes.c_int32() for _ in range(4))
        self._call("tsq_net_tsq_progress", ctypes.byref(st), ctypes.byref(unit),
                   ctypes.byref(units), ctypes.byref(passes))
        return TsqProgress(_STAGES.get(st.value, st.value), unit.value, units.value,
                           passes.value)

    def tsq_history(self, unit: int, series: Union[str, int] = 'objective') -> Tuple[List[float],
                    int]:
        """(values, layer_index): the regressor history of converted layer
        `unit` of the last fit_transform session."""
        key = lookup(HISTORY_SERIES, series, "history series")
        count, li = ctypes.c_int32(), ctypes.c_int32()
        self._call("tsq_net_tsq_history", B.int_arg(unit, "unit"), key, None, 0,
                   ctypes.byref(count),
                   ctypes.byref(li))
        vals = (ctypes.c_double * max(count.value, 1))()
        self._call("tsq_net_tsq_history", B.int_arg(unit, "unit"), key, vals, count.value,
                   ctypes.byref(count), ctypes.byref(li))
        return [vals[i] for i in range(count.value)], li.value
