"""tsq.torch's modules: ActQuant (step 1's quantizer, straight-through
backward), LowbitLinear / LowbitConv2d (step 2's result, fine-tunable) and
InputSpec. Their whole state is torch parameters and buffers."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..context import Context
from ..quantizer import Quantizer


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
