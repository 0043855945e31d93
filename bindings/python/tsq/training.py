"""Training a Net (include/tsq/nn.h): optimisers, learning-rate
schedules, train steps (plain and distilled), evaluation, and the
standalone softmax cross-entropy. Net takes these methods from _Training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple, TypeVar, Union

if TYPE_CHECKING:                                   # names used in annotations only
    from .context import Context  # noqa: F401

import collections
import ctypes

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike  # noqa: F401
from ._call import Call
from ._lib import lib
from ._keys import lookup

# What a chaining method returns: the Net it was called on.
_Net = TypeVar("_Net", bound="_Training")

__all__ = ["StepResult", "EvalResult", "softmax_cross_entropy"]

StepResult = collections.namedtuple("StepResult", "loss correct")
StepResult.__doc__ = """Mean cross-entropy of the batch and the number of
argmax hits (before the update for train_step)."""

EvalResult = collections.namedtuple("EvalResult", "loss correct predictions")
EvalResult.__doc__ = """evaluate(): mean loss and hits (None without labels)
and the argmax prediction of every sample (int32 array, or None)."""

_SCHEDULES = {"constant": _ffi.TSQ_LR_CONSTANT, "step": _ffi.TSQ_LR_STEP,
              "cosine": _ffi.TSQ_LR_COSINE}


def softmax_cross_entropy(ctx: Context, logits: ArrayLike, labels: ArrayLike,
                          grad: Union[bool, ArrayLike] = False) -> Tuple[float, int, Any]:
    """Mean softmax cross-entropy of logits (N, K) against labels
    (tsq_nn_softmax_cross_entropy; also tsq.softmax_cross_entropy): returns
    (loss, correct, dlogits), dlogits (N, K) only with grad=True (or an
    output array given as grad), else None."""
    loss, correct = ctypes.c_double(), ctypes.c_int64()
    lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
    with Call(ctx, like=logits) as c:
        lt = c.input(logits, B.F32, "logits")
        dt, dr = None, None
        if grad is not False and grad is not None:
            dt, dr = c.output(None if grad is True else grad, B.F32, lt.shape)
        ctx._check(lib.tsq_nn_softmax_cross_entropy(ctx.handle, lt, lab, n, ctypes.byref(loss),
                                                 ctypes.byref(correct), dt),
                   "tsq_nn_softmax_cross_entropy")
    return loss.value, correct.value, dr


class _Training(object):
    """Net's training methods (mixed into Net)."""

    def loss_backward(self, labels: ArrayLike) -> StepResult:
        """After a forward: mean cross-entropy against labels, back-propagated
        into the gradients without an update. Returns StepResult."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
        self._call("tsq_net_loss_backward", lab, n, ctypes.byref(loss), ctypes.byref(correct))
        return StepResult(loss.value, correct.value)

    def set_optimizer_sgd(self: _Net, lr: float, momentum: float = 0.0, nesterov: bool = False,
                          weight_decay: float = 0.0) -> _Net:
        """SGD with momentum, optional Nesterov and L2 weight decay."""
        self._call("tsq_net_set_optimizer_sgd", B.real_arg(lr, "lr"),
                   B.real_arg(momentum, "momentum"), 1 if nesterov else 0,
                   B.real_arg(weight_decay, "weight_decay"))
        return self

    def set_optimizer_adam(self: _Net, lr: float = 0.001, beta1: float = 0.9,
                           beta2: float = 0.999, eps: float = 1e-08,
                           weight_decay: float = 0.0) -> _Net:
        """Adam with bias correction and L2 weight decay."""
        self._call("tsq_net_set_optimizer_adam", B.real_arg(lr, "lr"), B.real_arg(beta1, "beta1"),
                   B.real_arg(beta2, "beta2"),
                   B.real_arg(eps, "eps"), B.real_arg(weight_decay, "weight_decay"))
        return self

    def set_lr_schedule(self: _Net, kind: Union[str, int], steps: int = 1,
                        param: float = 1.0) -> _Net:
        """"constant", "step" (steps = step size, param = gamma) or
        "cosine" (steps = T, param = final lr), over optimiser steps."""
        self._call("tsq_net_set_lr_schedule", lookup(_SCHEDULES, kind, "schedule"),
                   B.int_arg(steps, "steps"), B.real_arg(param, "param"))
        return self

    @property
    def lr(self):
        """The learning rate of the next update."""
        v = ctypes.c_double()
        self._call("tsq_net_get_lr", ctypes.byref(v))
        return v.value

    @property
    def step_count(self):
        """The optimiser's update counter (settable, to resume)."""
        v = ctypes.c_int64()
        self._call("tsq_net_step_count", ctypes.byref(v))
        return v.value

    @step_count.setter
    def step_count(self, steps):
        self._call("tsq_net_set_step_count", B.int_arg(steps, "steps"))

    def update(self: _Net) -> _Net:
        """One optimiser update from the current gradients."""
        self._call("tsq_net_update")
        return self

    def train_step(self, x: ArrayLike, labels: ArrayLike) -> StepResult:
        """Forward (train mode), cross-entropy, backward and one update on
        one batch. Returns StepResult(loss, correct)."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            self._call("tsq_net_train_step", xt, lab, n, ctypes.byref(loss),
                       ctypes.byref(correct))
            self._last_x_shape = xt.shape
        return StepResult(loss.value, correct.value)

    def set_distillation(self: _Net, temperature: float, weight: float) -> _Net:
        """Soft targets for train_step_distill: temperature T and weight w."""
        self._call("tsq_net_set_distillation", B.real_arg(temperature, "temperature"),
                   B.real_arg(weight, "weight"))
        return self

    def train_step_distill(self, x: ArrayLike, labels: ArrayLike,
                           teacher_logits: ArrayLike) -> StepResult:
        """train_step with (1 - w) CE + w T^2 KL against a teacher's logits
        (N x classes, e.g. another net's forward in eval mode)."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            tt = c.input(teacher_logits, B.F32, "teacher_logits")
            self._call("tsq_net_train_step_distill", xt, lab, n, tt, ctypes.byref(loss),
                       ctypes.byref(correct))
            self._last_x_shape = xt.shape
        return StepResult(loss.value, correct.value)

    def evaluate(self, x: ArrayLike, labels: Optional[ArrayLike] = None,
                 predictions: bool = True) -> EvalResult:
        """Forward in eval mode: EvalResult(loss, correct, predictions);
        loss and correct need labels, predictions (int32 argmax per sample)
        can be skipped with predictions=False."""
        loss, correct = ctypes.c_double(), ctypes.c_int64()
        with Call(self._ctx) as c:
            xt = c.input(x, B.F32, "x")
            n_batch = xt.shape[0]
            preds = B.new_array("i", (n_batch,)) if predictions else None
            if labels is None:
                lab, n, lp, cp = None, 0, None, None
            else:
                lab, n, _keep = B.typed_array(ctypes.c_int32, labels, name="labels")
                lp, cp = ctypes.byref(loss), ctypes.byref(correct)
            self._call("tsq_net_evaluate", xt, lab, n, lp, cp,
                       B.array_pointer(preds, ctypes.c_int32) if preds is not None else None)
            self._last_x_shape = xt.shape
        if labels is None:
            return EvalResult(None, None, preds)
        return EvalResult(loss.value, correct.value, preds)
