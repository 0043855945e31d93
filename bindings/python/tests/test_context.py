"""The context: options, seed, logging, allocator, information, lifetime."""

import gc
import logging
import unittest

import tsqtest
from tsqtest import TestCase, tsq


class Options(TestCase):

    def test_threads_and_log_level(self):
        ctx = self.ctx
        self.assertEqual(ctx.threads, 1)
        ctx.threads = 2
        self.assertEqual(ctx.threads, 2)
        self.assertEqual(ctx.get_option(tsq.TSQ_CONTEXT_THREADS), 2)
        self.assertEqual(tsq.Context.option_bounds("threads"), (1, 256))
        self.assertEqual(ctx.log_level, 1)
        ctx.log_level = 4
        self.assertEqual(ctx.log_level, 4)

    def test_cpu_mask_keeps_features(self):
        ctx = self.ctx
        full = ctx.cpu_features()
        self.assertEqual(ctx.get_option("cpu_mask"), 2 ** 32 - 1)
        self.assertEqual(tsq.Context.option_bounds("cpu_mask"), (0, 2 ** 32 - 1))
        ctx.set_option("cpu_mask", (2 ** 32 - 1) & ~tsq.TSQ_CPU_AMXINT8)
        self.assertEqual(ctx.cpu_features(), full & ~tsq.TSQ_CPU_AMXINT8)
        self.assertNotIn("amx-int8", ctx.cpu_feature_names())
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "context_set_option"):
            ctx.set_option("cpu_mask", 2 ** 32)
        ctx.set_option(tsq.TSQ_CONTEXT_CPU_MASK, 2 ** 32 - 1)
        self.assertEqual(ctx.cpu_features(), full)

    def test_option_errors_carry_the_library_message(self):
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "context_set_option", "1..256"):
            self.ctx.threads = 999
        self.assertEqual(self.ctx.threads, 1)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            self.ctx.set_option(77, 1)
        with self.assertRaises(tsq.TsqError) as cm:
            tsq.Context.option_bounds(77)
        self.assertEqual(cm.exception.name, "TSQ_ERR_INVALID")
        self.assertIn("tsq_context_option_bounds", cm.exception.message)
        with self.assertRaises(ValueError):
            self.ctx.set_option("no_such_option", 1)

    def test_seed_round_trip(self):
        for seed in (0, 1, 2 ** 63, 2 ** 64 - 1):
            self.ctx.seed = seed
            self.assertEqual(self.ctx.seed, seed)
        with self.assertRaises(ValueError):
            self.ctx.seed = -1

    def test_constructor_arguments(self):
        with tsq.Context(threads=3, seed=42, log_level=2) as ctx:
            self.assertEqual((ctx.threads, ctx.seed, ctx.log_level), (3, 42, 2))
        self.assertTrue(ctx.closed)
        with self.assertRaises(ValueError):
            ctx.threads

    def test_failed_constructor_frees_the_context(self):
        alloc = tsq.CountingAllocator()
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "outside 1..256"):
            tsq.Context(threads=0, allocator=alloc)
        gc.collect()
        self.assertEqual(alloc.live_blocks, 0)
        self.assertGreater(alloc.total_blocks, 0)


class Logging(TestCase):

    def test_callable_receives_error_messages(self):
        got = []
        self.ctx.set_log(lambda level, msg: got.append((level, msg)))
        with self.assertRaises(tsq.TsqError) as cm:
            self.ctx.threads = 0
        self.assertEqual(got, [(1, cm.exception.message)])
        self.ctx.set_log(None)
        with self.assertRaises(tsq.TsqError):
            self.ctx.threads = 0
        self.assertEqual(len(got), 1)
        self.assertIsNone(self.ctx.log)

    def test_logger(self):
        logger = logging.getLogger("tsq.test")
        self.ctx.set_log(logger)
        with self.assertLogs(logger, level="ERROR") as cm:
            with self.assertRaises(tsq.TsqError):
                tsq.Quantizer(self.ctx, bits=9)
        self.assertEqual(len(cm.records), 1)
        self.assertIn("bits", cm.records[0].getMessage())
        self.assertEqual(cm.records[0].levelno, logging.ERROR)

    def test_log_level_zero_silences(self):
        got = []
        self.ctx.set_log(lambda level, msg: got.append(msg), level=0)
        with self.assertRaises(tsq.TsqError):
            self.ctx.threads = 0
        self.assertEqual(got, [])

    def test_bad_target(self):
        with self.assertRaises(TypeError):
            self.ctx.set_log(42)


