"""Step 2 through the bindings: planted recovery, C agreement, streaming,
sharded statistics (what an MPI run does), im2col helpers, errors."""

import array
import ctypes
import unittest

from tsqtest import TestCase, needs_numpy, np, raw_tensor, tsq

lib = tsq.lib


def planted(n, d, C, seed, maxx=3):
    """X codes 0..maxx, ternary w*, alpha*, b* and Y = Q(alpha* X w* + b*)
    with eps = 0.5, delta = 1, 2 bits; every pre-activation at least 1/8
    from a level boundary (as tests/test_regressor.c builds it)."""
    rng = np.random.RandomState(seed)
    X = rng.randint(0, maxx + 1, size=(n, d)).astype(np.uint8)
    w = rng.randint(-1, 2, size=(d, C)).astype(np.int8)
    alpha = np.array([0.25 * (1 + c % 2) for c in range(C)], np.float32)
    mean = w.sum(axis=0) * 0.5 * maxx
    b = (1.125 - 0.25 * np.floor(mean * alpha / 0.25)).astype(np.float32)
    P = (alpha * (X.astype(np.int32) @ w.astype(np.int32)).astype(np.float32) + b)
    P = P.astype(np.float32)
    k = np.clip(np.floor(P + np.float32(0.5)), 1, 3)
    Y = np.where(P <= 0.5, 0, k).astype(np.uint8)
    return X, Y, P, w, alpha, b


