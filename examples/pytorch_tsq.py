#!/usr/bin/python3
"""Two-Step Quantization of a PyTorch network with libtsq (issue 8).

The Fashion-MNIST network of the C demo (examples/fmnist/fmnist.c, "fmnist-cnn")
trained in PyTorch, then quantized with libtsq through its ctypes bindings
(bindings/python/tsq):

  FP32 training -> step 1: libtsq fits 2-bit sparse activation quantizers on
  the batch-norm outputs; torch trains with them as fake quantization (the
  library computes the codes and the straight-through gradient, on the torch
  tensors' own memory) -> step 2: every hidden layer (conv2, conv3, conv4,
  fc1) is fitted by tsq_fit_transform, with X the unfolded (im2col) codes
  produced by the layers already converted (Tensor.unfold, checked against
  torch.nn.functional.unfold and tsq_im2col_rows), and replaced by its
  ternary form y = alpha * (X w) + b -> fine-tuning -> test accuracy.

Prints the C demo's table (FP32, naive PTQ, step 1, step 2, TSQ; the eps = 0
pipeline and joint training as baselines) and writes the same JSON keys.

  TSQ_LIBRARY=build/openblas/libtsq.so /usr/bin/python3 examples/pytorch_tsq.py
  ... --quick          3,000 training / 1,000 test images, epochs 2/1/1, 512
                       calibration images, 2 regressor rounds; exit 1 when
                       step 2 or TSQ is below 70%, step 2 loses more than 5
                       points against step 1, or a converted layer keeps less
                       than 80% of its step-1 codes
  ... --json FILE      fp32_acc, naive_acc, step1_acc, step2_acc, tsq_acc, eps0_acc, joint_acc

docs/embedding.md explains the pattern.
"""

import argparse
import copy
import gzip
import json
import math
import os
import platform
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "python"))
import tsq  # noqa: E402  (the bindings of this checkout; TSQ_LIBRARY picks the library)

DEBIAN_DATA = "/usr/share/datasets/fashion-mnist"
TINY_DATA = os.path.join(HERE, "..", "tests", "data", "fmnist-tiny")
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530        # as examples/fmnist/dataset.c
PAD_VALUE = (0.0 - PIXEL_MEAN) / PIXEL_STD    # a black pixel, normalised
BATCH, EVAL_BATCH, CALIB_BATCH = 128, 1000, 256

# ---------------------------------------------------------------------------
# The network: fmnist-cnn, as a Sequential whose positions are fixed
# ---------------------------------------------------------------------------

ACTS = (2, 5, 9, 12, 17)          # the hidden ReLUs: each becomes a quantizer
# Step-2 units: (weight layer, its batch-norm, the quantizer after it, the
# quantizer feeding it). The first conv and the last fc stay full precision.
UNITS = ((3, 4, 5, 2), (7, 8, 9, 5), (10, 11, 12, 9), (15, 16, 17, 12))
UNIT_NAMES = {3: "conv2", 7: "conv3", 10: "conv4", 15: "fc1"}


