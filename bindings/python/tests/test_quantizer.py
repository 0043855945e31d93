"""Step 1 through the bindings, against the raw C API and the formula."""

import array
import ctypes
import unittest

from tsqtest import TestCase, needs_numpy, np, raw_tensor, tsq

lib = tsq.lib


def ref_codes(x, eps, delta, bits):
    """quantizer.h's formula, in float32 as the library computes it."""
    x = x.astype(np.float32)
    inv = np.float32(1.0) / np.float32(delta)
    k = np.floor(x * inv + np.float32(0.5))
    k = np.clip(k, 1, 2 ** bits - 1)
    return np.where(x <= np.float32(eps), 0, k).astype(np.uint8)


@needs_numpy
class AgainstC(TestCase):
    """The wrapper's results equal those of the same calls made directly
    through ctypes on the same data."""

    def c_fit(self, x, bits, mode, channels=0, extra=()):
        q = ctypes.POINTER(tsq.ffi.tsq_quantizer)()
        self.assertEqual(lib.tsq_quantizer_create(self.ctx.handle, bits, channels,
                                                  ctypes.byref(q)), 0)
        self.assertEqual(lib.tsq_quantizer_set_option(q, tsq.TSQ_QUANTIZER_EPS_MODE, mode), 0)
        for k, v in extra:
            self.assertEqual(lib.tsq_quantizer_set_option(q, k, v), 0)
        xt = raw_tensor(self.ctx, x)
        self.assertEqual(lib.tsq_quantizer_observe(q, xt), 0)
        self.assertEqual(lib.tsq_quantizer_fit(q), 0)
        out = []
        for c in range(max(channels, 1)):
            e, d = ctypes.c_float(), ctypes.c_float()
            self.assertEqual(lib.tsq_quantizer_get_channel(q, c, ctypes.byref(e),
                                                           ctypes.byref(d)), 0)
            out.append((e.value, d.value))
        codes = np.zeros(x.shape, np.uint8)
        ct = raw_tensor(self.ctx, codes)
        self.assertEqual(lib.tsq_quantizer_encode(q, xt, ct), 0)
        lib.tsq_tensor_destroy(ct)
        lib.tsq_tensor_destroy(xt)
        lib.tsq_quantizer_destroy(q)
        return out, codes

    def test_fit_matches_c_in_every_mode(self):
        x = np.random.RandomState(3).randn(5000).astype(np.float32)
        for bits in (1, 2, 4):
            for mode in ("joint", "fixed", "sparsity", "plain"):
                want, want_codes = self.c_fit(x, bits, tsq.EPS_MODES[mode])
                q = tsq.Quantizer(self.ctx, bits, eps_mode=mode)
                q.observe(x[:2000]).observe(x[2000:]).fit()      # batching does not matter
                self.assertEqual(q.parameters(), want, (bits, mode))
                codes = q.encode(x)
                np.testing.assert_array_equal(codes, want_codes)
                eps, delta = want[0]
                np.testing.assert_array_equal(codes, ref_codes(x, eps, delta, bits))
                if mode == "joint":
                    self.assertAlmostEqual(eps, delta / 2, places=6)
                if mode == "plain":
                    self.assertEqual(eps, 0.0)
                q.close()

    def test_per_channel_matches_c(self):
        rng = np.random.RandomState(4)
        x = (rng.randn(64, 3, 5, 5) * np.array([0.5, 1, 2]).reshape(1, 3, 1, 1)).astype(np.float32)
        want, want_codes = self.c_fit(x, 2, tsq.TSQ_EPS_JOINT, channels=3)
        q = tsq.Quantizer(self.ctx, 2, channels=3)
        q.observe(x).fit()
        self.assertEqual(q.channels, 3)
        self.assertEqual(q.parameters(), want)
        np.testing.assert_array_equal(q.encode(x), want_codes)
        deltas = [d for e, d in want]
        self.assertLess(deltas[0], deltas[1])
        self.assertLess(deltas[1], deltas[2])

    def test_learn_codes_error_and_sparsity(self):
        x = np.random.RandomState(5).randn(4000).astype(np.float32)
        q = tsq.Quantizer(self.ctx, 2)
        r = q.learn_codes(x)
        eps, delta = q.get_channel(0)
        codes = ref_codes(x, eps, delta, 2)
        np.testing.assert_array_equal(r.codes, codes)
        pos = x > 0
        err = np.sum((x[pos].astype(np.float64) - codes[pos] * np.float64(delta)) ** 2) / x.size
        self.assertAlmostEqual(r.error, err, delta=1e-6 * err)
        self.assertEqual(r.sparsity, float(np.mean(codes == 0)))
        self.assertEqual(q.observed, 0)            # x alone, not the statistics
        # the same through the raw call
        q2 = ctypes.POINTER(tsq.ffi.tsq_quantizer)()
        lib.tsq_quantizer_create(self.ctx.handle, 2, 0, ctypes.byref(q2))
        xt = raw_tensor(self.ctx, x)
        e2, s2 = ctypes.c_double(), ctypes.c_double()
        self.assertEqual(lib.tsq_learn_codes(q2, xt, None, ctypes.byref(e2), ctypes.byref(s2)), 0)
        self.assertEqual((r.error, r.sparsity), (e2.value, s2.value))
        lib.tsq_tensor_destroy(xt)
        lib.tsq_quantizer_destroy(q2)
        # the module-level function and the histogram variant
        r3 = tsq.learn_codes(q, x, codes=False)
        self.assertIsNone(r3.codes)
        q.observe(x)
        r4 = q.learn_codes()
        self.assertIsNone(r4.codes)
        self.assertAlmostEqual(r4.sparsity, r.sparsity, delta=0.01)

    def test_decode_forward_backward(self):
        x = np.linspace(-2, 6, 101).astype(np.float32)
        q = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.4, 1.0)
        codes = q.encode(x)
        np.testing.assert_array_equal(q.decode(codes), codes.astype(np.float32) * 1.0)
        y = q.forward(x)
        np.testing.assert_array_equal(y, codes.astype(np.float32))
        g = np.random.RandomState(6).randn(101).astype(np.float32)
        dx = q.backward(x, g)
        mask = (x > 0) & (x < 3.0)
        np.testing.assert_array_equal(dx, np.where(mask, g, 0).astype(np.float32))
        # in place
        xc = x.copy()
        self.assertIs(q.forward(xc, out=xc), xc)
        np.testing.assert_array_equal(xc, y)
        gc_ = g.copy()
        q.backward(x, gc_, out=gc_)
        np.testing.assert_array_equal(gc_, dx)

    def test_tensor_in_tensor_out(self):
        q = tsq.Quantizer(self.ctx, 3).set_channel(0, 0.1, 0.5)
        x = tsq.Tensor(self.ctx, np.linspace(0, 4, 9).astype(np.float32))
        codes = q.encode(x)
        self.assertIsInstance(codes, tsq.Tensor)
        self.assertEqual(codes.dtype, "uint8")
        self.assertEqual(codes.tolist(), [0, 1, 2, 3, 4, 5, 6, 7, 7])

    def test_options(self):
        q = tsq.Quantizer(self.ctx, 2, eps=0.25, sparsity=0.5, hist_resolution=8)
        self.assertEqual((q.bits, q.fixed_eps, q.sparsity, q.hist_resolution), (2, 0.25, 0.5, 8))
        self.assertEqual(q.eps_mode, "joint")
        q.eps_mode = "fixed"
        self.assertEqual(q.get_option(tsq.TSQ_QUANTIZER_EPS_MODE), tsq.TSQ_EPS_FIXED)
        q.bits = 4
        self.assertEqual(q.bits, 4)
        self.assertFalse(q.fitted)
        self.assertEqual(tsq.Quantizer.option_bounds("bits"), (1.0, 8.0))
        self.assertEqual(tsq.Quantizer.option_bounds("sparsity"), (0.0, 1.0))

    def test_save_load(self):
        q = tsq.Quantizer(self.ctx, 3, channels=2, eps_mode="sparsity", sparsity=0.4)
        q.set_channel(0, 0.25, 0.5).set_channel(1, 0.125, 2.0)
        data = q.save()
        self.assertEqual(data[:4], b"TSQQ")
        r = tsq.Quantizer.load(self.ctx, data)
        self.assertEqual(r.parameters(), q.parameters())
        self.assertEqual((r.bits, r.channels, r.eps_mode, r.sparsity),
                         (3, 2, "sparsity", q.sparsity))
        r2 = tsq.Quantizer.load(self.ctx, bytearray(data))
        self.assertEqual(r2.save(), data)


