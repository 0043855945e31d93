"""The inference plan through the bindings: made from a converted net, it
gives the same predictions as the net's float simulation; bad input raises."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import tsq  # noqa: E402

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


@unittest.skipIf(np is None, "needs numpy")
class PlanTest(unittest.TestCase):
    def converted_net(self, ctx):
        """A small net converted by the library itself: learn_codes, then
        fit_transform, on random images."""
        rng = np.random.default_rng(3)
        net = tsq.Net(ctx, (1, 8, 8))
        for layer in (tsq.Conv2d(ctx, 1, 4, 3, 1, 1), tsq.ReLU(ctx),
                      tsq.Conv2d(ctx, 4, 6, 3, 1, 1), tsq.ReLU(ctx),
                      tsq.Flatten(ctx), tsq.Dense(ctx, 6 * 64, 5)):
            net.append(layer)
        x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
        net.learn_codes_batches([x])
        net.fit_transform_batches([x])
        return net, x

    def test_plan_matches_float_simulation(self):
        with tsq.Context() as ctx:
            net, x = self.converted_net(ctx)
            want = net.forward(x)
            with tsq.Plan(ctx, net) as plan:
                self.assertGreaterEqual(plan.get("lowbit_layers"), 1)
                got = plan.run(x)
                np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
                ws = bytearray(plan.workspace_size(len(x)))
                np.testing.assert_array_equal(plan.run(x, workspace=ws), got)
                with self.assertRaises(tsq.TsqError) as e:
                    plan.run(np.zeros((2, 1, 7, 7), np.float32))
                self.assertEqual(e.exception.name, "TSQ_ERR_SHAPE")

    def test_load_gives_the_same_plan(self):
        """Plan.load reads .tsq bytes without a Net: the same outputs, bit
        for bit, as a plan made from the net; bad bytes raise."""
        with tsq.Context() as ctx:
            net, x = self.converted_net(ctx)
            data = net.save()
            with tsq.Plan(ctx, net) as a, tsq.Plan.load(ctx, data) as b:
                np.testing.assert_array_equal(b.run(x), a.run(x))
            with tsq.Plan.load(ctx, bytearray(data)) as b:
                self.assertGreaterEqual(b.get("lowbit_layers"), 1)
            with self.assertRaises(TypeError):
                tsq.Plan.load(ctx, 5)
            bad = bytearray(data)
            bad[len(bad) // 2] ^= 0x10
            with self.assertRaises(tsq.TsqError) as e:
                tsq.Plan.load(ctx, bad)
            self.assertIn(e.exception.name, ("TSQ_ERR_FORMAT", "TSQ_ERR_VERSION"))
            self.assertIn("plan_load", e.exception.message)

    def test_unconverted_net_refused(self):
        with tsq.Context() as ctx:
            net = tsq.Net(ctx, (4,))
            net.append(tsq.Dense(ctx, 4, 2))
            with self.assertRaises(tsq.TsqError) as e:
                tsq.Plan(ctx, net)
            self.assertEqual(e.exception.name, "TSQ_ERR_STATE")
            self.assertIn("low-bit", e.exception.message)


if __name__ == "__main__":
    unittest.main()