@needs_numpy
class Planted(TestCase):

    def regressor(self, **options):
        reg = tsq.Regressor(self.ctx, **options)
        reg.set_levels(2, 0.5, 1.0)
        return reg

    def test_recovers_planted_weights(self):
        X, Y, P, w, alpha, b = planted(4000, 16, 4, seed=11)
        reg = self.regressor()
        r = reg.fit_transform(X, Y, P=P)
        self.assertEqual(r.objective, 0.0)
        np.testing.assert_array_equal(r.weights, w)
        self.assertEqual(r.weights.dtype, np.int8)
        self.assertEqual(r.weights.shape, (16, 4))
        np.testing.assert_allclose(r.alpha, alpha, rtol=0.2)
        hist = reg.history("best")
        self.assertEqual(hist[-1], 0.0)
        self.assertEqual(len(reg.history("objective")), len(hist))
        self.assertTrue(all(a >= c for a, c in zip(hist, hist[1:])))
        per = reg.channel_objectives()
        self.assertEqual(list(per), [0.0] * 4)

    def test_recovers_from_codes_alone(self):
        X, Y, P, w, alpha, b = planted(6000, 12, 3, seed=12)
        reg = self.regressor(rounds=40, lambda_growth=1.0)
        r = reg.fit_transform(X, Y)
        self.assertGreater(reg.history()[0], 0.0)        # the rounds did the work
        self.assertEqual(r.objective, 0.0)
        np.testing.assert_array_equal(r.weights, w)

    def test_same_result_as_the_raw_c_call(self):
        X, Y, P, w, alpha, b = planted(2000, 10, 3, seed=13)
        Yn = Y.copy()
        Yn[::7] = np.minimum(Yn[::7] + 1, 3)              # not exactly solvable
        reg = self.regressor(rounds=5)
        r = reg.fit_transform(X, Yn)
        # raw
        rr = ctypes.POINTER(tsq.ffi.tsq_regressor)()
        self.assertEqual(lib.tsq_regressor_create(self.ctx.handle, ctypes.byref(rr)), 0)
        self.assertEqual(lib.tsq_regressor_set_levels(rr, 2, 0.5, 1.0), 0)
        self.assertEqual(lib.tsq_regressor_set_option(rr, tsq.TSQ_REGRESSOR_ROUNDS, 5), 0)
        Wc = np.zeros((10, 3), np.int8)
        Ac = np.zeros(3, np.float32)
        Bc = np.zeros(3, np.float32)
        ts = [raw_tensor(self.ctx, a) for a in (X, Yn, Wc, Ac, Bc)]
        obj = ctypes.c_double()
        st = lib.tsq_fit_transform(rr, ts[0], ts[1], None, None, ts[2], ts[3], ts[4],
                                   ctypes.byref(obj))
        self.assertEqual(st, 0, lib.tsq_regressor_errmsg(rr))
        for t in ts:
            lib.tsq_tensor_destroy(t)
        lib.tsq_regressor_destroy(rr)
        self.assertGreater(obj.value, 0.0)
        self.assertEqual(r.objective, obj.value)
        np.testing.assert_array_equal(r.weights, Wc)
        np.testing.assert_array_equal(r.alpha, Ac)
        np.testing.assert_array_equal(r.bias, Bc)

    def test_with_a_fitted_quantizer_and_w_init(self):
        X, Y, P, w, alpha, b = planted(3000, 12, 4, seed=14)
        q = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.5, 1.0)
        reg = tsq.Regressor(self.ctx).set_quantizer(q)
        noise = np.random.RandomState(1).randn(12, 4).astype(np.float32)
        W0 = (alpha * (w + 0.1 * noise)).astype(np.float32)
        r = reg.fit_transform(X, Y, W_init=W0)
        np.testing.assert_array_equal(r.weights, w)
        self.assertEqual(r.objective, 0.0)

    def test_streaming_equals_in_memory(self):
        X, Y, P, w, alpha, b = planted(3000, 10, 3, seed=15)
        Yn = Y.copy()
        Yn[::5] = 0
        one = self.regressor(rounds=4).fit_transform(X, Yn)
        reg = self.regressor(rounds=4)
        batches = [(X[i:i + 700], Yn[i:i + 700]) for i in range(0, 3000, 700)]
        r = reg.fit_stream(batches, 10, 3)
        np.testing.assert_array_equal(r.weights, one.weights)
        np.testing.assert_allclose(r.alpha, one.alpha, rtol=1e-5)
        self.assertAlmostEqual(r.objective, one.objective, delta=1e-6 * max(one.objective, 1))
        again = reg.result()
        np.testing.assert_array_equal(again.weights, r.weights)

    def test_sharded_statistics_give_the_single_process_result(self):
        """Two regressors each fed half the rows, their exported sums added
        and imported (what MPI_Allreduce does across processes), reach the
        same weights as one regressor fed everything."""
        X, Y, P, w, alpha, b = planted(2400, 10, 3, seed=16)
        Yn = Y.copy()
        Yn[::3] = np.minimum(Yn[::3] + 1, 3)
        whole = self.regressor(rounds=4)
        ref = whole.fit_stream([(X, Yn)], 10, 3)
        shards = [self.regressor(rounds=4) for _ in range(2)]
        halves = [(X[:1200], Yn[:1200]), (X[1200:], Yn[1200:])]
        for reg in shards:
            reg.begin(10, 3)
        passes = 0
        done = [False, False]
        while not all(done):
            for reg, (x, y) in zip(shards, halves):
                reg.feed(x, y)
            size = shards[0].stats_size()
            bufs = [np.empty(size) for _ in shards]
            for reg, buf in zip(shards, bufs):
                self.assertIs(reg.stats_export(out=buf), buf)   # written in place
            total = bufs[0] + bufs[1]
            for reg in shards:
                reg.stats_import(total, "replace")
            done = [reg.end_pass() for reg in shards]
            passes += 1
            self.assertEqual(done[0], done[1])
        self.assertGreater(passes, 1)
        for reg in shards:
            r = reg.result()
            np.testing.assert_array_equal(r.weights, ref.weights)
            np.testing.assert_allclose(r.alpha, ref.alpha, rtol=1e-5)

    def test_shares_give_the_unshared_fit(self):
        """Three regressors, each solving a block of the 5 channels and
        exchanging the blocks after every pass (what MPI_Allgatherv does
        across processes), end with the weights, alpha, b and objective of
        one regressor solving every channel, bit for bit."""
        X, Y, P, w, alpha, b = planted(1500, 9, 5, seed=19)
        Yn = Y.copy()
        Yn[::4] = np.minimum(Yn[::4] + 1, 3)
        ref = self.regressor(rounds=3).fit_stream([(X, Yn)], 9, 5)
        regs = [self.regressor(rounds=3).set_share(i, 3) for i in range(3)]
        for reg in regs:
            reg.begin(9, 5)
        done, passes = False, 0
        while not done:
            for reg in regs:
                reg.feed(X, Yn)                           # all rows: no sums to add
                self.assertFalse(reg.end_pass())          # done comes with the import
            sizes = [regs[0].share_size(i) for i in range(3)]
            parts = [reg.share_export(i) for i, reg in enumerate(regs)]
            self.assertEqual([p.size for p in parts], sizes)
            whole = np.concatenate(parts)
            flags = [reg.share_import(whole) for reg in regs]
            self.assertEqual(len(set(flags)), 1)
            done = flags[0]
            passes += 1
        self.assertGreater(passes, 1)
        for reg in regs:
            r = reg.result()
            np.testing.assert_array_equal(r.weights, ref.weights)
            np.testing.assert_array_equal(r.alpha, ref.alpha)
            np.testing.assert_array_equal(r.bias, ref.bias)
            self.assertEqual(r.objective, ref.objective)

    def test_share_errors(self):
        X, Y, P, w, alpha, b = planted(300, 6, 3, seed=20)
        reg = self.regressor()
        with self.assertRaises(tsq.TsqError):
            reg.set_share(2, 2)                           # index outside 0..count-1
        with self.assertRaises(tsq.TsqError):
            reg.set_share(0, 0)
        with self.assertRaises(tsq.TsqError):
            reg.share_size(0)                             # no exchange is due
        reg.set_share(0, 2).begin(6, 3)
        reg.feed(X, Y)
        self.assertFalse(reg.end_pass())
        with self.assertRaises(tsq.TsqError):
            reg.feed(X, Y)                                # the import comes first
        part = reg.share_export(0)
        with self.assertRaises(tsq.TsqError):
            reg.share_import(part)                        # only one share's part
        bad = np.concatenate([part, np.zeros(reg.share_size(1))])
        bad[0] = np.nan
        with self.assertRaises(tsq.TsqError):
            reg.share_import(bad)

    def test_stats_import_add_reads_in_place(self):
        X, Y, P, w, alpha, b = planted(500, 6, 2, seed=17)
        reg = self.regressor()
        reg.begin(6, 2)
        reg.feed(X, Y)
        s = reg.stats_export()
        self.assertEqual(s.dtype, np.float64)
        self.assertEqual(s.size, 1 + 6 + 6 * 7 // 2 + 6 * 2 + 2 * 2)
        reg.stats_import(s, "add")                        # doubles every sum
        np.testing.assert_array_equal(reg.stats_export(), 2 * s)
        reg.stats_import(s, tsq.TSQ_STATS_REPLACE)
        np.testing.assert_array_equal(reg.stats_export(), s)

    def test_fit_stream_with_reduce(self):
        X, Y, P, w, alpha, b = planted(1000, 8, 2, seed=18)
        reg = self.regressor()
        seen = []

        def reduce(s):
            seen.append(s.size)
            return s                                     # a single "process"
        r = reg.fit_stream(lambda: iter([(X[:500], Y[:500]), (X[500:], Y[500:])]), 8, 2,
                           reduce=reduce)
        self.assertTrue(seen)
        self.assertEqual(r.weights.shape, (8, 2))

    def test_options_and_alphabet(self):
        reg = tsq.Regressor(self.ctx, weight_bits=3, rounds=7, loss="linear", margin=0.25)
        self.assertEqual(reg.weight_bits, 3)
        self.assertEqual(reg.alphabet, [-3, -2, -1, 0, 1, 2, 3])
        self.assertEqual(reg.loss, "linear")
        self.assertEqual(reg.get_option("rounds"), 7.0)
        reg.alphabet = [2, -1, 0, 2]
        self.assertEqual(reg.alphabet, [-1, 0, 2])
        self.assertEqual(reg.weight_bits, 0)
        reg.alphabet = array.array("i", [-4, 4])
        self.assertEqual(reg.alphabet, [-4, 4])
        lo, hi = tsq.Regressor.option_bounds("weight_bits")
        self.assertEqual((lo, hi), (2.0, 8.0))

    def test_linear_loss_against_preactivations(self):
        X, Y, P, w, alpha, b = planted(2000, 8, 2, seed=19)
        reg = tsq.Regressor(self.ctx, loss="linear")
        r = reg.fit_transform(X, None, P=P)
        np.testing.assert_array_equal(r.weights, w)
        self.assertLess(r.objective, 1e-6)


@needs_numpy
class Im2col(TestCase):

    def ref_rows(self, x, kh, kw, s, p):
        n, c, h, w = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        rows = []
        for i in range(n):
            for y in range(oh):
                for z in range(ow):
                    rows.append(xp[i, :, y * s:y * s + kh, z * s:z * s + kw].reshape(-1))
        return np.array(rows, dtype=x.dtype), oh, ow

    def test_rows_match_numpy(self):
        x = np.random.RandomState(2).randint(0, 4, size=(2, 3, 5, 6)).astype(np.uint8)
        got = tsq.Regressor.im2col_rows(self.ctx, x, 3, 3, stride=2, pad=1)
        want, oh, ow = self.ref_rows(x, 3, 3, 2, 1)
        np.testing.assert_array_equal(got, want)
        xf = x.astype(np.float32)
        t = tsq.Regressor.im2col_rows(self.ctx, tsq.Tensor(self.ctx, xf), 2, 2)
        self.assertIsInstance(t, tsq.Tensor)
        np.testing.assert_array_equal(t.numpy(), self.ref_rows(xf, 2, 2, 1, 0)[0])

    def test_positions(self):
        x = np.random.RandomState(3).randn(3, 2, 4, 4).astype(np.float32)
        self.ctx.seed = 7
        pos = tsq.Regressor.im2col_sample_positions(self.ctx, 3, 16, 5)
        self.assertEqual(pos.shape, (15,))
        for i in range(3):
            row = pos[i * 5:(i + 1) * 5]
            self.assertEqual(list(row), sorted(set(row)))
            self.assertTrue(0 <= row.min() and row.max() < 16)
        self.ctx.seed = 7
        np.testing.assert_array_equal(
            tsq.Regressor.im2col_sample_positions(self.ctx, 3, 16, 5), pos)
        full, oh, ow = self.ref_rows(x, 3, 3, 1, 1)
        got = tsq.Regressor.im2col_rows(self.ctx, x, 3, 3, pad=1, positions=pos)
        idx = [i * 16 + p for i in range(3) for p in pos[i * 5:(i + 1) * 5]]
        np.testing.assert_array_equal(got, full[idx])
        out = np.random.RandomState(4).randn(3, 6, 4, 4).astype(np.float32)
        rows = tsq.Regressor.im2col_output_rows(self.ctx, out, positions=pos)
        want = out.transpose(0, 2, 3, 1).reshape(-1, 6)[idx]
        np.testing.assert_array_equal(rows, want)
        np.testing.assert_array_equal(tsq.Regressor.im2col_output_rows(self.ctx, out),
                                      out.transpose(0, 2, 3, 1).reshape(-1, 6))

    def test_errors(self):
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "im2col"):
            tsq.Regressor.im2col_rows(self.ctx, np.zeros((2, 3), np.float32), 3, 3)
        with self.assertRaisesTsq("TSQ_ERR_DTYPE"):
            tsq.Regressor.im2col_rows(self.ctx, np.zeros((1, 1, 3, 3), np.int8), 2, 2)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.Regressor.im2col_rows(self.ctx, np.zeros((1, 1, 3, 3), np.uint8), 0, 2)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.Regressor.im2col_sample_positions(self.ctx, 2, 4, 5)


