"""tsq.torch.prepare (fit the quantizers, swap the ReLUs) and
tsq.torch.convert (step 2 in libtsq, layer by layer)."""

from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import fx, nn

from ..context import Context
from ..quantizer import Quantizer
from ..regressor import Regressor
from ._common import (Calibration, _batches, _context, _len, _Progress, _reiterable, _reporting,
                      log)
from ._graph import (_add_input_spec, _check_conv, _patterns, _set_module, _trace, _units)
from ._modules import ActQuant, LowbitConv2d, LowbitLinear


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


class _Stop(Exception):
    pass


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
        X = Regressor.im2col_rows(ctx, u8, conv.kernel_size[0], conv.kernel_size[1],
                                  conv.stride[0], conv.padding[0], positions=positions)
        if pre is not None:
            P = Regressor.im2col_output_rows(ctx,
                                             pre.to("cpu", torch.float32).contiguous().numpy(),
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
                            progress, unit="passes")
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
                        with _reporting(ctx, "regressor pass", bar, show=False):
                            done = reg.end_pass()
                        hist = reg.history("objective")
                        bar.update(bar.n, bar.total, "objective %.4g" % hist[-1] if hist else "")
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
                    with _reporting(ctx, "regressor pass", bar, show=False):
                        done = reg.end_pass()
                    hist = reg.history("objective")
                    bar.update(bar.n, bar.total, "objective %.4g" % hist[-1] if hist else "")
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
