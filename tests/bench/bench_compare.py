#!/usr/bin/env python3
"""The inference comparison of docs/kernels.md ("Against PyTorch"): in one
process, images/s of

  plan        libtsq's inference plan of the demo's converted CNN (ternary
              weights, 2-bit codes; the float first conv and last fc),
  float_net   libtsq's float net of the same architecture (tsq_net_forward),
  torch_fp32  PyTorch's float model of the same architecture and weights,
  torch_int8  PyTorch's static int8 quantization of it (oneDNN, or
              fbgemm / qnnpack, whichever this torch has),

at batch 1, 16 and 256 with 1 and 2 threads; one JSON line per (batch,
threads) with the rates (medians of 5 timed runs) and the ratios (medians
of the 5 runs' ratios: the four are timed in turn within each run, so a
ratio compares runs taken at the same moment), and the load average
beside them. With build/fmnist-tsq.tsq (make demo) the plan runs the
trained model; otherwise one of the same shape with random parameters
(the speed does not depend on the values).

    make bench-compare        (or: TSQ_LIBRARY=build/openblas/libtsq.so \\
                               /usr/bin/python3 tests/bench/bench_compare.py)
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tsq  # noqa: E402

IMG = 28
CONV = [(1, 32), (32, 32), "pool", (32, 64), (64, 64), "pool"]


def fill(t, values):
    t.numpy()[...] = np.asarray(values, np.float32).reshape(t.numpy().shape)


def float_net(ctx, rng):
    """conv3x3-32 BN ReLU, conv3x3-32 BN ReLU, pool, conv3x3-64 BN ReLU,
    conv3x3-64 BN ReLU, pool, fc-256 BN ReLU, fc-10 (examples/fmnist)."""
    net = tsq.Net(ctx, (1, IMG, IMG))
    for item in CONV:
        if item == "pool":
            net.append(tsq.MaxPool2d(ctx, 2, 2))
            continue
        cin, cout = item
        net.append(tsq.Conv2d(ctx, cin, cout, 3, 1, 1))
        net.append(tsq.BatchNorm(ctx, cout))
        net.append(tsq.ReLU(ctx))
    net.append(tsq.Flatten(ctx))
    net.append(tsq.Dense(ctx, 64 * 7 * 7, 256))
    net.append(tsq.BatchNorm(ctx, 256))
    net.append(tsq.ReLU(ctx))
    net.append(tsq.Dense(ctx, 256, 10))
    for layer in net.layers:
        for p in layer.params():
            n = p.value.numpy().size
            scale = 1.0 if p.name in ("gamma",) else 0.2
            fill(p.value, rng.standard_normal(n) * scale + (1.0 if p.name == "gamma" else 0.0))
        st = layer.states()
        if "running_var" in st:
            fill(st["running_var"], 0.5 + rng.random(st["running_var"].numpy().size))
            fill(st["running_mean"], 0.1 * rng.standard_normal(st["running_mean"].numpy().size))
    return net


def tsq_net(ctx, rng):
    """The converted shape of the demo's model: float conv1 + BN + ReLU,
    2-bit codes, ternary conv2..conv4 and fc-256 with fused quantizers,
    a float fc-10."""
    path = os.path.join(HERE, "..", "..", "build", "fmnist-tsq.tsq")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return tsq.Net.load(ctx, f.read()), "build/fmnist-tsq.tsq"
    net = tsq.Net(ctx, (1, IMG, IMG))

    def quant(codes=True):
        q = tsq.ActQuant(ctx, 2, 0.3, 0.5)
        q.output_codes = codes
        return q

    def lowbit(layer, nout, nin):
        layer.set(rng.integers(-1, 2, nout * nin).astype(np.int8).reshape(layer.weight_shape()),
                  ((0.5 + rng.random(nout)) / np.sqrt(nin)).astype(np.float32),
                  (0.3 * rng.standard_normal(nout)).astype(np.float32))
        return layer

    first = True
    for item in CONV:
        if item == "pool":
            net.append(tsq.MaxPool2d(ctx, 2, 2))
            continue
        cin, cout = item
        if first:
            net.append(tsq.Conv2d(ctx, cin, cout, 3, 1, 1))
            net.append(tsq.BatchNorm(ctx, cout))
            net.append(tsq.ReLU(ctx))
            first = False
        else:
            net.append(lowbit(tsq.LowbitConv2d(ctx, cin, cout, 3, 1, 1), cout, cin * 9))
        net.append(quant())
    net.append(tsq.Flatten(ctx))
    net.append(lowbit(tsq.LowbitDense(ctx, 64 * 7 * 7, 256), 256, 64 * 7 * 7))
    net.append(quant(False))
    net.append(tsq.Dense(ctx, 256, 10))
    for layer in net.layers:
        for p in layer.params():
            if layer.kind_name in ("conv2d", "dense"):
                fill(p.value, 0.2 * rng.standard_normal(p.value.numpy().size))
    return net, "random parameters"


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()
        layers = []
        for item in CONV:
            if item == "pool":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(item[0], item[1], 3, 1, 1), torch.nn.BatchNorm2d(item[1]),
                           torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.fc1 = torch.nn.Linear(64 * 7 * 7, 256)
        self.bn1 = torch.nn.BatchNorm1d(256)
        self.relu1 = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(256, 10)

    def forward(self, x):
        x = self.features(self.quant(x))
        x = torch.flatten(x, 1)
        x = self.fc2(self.relu1(self.bn1(self.fc1(x))))
        return self.dequant(x)


def torch_models(net, calib):
    """fp32 and int8 models with libtsq's float weights (BN in eval)."""
    m = TorchNet().eval()
    tl = [l for l in net.layers if l.kind_name in ("conv2d", "dense", "batchnorm")]
    tm = [mod for mod in list(m.features) + [m.fc1, m.bn1, m.fc2]
          if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d,
                              torch.nn.BatchNorm1d))]
    with torch.no_grad():
        for a, b in zip(tl, tm):
            if a.kind_name == "batchnorm":
                b.weight.copy_(torch.from_numpy(a.param("gamma").value.numpy().copy()))
                b.bias.copy_(torch.from_numpy(a.param("beta").value.numpy().copy()))
                b.running_mean.copy_(torch.from_numpy(a.states()["running_mean"].numpy().copy()))
                b.running_var.copy_(torch.from_numpy(a.states()["running_var"].numpy().copy()))
            else:
                b.weight.copy_(torch.from_numpy(a.param("weight").value.numpy().copy())
                               .reshape(b.weight.shape))
                b.bias.copy_(torch.from_numpy(a.param("bias").value.numpy().copy()))
    engines = torch.backends.quantized.supported_engines
    engine = next(e for e in ("onednn", "fbgemm", "x86", "qnnpack") if e in engines)
    torch.backends.quantized.engine = engine
    q = TorchNet().eval()
    q.load_state_dict(m.state_dict())
    groups = [[str(i), str(i + 1), str(i + 2)] for i, mod in enumerate(q.features)
              if isinstance(mod, torch.nn.Conv2d)]
    torch.ao.quantization.fuse_modules(q.features, groups, inplace=True)
    with torch.no_grad():  # fc1 + bn1: this torch has no Linear-BN-ReLU fuser
        sc = q.bn1.weight / torch.sqrt(q.bn1.running_var + q.bn1.eps)
        q.fc1.weight.mul_(sc[:, None])
        q.fc1.bias.copy_((q.fc1.bias - q.bn1.running_mean) * sc + q.bn1.bias)
    q.bn1 = torch.nn.Identity()
    torch.ao.quantization.fuse_modules(q, [["fc1", "relu1"]], inplace=True)
    q.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(q, inplace=True)
    with torch.no_grad():
        q(calib)
    torch.ao.quantization.convert(q, inplace=True)
    return m, q, engine


