"""tsq.torch.to_tsq (a model as a tsq.Net) and tsq.torch.from_tsq (a
tsq.Net as an nn.Sequential)."""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import nn as _tnn
from ..context import Context
from ._graph import _BN, _check_conv, _is_relu, _module, _trace
from ._modules import ActQuant, InputSpec, LowbitConv2d, LowbitLinear, _Lowbit


def _copy_param(layer: _tnn.Layer, name: str, value: torch.Tensor, state: bool = False) -> None:
    t = layer.states()[name] if state else layer.param(name).value
    arr = value.detach().to("cpu", torch.float32).contiguous().numpy()
    if tuple(t.shape) != arr.shape:
        raise ValueError("%s %s: shape %s, the torch value has %s" % (layer.kind_name, name,
                                                                        t.shape, arr.shape))
    t.copy_in(arr)


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
