"""Packed low-bit inference through the bindings, against numpy."""

import array
import unittest

from tsqtest import TestCase, needs_numpy, np, tsq


def ref_thresholds(acc, alpha, bias, eps, delta, bits):
    """plan.h's epilogue in float32: v = fl(fl(acc * alpha) + bias), Q(v)."""
    v = (acc.astype(np.float32) * alpha).astype(np.float32)
    v = (v + bias).astype(np.float32)
    inv = (np.float32(1.0) / delta).astype(np.float32)
    k = np.clip(np.floor((v * inv).astype(np.float32) + np.float32(0.5)), 1, 2 ** bits - 1)
    return np.where(v <= eps, 0, k).astype(np.uint8)


@needs_numpy
class Kernels(TestCase):

    def test_names_and_availability(self):
        self.assertEqual(tsq.kernel_name("ref"), "ref")
        self.assertEqual(tsq.kernel_name(tsq.TSQ_KERNEL_AVX2), "avx2")
        self.assertEqual(tsq.kernel_name(77), "unknown")
        self.assertTrue(tsq.kernel_available("ref"))
        self.assertTrue(tsq.kernel_available("auto"))
        self.assertEqual(tsq.kernel_available("avx2"),
                         bool(tsq.cpu_features() & tsq.TSQ_CPU_AVX2))
        self.assertIn("ref", tsq.available_kernels())
        with self.assertRaises(tsq.TsqError) as cm:
            tsq.kernel_available(77)
        self.assertEqual(cm.exception.name, "TSQ_ERR_INVALID")

    def test_pack_round_trip(self):
        rng = np.random.RandomState(0)
        for bits in (2, 3, 8):
            m = 2 ** (bits - 1) - 1
            w = rng.randint(-m, m + 1, size=(70, 9)).astype(np.int8)
            pw = tsq.PackedWeights(self.ctx, w, bits)
            self.assertEqual((pw.rows, pw.cols, pw.weight_bits), (70, 9, bits))
            self.assertGreater(pw.nbytes, 0)
            np.testing.assert_array_equal(pw.unpack(), w)
            out = np.zeros((70, 9), np.int8)
            self.assertIs(pw.unpack(out=out), out)
            np.testing.assert_array_equal(out, w)

    def test_gemm_every_kernel_matches_numpy(self):
        rng = np.random.RandomState(1)
        w = rng.randint(-1, 2, size=(130, 24)).astype(np.int8)
        codes = rng.randint(0, 4, size=(7, 130)).astype(np.uint8)
        want = codes.astype(np.int32) @ w.astype(np.int32)
        pw = tsq.PackedWeights(self.ctx, w, 2)
        for k in tsq.available_kernels():
            acc = tsq.lowbit_gemm(self.ctx, pw, codes, 2, kernel=k)
            self.assertEqual(acc.dtype, np.int32)
            np.testing.assert_array_equal(acc, want, err_msg=k)
            self.assertIn(tsq.lowbit_kernel_select(self.ctx, pw, 7, 2, k),
                          tsq.available_kernels())
        # one row, a caller workspace, an output array
        ws = bytearray(tsq.lowbit_workspace_size(self.ctx, pw, 1, 2))
        out = np.zeros((1, 24), np.int32)
        r = tsq.lowbit_gemm(self.ctx, pw, codes[0], 2, out=out, workspace=ws)
        self.assertIs(r, out)
        np.testing.assert_array_equal(out[0], want[0])

    def test_thresholds_match_the_float_epilogue(self):
        rng = np.random.RandomState(2)
        C = 6
        alpha = np.array([0.5, -0.25, 0.0, 1.5, 0.01, -3.0], np.float32)
        bias = rng.randn(C).astype(np.float32)
        th = tsq.Thresholds(self.ctx, alpha, bias, 2, 0.4, 1.0)
        self.assertEqual((th.channels, th.code_bits), (C, 2))
        acc = rng.randint(-40, 40, size=(50, C)).astype(np.int32)
        got = th.apply(acc, 50)
        want = ref_thresholds(acc, alpha, bias, np.float32(0.4), np.float32(1.0), 2)
        np.testing.assert_array_equal(got, want)
        direction, top, t = th.channel(1)
        self.assertEqual(direction, -1)
        self.assertEqual(len(t), 3)
        self.assertEqual(th.channel(0)[0], 1)
        # per-channel eps and delta
        eps = np.full(C, 0.3, np.float32)
        delta = np.linspace(0.5, 2, C).astype(np.float32)
        th2 = tsq.Thresholds(self.ctx, alpha, None, 3, eps, delta)
        got2 = th2.apply(acc.reshape(-1), 50, kernel="ref")
        want2 = np.stack([ref_thresholds(acc[:, c], alpha[c], np.float32(0), eps[c], delta[c], 3)
                          for c in range(C)], axis=1)
        np.testing.assert_array_equal(got2, want2)

    def test_fused_layer(self):
        rng = np.random.RandomState(3)
        w = rng.randint(-1, 2, size=(64, 8)).astype(np.int8)
        codes = rng.randint(0, 4, size=(9, 64)).astype(np.uint8)
        pw = tsq.PackedWeights(self.ctx, w, 2)
        alpha = rng.rand(8).astype(np.float32) * 0.2
        th = tsq.Thresholds(self.ctx, alpha, np.zeros(8, np.float32), 2, 0.5, 1.0)
        acc = tsq.lowbit_gemm(self.ctx, pw, codes, 2)
        for k in tsq.available_kernels():
            fused = tsq.lowbit_gemm_threshold(self.ctx, pw, codes, 2, th, kernel=k)
            np.testing.assert_array_equal(fused, th.apply(acc, 9), err_msg=k)

    def test_im2col_codes(self):
        rng = np.random.RandomState(4)
        x = rng.randint(0, 4, size=(2, 3, 5, 4)).astype(np.uint8)
        got = tsq.im2col_codes(self.ctx, x, 3, 2, stride=(2, 1), pad=(1, 0))
        ref = tsq.im2col_rows(self.ctx, x, 3, 2, stride=(2, 1), pad=(1, 0))
        np.testing.assert_array_equal(got, ref)
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        got2 = tsq.im2col_codes(self.ctx, nhwc, 3, 2, stride=(2, 1), pad=(1, 0), layout="nhwc")
        # NHWC columns are (ky, kx, c): a permutation of the NCHW ones
        perm = [c * 6 + ky * 2 + kx for ky in range(3) for kx in range(2) for c in range(3)]
        np.testing.assert_array_equal(got2, ref[:, perm])


