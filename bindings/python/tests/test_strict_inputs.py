"""The one input rule (tsq/_buffers.py, docs/python.md "Which inputs are
accepted"): no silent lossy conversion. Every bad call raises TypeError (the
wrong kind of data) or ValueError (a value the type cannot hold), naming
the argument; the accepted conversions give exact values."""

import unittest

from tsqtest import TestCase, needs_numpy, np, tsq


@needs_numpy
class StrictArrays(TestCase):

    def setUp(self):
        super().setUp()
        self.q = tsq.Quantizer(self.ctx, bits=2).set_channel(0, 0.5, 1.0)

    def test_codes_are_never_wrapped_or_truncated(self):
        with self.assertRaisesRegex(ValueError, r"codes: element 0 = 300 is outside 0\.\.255"):
            self.q.decode(np.array([300], np.int64))
        with self.assertRaisesRegex(ValueError, r"codes: element 0 = 0\.5 is not an integer"):
            self.q.decode(np.array([0.5]))
        with self.assertRaisesRegex(ValueError, "data: element 0 = 300"):
            tsq.Tensor(self.ctx, np.array([300]), "uint8")
        with self.assertRaisesRegex(ValueError, "not an integer"):
            tsq.Tensor(self.ctx, np.array([0.5]), "int8")
        with self.assertRaisesRegex(ValueError, "element 1 = 0.5 is not an integer"):
            tsq.Tensor(self.ctx, [1, 0.5], "uint8")
        with self.assertRaisesRegex(ValueError, "element 0 = -129"):
            tsq.Tensor(self.ctx, [-129], "int8")

    def test_exact_integer_values_are_converted(self):
        self.assertEqual(self.q.decode(np.array([2.0, 3.0])).tolist(), [2.0, 3.0])
        self.assertEqual(self.q.decode(np.array([1, 2], np.int64)).tolist(), [1.0, 2.0])
        self.assertEqual(tsq.Tensor(self.ctx, np.array([-128, 127]), "int8").tolist(),
                         [-128, 127])

    def test_kinds_refused_with_the_argument_name(self):
        for bad, kind in ((np.array([1 + 2j]), "complex128"), (np.array([True]), "bool"),
                          (np.array([1], np.int64), "int64"), (np.array(["a"], object), "object")):
            with self.assertRaisesRegex(TypeError, "^x: .*%s" % kind):
                self.q.encode(bad)
        with self.assertRaisesRegex(TypeError, "^grad_out: .*complex"):
            self.q.backward(np.ones(2, np.float32), np.ones(2, complex))
        with self.assertRaisesRegex(TypeError, "^alpha: .*complex"):
            tsq.LowbitDense(self.ctx, 3, 2).set(np.zeros((2, 3), np.int8), np.ones(2, complex))
        with self.assertRaisesRegex(TypeError, "^x: numpy int32"):
            mlp = tsq.Net(self.ctx, (3,)).append(tsq.Dense(self.ctx, 3, 2))
            mlp.forward(np.ones((2, 3), np.int32))
        with self.assertRaisesRegex(TypeError, "^x: element 1 is 'a'"):
            self.q.encode([1.0, "a"])
        with self.assertRaisesRegex(TypeError, "^x: element 0 is True"):
            self.q.encode([True])
        with self.assertRaisesRegex(TypeError, "^x: float is not array data"):
            self.q.encode(1.0)

    def test_float_overflow_refused(self):
        with self.assertRaisesRegex(ValueError, "x: element 0 = 1e\\+300 is too large"):
            self.q.encode(np.array([1e300]))
        with self.assertRaisesRegex(ValueError, "x: element 0 = 1e\\+300 is too large"):
            self.q.encode([1e300])
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE"):     # inf stays inf: the library
            self.q.encode(np.array([np.inf]))                # refuses it

    def test_float64_is_rounded_to_float32(self):
        self.assertEqual(self.q.encode(np.array([0.7, 2.2])).tolist(), [1, 2])

    def test_regressor_codes(self):
        reg = tsq.Regressor(self.ctx).set_levels(2, 0.5, 1.0)
        W = np.ones((3, 1), np.float32)
        with self.assertRaisesRegex(ValueError, r"^Y: element \(0, 0\) = 300"):
            reg.fit_transform(np.ones((4, 3), np.uint8), np.full((4, 1), 300), W_init=W)
        with self.assertRaisesRegex(ValueError, r"^Y: element \(0, 0\) = 0.5"):
            reg.fit_transform(np.ones((4, 3), np.uint8), np.full((4, 1), 0.5), W_init=W)
        with self.assertRaisesRegex(TypeError, "^X: numpy int64"):
            reg.fit_transform(np.ones((4, 3), np.int64), np.ones((4, 1), np.uint8), W_init=W)

    def test_labels(self):
        net = tsq.Net(self.ctx, (3,)).append(tsq.Dense(self.ctx, 3, 2))
        net.set_optimizer_sgd(0.1)
        X = np.ones((4, 3), np.float32)
        with self.assertRaisesRegex(TypeError, "^labels: float64"):
            net.train_step(X, np.array([1.7, 0, 1, 0]))
        with self.assertRaisesRegex(ValueError, "^labels: element 0 = 4294967297"):
            net.train_step(X, np.array([2 ** 32 + 1, 0, 1, 0]))
        with self.assertRaisesRegex(TypeError, "^labels: element 0 is 1.0"):
            net.train_step(X, [1.0, 0, 1, 0])
        net.train_step(X, np.array([1, 0, 1, 0], np.int64))     # exact: accepted

    def test_non_contiguous_inputs_copied_outputs_refused(self):
        x = np.ones((4, 4), np.float32)[:, ::2]
        self.assertEqual(self.q.encode(x).shape, (4, 2))
        t = tsq.Tensor(self.ctx, x)
        self.assertTrue(t.copied)
        with self.assertRaisesRegex(ValueError, "^out: an output array must be"):
            self.q.encode(np.ones(4, np.float32), out=np.zeros((4, 2), np.uint8)[:, 0])


