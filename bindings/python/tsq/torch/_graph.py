"""tsq.torch and torch.fx: tracing a model, finding the Conv2d/Linear ->
BatchNorm -> ReLU chains and the step-2 units, editing the graph."""

from __future__ import annotations

import copy
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._common import log
from ._modules import ActQuant, InputSpec


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


def _add_input_spec(gm: fx.GraphModule, first: torch.Tensor) -> None:
    if any(isinstance(m, InputSpec) for m in gm.modules()):
        return
    gm.add_submodule("tsq_input", InputSpec(first.shape[1:]))
    ph = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(ph):
        spec = gm.graph.call_module("tsq_input", (ph,))
    ph.replace_all_uses_with(spec)
    spec.args = (ph,)


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
