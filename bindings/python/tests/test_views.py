"""Views of library memory keep their owner alive (no crash from Python):
numpy arrays and memoryviews stay valid after close() and after the with
block, the memory is freed when the last view goes, a net refuses to free
layers under live views, and handles refuse copy.copy and pickling."""

import copy
import gc
import pickle
import unittest

from tsqtest import TestCase, needs_numpy, np, tsq


class Views(TestCase):

    @needs_numpy
    def test_numpy_view_outlives_close(self):
        t = tsq.Tensor.zeros(self.ctx, (1000,))
        before = self.alloc.live_blocks
        a = t.numpy()
        b = np.asarray(t)
        t.close()
        self.assertEqual(self.alloc.live_blocks, before)      # still held by the views
        a[:] = 7.0                                            # valid memory
        self.assertEqual(float(b.sum()), 7000.0)
        del a
        gc.collect()
        self.assertEqual(self.alloc.live_blocks, before)      # b still holds it
        del b
        gc.collect()
        self.assertLess(self.alloc.live_blocks, before)       # freed with the last view
        with self.assertRaises(ValueError):
            t.numpy()                                         # the handle itself is closed

    def test_memoryview_outlives_the_with_block(self):
        alloc = tsq.CountingAllocator()
        with tsq.Context(allocator=alloc) as ctx:
            with tsq.Tensor.zeros(ctx, (4,), "uint8") as t:
                t.fill(3)
                mv = t.memoryview()
        self.assertTrue(ctx.closed)
        self.assertGreater(alloc.live_blocks, 0)              # tensor and context kept
        self.assertEqual(mv.tolist(), [3, 3, 3, 3])
        mv[0] = 9
        self.assertEqual(mv[0], 9)
        del mv
        gc.collect()
        self.assertEqual(alloc.live_blocks, 0)                # all freed, context last

    @needs_numpy
    def test_parameter_views_outlive_the_net_and_context(self):
        alloc = tsq.CountingAllocator()
        with tsq.Context(allocator=alloc) as ctx:
            dense = tsq.Dense(ctx, 3, 2)
            early = dense.param("weight").value.numpy()       # taken before the append
            net = tsq.Net(ctx, (3,)).append(dense)            # appending frees nothing
            late = net.params()[1].value.numpy()
            early[:] = 1.0
            late[:] = 0.5
            out = net.forward(np.ones((1, 3), np.float32))
            self.assertEqual(out.tolist(), [[3.5, 3.5]])
        self.assertEqual(early.tolist(), [[1.0] * 3] * 2)     # valid after ctx.close()
        self.assertEqual(late.tolist(), [0.5, 0.5])
        del early, late, out
        gc.collect()
        self.assertEqual(alloc.live_blocks, 0)

    @needs_numpy
    def test_net_refuses_to_free_layers_under_views(self):
        net = tsq.Net(self.ctx, (3,)).append(tsq.Dense(self.ctx, 3, 2)).append(
            tsq.ReLU(self.ctx))
        w = net.layer(0).param("weight").value.numpy()
        with self.assertRaisesRegex(RuntimeError, "1 numpy array"):
            net.remove_layer(1)
        self.assertEqual(len(net), 2)                          # nothing changed
        w2 = w.copy()
        del w
        gc.collect()
        net.remove_layer(1)                                    # no view: allowed
        self.assertEqual(len(net), 1)
        self.assertEqual(net.layer(0).param("weight").value.numpy().tolist(), w2.tolist())

    def test_copy_refused_deepcopy_where_meaningful(self):
        t = tsq.Tensor.zeros(self.ctx, (3,))
        for obj in (t, self.ctx, tsq.Regressor(self.ctx)):
            with self.assertRaisesRegex(TypeError, "cannot be copied"):
                copy.copy(obj)
            with self.assertRaisesRegex(TypeError, "cannot be copied or pickled"):
                pickle.dumps(obj)
        with self.assertRaisesRegex(TypeError, "cannot be copied"):
            copy.deepcopy(self.ctx)
        t.fill(2.0)
        u = copy.deepcopy(t)
        u.fill(5.0)
        self.assertEqual(t.tolist(), [2.0] * 3)
        q = tsq.Quantizer(self.ctx, bits=3).set_channel(0, 0.25, 0.5)
        q2 = copy.deepcopy(q)
        self.assertEqual((q2.bits, q2.get_channel(0)), (3, (0.25, 0.5)))
        net = tsq.Net(self.ctx, (3,)).append(tsq.Dense(self.ctx, 3, 2))
        twin = copy.deepcopy(net)
        self.assertIsNot(twin.handle, net.handle)
        self.assertEqual(len(twin), 1)


if __name__ == "__main__":
    unittest.main()
