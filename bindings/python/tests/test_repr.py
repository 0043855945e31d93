"""__repr__ of every handle shows what matters (bits, eps, delta, shapes),
and the fixed mode's eps option reads as fixed_eps (Quantizer.eps is gone)."""

import unittest

from tsqtest import TestCase, tsq


class Reprs(TestCase):

    def test_quantizer(self):
        q = tsq.Quantizer(self.ctx, bits=3, eps_mode="fixed", eps=0.25)
        self.assertIn("bits=3", repr(q))
        self.assertIn("fixed_eps=0.25", repr(q))
        self.assertIn("not fitted", repr(q))
        self.assertIsNone(q.fitted_eps)
        q.set_channel(0, 0.5, 0.75)
        self.assertIn("eps=0.5 delta=0.75", repr(q))
        self.assertEqual((q.fitted_eps, q.fitted_delta), (0.5, 0.75))
        self.assertEqual(q.fixed_eps, 0.25)
        with self.assertRaises(AttributeError):      # the ambiguous old name is gone
            q.eps
        self.assertIn("closed", repr(q.close() or q))

    def test_layers_net_plan(self):
        net = tsq.Net(self.ctx, (4,))
        net.append(tsq.Dense(self.ctx, 4, 6)).append(tsq.BatchNorm(self.ctx, 6))
        net.append(tsq.ActQuant(self.ctx, 2, 0.25, 0.5)).append(tsq.ReLU(self.ctx))
        net.layer(2).output_codes = True
        net.remove_layer(3)
        net.append(tsq.LowbitDense(self.ctx, 6, 3)).append(tsq.ActQuant(self.ctx, 2, 0.2, 0.4))
        net.append(tsq.Dense(self.ctx, 3, 2))
        net.layer(3).set([[1, 0, -1, 0, 1, 0]] * 3, [0.5] * 3)
        r = repr(net)
        self.assertIn("(4,) -> (2,)", r)
        self.assertIn("lowbit_dense", r)
        self.assertIn("dense 4 -> 6", repr(net.layer(0)))
        self.assertIn("2-bit, eps=0.25 delta=0.5, codes", repr(net.layer(2)))
        self.assertIn("6 -> 3, 2-bit weights", repr(net.layer(3)))
        self.assertIn("batchnorm 6 channels", repr(net.layer(1)))
        conv = tsq.Conv2d(self.ctx, 1, 4, 3, 2, 1)
        self.assertIn("1 -> 4, 3x3, stride 2, pad 1", repr(conv))
        plan = tsq.Plan(self.ctx, net)
        self.assertIn("1 low-bit layers", repr(plan))
        self.assertIn("inputs 4 -> outputs 2", repr(plan))
        self.assertIn("2-bit weights", repr(tsq.Regressor(self.ctx)))
        self.assertIn("threads=1", repr(self.ctx))
        th = tsq.Thresholds(self.ctx, [1.0, 2.0], None, 2, 0.5, 1.0)
        self.assertIn("2 channels, 2-bit codes", repr(th))


if __name__ == "__main__":
    unittest.main()
