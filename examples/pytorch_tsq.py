#!/usr/bin/python3
"""Two-Step Quantization of a PyTorch network with libtsq's tsq.torch.

The Fashion-MNIST network of the C demo (examples/fmnist/fmnist.c, "fmnist-cnn")
trained in PyTorch, then quantized with tsq.torch (bindings/python/tsq/torch/):

  FP32 training -> tsq.torch.prepare: libtsq fits 2-bit sparse activation
  quantizers on the batch-norm outputs and they replace the ReLUs -> step 1:
  this script's own training loop -> tsq.torch.convert: step 2 in libtsq,
  layer by layer (conv2, conv3, conv4, fc1 become ternary; conv1 and fc2 stay
  float) -> fine-tuning -> test accuracy -> tsq.torch.to_tsq and tsq.Plan:
  the same network as libtsq's integer plan (its accuracy is printed too).

Prints the C demo's table (FP32, naive PTQ, step 1, step 2, TSQ; the eps = 0
pipeline and joint training as baselines) and writes the same JSON keys.

  TSQ_LIBRARY=build/openblas/libtsq.so /usr/bin/python3 examples/pytorch_tsq.py
  ... --quick          3,000 training / 1,000 test images, epochs 2/1/1, 512
                       calibration images, 2 regressor rounds; exit 1 when
                       step 2 or TSQ is below 70%, step 2 loses more than 5
                       points against step 1, a converted layer keeps less
                       than 80% of its step-1 codes, or the integer plan
                       disagrees with torch on more than 1% of the test images
  ... --json FILE      fp32_acc, naive_acc, step1_acc, step2_acc, tsq_acc, eps0_acc,
                       joint_acc, plan_acc

examples/torch_quickstart.py is the short version; docs/python.md the guide.
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
import tsq.torch as tt  # noqa: E402

DEBIAN_DATA = "/usr/share/datasets/fashion-mnist"
TINY_DATA = os.path.join(HERE, "..", "tests", "data", "fmnist-tiny")
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530        # as examples/fmnist/dataset.c
PAD_VALUE = (0.0 - PIXEL_MEAN) / PIXEL_STD    # a black pixel, normalised
BATCH, EVAL_BATCH, CALIB_BATCH = 128, 1000, 256
NAMES = {"0": "conv1", "3": "conv2", "7": "conv3", "10": "conv4", "15": "fc1", "18": "fc2"}


def build_net():
    """conv3x3-32,BN,ReLU -> conv3x3-32,BN,ReLU -> maxpool2 -> conv3x3-64,BN,ReLU
    -> conv3x3-64,BN,ReLU -> maxpool2 -> fc-256,BN,ReLU -> fc-10 (padding 1)."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2),
                         *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 256), nn.BatchNorm1d(256), nn.ReLU(),
                         nn.Linear(256, 10))


def calibration(images):
    """The calibration batches: any re-iterable of tensors will do."""
    return [images[i:i + CALIB_BATCH] for i in range(0, len(images), CALIB_BATCH)]


def convert(ref, calib, rounds, npos, label, train_alpha, log=None):
    """tsq.torch.convert, with one line per converted layer: its regressor
    objective (per row and output) and the share of its step-1 codes the
    converted network reproduces on a calibration batch."""
    report = []
    net = tt.convert(ref, calibration(calib), weight_bits=2, rounds=rounds, positions=npos,
                     train_alpha=train_alpha, report=report)
    for r in report:
        kept = code_agreement(net, ref, r["quantizer"], calib[:CALIB_BATCH])
        per = float(r["rows"] * r["C"])
        obj = r["objective"] or [float("nan")]
        print("  %s %s: X %d x %d, objective per output %.4f -> %.4f (%d passes), step-1 "
              "codes kept %.1f%%, %.1fs" % (label, NAMES.get(r["name"], r["name"]), r["rows"],
                                           r["d"], obj[0] / per, obj[-1] / per, r["passes"],
                                           100 * kept, r["seconds"]), flush=True)
        if log is not None:
            log.append({"name": NAMES.get(r["name"], r["name"]), "rows": r["rows"], "d": r["d"],
                        "eps": r["eps"][0], "delta": r["delta"][0], "code_agreement": kept,
                        "objective": [h / per for h in r["objective"]]})
    return net


def code_agreement(net, ref, quantizer, images):
    """The fraction of the step-1 codes at `quantizer` (a tsq.torch.ActQuant
    module name) that the converted network reproduces on `images`: both
    networks' inputs to that quantizer, coded by the same quantizer."""
    def codes(model):
        got = []
        mod = model.get_submodule(quantizer)
        h = mod.register_forward_pre_hook(lambda m, inputs: got.append(m.encode(inputs[0])))
        with torch.no_grad():
            model.eval()(images)
        h.remove()
        return got[0]
    return float((codes(net) == codes(ref)).float().mean())


