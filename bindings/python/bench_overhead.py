#!/usr/bin/env python3
"""Per-call overhead of the Python bindings against the raw ctypes call.

    TSQ_LIBRARY=build/openblas/libtsq.so /usr/bin/python3 bindings/python/bench_overhead.py

Prints one JSON object per line (name, value, unit, baseline, ratio), medians
of 7 runs, like the C benchmarks."""

import ctypes
import json
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import tsq  # noqa: E402


def median_us(fn, number):
    runs = sorted(timeit.repeat(fn, number=number, repeat=7))
    return runs[3] / number * 1e6


def report(name, value, baseline=None):
    row = {"name": name, "value": round(value, 3), "unit": "us"}
    if baseline is not None:
        row["baseline"] = round(baseline, 3)
        row["ratio"] = round(value / baseline, 2)
    print(json.dumps(row))


def main():
    print(json.dumps({"python": sys.version.split()[0], "numpy": np.__version__,
                      "library": tsq.lib.path, "version": tsq.__version__}))
    with tsq.Context() as ctx:
        q = tsq.Quantizer(ctx, 2).set_channel(0, 0.5, 1.0)
        for n in (16, 4096, 1 << 20):
            x = np.random.RandomState(0).randn(n).astype(np.float32)
            out = np.zeros(n, np.uint8)
            xt, ot = tsq.Tensor(ctx, x), tsq.Tensor(ctx, out)
            raw_q, raw_x, raw_o = q.handle, xt.handle, ot.handle
            enc = tsq.lib.tsq_quantizer_encode
            number = max(10, 20000 // max(1, n // 256))
            base = median_us(lambda: enc(raw_q, raw_x, raw_o), number)
            report("encode_tensors_n%d" % n, median_us(lambda: q.encode(xt, out=ot), number), base)
            report("encode_numpy_out_n%d" % n, median_us(lambda: q.encode(x, out=out), number), base)
            report("encode_numpy_new_n%d" % n, median_us(lambda: q.encode(x), number), base)
        shape = (ctypes.c_int64 * 1)(16)
        buf = np.zeros(16, np.float32)

        def raw_wrap():
            t = ctypes.POINTER(tsq.ffi.tsq_tensor)()
            tsq.lib.tsq_tensor_wrap(ctx.handle, 1, 1, shape, ctypes.c_void_p(buf.ctypes.data),
                                    64, ctypes.byref(t))
            tsq.lib.tsq_tensor_destroy(t)

        def py_wrap():
            tsq.Tensor(ctx, buf).close()
        report("tensor_wrap_destroy", median_us(py_wrap, 5000), median_us(raw_wrap, 5000))


if __name__ == "__main__":
    main()
