"""tsq.torch: Two-Step Quantization of a PyTorch model in four calls.

    import tsq.torch as tt
    model = tt.prepare(model, calib)          # quantizers fitted, ReLUs swapped (step 1 starts)
    ... train model with your own loop ...    # step 1: code learning
    model = tt.convert(model, calib)          # step 2 in libtsq, layer by layer
    ... fine-tune model if you like ...
    net = tt.to_tsq(model)                    # a tsq.Net: tsq.Plan(ctx, net), net.save_file()

``calibration`` is any re-iterable source of input batches: a list of
tensors, or a DataLoader (``(input, target)`` pairs are accepted; the input
is taken). Every pass must give the same batches (a DataLoader with
``shuffle=False``); a one-shot iterator is read once into a list.

The modules made here keep their state (eps, delta, bits, codes mode, the
low-bit weights) in torch parameters and buffers only: ``state_dict``,
``torch.save``, ``copy.deepcopy``, pickling and DistributedDataParallel work,
and nothing is kept in the process between calls (each call makes its own
tsq.Context unless one is given). The method: docs/method.md §2 (step 1)
and §3 (step 2); the user guide: docs/python.md.

torch is imported by this module only: ``import tsq`` does not need it.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from . import nn as _tnn
from .context import Context
from .quantizer import Quantizer
from .regressor import Regressor, im2col_output_rows, im2col_rows

__all__ = ["ActQuant", "InputSpec", "LowbitLinear", "LowbitConv2d", "prepare", "convert", "to_tsq",
           "from_tsq", "quant_modules", "lowbit_modules"]

log = logging.getLogger("tsq.torch")

Calibration = Iterable[Any]


# ---------------------------------------------------------------------------
# Progress display: tqdm where installed, plain lines otherwise
# ---------------------------------------------------------------------------

class _Progress(object):
    """One bar (tqdm) or one line per step on stderr; INFO lines on the
    "tsq.torch" logger either way."""

    def __init__(self, desc: str, total: Optional[int], enabled: Optional[bool]):
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.desc, self.total, self.n, self.t0 = desc, total, 0, time.time()
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm           # optional
                self.bar = tqdm(total=total, desc=desc, leave=False)
            except ImportError:
                self.bar = None

    def step(self, note: str = "") -> None:
        self.n += 1
        of = "/%d" % self.total if self.total else ""
        log.info("%s: %d%s %s", self.desc, self.n, of, note)
        if self.bar is not None:
            self.bar.set_postfix_str(note)
            self.bar.update(1)
        elif self.enabled:
            sys.stderr.write("%s: %d%s %s (%.1fs)\n" % (self.desc, self.n, of, note,
                                                        time.time() - self.t0))
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------
# Calibration data
# ---------------------------------------------------------------------------

def _reiterable(calibration: Calibration) -> Sequence[Any]:
    """The calibration source as something that can be read pass after pass."""
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        raise TypeError("calibration must be an iterable of batches (a list of tensors or a "
                        "DataLoader), not a single %s: wrap it as [x]"
                        % type(calibration).__name__)
    if iter(calibration) is calibration:     # a generator or iterator: read once
        return list(calibration)
    return calibration


def _batches(calibration: Sequence[Any]) -> Iterator[torch.Tensor]:
    for i, item in enumerate(calibration):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError("calibration batch %d is a %s: give torch tensors, or (input, "
                            "target) pairs of them" % (i, type(x).__name__))
        if not x.is_floating_point():
            raise TypeError("calibration batch %d has dtype %s: inputs must be floating point"
                            % (i, x.dtype))
        yield x


def _first_batch(calibration: Sequence[Any]) -> torch.Tensor:
    for x in _batches(calibration):
        return x
    raise ValueError("calibration is empty: give at least one batch")


def _context(ctx: Optional[Context]) -> Tuple[Context, bool]:
    """The caller's context, or a new one (threads as torch, messages to
    the "tsq" logger at its level); the flag says whether to close it."""
    if ctx is not None:
        return ctx, False
    return Context(threads=max(1, min(torch.get_num_threads(), 256)),
                   log=logging.getLogger("tsq")), True


# ---------------------------------------------------------------------------
# Step 1: the sparse activation quantizer as a torch module
# ---------------------------------------------------------------------------

def _codes(x: torch.Tensor, eps: torch.Tensor, delta: torch.Tensor, top: int) -> torch.Tensor:
    """k(x) as libtsq computes it (docs/method.md §2.1), in x's dtype:
    0 where x <= eps, else clamp(floor(x * (1/delta) + 1/2), 1, top), with
    1/delta rounded to float32 as the library does."""
    inv = torch.ones_like(delta) / delta
    k = torch.mul(x, inv).add_(0.5).floor_().clamp_(1, top)     # in place: one temporary
    return k.masked_fill_(~(x > eps), 0)                         # NaN -> 0, as x <= eps


class _SparseQuantSTE(torch.autograd.Function):
    """Forward: k(x) (codes mode) or k(x) * delta; backward: the
    straight-through estimator (docs/method.md §2.2): dy where
    0 < x < top * delta, else 0, divided by delta in codes mode."""

    @staticmethod
    def forward(ctx, x, eps, delta, top, codes):     # type: ignore[override]
        k = _codes(x, eps, delta, top)
        ctx.save_for_backward(x, delta)
        ctx.top, ctx.codes = top, codes
        return k if codes else k.mul_(delta)

    @staticmethod
    def backward(ctx, grad):                          # type: ignore[override]
        x, delta = ctx.saved_tensors
        dx = grad.masked_fill(~((x > 0) & (x < ctx.top * delta)), 0)
        if ctx.codes:
            dx.div_(delta)
        return dx, None, None, None, None


class ActQuant(nn.Module):
    """TSQ's sparse activation quantizer in place of a ReLU (step 1).

    Buffers (in ``state_dict``): ``eps`` and ``delta`` (float32, one value
    for the tensor or one per channel of dimension 1), ``bits`` (int64) and
    ``codes`` (int64 0 or 1, not bool, which gloo cannot broadcast: output the integer codes k,
               as a low-bit layer after it
    consumes them, instead of the values k * delta). Forward and the
    straight-through backward run in torch (any device), with libtsq's exact
    float operations: ``tsq.Quantizer.encode`` gives the same codes.
    """

    eps: torch.Tensor
    delta: torch.Tensor
    bits: torch.Tensor
    codes: torch.Tensor

    def __init__(self, eps: Union[float, Sequence[float]] = 0.0,
                 delta: Union[float, Sequence[float]] = 1.0, bits: int = 2,
                 codes: bool = False):
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError("bits must be an int in 1..8, got %r" % (bits,))
        e = torch.as_tensor(eps, dtype=torch.float32).reshape(-1)
        d = torch.as_tensor(delta, dtype=torch.float32).reshape(-1)
        if e.shape != d.shape:
            raise ValueError("eps and delta must have the same length")
        if not bool(torch.isfinite(e).all() and torch.isfinite(d).all()) or \
                bool((d <= 0).any()) or bool((e < 0).any()):
            raise ValueError("eps must be >= 0 and delta > 0, both finite")
        self.register_buffer("eps", e)
        self.register_buffer("delta", d)
        self.register_buffer("bits", torch.tensor(bits, dtype=torch.int64))
        self.register_buffer("codes", torch.tensor(int(bool(codes)), dtype=torch.int64))

    @classmethod
    def from_quantizer(cls, q: Quantizer, codes: bool = False) -> "ActQuant":
        """The module with a fitted tsq.Quantizer's parameters."""
        pairs = q.parameters()
        return cls([p[0] for p in pairs], [p[1] for p in pairs], q.bits, codes)

    def to_quantizer(self, ctx: Context) -> Quantizer:
        """A tsq.Quantizer with this module's (bits, eps, delta)."""
        n = self.eps.numel()
        q = Quantizer(ctx, bits=int(self.bits), channels=0 if n == 1 else n)
        for c in range(n):
            q.set_channel(c, float(self.eps[c]), float(self.delta[c]))
        return q

    @property
    def top(self) -> int:
        """The largest code, 2^bits - 1."""
        return (1 << int(self.bits)) - 1

    def _shaped(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if t.numel() == 1:
            return t.reshape(())
        return t.reshape((1, -1) + (1,) * (x.dim() - 2))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes k(x) (float tensor of integers, x's shape), whatever
        the codes mode; no gradient."""
        with torch.no_grad():
            return _codes(x, self._shaped(self.eps, x).to(x.dtype),
                          self._shaped(self.delta, x).to(x.dtype), self.top)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self._shaped(self.eps, x).to(x.dtype)
        delta = self._shaped(self.delta, x).to(x.dtype)
        return _SparseQuantSTE.apply(x, eps, delta, self.top, bool(self.codes))

    def extra_repr(self) -> str:
        vals = lambda t: ("%.4g" % float(t[0])) if t.numel() == 1 else \
            "[%d channels]" % t.numel()
        return "bits=%d, eps=%s, delta=%s, codes=%s" % (int(self.bits), vals(self.eps),
                                                         vals(self.delta), bool(self.codes))


# ---------------------------------------------------------------------------
# Step 2's result: low-bit layers that can be fine-tuned
# ---------------------------------------------------------------------------

class _ShadowRound(torch.autograd.Function):
    """w = clamp(rint(S / alpha), -m, m); backward dS = dw / alpha where
    |S / alpha| <= m + 1/2 (docs/method.md §4), as libtsq's low-bit layer."""

    @staticmethod
    def forward(ctx, S, alpha, m):                   # type: ignore[override]
        r = S / alpha
        ctx.save_for_backward(r, alpha)
        ctx.m = m
        return torch.clamp(torch.round(r), -m, m)

    @staticmethod
    def backward(ctx, grad):                          # type: ignore[override]
        r, alpha = ctx.saved_tensors
        return grad * (r.abs() <= ctx.m + 0.5).to(grad.dtype) / alpha, None, None


class _Lowbit(nn.Module):
    """y = alpha_c * (x . w_c) + b_c with integer codes w in -m..m
    (m = 2^(weight_bits-1) - 1; ternary for weight_bits 2) and x the input
    codes. Parameters: ``shadow`` (full-precision weights S, shape of the
    weight; w = rint(S / alpha)), ``alpha`` (> 0; not trained unless
    train_alpha, docs/nn.md "Fine-tuning low-bit layers"), ``bias``."""

    weight_bits: torch.Tensor

    def _init(self, shape: Tuple[int, ...], weight_bits: int, train_alpha: bool) -> None:
        if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or \
                not 2 <= weight_bits <= 8:
            raise ValueError("weight_bits must be an int in 2..8, got %r" % (weight_bits,))
        self.shadow = nn.Parameter(torch.zeros(shape))
        self.alpha = nn.Parameter(torch.ones(shape[0]), requires_grad=train_alpha)
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.register_buffer("weight_bits", torch.tensor(weight_bits, dtype=torch.int64))

    @property
    def m(self) -> int:
        return (1 << (int(self.weight_bits) - 1)) - 1

    def set(self, codes: torch.Tensor, alpha: torch.Tensor,
            bias: Optional[torch.Tensor] = None) -> "_Lowbit":
        """Sets the codes (exactly the weight's shape: (out, in) or
        (cout, cin, kh, kw); integer values in -m..m), alpha (out, > 0) and
        bias (out, or None for 0); the shadow weights become alpha * codes."""
        codes = torch.as_tensor(codes)
        if tuple(codes.shape) != tuple(self.shadow.shape):
            raise ValueError("codes must have shape %s (the weight's, outputs first), got %s"
                             % (tuple(self.shadow.shape), tuple(codes.shape)))
        if codes.is_floating_point() and not bool((codes == codes.round()).all()):
            raise ValueError("codes must be integers")
        if bool((codes.abs() > self.m).any()):
            raise ValueError("codes must lie in -%d..%d" % (self.m, self.m))
        alpha = torch.as_tensor(alpha, dtype=torch.float32).reshape(-1)
        if alpha.numel() != self.shadow.shape[0] or not bool((alpha > 0).all()):
            raise ValueError("alpha must hold %d values > 0" % self.shadow.shape[0])
        with torch.no_grad():
            self.alpha.copy_(alpha)
            self.shadow.copy_(codes.to(torch.float32) * self._col(alpha, self.shadow))
            self.bias.copy_(torch.zeros(self.shadow.shape[0]) if bias is None
                            else torch.as_tensor(bias, dtype=torch.float32).reshape(-1))
        return self

    @staticmethod
    def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.reshape((-1,) + (1,) * (like.dim() - 1))

    def weight_codes(self) -> torch.Tensor:
        """The integer codes w the forward uses (float tensor, weight shape)."""
        with torch.no_grad():
            return torch.clamp(torch.round(self.shadow / self._col(self.alpha, self.shadow)),
                               -self.m, self.m)

    def _weights(self) -> torch.Tensor:
        with torch.no_grad():
            self.alpha.clamp_(min=1e-12)        # alpha stays positive, as the C layer
        return _ShadowRound.apply(self.shadow, self._col(self.alpha.detach(), self.shadow),
                                  self.m)

    def _affine(self, acc: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        return acc * self.alpha.reshape(shape) + self.bias.reshape(shape)


class LowbitLinear(_Lowbit):
    """The low-bit form of nn.Linear (see _Lowbit); weight shape (out, in)."""

    def __init__(self, in_features: int, out_features: int, weight_bits: int = 2,
                 train_alpha: bool = False):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._init((self.out_features, self.in_features), weight_bits, train_alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(F.linear(x, self._weights()))

    def extra_repr(self) -> str:
        return "in=%d, out=%d, weight_bits=%d" % (self.in_features, self.out_features,
                                                   int(self.weight_bits))


class LowbitConv2d(_Lowbit):
    """The low-bit form of nn.Conv2d (square stride and zero padding, no
    groups or dilation); weight shape (cout, cin, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int],
                 stride: int = 1, padding: int = 0, weight_bits: int = 2,
                 train_alpha: bool = False):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = (int(kh), int(kw))
        self.stride, self.padding = int(stride), int(padding)
        self._init((self.out_channels, self.in_channels, int(kh), int(kw)), weight_bits,
                   train_alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(F.conv2d(x, self._weights(), stride=self.stride,
                                     padding=self.padding))

    def extra_repr(self) -> str:
        return "%d, %d, kernel_size=%s, stride=%d, padding=%d, weight_bits=%d" % (
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            int(self.weight_bits))


def quant_modules(model: nn.Module) -> List[Tuple[str, ActQuant]]:
    """(name, module) of every ActQuant in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActQuant)]


def lowbit_modules(model: nn.Module) -> List[Tuple[str, _Lowbit]]:
    """(name, module) of every low-bit layer in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _Lowbit)]


# ---------------------------------------------------------------------------
# Finding the patterns with torch.fx
# ---------------------------------------------------------------------------

_WEIGHT = (nn.Conv2d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
# Nodes that pass codes through unchanged (a max of codes is a code).
_TRANSPARENT_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_TRANSPARENT_FUNCTIONS = (torch.flatten, F.max_pool2d, F.dropout, torch.reshape)
_TRANSPARENT_METHODS = ("view", "reshape", "flatten", "contiguous")


def _trace(model: nn.Module, who: str) -> fx.GraphModule:
    if isinstance(model, nn.parallel.DistributedDataParallel) or \
            isinstance(model, nn.DataParallel):
        raise TypeError("%s: give the module itself (model.module), not its %s wrapper"
                        % (who, type(model).__name__))
    if not isinstance(model, nn.Module):
        raise TypeError("%s: model must be a torch.nn.Module, not %s"
                        % (who, type(model).__name__))
    if isinstance(model, fx.GraphModule):
        return copy.deepcopy(model)
    try:
        return fx.symbolic_trace(copy.deepcopy(model))
    except Exception as e:
        raise TypeError("%s: torch.fx cannot trace %s (%s: %s). Make its forward traceable "
                        "(no data-dependent control flow), or quantize the traceable "
                        "submodule, e.g. model.features" % (who, type(model).__name__,
                                                            type(e).__name__, e)) from e


def _module(gm: fx.GraphModule, node: Any) -> Optional[nn.Module]:
    if isinstance(node, fx.Node) and node.op == "call_module":
        return gm.get_submodule(node.target)
    return None


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu)
    return node.op == "call_method" and node.target == "relu"


def _patterns(gm: fx.GraphModule) -> List[Tuple[fx.Node, fx.Node, fx.Node]]:
    """(weight node, batch-norm node, activation node) of every
    Conv2d/Linear -> BatchNorm -> ReLU chain whose inner links have one user."""
    found = []
    for node in gm.graph.nodes:
        if node.op in ("call_module", "call_function", "call_method") and \
                (_is_relu(gm, node) or isinstance(_module(gm, node), ActQuant)):
            bn = node.args[0] if node.args else None
            if isinstance(_module(gm, bn), _BN) and len(bn.users) == 1:
                w = bn.args[0]
                if isinstance(_module(gm, w), _WEIGHT) and len(w.users) == 1:
                    found.append((w, bn, node))
    return found


class InputSpec(nn.Module):
    """Identity; its buffer ``sample_shape`` records the shape of one
    calibration sample, so that to_tsq knows the net's input shape (a
    module in the graph survives deepcopy and state_dict)."""

    sample_shape: torch.Tensor

    def __init__(self, sample_shape: Sequence[int] = ()):
        super().__init__()
        self.register_buffer("sample_shape", torch.tensor(tuple(sample_shape),
                                                          dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return "sample_shape=%s" % (tuple(int(v) for v in self.sample_shape),)


def _add_input_spec(gm: fx.GraphModule, first: torch.Tensor) -> None:
    if any(isinstance(m, InputSpec) for m in gm.modules()):
        return
    gm.add_submodule("tsq_input", InputSpec(first.shape[1:]))
    ph = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(ph):
        spec = gm.graph.call_module("tsq_input", (ph,))
    ph.replace_all_uses_with(spec)
    spec.args = (ph,)


# ---------------------------------------------------------------------------
# prepare: fit the quantizers, swap the ReLUs
# ---------------------------------------------------------------------------

def prepare(model: nn.Module, calibration: Calibration, bits: int = 2,
            eps_mode: str = "joint", per_channel: bool = False,
            ctx: Optional[Context] = None, progress: Optional[bool] = None) -> fx.GraphModule:
    """Step 1's set-up on any traceable nn.Module (Sequential or not).

    Finds every Conv2d/Linear -> BatchNorm -> ReLU chain (ReLU as a module,
    F.relu or torch.relu), fits a libtsq quantizer (``bits``-bit codes,
    ``eps_mode`` "joint", "sparsity", "plain" or "fixed") on the batch-norm
    outputs over the calibration batches (model in eval mode), and returns a
    copy of the model (a torch.fx.GraphModule with the same parameter names)
    whose ReLUs of those chains are ActQuant modules. Train it with your own
    loop: that is step 1. The model itself is not changed.

    Raises TypeError naming the model when torch.fx cannot trace it, and
    ValueError when it has no such chain."""
    calibration = _reiterable(calibration)
    gm = _trace(model, "tsq.torch.prepare")
    found = _patterns(gm)
    if not found:
        raise ValueError("tsq.torch.prepare: %s has no Conv2d/Linear -> BatchNorm -> ReLU "
                         "chain to quantize" % type(model).__name__)
    ctx, own = _context(ctx)
    quantizers: Dict[str, Quantizer] = {}
    hooks = []
    try:
        for w, bn, act in found:
            mod = gm.get_submodule(bn.target)
            if sum(1 for n in gm.graph.nodes if n.op == "call_module" and
                   n.target == bn.target) != 1:
                raise TypeError("tsq.torch.prepare: batch-norm %r is called more than once; "
                                "give each call its own module" % bn.target)
            q = Quantizer(ctx, bits=bits, channels=mod.num_features if per_channel else 0,
                          eps_mode=eps_mode)
            quantizers[bn.target] = q

            def hook(module, inputs, output, q=q):
                q.observe(output.detach().to("cpu", torch.float32).contiguous().numpy())
            hooks.append(mod.register_forward_hook(hook))
        was_training = gm.training
        gm.eval()
        bar = _Progress("tsq prepare: calibration batches", _len(calibration), progress)
        first = None
        with torch.no_grad():
            for x in _batches(calibration):
                first = x if first is None else first
                gm(x)
                bar.step()
        bar.close()
        if first is None:
            raise ValueError("tsq.torch.prepare: calibration is empty")
        for h in hooks:
            h.remove()
        hooks = []
        for i, (w, bn, act) in enumerate(found):
            q = quantizers[bn.target]
            q.fit()
            name = "tsq_act_" + str(w.target).replace(".", "_")
            gm.add_submodule(name, ActQuant.from_quantizer(q))
            act.op, act.target, act.args, act.kwargs = "call_module", name, (bn,), {}
            log.info("prepare: %s -> %s -> %s: %r", w.target, bn.target, name,
                     gm.get_submodule(name))
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
        _add_input_spec(gm, first)
        gm.train(was_training)
        return gm
    finally:
        for h in hooks:
            h.remove()
        for q in quantizers.values():
            q.close()
        if own:
            ctx.close()


def _len(obj: Any) -> Optional[int]:
    try:
        return len(obj)
    except TypeError:
        return None


# ---------------------------------------------------------------------------
# convert: step 2 in libtsq, layer by layer
# ---------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _source_quant(gm: fx.GraphModule, node: fx.Node) -> Optional[fx.Node]:
    """The ActQuant node whose output reaches `node`'s input through
    code-preserving nodes only (max-pool, flatten, view, dropout), or None."""
    cur = node.args[0] if node.args else None
    while isinstance(cur, fx.Node):
        mod = _module(gm, cur)
        if isinstance(mod, ActQuant):
            return cur
        if isinstance(mod, _TRANSPARENT_MODULES) or \
                (cur.op == "call_function" and cur.target in _TRANSPARENT_FUNCTIONS) or \
                (cur.op == "call_method" and cur.target in _TRANSPARENT_METHODS):
            cur = cur.args[0] if cur.args else None
            continue
        return None
    return None


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros" or \
            conv.stride[0] != conv.stride[1] or not isinstance(conv.padding, tuple) or \
            conv.padding[0] != conv.padding[1]:
        raise TypeError("tsq.torch: cannot convert conv %r (%r): libtsq's convolutions have "
                        "groups=1, dilation=1, zero padding and one stride and padding for "
                        "both directions" % (name, conv))


def _run_until(model: nn.Module, module: nn.Module, x: torch.Tensor, output: bool) -> torch.Tensor:
    """The input (output=False) or output of `module` when model runs on x;
    the forward stops there."""
    got: List[torch.Tensor] = []

    def pre(mod, inputs):
        got.append(inputs[0])
        raise _Stop()

    def post(mod, inputs, out):
        got.append(out)
        raise _Stop()
    h = module.register_forward_hook(post) if output else module.register_forward_pre_hook(pre)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    if not got:
        raise RuntimeError("tsq.torch.convert: the forward did not reach %r" % module)
    return got[0].detach()


def _folded_init(wmod: nn.Module, bn: nn.Module, delta_in: torch.Tensor) -> np.ndarray:
    """W_init (d x C) for the regressor: the weights with the batch-norm's
    scale folded in (docs/method.md §3.5), times the input quantizer's delta
    since the low-bit layer reads codes k where the float layer read k delta."""
    with torch.no_grad():
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        W = wmod.weight * s.reshape((-1,) + (1,) * (wmod.weight.dim() - 1))
        if delta_in.numel() == 1:
            W = W * float(delta_in)
        elif W.dim() == 2:
            # a dense layer after a flatten: input feature f is in channel
            # f // (H W) of the per-channel quantizer before it
            per = W.shape[1] // delta_in.numel()
            W = W * delta_in.repeat_interleave(per).reshape(1, -1)
        else:
            W = W * delta_in.reshape((1, -1) + (1,) * (W.dim() - 2))
        return np.ascontiguousarray(W.reshape(W.shape[0], -1).t().to(torch.float32).numpy())


def _set_module(gm: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, new)


class _Unit(object):
    def __init__(self, w, bn, qout, qin):
        self.w, self.bn, self.qout, self.qin = w, bn, qout, qin


def _units(gm: fx.GraphModule) -> List[_Unit]:
    units = []
    for w, bn, act in _patterns(gm):
        if not isinstance(_module(gm, act), ActQuant):
            continue
        qin = _source_quant(gm, w)
        if qin is None:
            log.info("convert: %s stays full precision (its input is not quantizer codes)",
                     w.target)
            continue
        units.append(_Unit(w, bn, act, qin))
    return units


def _unit_batch(ctx: Context, unit_mods: Tuple[nn.Module, ...], conv: Optional[nn.Conv2d],
                Xin: torch.Tensor, pre: Optional[torch.Tensor], positions: Optional[np.ndarray]):
    """(X, P) rows for the regressor from the layer's input codes and the
    step-1 batch-norm output (X uint8, P float32)."""
    codes = Xin.to("cpu")
    if bool(((codes != codes.round()) | (codes < 0) | (codes > 255)).any()):
        raise RuntimeError("tsq.torch.convert: the input of %r is not integer codes"
                           % (unit_mods[0],))
    u8 = codes.to(torch.uint8).contiguous().numpy()
    P = None
    if conv is not None:
        X = im2col_rows(ctx, u8, conv.kernel_size[0], conv.kernel_size[1], conv.stride[0],
                        conv.padding[0], positions=positions)
        if pre is not None:
            P = im2col_output_rows(ctx, pre.to("cpu", torch.float32).contiguous().numpy(),
                                   positions=positions)
    else:
        X = u8.reshape(u8.shape[0], -1)
        if pre is not None:
            P = pre.to("cpu", torch.float32).contiguous().numpy()
    return X, P


def convert(model: nn.Module, calibration: Calibration, weight_bits: int = 2,
            rounds: Optional[int] = None, positions: int = 64, ctx: Optional[Context] = None,
            progress: Optional[bool] = None, train_alpha: bool = False,
            report: Optional[List[Dict[str, Any]]] = None, cache_rows: bool = True,
            **regressor_options: Any) -> fx.GraphModule:
    """Step 2 on a prepared (and step-1 trained) model, layer by layer in
    libtsq: every chain Conv2d/Linear -> BatchNorm -> ActQuant whose input
    comes from another ActQuant (through max-pools, flattens, views) becomes
    a LowbitConv2d/LowbitLinear with ``weight_bits``-bit codes
    (2 = ternary), the batch-norm folded into its (alpha, b). X of each
    layer is the codes produced by the layers already converted; Y the
    step-1 codes; the regressor streams over the calibration batches, one
    pass of the calibration data per regressor pass, with ``positions``
    sampled output positions per image for a conv (0: all). ``rounds`` and
    ``regressor_options`` go to tsq.Regressor. The first and last weight
    layers stay full precision. Returns a new model; ``model`` is not
    changed. The result can be fine-tuned like any module.

    cache_rows: keep each batch's regressor rows (X as uint8 codes, Y) in
    memory after the first pass and feed them again, instead of running the
    model over the calibration data in every pass; False streams the model
    every pass, for calibration sets whose rows do not fit in memory
    (rows x d bytes per layer: positions x images x C_in kh kw for a conv).
    A DataLoader
    that shuffles is refused (ValueError): every pass must see the same rows.

    report: an optional list that receives one dict per converted layer:
    name, d (inputs per output), C (outputs), rows (per pass), passes,
    seconds, objective (the regressor's per-iterate objective, summed over
    rows and outputs), eps and delta of its output quantizer."""
    calibration = _reiterable(calibration)
    if isinstance(calibration, torch.utils.data.DataLoader) and \
            isinstance(calibration.sampler, torch.utils.data.RandomSampler):
        raise ValueError("tsq.torch.convert: the calibration DataLoader shuffles, but every "
                         "regressor pass must see the same rows: use shuffle=False")
    ref = _trace(model, "tsq.torch.convert")
    units = _units(ref)
    if not units:
        raise ValueError("tsq.torch.convert: %s has no layer to convert (a Conv2d/Linear fed "
                         "by a tsq.torch.ActQuant and followed by BatchNorm -> ActQuant); "
                         "call tsq.torch.prepare first" % type(model).__name__)
    out = copy.deepcopy(ref)
    was_training = ref.training
    ref.eval()
    out.eval()
    opts = dict(regressor_options)
    opts["weight_bits"] = weight_bits
    if rounds is not None:
        opts["rounds"] = rounds
    ctx, own = _context(ctx)
    rng = np.random.default_rng(7510)
    try:
        for ui, u in enumerate(units):
            name = str(u.w.target)
            wmod = out.get_submodule(name)
            bn = out.get_submodule(u.bn.target)
            qin = out.get_submodule(u.qin.target)
            qout = ref.get_submodule(u.qout.target)
            conv = wmod if isinstance(wmod, nn.Conv2d) else None
            if conv is not None:
                _check_conv(name, conv)
            with torch.no_grad():
                qin.codes.fill_(1)
            W0 = _folded_init(wmod, bn, qin.delta)
            d, C = W0.shape
            cache_pos: Dict[int, Optional[np.ndarray]] = {}
            cache_y: Dict[int, np.ndarray] = {}
            q = qout.to_quantizer(ctx)
            reg = Regressor(ctx, **opts)
            t0 = time.time()
            bar = _Progress("tsq convert %s (%d/%d)" % (name, ui + 1, len(units)), None,
                            progress)
            try:
                reg.set_quantizer(q)
                reg.begin(d, C, W0, with_preact=True)
                passes, done, rows = 0, False, 0
                cache_x: Dict[int, Any] = {}
                while not done:
                    rows = 0
                    if passes > 0 and cache_rows:       # the rows of the first pass again
                        for b in sorted(cache_x):
                            reg.feed(cache_x[b], cache_y[b], None)
                            rows += len(cache_y[b])
                        passes += 1
                        done = reg.end_pass()
                        hist = reg.history("objective")
                        bar.step("(passes), objective %.4g" % hist[-1] if hist else "(passes)")
                        continue
                    for b, x in enumerate(_batches(calibration)):
                        Xin = _run_until(out, wmod, x, output=False)
                        first = b not in cache_y
                        pre = _run_until(ref, ref.get_submodule(u.bn.target), x, True) \
                            if first else None
                        if first and conv is not None:
                            total = pre.shape[2] * pre.shape[3]
                            k = min(positions, total) if positions > 0 else total
                            cache_pos[b] = None if k == total else np.sort(np.concatenate(
                                [rng.choice(total, k, replace=False) for _ in
                                 range(pre.shape[0])]).reshape(pre.shape[0], k), axis=1
                            ).reshape(-1).astype(np.int64)
                        X, P = _unit_batch(ctx, (wmod,), conv, Xin, pre, cache_pos.get(b))
                        if first:
                            cache_y[b] = q.encode(P)
                        if cache_rows:
                            cache_x[b] = X
                        reg.feed(X, cache_y[b], P)
                        rows += len(cache_y[b])
                    passes += 1
                    done = reg.end_pass()
                    hist = reg.history("objective")
                    bar.step("(passes), objective %.4g" % hist[-1] if hist else "(passes)")
                fit = reg.result()
                history = reg.history("objective")
            finally:
                bar.close()
                reg.close()
                q.close()
            if conv is not None:
                low = LowbitConv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                   conv.stride[0], conv.padding[0], weight_bits, train_alpha)
            else:
                low = LowbitLinear(wmod.in_features, wmod.out_features, weight_bits,
                                   train_alpha)
            codes = torch.from_numpy(np.ascontiguousarray(fit.weights.T)).reshape(
                low.shadow.shape)
            low.set(codes, torch.from_numpy(fit.alpha), torch.from_numpy(fit.bias))
            _set_module(out, name, low)
            _set_module(out, str(u.bn.target), nn.Identity())
            seconds = time.time() - t0
            log.info("convert: %s -> %r, %d passes, objective %.4g, %.1fs", name, low, passes,
                     fit.objective, seconds)
            if report is not None:
                report.append({"name": name, "quantizer": str(u.qout.target), "d": int(d),
                               "C": int(C), "rows": rows,
                               "passes": passes, "seconds": seconds,
                               "objective": [float(h) for h in history],
                               "eps": [float(v) for v in qout.eps],
                               "delta": [float(v) for v in qout.delta]})
        out.recompile()
        out.train(was_training)
        return out
    finally:
        if own:
            ctx.close()


# ---------------------------------------------------------------------------
# to_tsq / from_tsq: libtsq networks
# ---------------------------------------------------------------------------

def _copy_param(layer: _tnn.Layer, name: str, value: torch.Tensor, state: bool = False) -> None:
    t = layer.states()[name] if state else layer.param(name).value
    arr = value.detach().to("cpu", torch.float32).contiguous().numpy()
    if tuple(t.shape) != arr.shape:
        raise ValueError("%s %s: shape %s, the torch value has %s" % (layer.kind_name, name,
                                                                        t.shape, arr.shape))
    t.copy_from(arr)


def _layer_for(ctx: Context, gm: fx.GraphModule, node: fx.Node, shape: Tuple[int, ...]):
    """The libtsq layer(s) for one graph node (a list; [] for a node that
    does nothing in eval mode), or TypeError naming it."""
    mod = _module(gm, node)
    what = "%s (%s)" % (node.target, type(mod).__name__) if mod is not None else \
        "%s %s" % (node.op, getattr(node.target, "__name__", node.target))
    if isinstance(mod, nn.Conv2d):
        _check_conv(str(node.target), mod)
        layer = _tnn.Conv2d(ctx, mod.in_channels, mod.out_channels, mod.kernel_size,
                            mod.stride[0], mod.padding[0])
        _copy_param(layer, "weight", mod.weight)
        _copy_param(layer, "bias", mod.bias if mod.bias is not None else
                    torch.zeros(mod.out_channels))
        return [layer]
    if isinstance(mod, nn.Linear):
        layer = _tnn.Dense(ctx, mod.in_features, mod.out_features)
        _copy_param(layer, "weight", mod.weight)
        _copy_param(layer, "bias", mod.bias if mod.bias is not None else
                    torch.zeros(mod.out_features))
        return [layer]
    if isinstance(mod, _BN):
        layer = _tnn.BatchNorm(ctx, mod.num_features)
        if mod.affine:
            _copy_param(layer, "gamma", mod.weight)
            _copy_param(layer, "beta", mod.bias)
        _copy_param(layer, "running_mean", mod.running_mean, state=True)
        _copy_param(layer, "running_var", mod.running_var, state=True)
        layer.set_option("bn_eps", mod.eps)
        return [layer]
    if isinstance(mod, nn.ReLU) or (mod is None and _is_relu(gm, node)):
        return [_tnn.ReLU(ctx)]
    if isinstance(mod, ActQuant):
        n = mod.eps.numel()
        layer = _tnn.ActQuant(ctx, int(mod.bits), float(mod.eps[0]), float(mod.delta[0]))
        if n > 1:
            for c in range(n):
                layer.set_channel(c, n, int(mod.bits), float(mod.eps[c]), float(mod.delta[c]))
        layer.output_codes = bool(mod.codes)
        return [layer]
    if isinstance(mod, _Lowbit):
        if isinstance(mod, LowbitConv2d):
            layer = _tnn.LowbitConv2d(ctx, mod.in_channels, mod.out_channels, mod.kernel_size,
                                      mod.stride, mod.padding, int(mod.weight_bits))
        else:
            layer = _tnn.LowbitDense(ctx, mod.in_features, mod.out_features,
                                     int(mod.weight_bits))
        layer.set(mod.weight_codes().to(torch.int8).numpy(),
                  mod.alpha.detach().to(torch.float32).numpy(),
                  mod.bias.detach().to(torch.float32).numpy())
        return [layer]
    if isinstance(mod,
                  nn.MaxPool2d) or (node.op == "call_function" and node.target is F.max_pool2d):
        if mod is not None:
            k, s, p = mod.kernel_size, mod.stride, mod.padding
            extra = mod.dilation not in (1, (1, 1)) or mod.ceil_mode
        else:
            k = node.args[1] if len(node.args) > 1 else node.kwargs.get("kernel_size")
            s = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
            p = node.kwargs.get("padding", node.args[3] if len(node.args) > 3 else 0)
            extra = False
        k = k if isinstance(k, int) else (k[0] if k[0] == k[1] else None)
        s = k if s is None or s == [] else (s if isinstance(s, int) else
                                             (s[0] if s[0] == s[1] else None))
        if k is None or s is None or p not in (0, (0, 0)) or extra:
            raise TypeError("tsq.torch.to_tsq: max-pool %s: libtsq's has a square window, "
                            "one stride and no padding" % what)
        return [_tnn.MaxPool2d(ctx, k, s)]
    if isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1)):
        return [_tnn.GlobalAvgPool(ctx)]
    if isinstance(mod, nn.Flatten) or (node.op == "call_function" and
                                       node.target is torch.flatten) or \
            (node.op == "call_method" and node.target in ("flatten", "view", "reshape")):
        return [] if len(shape) == 1 else [_tnn.Flatten(ctx)]
    if isinstance(mod, (nn.Identity, nn.Dropout, InputSpec)) or \
            (node.op == "call_function" and node.target is F.dropout) or \
            (node.op == "call_method" and node.target == "contiguous"):
        return []
    raise TypeError("tsq.torch.to_tsq: cannot map %s to a libtsq layer (supported: Conv2d, "
                    "Linear, BatchNorm1d/2d, ReLU, MaxPool2d, AdaptiveAvgPool2d(1), Flatten, "
                    "Dropout, Identity and tsq.torch's modules, in one chain)" % what)


def to_tsq(model: nn.Module, ctx: Optional[Context] = None,
           input_shape: Optional[Sequence[int]] = None) -> _tnn.Net:
    """The model as a tsq.Net (eval-mode semantics), from which tsq.Plan
    and .tsq model files follow. The model's forward must be one chain of
    supported layers (TypeError names the first one that is not).
    input_shape: one sample's shape, e.g. (1, 28, 28); prepare() records it.
    ctx: the Context that owns the net (default: a new one, kept alive by
    the net)."""
    gm = _trace(model, "tsq.torch.to_tsq")
    if input_shape is None:
        spec = next((m for m in gm.modules() if isinstance(m, InputSpec)), None)
        shape_buf = spec.sample_shape if spec is not None else None
        if shape_buf is None:
            first = next((m for m in gm.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
            if not isinstance(first, nn.Linear):
                raise ValueError("tsq.torch.to_tsq: give input_shape (one sample's shape)")
            input_shape = (first.in_features,)
        else:
            input_shape = tuple(int(v) for v in shape_buf)
    input_shape = tuple(int(v) for v in input_shape)
    if ctx is None:
        ctx = Context(threads=max(1, min(torch.get_num_threads(), 256)),
                      log=logging.getLogger("tsq"))
    net = _tnn.Net(ctx, input_shape)
    try:
        prev = None
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                if prev is not None:
                    raise TypeError("tsq.torch.to_tsq: the model takes several inputs")
                prev = node
                continue
            if node.op == "get_attr" or (node.op == "call_method" and node.target == "size") \
                    or (node.op == "call_function" and getattr(node.target, "__name__", "")
                        == "getattr"):
                continue
            if node.op == "output":
                if node.args[0] is not prev:
                    raise TypeError("tsq.torch.to_tsq: the model's output is not the end of "
                                    "its chain of layers")
                break
            if not node.args or node.args[0] is not prev or \
                    any(isinstance(a, fx.Node) and a is not prev and
                        not (a.op == "call_method" and a.target == "size")
                        for a in list(node.args[1:]) + list(node.kwargs.values())):
                raise TypeError("tsq.torch.to_tsq: %s %s does not continue a single chain of "
                                "layers (libtsq networks are sequential)"
                                % (node.op, node.target))
            for layer in _layer_for(ctx, gm, node, net.output_shape):
                net.append(layer)
            prev = node
        return net
    except BaseException:
        net.close()
        raise


def from_tsq(net: _tnn.Net) -> nn.Sequential:
    """An nn.Sequential computing what the tsq.Net computes in eval mode
    (float layers, ActQuant, LowbitLinear/LowbitConv2d), with the net's
    parameters copied."""
    mods: List[nn.Module] = []
    for layer in net.layers:
        kind = layer.kind_name
        ins, outs = layer.sample_shapes
        p = {x.name: torch.from_numpy(x.value.numpy(copy=True)) for x in layer.params()}
        if kind == "dense":
            m = nn.Linear(layer.info("in_channels"), layer.info("out_channels"))
            m.weight.data.copy_(p["weight"])
            m.bias.data.copy_(p["bias"])
        elif kind == "conv2d":
            m = nn.Conv2d(layer.info("in_channels"), layer.info("out_channels"),
                          (layer.info("kernel_h"), layer.info("kernel_w")),
                          layer.info("stride"), layer.info("pad"))
            m.weight.data.copy_(p["weight"])
            m.bias.data.copy_(p["bias"])
        elif kind == "batchnorm":
            c = layer.info("in_channels")
            m = nn.BatchNorm2d(c) if len(ins) == 3 else nn.BatchNorm1d(c)
            st = layer.states()
            m.weight.data.copy_(p["gamma"])
            m.bias.data.copy_(p["beta"])
            m.running_mean.copy_(torch.from_numpy(st["running_mean"].numpy(copy=True)))
            m.running_var.copy_(torch.from_numpy(st["running_var"].numpy(copy=True)))
            m.eps = layer.get_option("bn_eps")
        elif kind == "relu":
            m = nn.ReLU()
        elif kind == "act_quant":
            n, bits, eps, delta = layer.get_channel(0)   # channel 0: any layer has it
            if n:
                pairs = [layer.get_channel(c)[2:] for c in range(n)]
                eps, delta = [e for e, _ in pairs], [d for _, d in pairs]
            m = ActQuant(eps, delta, bits, bool(layer.output_codes))
        elif kind == "maxpool2d":
            m = nn.MaxPool2d(layer.info("kernel_h"), layer.info("stride"))
        elif kind == "global_avgpool":
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif kind == "flatten":
            m = nn.Flatten()
        elif kind in ("lowbit_dense", "lowbit_conv2d"):
            codes = torch.from_numpy(layer.states()["weight_codes"].numpy(copy=True))
            wb = layer.info("weight_bits")
            if kind == "lowbit_dense":
                m = LowbitLinear(layer.info("in_channels"), layer.info("out_channels"), wb)
            else:
                m = LowbitConv2d(layer.info("in_channels"), layer.info("out_channels"),
                                 (layer.info("kernel_h"), layer.info("kernel_w")),
                                 layer.info("stride"), layer.info("pad"), wb)
            m.set(codes, p["alpha"], p["bias"])
        else:
            raise TypeError("tsq.torch.from_tsq: no torch module for layer kind %r" % kind)
        mods.append(m)
    seq = nn.Sequential(*mods)
    seq.eval()
    return seq