class PlanErrors(TestCase):

    def test_errors_go_on_the_context(self):
        w = tsq.Tensor(self.ctx, [[2, 0], [0, 1]], dtype="int8")
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "w[0][0] = 2"):
            tsq.PackedWeights(self.ctx, w, 2)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.PackedWeights(self.ctx, w, 1)
        with self.assertRaisesTsq("TSQ_ERR_DTYPE"):
            tsq.PackedWeights(self.ctx, tsq.Tensor(self.ctx, [[1.0]]), 2)
        pw = tsq.PackedWeights(self.ctx, tsq.Tensor(self.ctx, [[1, 0], [0, -1]], dtype="int8"))
        codes = tsq.Tensor(self.ctx, [[4, 1]], dtype="uint8")
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "codes[0][0] = 4"):
            tsq.lowbit_gemm(self.ctx, pw, codes, 2)
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            tsq.lowbit_gemm(self.ctx, pw, tsq.Tensor(self.ctx, [[1, 1, 1]], dtype="uint8"), 2)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.lowbit_gemm(self.ctx, pw, tsq.Tensor(self.ctx, [[1, 1]], dtype="uint8"), 2,
                            kernel=77)
        with self.assertRaisesTsq("TSQ_ERR_TOO_SMALL"):
            tsq.lowbit_gemm(self.ctx, pw, tsq.Tensor(self.ctx, [[1, 1]], dtype="uint8"), 2,
                            out=array.array("i", [0]))
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE"):
            tsq.Thresholds(self.ctx, [float("nan")], None, 2, 0.5, 1.0)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.Thresholds(self.ctx, [1.0], None, 2, 0.5, -1.0)
        th = tsq.Thresholds(self.ctx, [1.0, 1.0], None, 2, 0.5, 1.0)
        with self.assertRaisesTsq("TSQ_ERR_TOO_SMALL"):
            th.apply([1, 2, 3], 2)
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            tsq.im2col_codes(self.ctx, tsq.Tensor(self.ctx, [[1, 2]], dtype="uint8"), 1, 1)
        with self.assertRaises(ValueError):
            tsq.Thresholds(self.ctx, [1.0, 1.0], None, 2, [0.5, 0.5], [1.0])

    def test_without_numpy_types(self):
        pw = tsq.PackedWeights(self.ctx, tsq.Tensor(self.ctx, [[1, 0], [-1, 1]], dtype="int8"))
        out = array.array("i", [0, 0])
        tsq.lowbit_gemm(self.ctx, pw, tsq.Tensor(self.ctx, [[3, 2]], dtype="uint8"), 2, out=out)
        self.assertEqual(out.tolist(), [1, 2])


if __name__ == "__main__":
    unittest.main()