def build_net():
    """conv3x3-32,BN,ReLU -> conv3x3-32,BN,ReLU -> maxpool2 -> conv3x3-64,BN,ReLU
    -> conv3x3-64,BN,ReLU -> maxpool2 -> fc-256,BN,ReLU -> fc-10 (padding 1)."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2),
                         *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 256), nn.BatchNorm1d(256), nn.ReLU(),
                         nn.Linear(256, 10))


def run_prefix(net, x, stop):
    """The output of net[0:stop] on x (the input of layer `stop`)."""
    for i in range(stop):
        x = net[i](x)
    return x


# ---------------------------------------------------------------------------
# Step 1: the library's sparse quantizer as torch fake quantization
# ---------------------------------------------------------------------------

class _SparseQuant(torch.autograd.Function):
    """Forward: the library's codes k(x) (tsq_quantizer_encode) or values
    k(x) * delta (tsq_quantizer_forward), computed on the torch tensor's own
    memory (CPU, float32, contiguous: .numpy() is a view, no copy).
    Backward: the library's straight-through estimator
    (tsq_quantizer_backward): dy where 0 < x < (2^n - 1) delta, else 0;
    divided by delta in codes mode, where y ~ x / delta (as the C layer)."""

    @staticmethod
    def forward(ctx, x, aq):
        x = x.detach().contiguous()
        if aq.codes:
            k = torch.empty(x.shape, dtype=torch.uint8)
            aq.q.encode(x.numpy(), out=k.numpy())
            y = k.to(torch.float32)
        else:
            y = torch.empty_like(x)
            aq.q.forward(x.numpy(), out=y.numpy())
        ctx.save_for_backward(x)
        ctx.aq = aq
        return y

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad = grad.contiguous()
        dx = torch.empty_like(x)
        ctx.aq.q.backward(x.numpy(), grad.numpy(), out=dx.numpy())
        if ctx.aq.codes:
            dx.div_(ctx.aq.delta)
        return dx, None


class ActQuant(nn.Module):
    """A fitted tsq.Quantizer in place of a ReLU. codes=True outputs the
    integer codes (what a low-bit layer consumes), else the values."""

    def __init__(self, q, codes=False):
        super().__init__()
        self.q = q
        self.eps, self.delta = q.get_channel(0)
        self.bits = q.bits
        self.codes = codes

    def forward(self, x):
        return _SparseQuant.apply(x, self)

    def __deepcopy__(self, memo):
        # The fitted quantizer is never changed after its fit: copies share it.
        twin = ActQuant(self.q, self.codes)
        twin.training = self.training
        return twin

    def extra_repr(self):
        return "bits=%d, eps=%.4f, delta=%.4f, codes=%s" % (self.bits, self.eps, self.delta,
                                                            self.codes)


def torch_codes(x, eps, delta, bits):
    """TSQ.md's Q in torch, with libtsq's exact float operations
    (libtsq/quant/quant_internal.h): 0 if x <= eps, else
    clamp(floor(x * (1/delta) + 0.5), 1, 2^bits - 1), 1/delta rounded to float.
    Only used to check that it equals the library (check_formula)."""
    inv = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(delta, dtype=torch.float32)
    k = torch.floor(x * inv + 0.5).clamp(1, 2 ** bits - 1)
    return torch.where(x > eps, k, torch.zeros_like(k))


def fit_quantizers(ctx, net, calib, eps_mode, bits):
    """libtsq's step-1 fit: one tsq.Quantizer per hidden ReLU, observing the
    batch-norm output entering it over the calibration set (the FP network
    in eval mode), fitted in `eps_mode`. Returns a copy of net with the
    quantizers in place of the ReLUs."""
    qs = {i: tsq.Quantizer(ctx, bits=bits, eps_mode=eps_mode) for i in ACTS}
    net.eval()
    with torch.no_grad():
        for start in range(0, len(calib), CALIB_BATCH):
            x = calib[start:start + CALIB_BATCH]
            for i, layer in enumerate(net):
                if i in qs:
                    qs[i].observe(x.contiguous().numpy())   # zero-copy view
                x = layer(x)
    out = copy.deepcopy(net)
    for i, q in qs.items():
        q.fit()
        out[i] = ActQuant(q)
    return out


# ---------------------------------------------------------------------------
# Step 2: fit_transform per layer, and the low-bit layers in torch
# ---------------------------------------------------------------------------

class _ShadowRound(torch.autograd.Function):
    """w = clamp(rint(S / alpha), -m, m) from full-precision shadow weights S;
    backward: dS = dw / alpha where |S / alpha| <= m + 1/2, so that dS is
    x^T dy as in libtsq/nn/lowbit_layer.c (alpha gets its own gradient
    through the explicit product in LowbitLayer.forward)."""

    @staticmethod
    def forward(ctx, S, alpha, m):
        r = S / alpha
        ctx.save_for_backward(r, alpha)
        ctx.m = m
        return torch.clamp(torch.round(r), -m, m)

    @staticmethod
    def backward(ctx, grad):
        r, alpha = ctx.saved_tensors
        return grad * (r.abs() <= ctx.m + 0.5).to(grad.dtype) / alpha, None, None


class LowbitLayer(nn.Module):
    """What step 2 produces: y = alpha (.) (x w) + b, x the integer input codes,
    w in {-m .. m} (ternary: m = 1). A conv (padding 1) or a dense layer."""

    def __init__(self, codes, alpha, bias, weight_bits, conv_shape=None):
        super().__init__()
        C = codes.shape[0]
        shape = (C,) + tuple(conv_shape) if conv_shape else tuple(codes.shape)
        w = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32)).reshape(shape)
        a = torch.from_numpy(np.array(alpha, dtype=np.float32))
        self.conv = conv_shape is not None
        self.m = 2 ** (weight_bits - 1) - 1
        self.shadow = nn.Parameter(w * a.view((-1,) + (1,) * (w.dim() - 1)))
        self.alpha = nn.Parameter(a)
        self.bias = nn.Parameter(torch.from_numpy(np.array(bias, dtype=np.float32)))

    def weight_codes(self):
        """The current codes w (C x ...), as the forward uses them."""
        with torch.no_grad():
            view = (-1,) + (1,) * (self.shadow.dim() - 1)
            return torch.clamp(torch.round(self.shadow / self.alpha.view(view)), -self.m, self.m)

    def forward(self, x):
        with torch.no_grad():
            self.alpha.clamp_(min=1e-12)          # alpha stays positive (as the C layer)
        view = (-1,) + (1,) * (self.shadow.dim() - 1)
        w = _ShadowRound.apply(self.shadow, self.alpha.detach().view(view), self.m)
        acc = F.conv2d(x, w, padding=1) if self.conv else F.linear(x, w)
        shape = (1, -1, 1, 1) if self.conv else (1, -1)
        return acc * self.alpha.view(shape) + self.bias.view(shape)


def folded_weights(conv, bn, delta_in):
    """W_init (d x C) for the regressor: the layer's weights with its batch-norm
    folded in (s = gamma / sqrt(var + eps)), times the input quantizer's delta
    since the low-bit layer sees codes k where the step-1 layer saw k delta."""
    with torch.no_grad():
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        W = conv.weight * s.view((-1,) + (1,) * (conv.weight.dim() - 1)) * delta_in
        return np.ascontiguousarray(W.reshape(W.shape[0], -1).t().numpy(), dtype=np.float32)


def patches_functional(codes, positions):
    """im2col rows at the sampled positions with F.unfold: every patch is
    materialised (n x d x OH*OW), then the sampled ones are gathered."""
    n = codes.shape[0]
    cols = F.unfold(codes, kernel_size=3, padding=1)          # n x d x (OH OW)
    idx = positions.view(n, 1, -1).expand(n, cols.shape[1], positions.shape[1])
    return torch.gather(cols, 2, idx).transpose(1, 2).reshape(-1, cols.shape[1])


def patches_view(codes, positions):
    """The same rows from Tensor.unfold: a strided view of the padded input
    (n x C x OH x OW x 3 x 3, no copy), indexed at the sampled positions only.
    About 10x faster than F.unfold here (torch 1.13's im2col kernel is slow
    and materialises every position)."""
    n, width = codes.shape[0], codes.shape[3]
    view = F.pad(codes, (1, 1, 1, 1)).unfold(2, 3, 1).unfold(3, 3, 1)
    oh, ow = positions // width, positions % width
    rows = view[torch.arange(n).view(-1, 1), :, oh, ow]       # n x npos x C x 3 x 3
    return rows.reshape(-1, codes.shape[1] * 9)


def conv_rows(codes, pre, positions, unfold="view"):
    """X and P rows of a 3x3, padding-1 convolution at the sampled output
    positions (n x npos indices into OH*OW): X the im2col rows of the input
    codes, columns in the order (c_in, i, j) of the weight reshaped to C x d
    (as tsq_im2col_rows); P the pre-activation at the same positions."""
    n = codes.shape[0]
    X = (patches_functional if unfold == "functional" else patches_view)(codes, positions)
    P = pre.reshape(n, pre.shape[1], -1)[torch.arange(n).view(-1, 1), :, positions]
    return X, P.reshape(-1, pre.shape[1])


def unit_rows(ctx, net, ref, unit, calib, npos, unfold, check):
    """The regressor's data for one unit over the calibration set:
    X (uint8 codes entering the layer in the net being converted),
    P (the step-1 net's batch-norm output), Y (its step-1 codes, Q(P))."""
    wi, bi, oi, ii = unit
    conv = isinstance(ref[wi], nn.Conv2d)
    Xs, Ps = [], []
    with torch.no_grad():
        for start in range(0, len(calib), CALIB_BATCH):
            x = calib[start:start + CALIB_BATCH]
            codes = run_prefix(net, x, wi)                    # integer codes, float32
            pre = run_prefix(ref, x, bi + 1)
            if conv:
                total = pre.shape[2] * pre.shape[3]
                k = min(npos, total) if npos > 0 else total
                pos = (tsq.im2col_sample_positions(ctx, len(x), total, k) if k < total
                       else np.tile(np.arange(total), len(x)))
                positions = torch.from_numpy(np.asarray(pos, dtype=np.int64)).view(len(x), k)
                X, P = conv_rows(codes, pre, positions, unfold)
                if check and start == 0:
                    check_patches(ctx, codes[:16], positions[:16], X[:16 * k])
            else:
                X, P = codes.reshape(len(x), -1), pre
            Xs.append(X.to(torch.uint8).numpy())
            Ps.append(np.ascontiguousarray(P.numpy()))
    X, P = np.concatenate(Xs), np.concatenate(Ps)
    Y = ref[oi].q.encode(P)                                   # the step-1 codes
    return X, Y, P


def check_patches(ctx, codes, positions, X):
    """The rows used equal F.unfold's and the library's tsq_im2col_rows."""
    u8 = codes.to(torch.uint8).numpy()
    lib_rows = tsq.im2col_rows(ctx, u8, 3, 3, stride=1, pad=1,
                               positions=positions.reshape(-1).numpy())
    for name, rows in (("F.unfold", patches_functional(codes, positions)), ("rows", X)):
        if not np.array_equal(lib_rows, rows.to(torch.uint8).numpy()):
            raise SystemExit("pytorch_tsq: %s differ from tsq.im2col_rows" % name)


def convert(ctx, ref, calib, rounds, npos, label, unfold="view", check=False, log=None):
    """Step 2 on the whole network, layer by layer: returns a copy of the
    step-1 net `ref` whose hidden layers are low-bit. X of each layer comes
    from the layers converted before it (errors do not pile up)."""
    net = copy.deepcopy(ref)
    net.eval()
    ref.eval()
    agreement = []
    for unit in UNITS:
        wi, bi, oi, ii = unit
        t0 = time.time()
        net[ii].codes = True                       # the layer will read integer codes
        X, Y, P = unit_rows(ctx, net, ref, unit, calib, npos, unfold, check)
        W0 = folded_weights(ref[wi], ref[bi], ref[ii].delta)
        opts = {} if rounds is None else {"rounds": rounds}
        with tsq.Regressor(ctx, **opts) as reg:
            reg.set_quantizer(ref[oi].q)
            fit = reg.fit_transform(X, Y, W_init=W0, P=P)
            history = reg.history("objective")
            bits = reg.weight_bits
        conv_shape = tuple(ref[wi].weight.shape[1:]) if isinstance(ref[wi], nn.Conv2d) else None
        net[wi] = LowbitLayer(fit.weights.T, fit.alpha, fit.bias, bits, conv_shape)
        net[bi] = nn.Identity()                    # folded into (alpha, b)
        if not np.array_equal(net[wi].weight_codes().reshape(Y.shape[1], -1).t().numpy(),
                              fit.weights.astype(np.float32)):
            raise SystemExit("pytorch_tsq: the torch layer does not hold the fitted codes")
        per = float(len(X) * Y.shape[1])
        kept = code_agreement(net, ref, oi, calib[:CALIB_BATCH])
        agreement.append(kept)
        print("  %s %s: X %d x %d, objective per output %.4f -> %.4f (%d rounds), "
              "step-1 codes kept %.1f%%, %.1fs"
              % (label, UNIT_NAMES[wi], X.shape[0], X.shape[1], history[0] / per,
                 fit.objective / per, len(history) - 1, 100 * kept, time.time() - t0),
              flush=True)
        if log is not None:
            log.append({"name": UNIT_NAMES[wi], "rows": int(X.shape[0]), "d": int(X.shape[1]),
                        "eps": ref[oi].eps, "delta": ref[oi].delta, "code_agreement": kept,
                        "objective": [h / per for h in history]})
    net.code_agreement = agreement
    return net


def code_agreement(net, ref, oi, images):
    """The fraction of the step-1 codes at quantizer oi that the converted
    network reproduces on `images` (every position, every channel): its
    low-bit layer's output and the reference's batch-norm output, both coded
    by the same quantizer."""
    with torch.no_grad():
        q = ref[oi].q
        mine = q.encode(run_prefix(net, images, oi).contiguous().numpy())
        theirs = q.encode(run_prefix(ref, images, oi).contiguous().numpy())
    return float((mine == theirs).mean())


# ---------------------------------------------------------------------------
# Data, training and evaluation (the host's own loops)
# ---------------------------------------------------------------------------

def load_idx(path, ndim):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim:
        raise SystemExit("pytorch_tsq: %s: truncated IDX header" % path)
    magic = struct.unpack(">I", data[:4])[0]
    if magic >> 8 != 0x08 or magic & 0xFF != ndim:
        raise SystemExit("pytorch_tsq: %s: not a %d-D unsigned-byte IDX file" % (path, ndim))
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    count = int(np.prod(dims))
    if len(data) - 4 - 4 * ndim < count:
        raise SystemExit("pytorch_tsq: %s: %d bytes of data, %d expected"
                         % (path, len(data) - 4 - 4 * ndim, count))
    return np.frombuffer(data, np.uint8, count, 4 + 4 * ndim).reshape(dims)


def load_split(directory, prefix, limit):
    images = load_idx(os.path.join(directory, prefix + "-images-idx3-ubyte.gz"), 3)
    labels = load_idx(os.path.join(directory, prefix + "-labels-idx1-ubyte.gz"), 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.max() > 9:
        raise SystemExit("pytorch_tsq: %s/%s-*: expected 28x28 images with labels 0..9"
                         % (directory, prefix))
    n = min(limit, len(images)) if limit > 0 else len(images)
    x = (images[:n].astype(np.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD
    return torch.from_numpy(x).unsqueeze(1).contiguous(), torch.from_numpy(labels[:n].astype(np.int64))


def augment(x, gen):
    """Each image flipped left-right with probability 1/2 and shifted by up to
    2 pixels (the shifted-in border is black), as dataset.c does:
    out[y][x] = in[y + dy][sx], sx = x + dx, mirrored when flipped."""
    n = x.shape[0]
    flip = torch.randint(0, 2, (n,), generator=gen).bool()
    dy = torch.randint(-2, 3, (n,), generator=gen)
    dx = torch.randint(-2, 3, (n,), generator=gen)
    r = torch.arange(28)
    sy = r.view(1, -1) + dy.view(-1, 1)
    sx = r.view(1, -1) + dx.view(-1, 1)
    sx = torch.where(flip.view(-1, 1), 27 - sx, sx)
    padded = F.pad(x, (2, 2, 2, 2), value=PAD_VALUE)
    out = padded[torch.arange(n).view(-1, 1, 1), 0, (sy + 2).view(n, 28, 1), (sx + 2).view(n, 1, 28)]
    return out.unsqueeze(1)


def evaluate(net, images, labels):
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            out = net(images[start:start + EVAL_BATCH])
            correct += int((out.argmax(1) == labels[start:start + EVAL_BATCH]).sum())
    return 100.0 * correct / max(len(images), 1)


def param_groups(net, weight_decay):
    """L2 decay on the weights of conv and dense layers only (as libtsq's SGD)."""
    decay, rest = [], []
    for m in net.modules():
        for name, p in m.named_parameters(recurse=False):
            wants = (isinstance(m, (nn.Conv2d, nn.Linear)) and name == "weight") or \
                    (isinstance(m, LowbitLayer) and name == "shadow")
            if p.requires_grad:
                (decay if wants and weight_decay > 0 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def hold_alpha(net, hold):
    """Whether the low-bit layers' scales alpha stay fixed in training.
    Trained by SGD at the network's learning rate (as libtsq's low-bit layer
    does), alpha's gradient, a sum over the whole accumulator, moved it by
    30-210% within 15 steps of fine-tuning (up to 430% later) and, since the
    codes are rint(S / alpha), flipped up to 64% of them: test accuracy fell
    from 89% to 44% (docs/embedding.md). Held fixed, S and b still train."""
    for m in net.modules():
        if isinstance(m, LowbitLayer):
            m.alpha.requires_grad_(not hold)


def train(net, data, label, epochs, lr, weight_decay, keep_best, gen):
    """SGD (momentum 0.9, Nesterov), cosine from lr to 0 over all steps, shuffled
    and augmented batches of 128. keep_best: evaluate on the validation split
    every half epoch and end with the best network seen there."""
    images, labels = data["train"]
    n = len(images)
    steps_per_epoch = n // BATCH
    if epochs <= 0 or steps_per_epoch < 1:
        return
    total = steps_per_epoch * epochs
    opt = torch.optim.SGD(param_groups(net, weight_decay), lr=lr, momentum=0.9, nesterov=True)
    best, best_acc, step, t0 = None, -1.0, 0, time.time()
    half = max(steps_per_epoch // 2, 1)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        run_loss = 0.0
        net.train()
        for s in range(steps_per_epoch):
            for g in opt.param_groups:                    # cosine to 0, per step
                g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            idx = order[s * BATCH:(s + 1) * BATCH]
            x = augment(images[idx], gen)
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss = 0.98 * run_loss + 0.02 * float(loss) if step else float(loss)
            step += 1
            if keep_best and len(data["val"][0]) and ((s + 1) % half == 0 or s + 1 == steps_per_epoch):
                acc = evaluate(net, *data["val"])
                if acc > best_acc:
                    best_acc, best = acc, copy.deepcopy(net.state_dict())
                net.train()
        print("  %s: epoch %d/%d, loss %.3f, %.0fs" % (label, epoch + 1, epochs, run_loss,
                                                       time.time() - t0), flush=True)
    if best is not None:
        net.load_state_dict(best)
        print("  %s: best validation accuracy %.2f%%" % (label, best_acc), flush=True)


def weight_bytes(net):
    """Bytes of the stored network, counted as libtsq's tsq_net_weight_bytes:
    floats at 4 bytes, low-bit weight codes packed, 8 bytes per quantizer."""
    total = 0
    for m in net.modules():
        if isinstance(m, LowbitLayer):
            total += (m.shadow.numel() * (m.m + 1).bit_length() + 7) // 8 + 4 * 2 * m.alpha.numel()
        elif isinstance(m, ActQuant):
            total += 8
        elif not isinstance(m, nn.Sequential):
            total += 4 * sum(p.numel() for p in m.parameters(recurse=False))
            total += 4 * sum(b.numel() for name, b in m.named_buffers(recurse=False)
                             if name != "num_batches_tracked")
    return total


# ---------------------------------------------------------------------------
# Self-checks against the library
# ---------------------------------------------------------------------------

def check_formula(ctx):
    """The library's quantizer equals TSQ.md's formula reproduced in torch,
    bit for bit, including values on eps and on the level boundaries; its
    backward is the straight-through mask."""
    q = tsq.Quantizer(ctx, bits=2)
    eps, delta = 0.3271, 0.6541
    q.set_channel(0, eps, delta)
    eps, delta = q.get_channel(0)
    gen = torch.Generator().manual_seed(7)
    edges = torch.tensor([eps, -eps, 0.0, delta * 0.5, delta * 1.5, delta * 2.5, delta * 3,
                          delta * 3.5, 1e30, -1e30], dtype=torch.float32)
    x = torch.cat([torch.randn(100000, generator=gen) * 1.5, edges,
                   torch.nextafter(edges, torch.full_like(edges, 1e38)),
                   torch.nextafter(edges, torch.full_like(edges, -1e38))]).contiguous()
    lib = torch.from_numpy(q.encode(x.numpy()).astype(np.float32))
    if not torch.equal(lib, torch_codes(x, eps, delta, 2)):
        raise SystemExit("pytorch_tsq: the library's codes differ from the formula")
    aq = ActQuant(q)
    xr = x[:1000].clone().requires_grad_(True)
    aq(xr).backward(torch.ones(1000))
    mask = ((x[:1000] > 0) & (x[:1000] < 3 * delta)).float()
    if not torch.equal(xr.grad, mask):
        raise SystemExit("pytorch_tsq: the straight-through gradient is not the TSQ mask")
    q.close()


# ---------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------

class Report(object):
    def __init__(self):
        self.stages, self.layers = [], []

    def stage(self, key, label, net, seconds, data):
        acc = evaluate(net, *data["test"])
        self.stages.append({"key": key, "label": label, "accuracy": acc,
                            "weight_bytes": weight_bytes(net), "seconds": seconds})
        print("  => %s: %.2f%% test accuracy (%.1fs)" % (label, acc, seconds), flush=True)
        return acc

    def acc(self, key):
        return next((s["accuracy"] for s in self.stages if s["key"] == key), None)

    def table(self):
        def human(b):
            return "%.2f MiB" % (b / 2.0 ** 20) if b >= 2 ** 20 else "%.1f KiB" % (b / 1024.0)
        lines = ["", "%-46s %9s %12s %9s" % ("stage", "test acc", "weights", "time"), "-" * 79]
        for s in self.stages:
            lines.append("%-46s %9s %12s %8.1fs" % (s["label"], "%.2f%%" % s["accuracy"],
                                                     human(s["weight_bytes"]), s["seconds"]))
        return "\n".join(lines) + "\n"


def tsq_pipeline(ctx, fp32, data, opt, eps_mode, rep, key, gen, naive_q=None):
    """Step 1 (quantizers + training), step 2 (layer-wise fit_transform) and
    fine-tuning. naive_q: the step-1 quantized net before training, when the
    caller already fitted the quantizers. Returns the final net."""
    main = key == "tsq"
    t0 = time.time()
    step1 = naive_q if naive_q is not None else fit_quantizers(
        ctx, fp32, data["calib"], eps_mode, opt.act_bits)
    step1 = copy.deepcopy(step1)
    train(step1, data, "step 1 training", opt.epochs[1], opt.lr[1], 5e-4, False, gen)
    t1 = time.time()
    if main:
        rep.stage("step1", "step 1: code learning (FP weights, 2-bit A)", step1, t1 - t0, data)
    net = convert(ctx, step1, data["calib"], opt.rounds, opt.positions, "step 2", opt.unfold,
                  check=main, log=rep.layers if main else None)
    t2 = time.time()
    if main:
        rep.stage("step2", "step 2: transformation (ternary W, 2-bit A)", net, t2 - t1, data)
    hold_alpha(net, not opt.train_alpha)
    train(net, data, "fine-tuning", opt.epochs[2], opt.lr[2], 0.0, True, gen)
    if main:
        rep.stage("tsq", "TSQ: after fine-tuning", net, time.time() - t2, data)
    else:
        rep.stage(key, "same pipeline with eps = 0", net, time.time() - t0, data)
    return net


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MNIST-format gzipped IDX files (default %s, else "
                   "tests/data/fmnist-tiny)" % DEBIAN_DATA)
    p.add_argument("--quick", action="store_true",
                   help="a subset and few epochs (under 2 minutes); exit 1 below the floor")
    p.add_argument("--json", help="write the table as JSON")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", default=None,
                   help="skip the eps = 0 and joint-training rows (default in --quick)")
    p.add_argument("--baselines", dest="baselines", action="store_true",
                   help="run the eps = 0 and joint-training rows (default without --quick)")
    p.add_argument("--epochs", help="FP32, step-1 and fine-tune epochs (default 9,3,0)")
    p.add_argument("--calib", type=int, help="calibration images for the fits (default 4096)")
    p.add_argument("--positions", type=int,
                   help="output positions per image a conv feeds to the regressor "
                   "(0: all; default 64, 32 in --quick)")
    p.add_argument("--unfold", choices=("view", "functional"), default="view",
                   help="conv rows from a Tensor.unfold view (default) or F.unfold; the "
                   "first batch of every layer checks both against tsq_im2col_rows")
    p.add_argument("--rounds", type=int, help="step-2 regressor rounds (default 6, as the C demo)")
    p.add_argument("--train-alpha", action="store_true",
                   help="train the low-bit layers' alpha in fine-tuning and joint training "
                   "(libtsq's low-bit layer does with TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA=1; unstable, "
                   "see hold_alpha)")
    p.add_argument("--train", type=int, help="use the first N training images (0: all)")
    p.add_argument("--test", type=int, help="use the first N test images (0: all)")
    p.add_argument("--min-acc", type=float, help="--quick: the accuracy floor (default 70)")
    p.add_argument("--max-drop", type=float, default=5.0,
                   help="--quick: most points step 2 may lose against step 1 (default 5)")
    p.add_argument("--min-kept", type=float, default=80.0,
                   help="--quick: least percentage of its step-1 codes every converted "
                   "layer must reproduce on calibration images (default 80)")
    p.add_argument("--threads", type=int, default=2, help="torch and libtsq threads")
    p.add_argument("--seed", type=int, default=1)
    opt = p.parse_args(argv)
    quick = opt.quick
    opt.epochs = [int(v) for v in opt.epochs.split(",")] if opt.epochs else \
        ([2, 1, 1] if quick else [9, 3, 0])  # the C demo's defaults (docs/demo.md)
    if len(opt.epochs) != 3:
        p.error("--epochs wants A,B,C")
    opt.lr = [0.05, 0.01, 0.002] if quick else [0.05, 0.02, 0.002]
    opt.act_bits = 2
    opt.calib = opt.calib or (512 if quick else 4096)
    opt.positions = opt.positions if opt.positions is not None else (32 if quick else 64)
    # --quick: fc1 (d = 3136) costs about 8 s per regressor round on 2 cores
    opt.rounds = opt.rounds if opt.rounds is not None else (2 if quick else 6)
    opt.validation = 500 if quick else 5000
    opt.train = opt.train if opt.train is not None else (3000 if quick else 0)
    opt.test = opt.test if opt.test is not None else (1000 if quick else 0)
    opt.min_acc = opt.min_acc if opt.min_acc is not None else 70.0
    if opt.baselines is None:
        opt.baselines = not quick
    return opt


def load_data(opt, gen):
    directory = opt.data or (DEBIAN_DATA if os.path.exists(
        os.path.join(DEBIAN_DATA, "train-images-idx3-ubyte.gz")) else TINY_DATA)
    tx, ty = load_split(directory, "train", opt.train)
    test = load_split(directory, "t10k", opt.test)
    nval = min(opt.validation, len(tx) // 2)              # the last images of the training set
    data = {"train": (tx[:len(tx) - nval], ty[:len(ty) - nval]),
            "val": (tx[len(tx) - nval:], ty[len(ty) - nval:]), "test": test}
    order = torch.randperm(len(data["train"][0]), generator=gen)
    data["calib"] = data["train"][0][order[:opt.calib]].contiguous()   # shuffled, not augmented
    print("data: %s: %d training, %d validation, %d test images, %d calibration"
          % (directory, len(data["train"][0]), nval, len(test[0]), len(data["calib"])))
    return data


def main(argv):
    opt = parse_args(argv)
    torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    gen = torch.Generator().manual_seed(opt.seed)
    started = time.time()
    rep = Report()
    with tsq.Context(threads=opt.threads, seed=opt.seed) as ctx:
        machine = "%s %s, %d cores online; torch %s (%d threads); libtsq %s from %s; %s" % (
            platform.system(), platform.machine(), os.cpu_count() or 0, torch.__version__,
            torch.get_num_threads(), tsq.version_string(), tsq.lib.path, ctx.info())
        print(machine)
        check_formula(ctx)
        data = load_data(opt, gen)

        t0 = time.time()
        fp32 = build_net()
        train(fp32, data, "FP32 training", opt.epochs[0], opt.lr[0], 5e-4, False, gen)
        rep.stage("fp32", "FP32", fp32, time.time() - t0, data)

        # Quantizers fitted on the FP32 network: naive PTQ starts from them,
        # and so does step 1 (TSQ.md: step 1 starts from the trained network).
        t0 = time.time()
        fp32_q = fit_quantizers(ctx, fp32, data["calib"], "joint", opt.act_bits)
        naive = convert(ctx, fp32_q, data["calib"], 0, opt.positions, "naive PTQ", opt.unfold)
        rep.stage("naive", "naive PTQ (optimal ternary, fitted 2-bit)", naive,
                  time.time() - t0, data)

        tsq_pipeline(ctx, fp32, data, opt, "joint", rep, "tsq", gen, naive_q=fp32_q)

        if opt.baselines:
            tsq_pipeline(ctx, fp32, data, opt, "plain", rep, "eps0", gen)
            t0 = time.time()
            joint = copy.deepcopy(naive)         # ternarised FP32 net (rounds 0), then trained
            hold_alpha(joint, not opt.train_alpha)
            train(joint, data, "joint training", opt.epochs[1] + opt.epochs[2], opt.lr[1], 0.0,
                  True, gen)
            rep.stage("joint", "joint training (ternary W + 2-bit A, STE)", joint,
                      time.time() - t0 + rep.stages[1]["seconds"], data)

    print(rep.table())
    print("total %.1fs" % (time.time() - started))
    if opt.json:
        out = {"title": "Two-Step Quantization on Fashion-MNIST (fmnist-cnn), PyTorch + libtsq",
               "machine": machine, "command": " ".join([sys.argv[0]] + list(argv))}
        for key in ("fp32", "naive", "step1", "step2", "tsq", "eps0", "joint"):
            out[key + "_acc"] = rep.acc(key)
        out["stages"] = rep.stages
        out["layers"] = rep.layers
        out["seconds"] = time.time() - started
        with open(opt.json, "w") as f:
            json.dump(out, f, indent=2)
    if opt.quick:
        ok = True
        for key in ("step2", "tsq"):
            if rep.acc(key) < opt.min_acc:
                print("QUICK CHECK FAILED: %s accuracy %.2f%% is below the floor %.1f%%"
                      % (key, rep.acc(key), opt.min_acc))
                ok = False
        for layer in rep.layers:
            if 100 * layer["code_agreement"] < opt.min_kept:
                print("QUICK CHECK FAILED: step 2 %s keeps %.1f%% of its step-1 codes "
                      "(at least %.1f%%)" % (layer["name"], 100 * layer["code_agreement"],
                                             opt.min_kept))
                ok = False
        if rep.acc("step2") < rep.acc("step1") - opt.max_drop:
            print("QUICK CHECK FAILED: step 2 lost %.2f points against step 1 (at most %.1f)"
                  % (rep.acc("step1") - rep.acc("step2"), opt.max_drop))
            ok = False
        if ok:
            print("quick check passed: step 2 and TSQ accuracy >= %.1f%%, step 2 within %.1f "
                  "points of step 1, every layer keeps >= %.1f%% of its step-1 codes"
                  % (opt.min_acc, opt.max_drop, opt.min_kept))
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