class Information(TestCase):

    def test_info_keys(self):
        self.assertEqual(self.ctx.info("version"), tsq.__version__)
        summary = self.ctx.info()
        self.assertIn(tsq.__version__, summary)
        for key in ("blas", "blas_core", "cpu", "build"):
            self.assertIsInstance(self.ctx.info(key), str)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            self.ctx.info(99)

    def test_cpu_features_agree_with_info(self):
        names = self.ctx.cpu_feature_names()
        bits = self.ctx.cpu_features()
        self.assertEqual(bool(bits & tsq.TSQ_CPU_AVX2), "avx2" in names)
        cpu = self.ctx.info("cpu").split()
        for n in names:
            self.assertIn(n, cpu)


class Allocator(unittest.TestCase):

    def test_everything_goes_through_the_allocator(self):
        alloc = tsq.CountingAllocator()
        ctx = tsq.Context(allocator=alloc)
        base = alloc.live_blocks
        self.assertGreater(base, 0)                 # the context itself
        t = tsq.Tensor.zeros(ctx, (100, 10))
        self.assertGreater(alloc.live_bytes, 4000)
        t.close()
        self.assertEqual(alloc.live_blocks, base)
        ctx.close()
        self.assertEqual(alloc.live_blocks, 0)

    def test_out_of_memory_is_reported(self):
        alloc = tsq.CountingAllocator()
        with tsq.Context(allocator=alloc) as ctx:
            alloc.fail_after = 0
            with self.assertRaises(tsq.TsqError) as cm:
                tsq.Tensor.zeros(ctx, (10,))
            self.assertEqual(cm.exception.name, "TSQ_ERR_NO_MEMORY")
            self.assertIn("tensor_create", cm.exception.message)
            alloc.fail_after = None
        self.assertEqual(alloc.live_blocks, 0)

    def test_raising_allocator_is_a_failed_allocation(self):
        class Broken(tsq.Allocator):
            def alloc(self, size, alignment):
                raise RuntimeError("no")

            def free(self, address):
                raise AssertionError("never allocated")
        with self.assertRaises(tsq.TsqError) as cm:
            tsq.Context(allocator=Broken())
        self.assertEqual(cm.exception.name, "TSQ_ERR_NO_MEMORY")

    def test_allocator_type_is_checked(self):
        with self.assertRaises(TypeError):
            tsq.Context(allocator=object())


class Lifetime(unittest.TestCase):

    def test_close_closes_children_newest_first(self):
        alloc = tsq.CountingAllocator()
        ctx = tsq.Context(allocator=alloc)
        t = tsq.Tensor.zeros(ctx, (4,))
        q = tsq.Quantizer(ctx, 2)
        ctx.close()
        self.assertTrue(t.closed and q.closed)
        self.assertEqual(alloc.live_blocks, 0)
        with self.assertRaises(ValueError):
            t.fill(1)
        ctx.close()                                 # twice is harmless
        t.close()

    def test_children_keep_the_context_alive(self):
        alloc = tsq.CountingAllocator()
        ctx = tsq.Context(allocator=alloc)
        q = tsq.Quantizer(ctx, 2)
        del ctx
        gc.collect()
        q.set_channel(0, 0.5, 1.0)                   # the C context still exists
        self.assertEqual(q.get_channel(0), (0.5, 1.0))
        del q
        gc.collect()
        self.assertEqual(alloc.live_blocks, 0)       # and went with its last child

    def test_collection_frees_everything(self):
        alloc = tsq.CountingAllocator()
        ctx = tsq.Context(allocator=alloc)
        objs = [tsq.Tensor.zeros(ctx, (3,)), tsq.Quantizer(ctx, 3), tsq.Regressor(ctx)]
        del ctx, objs
        gc.collect()
        self.assertEqual(alloc.live_blocks, 0)

    def test_exit_without_close(self):
        """Objects left open at interpreter exit are destroyed, children
        before their context, without a crash."""
        rc, out, err = tsqtest.run_python(
            "import atexit\n"
            "state = {}\n"
            "atexit.register(lambda: print('live', state['alloc'].live_blocks))\n"
            "import tsq\n"
            "alloc = state['alloc'] = tsq.CountingAllocator()\n"
            "ctx = tsq.Context(allocator=alloc)\n"
            "t = tsq.Tensor.zeros(ctx, (8,))\n"
            "net = tsq.Net(ctx, (4,)).append(tsq.Dense(ctx, 4, 2))\n"
            "layer = tsq.ReLU(ctx)\n"
            "print('before', alloc.live_blocks)\n",
            env={"TSQ_LIBRARY": tsq.lib.path})
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        # this atexit hook was registered before weakref.finalize's, so it
        # runs after the finalisers: everything was freed, none twice
        lines = out.split()
        self.assertGreater(int(lines[1]), 3)
        self.assertEqual(lines[2:], ["live", "0"])


if __name__ == "__main__":
    unittest.main()