@needs_numpy
class LowbitSetShape(TestCase):

    def test_dense_takes_out_in_only(self):
        ld = tsq.LowbitDense(self.ctx, 3, 2)
        self.assertEqual(ld.weight_shape(), (2, 3))
        with self.assertRaisesRegex(ValueError, r"codes must have shape \(2, 3\), got \(3, 2\) "
                                                r"\(that is the transposed shape"):
            ld.set(np.zeros((3, 2), np.int8), np.ones(2, np.float32))
        with self.assertRaisesRegex(ValueError, r"got \(6,\)"):
            ld.set(np.zeros(6, np.int8), np.ones(2, np.float32))
        with self.assertRaisesRegex(ValueError, r"alpha must have shape \(2,\)"):
            ld.set(np.zeros((2, 3), np.int8), np.ones(3, np.float32))
        codes = np.array([[1, 0, -1], [0, 1, 1]], np.int8)
        ld.set(codes, np.array([0.5, 2.0], np.float32))
        self.assertEqual(ld.states()["weight_codes"].tolist(), codes.tolist())

    def test_conv_takes_cout_cin_kh_kw_only(self):
        lc = tsq.LowbitConv2d(self.ctx, 2, 3, (1, 2))
        self.assertEqual(lc.weight_shape(), (3, 2, 1, 2))
        with self.assertRaisesRegex(ValueError, r"\(3, 2, 1, 2\), got \(3, 4\)"):
            lc.set(np.zeros((3, 4), np.int8), np.ones(3, np.float32))
        lc.set(np.zeros((3, 2, 1, 2), np.int8), np.ones(3, np.float32))


class StrictScalars(TestCase):

    def test_integers_are_not_truncated(self):
        with self.assertRaisesRegex(TypeError, "bits must be an integer, not float 2.7"):
            tsq.Quantizer(self.ctx, bits=2.7)
        with self.assertRaisesRegex(TypeError, "bits must be an integer, not str"):
            tsq.Quantizer(self.ctx, bits="2")
        with self.assertRaisesRegex(TypeError, "threads must be an integer, not float 1.5"):
            self.ctx.threads = 1.5
        with self.assertRaisesRegex(TypeError, "in_features must be an integer"):
            tsq.Dense(self.ctx, 3.0, 2)

    def test_reals_refuse_complex_and_bool(self):
        q = tsq.Quantizer(self.ctx, bits=2)
        with self.assertRaisesRegex(TypeError, "delta must be a real number, not complex"):
            q.set_channel(0, 0.5, 1 + 1j)
        with self.assertRaisesRegex(TypeError, "eps must be a real number, not bool"):
            q.set_channel(0, True, 1.0)
        if np is not None:
            q.set_channel(np.int64(0), np.float64(0.25), np.float32(0.5))   # numpy scalars: fine
            self.assertEqual(q.get_channel(0), (0.25, 0.5))


if __name__ == "__main__":
    unittest.main()
