"""The package without numpy (numpy made unimportable in a subprocess)."""

import json
import unittest

from tsqtest import run_python, tsq

SCRIPT = r'''
import sys
sys.modules["numpy"] = None            # import numpy now raises ImportError
import array, json
import tsq
from tsq import _buffers
assert _buffers.np is None
out = {}
alloc = tsq.CountingAllocator()
with tsq.Context(allocator=alloc) as ctx:
    # tensors over buffers and lists, results as Tensors
    a = array.array("f", [-1.0, 0.3, 0.8, 1.7, 2.2, 5.0])
    t = tsq.Tensor(ctx, a)
    out["wrapped"] = not t.copied
    q = tsq.Quantizer(ctx, 2).set_channel(0, 0.5, 1.0)
    codes = q.encode([[-1.0, 0.3, 0.8], [1.7, 2.2, 5.0]])
    out["codes_type"] = type(codes).__name__
    out["codes"] = codes.tolist()
    out["decoded"] = q.decode(codes).tolist()
    buf = bytearray(6)
    q.encode(t, out=buf)                # written in place
    out["bytearray"] = list(buf)
    r = q.learn_codes(a)
    out["learn"] = [type(r.codes).__name__, r.sparsity]
    try:
        t.numpy()
    except RuntimeError as e:
        out["numpy_error"] = str(e)
    # step 2 on lists: y = Q(x0 - x1), a planted ternary solution
    X = [[i % 4, (i // 4) % 4] for i in range(64)]
    Y = [[max(0, min(3, x0 - x1))] for x0, x1 in X]
    reg = tsq.Regressor(ctx).set_levels(2, 0.5, 1.0)
    res = reg.fit_transform(tsq.Tensor(ctx, X, dtype="uint8"), tsq.Tensor(ctx, Y, dtype="uint8"))
    out["weights"] = res.weights.tolist()
    out["objective"] = res.objective
    reg.begin(2, 1)
    reg.feed(tsq.Tensor(ctx, X, dtype="uint8"), tsq.Tensor(ctx, Y, dtype="uint8"))
    s = reg.stats_export()
    out["stats"] = [type(s).__name__, s.typecode, len(s) == reg.stats_size()]
    reg.stats_import(s, "add")
    # a net on lists
    net = tsq.Net(ctx, (2,)).append(tsq.Dense(ctx, 2, 2))
    y = net.forward([[1.0, 2.0], [3.0, 4.0]])
    out["forward"] = [type(y).__name__, y.shape]
    ev = net.evaluate([[1.0, 2.0]], [1])
    out["predictions"] = type(ev.predictions).__name__
    out["layer_output"] = type(net.layer_output(0)).__name__
    # packed kernels
    pw = tsq.PackedWeights(ctx, tsq.Tensor(ctx, [[1, -1], [0, 1]], dtype="int8"))
    acc = tsq.lowbit_gemm(ctx, pw, tsq.Tensor(ctx, [[2, 3]], dtype="uint8"), 2)
    out["gemm"] = [type(acc).__name__, list(acc)]
    out["positions"] = type(tsq.Regressor.im2col_sample_positions(ctx, 1, 4, 2)).__name__
    del t, codes, r, res, y, ev, acc
out["live"] = alloc.live_blocks
print(json.dumps(out))
'''


class WithoutNumpy(unittest.TestCase):

    def test_everything_works_without_numpy(self):
        rc, stdout, stderr = run_python(SCRIPT, env={"TSQ_LIBRARY": tsq.lib.path})
        self.assertEqual(rc, 0, stderr)
        out = json.loads(stdout.strip().splitlines()[-1])
        self.assertTrue(out["wrapped"])
        self.assertEqual(out["codes_type"], "Tensor")
        self.assertEqual(out["codes"], [[0, 0, 1], [2, 2, 3]])
        self.assertEqual(out["decoded"], [[0.0, 0.0, 1.0], [2.0, 2.0, 3.0]])
        self.assertEqual(out["bytearray"], [0, 0, 1, 2, 2, 3])
        self.assertEqual(out["learn"][0], "Tensor")
        self.assertIn("numpy is not installed", out["numpy_error"])
        self.assertEqual(out["weights"], [[1], [-1]])
        self.assertEqual(out["objective"], 0.0)
        self.assertEqual(out["stats"], ["array", "d", True])
        self.assertEqual(out["forward"], ["Tensor", [2, 2]])
        self.assertEqual(out["predictions"], "array")
        self.assertEqual(out["layer_output"], "Tensor")
        self.assertEqual(out["gemm"], ["array", [2, 1]])
        self.assertEqual(out["positions"], "array")
        self.assertEqual(out["live"], 0)


if __name__ == "__main__":
    unittest.main()