class WithoutNumpyTypes(TestCase):
    """Lists and array.array work for every quantizer call."""

    def test_lists_and_arrays(self):
        q = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.5, 1.0)
        x = array.array("f", [-1.0, 0.25, 0.75, 1.6, 2.4, 9.0])
        codes = q.encode(tsq.Tensor(self.ctx, x))
        self.assertEqual(codes.tolist(), [0, 0, 1, 2, 2, 3])
        t = q.decode(tsq.Tensor(self.ctx, [0, 1, 2, 3], dtype="uint8"))
        self.assertEqual(t.tolist(), [0.0, 1.0, 2.0, 3.0])
        q2 = tsq.Quantizer(self.ctx, 2)
        q2.observe([0.5, 1.0, 1.5, 2.0]).fit()
        self.assertTrue(q2.fitted)
        self.assertEqual(q2.observed, 4)


class QuantizerErrors(TestCase):
    """Every failing call raises TsqError with the library's message, from
    the quantizer (calls) or the context (constructors)."""

    def test_constructor_errors_come_from_the_context(self):
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "bits"):
            tsq.Quantizer(self.ctx, 9)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.Quantizer(self.ctx, 2, channels=-1)
        with self.assertRaisesTsq("TSQ_ERR_FORMAT"):
            tsq.Quantizer.load(self.ctx, b"TSQQ" + b"\0" * 20)
        with self.assertRaisesTsq("TSQ_ERR_FORMAT"):
            tsq.Quantizer.load(self.ctx, b"")
        data = bytearray(tsq.Quantizer(self.ctx, 2).save())
        data[4] = 99                                   # format version
        with self.assertRaises(tsq.TsqError) as cm:
            tsq.Quantizer.load(self.ctx, bytes(data))
        self.assertIn(cm.exception.name, ("TSQ_ERR_VERSION", "TSQ_ERR_FORMAT"))
        self.assertTrue(cm.exception.message)

    def test_state_and_data_errors(self):
        q = tsq.Quantizer(self.ctx, 2)
        x = [0.5, 1.0]
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            q.encode(tsq.Tensor(self.ctx, x))
        with self.assertRaisesTsq("TSQ_ERR_NO_DATA"):
            q.fit()
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE", "NaN"):
            q.observe([1.0, float("nan")])
        self.assertEqual(q.observed, 0)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            q.get_channel(0)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            q.get_channel(5)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            q.set_channel(0, -1.0, 1.0)
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE"):
            q.set_channel(0, 0.0, float("inf"))
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            q.set_option("bits", 0)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            q.set_option("channels", 4)                 # read-only
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            q.learn_codes(None, codes=tsq.Tensor.zeros(self.ctx, (2,), "uint8"))
        with self.assertRaises(tsq.TsqError) as cm:
            tsq.Quantizer.option_bounds(99)
        self.assertEqual(cm.exception.name, "TSQ_ERR_INVALID")
        with self.assertRaises(ValueError):
            q.set_option("no_such", 1)
        with self.assertRaises(ValueError):
            q.eps_mode = "bogus"

    def test_shape_and_dtype_errors(self):
        q = tsq.Quantizer(self.ctx, 2, channels=3)
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            q.observe(tsq.Tensor.zeros(self.ctx, (4, 2)))
        with self.assertRaisesTsq("TSQ_ERR_DTYPE"):
            q.observe(tsq.Tensor.zeros(self.ctx, (4, 3), "uint8"))
        p = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.5, 1.0)
        x = tsq.Tensor.zeros(self.ctx, (4,))
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            p.encode(x, out=tsq.Tensor.zeros(self.ctx, (5,), "uint8"))
        with self.assertRaisesTsq("TSQ_ERR_DTYPE"):
            p.encode(x, out=tsq.Tensor.zeros(self.ctx, (4,)))
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            p.decode(tsq.Tensor(self.ctx, [4], dtype="uint8"))

    def test_failed_calls_free_their_temporaries(self):
        q = tsq.Quantizer(self.ctx, 2)
        before = self.alloc.live_blocks
        for _ in range(20):
            with self.assertRaises(tsq.TsqError):
                q.encode([1.0, 2.0])
        self.assertEqual(self.alloc.live_blocks, before)


if __name__ == "__main__":
    unittest.main()