def plan_accuracy(net, images, labels):
    """tsq.torch.to_tsq, then libtsq's integer plan on the test images:
    (accuracy, share of images where its prediction equals torch's)."""
    lib_net = tt.to_tsq(net)
    ctx = lib_net.context
    try:
        plan = tsq.Plan(ctx, lib_net)
        out = np.concatenate([plan.run(images[i:i + EVAL_BATCH].numpy())
                              for i in range(0, len(images), EVAL_BATCH)])
        with torch.no_grad():
            mine = torch.cat([net.eval()(images[i:i + EVAL_BATCH])
                              for i in range(0, len(images), EVAL_BATCH)]).argmax(1).numpy()
        pred = out.argmax(1)
        return 100.0 * float((pred == labels.numpy()).mean()), float((pred == mine).mean())
    finally:
        ctx.close()


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
                    (isinstance(m, (tt.LowbitLinear, tt.LowbitConv2d)) and name == "shadow")
            if p.requires_grad:
                (decay if wants and weight_decay > 0 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def hold_alpha(net, hold):
    """Whether the low-bit layers' scales alpha stay fixed in training
    (tsq.torch's default, as libtsq's low-bit layer: a trained alpha moved by
    30-210% within 15 steps of fine-tuning and flipped up to 64% of the codes,
    docs/nn.md "Fine-tuning low-bit layers"). Held fixed, S and b still train."""
    for _, m in tt.lowbit_modules(net):
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
        if isinstance(m, (tt.LowbitLinear, tt.LowbitConv2d)):
            total += (m.shadow.numel() * (m.m + 1).bit_length() + 7) // 8 + 4 * 2 * m.alpha.numel()
        elif isinstance(m, tt.ActQuant):
            total += 8 * m.eps.numel()
        elif not isinstance(m, (nn.Sequential, torch.fx.GraphModule, tt.InputSpec)):
            total += 4 * sum(p.numel() for p in m.parameters(recurse=False))
            total += 4 * sum(b.numel() for name, b in m.named_buffers(recurse=False)
                             if name != "num_batches_tracked")
    return total


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


def tsq_pipeline(fp32, data, opt, eps_mode, rep, key, gen, naive_q=None):
    """prepare (quantizers), step 1 (training), convert (step 2) and
    fine-tuning. naive_q: the prepared FP32 net, when the caller already has
    it. Returns the final net."""
    main = key == "tsq"
    t0 = time.time()
    step1 = naive_q if naive_q is not None else tt.prepare(
        fp32, calibration(data["calib"]), bits=opt.act_bits, eps_mode=eps_mode)
    step1 = copy.deepcopy(step1)
    train(step1, data, "step 1 training", opt.epochs[1], opt.lr[1], 5e-4, False, gen)
    t1 = time.time()
    if main:
        rep.stage("step1", "step 1: code learning (FP weights, 2-bit A)", step1, t1 - t0, data)
    net = convert(step1, data["calib"], opt.rounds, opt.positions, "step 2", opt.train_alpha,
                  log=rep.layers if main else None)
    t2 = time.time()
    if main:
        rep.stage("step2", "step 2: transformation (ternary W, 2-bit A)", net, t2 - t1, data)
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
    p.add_argument("--rounds", type=int, help="step-2 regressor rounds (default 6, as the C demo)")
    p.add_argument("--train-alpha", action="store_true",
                   help="train the low-bit layers' alpha in fine-tuning and joint training "
                   "(tsq.torch.convert(train_alpha=True); unstable, see hold_alpha)")
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
    machine = "%s %s, %d cores online; torch %s (%d threads); libtsq %s from %s" % (
        platform.system(), platform.machine(), os.cpu_count() or 0, torch.__version__,
        torch.get_num_threads(), tsq.version_string(), tsq.lib.path)
    print(machine)
    data = load_data(opt, gen)

    t0 = time.time()
    fp32 = build_net()
    train(fp32, data, "FP32 training", opt.epochs[0], opt.lr[0], 5e-4, False, gen)
    rep.stage("fp32", "FP32", fp32, time.time() - t0, data)

    # Quantizers fitted on the FP32 network: naive PTQ starts from them,
    # and so does step 1 (step 1 starts from the trained network).
    t0 = time.time()
    fp32_q = tt.prepare(fp32, calibration(data["calib"]), bits=opt.act_bits, eps_mode="joint")
    naive = convert(fp32_q, data["calib"], 0, opt.positions, "naive PTQ", opt.train_alpha)
    rep.stage("naive", "naive PTQ (optimal ternary, fitted 2-bit)", naive, time.time() - t0,
              data)

    final = tsq_pipeline(fp32, data, opt, "joint", rep, "tsq", gen, naive_q=fp32_q)
    plan_acc, plan_same = plan_accuracy(final, *data["test"])
    print("  => libtsq integer plan of the TSQ net: %.2f%% test accuracy, the same prediction "
          "as torch on %.2f%% of the images" % (plan_acc, 100 * plan_same), flush=True)

    if opt.baselines:
        tsq_pipeline(fp32, data, opt, "plain", rep, "eps0", gen)
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
        out["plan_acc"] = plan_acc
        out["plan_agreement"] = plan_same
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
        if plan_same < 0.99:
            print("QUICK CHECK FAILED: the integer plan agrees with torch on %.2f%% of the "
                  "test images (at least 99%%)" % (100 * plan_same))
            ok = False
        if rep.acc("step2") < rep.acc("step1") - opt.max_drop:
            print("QUICK CHECK FAILED: step 2 lost %.2f points against step 1 (at most %.1f)"
                  % (rep.acc("step1") - rep.acc("step2"), opt.max_drop))
            ok = False
        if ok:
            print("quick check passed: step 2 and TSQ accuracy >= %.1f%%, step 2 within %.1f "
                  "points of step 1, every layer keeps >= %.1f%% of its step-1 codes, the "
                  "integer plan agrees with torch" % (opt.min_acc, opt.max_drop, opt.min_kept))
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
