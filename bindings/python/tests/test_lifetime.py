"""No leaks: 10,000 create/destroy cycles with a stable RSS, exceptions
midway, finalisers."""

import gc
import os
import unittest

from tsqtest import TestCase, needs_numpy, np, rss_pages, tsq

CYCLES = 10000
WARMUP = 1000
# RSS may move by allocator noise; a leak of one small object (~100 bytes)
# per cycle would add ~220 pages over the 9,000 measured cycles.
RSS_BOUND_PAGES = 64


def cycle(x, labels):
    """One round of everything the bindings create and destroy."""
    with tsq.Context() as ctx:
        t = tsq.Tensor(ctx, x)
        q = tsq.Quantizer(ctx, 2).set_channel(0, 0.5, 1.0)
        codes = q.encode(t)
        net = tsq.Net(ctx, (x.shape[1],) if np is not None else (4,))
        net.append(tsq.Dense(ctx, 4, 2))
        net.layer(0).params()
        reg = tsq.Regressor(ctx)
        try:
            q.observe([float("nan")])
        except tsq.TsqError:
            pass
        codes.close()
        del t, q, codes, net, reg


@needs_numpy
class Leaks(unittest.TestCase):

    @unittest.skipIf("asan" in os.environ.get("LD_PRELOAD", ""),
                     "ASan's quarantine keeps freed memory resident")
    def test_rss_is_stable_over_create_destroy_cycles(self):
        x = np.random.RandomState(0).randn(8, 4).astype(np.float32)
        labels = [0, 1] * 4
        for _ in range(WARMUP):
            cycle(x, labels)
        gc.collect()
        objects = len(gc.get_objects())
        start = rss_pages()
        for _ in range(CYCLES - WARMUP):
            cycle(x, labels)
        gc.collect()
        grown = rss_pages() - start
        self.assertLess(grown, RSS_BOUND_PAGES,
                        "RSS grew by %d pages over %d cycles" % (grown, CYCLES - WARMUP))
        self.assertLess(len(gc.get_objects()) - objects, 100)

    def test_library_frees_everything_per_cycle(self):
        alloc = tsq.CountingAllocator()
        x = np.ones((2, 4), np.float32)
        with tsq.Context(allocator=alloc) as ctx:
            base = alloc.live_blocks
            for _ in range(200):
                t = tsq.Tensor(ctx, x)
                n = tsq.Net(ctx, (4,)).append(tsq.Dense(ctx, 4, 3)).append(tsq.ReLU(ctx))
                n.forward(t)
                n.params()
                del t, n
                self.assertEqual(len(ctx._children), 0)
                self.assertEqual(alloc.live_blocks, base)
        self.assertEqual(alloc.live_blocks, 0)


class ExceptionsMidway(TestCase):

    def test_constructor_failing_after_allocation(self):
        before = self.alloc.live_blocks
        for _ in range(50):
            with self.assertRaises(ValueError):
                tsq.Quantizer(self.ctx, 2, eps_mode="bogus")    # created, then refused
            with self.assertRaises(tsq.TsqError):
                tsq.Quantizer(self.ctx, 2, eps=-1.0)
            with self.assertRaises(tsq.TsqError):
                tsq.Regressor(self.ctx, rounds=-5)
        gc.collect()
        self.assertEqual(self.alloc.live_blocks, before)
        self.assertEqual(len(self.ctx._children), 0)

    def test_failing_calls_release_temporaries(self):
        q = tsq.Quantizer(self.ctx, 2, channels=3)
        net = tsq.Net(self.ctx, (3,)).append(tsq.Dense(self.ctx, 3, 2))
        before = self.alloc.live_blocks
        for _ in range(50):
            with self.assertRaises(tsq.TsqError):
                q.observe([[1.0, 2.0]])                     # wrong channel count
            with self.assertRaises(tsq.TsqError):
                q.backward([1.0], [1.0])                    # not fitted
            with self.assertRaises(tsq.TsqError):
                net.forward([[1.0, 2.0]])                   # wrong sample size
            with self.assertRaises(tsq.TsqError):
                tsq.softmax_cross_entropy(self.ctx, [[1.0, 2.0]], [7], grad=True)
        gc.collect()
        self.assertEqual(self.alloc.live_blocks, before)

    def test_out_of_memory_midway(self):
        """Every allocation of a forward pass failing in turn: each failure is
        a TsqError and nothing leaks."""
        net = tsq.Net(self.ctx, (4,)).append(tsq.Dense(self.ctx, 4, 3)).append(tsq.ReLU(self.ctx))
        x = [[1.0, 2.0, 3.0, 4.0]] * 2
        before = self.alloc.live_blocks
        failures = 0
        for budget in range(0, 40):
            self.alloc.fail_after = budget
            try:
                net.forward(x)
            except tsq.TsqError as e:
                self.assertEqual(e.name, "TSQ_ERR_NO_MEMORY")
                self.assertTrue(e.message)
                failures += 1
            else:
                break
            finally:
                self.alloc.fail_after = None
        self.assertGreater(failures, 0)
        gc.collect()
        self.assertGreaterEqual(self.alloc.live_blocks, before)   # the net keeps its buffers
        net.close()


if __name__ == "__main__":
    unittest.main()