class RegressorErrors(TestCase):

    @needs_numpy
    def test_errors_carry_messages(self):
        X, Y, P, w, alpha, b = planted(100, 4, 2, seed=20)
        reg = tsq.Regressor(self.ctx)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            reg.fit_transform(X, Y)                       # no output quantizer
        reg.set_levels(2, 0.5, 1.0)
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            reg.fit_transform(X, Y[:50])
        Xf = X.astype(np.float32)
        Xf[3, 1] = np.nan
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE"):
            reg.fit_transform(Xf, Y)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            reg.fit_transform(X, np.full_like(Y, 4))       # codes above 2^2 - 1
        with self.assertRaisesTsq("TSQ_ERR_NO_DATA"):
            reg.fit_transform(np.zeros_like(X), Y)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            reg.feed(X, Y)                                 # no fit in progress
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            reg.stats_size()
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            reg.begin(0, 2)
        reg.begin(4, 2)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            reg.set_option("rounds", 3)                     # fit in progress
        reg.feed(X, Y)
        with self.assertRaisesTsq("TSQ_ERR_TOO_SMALL"):
            reg.stats_import(np.zeros(3), "add")
        bad = reg.stats_export()
        bad[0] = np.inf
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE"):
            reg.stats_import(bad, "add")
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            reg.stats_import(reg.stats_export(), 7)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            reg.result()

    def test_option_errors(self):
        reg = tsq.Regressor(self.ctx)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            reg.set_option("weight_bits", 9)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            reg.alphabet = [1, 1]
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            reg.set_levels(9, 0.5, 1.0)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            reg.set_quantizer(tsq.Quantizer(self.ctx, 2))  # not fitted
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            reg.history(99)
        with self.assertRaises(ValueError):
            reg.set_option("loss", "bogus")
        with self.assertRaises(ValueError):
            tsq.Regressor(self.ctx, no_such_option=1)


if __name__ == "__main__":
    unittest.main()