def calls_for(fn, min_seconds):
    """Calls of fn that take about min_seconds (after a warm-up call:
    first-call allocations, page faults)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds / 4:
        fn()
        n += 1
    return max(1, int(n * 4))


def rates(fns, batch, repeats, min_seconds):
    """images/s of each of fns (a dict), timed in turn within every repeat
    so that all see the same moments of a shared machine (this VM's speed
    moves by 20% within minutes); per name the median over repeats, and
    per repeat the rates themselves, for the ratios' medians."""
    calls = {k: calls_for(f, min_seconds) for k, f in fns.items()}
    runs = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[k]):
                f()
            runs[k].append(calls[k] * batch / (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in runs.items()}, runs


def ratio(runs, a, b):
    """The median over repeats of a's rate over b's in the same repeat."""
    return float(np.median([x / y for x, y in zip(runs[a], runs[b])]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,16,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="per timed run")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    calib = torch.from_numpy(rng.standard_normal((256, 1, IMG, IMG)).astype(np.float32))
    with tsq.Context() as ctx0:
        fnet = float_net(ctx0, rng)
        fp32, int8, engine = torch_models(fnet, calib)
        print(json.dumps({"torch": torch.__version__, "engine": engine,
                          "library": tsq.lib.path, "cpu": os.cpu_count(),
                          "loadavg": [round(v, 2) for v in os.getloadavg()]}))
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            with tsq.Context(threads=threads) as ctx:
                fnet_t = float_net(ctx, np.random.default_rng(0))
                tnet, source = tsq_net(ctx, np.random.default_rng(1))
                plan = tsq.Plan(ctx, tnet)
                for batch in [int(b) for b in args.batches.split(",")]:
                    x = rng.standard_normal((batch, 1, IMG, IMG)).astype(np.float32)
                    xt = torch.from_numpy(x)
                    y = np.zeros((batch, 10), np.float32)
                    ws_bytes = plan.workspace_size(batch)
                    ws = bytearray(ws_bytes)
                    with torch.no_grad():
                        r, runs = rates({"plan": lambda: plan.run(x, out=y, workspace=ws),
                                         "float_net": lambda: fnet_t.forward(x),
                                         "torch_fp32": lambda: fp32(xt),
                                         "torch_int8": lambda: int8(xt)},
                                        batch, args.repeats, args.seconds)
                    row = {"batch": batch, "threads": threads, "unit": "images/s",
                           "model": source, "plan_workspace_bytes": ws_bytes}
                    row.update({k: round(v, 1) for k, v in r.items()})
                    row["plan_vs_int8"] = round(ratio(runs, "plan", "torch_int8"), 3)
                    row["plan_vs_fp32"] = round(ratio(runs, "plan", "torch_fp32"), 3)
                    row["plan_vs_float_net"] = round(ratio(runs, "plan", "float_net"), 3)
                    row["loadavg"] = [round(v, 2) for v in os.getloadavg()]
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
