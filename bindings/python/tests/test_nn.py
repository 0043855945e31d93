"""Layers and nets: numerics against numpy, ownership, training, TSQ on a
net, model files, errors."""

import os
import tempfile
import unittest

from tsqtest import TestCase, needs_numpy, np, tsq


def mlp(ctx, sizes, relu=True):
    net = tsq.Net(ctx, (sizes[0],))
    for i in range(len(sizes) - 1):
        net.append(tsq.Dense(ctx, sizes[i], sizes[i + 1]))
        if relu and i < len(sizes) - 2:
            net.append(tsq.ReLU(ctx))
    return net


@needs_numpy
class Numerics(TestCase):

    def test_dense_forward_backward_against_numpy(self):
        rng = np.random.RandomState(0)
        net = mlp(self.ctx, [5, 4, 3])
        W1, b1 = net.layer(0).param("weight").value.numpy(), net.layer(0).param("bias").value.numpy()
        W2, b2 = net.layer(2).param("weight").value.numpy(), net.layer(2).param("bias").value.numpy()
        b1[:] = rng.randn(4)                         # written through zero-copy views
        b2[:] = rng.randn(3)
        x = rng.randn(6, 5).astype(np.float32)
        h = np.maximum(x @ W1.T + b1, 0)
        y = h @ W2.T + b2
        np.testing.assert_allclose(net.forward(x), y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(net.layer_output(1), h, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(net.layer_output(-1), x)
        dy = rng.randn(6, 3).astype(np.float32)
        dx = net.backward(dy, dx=True)
        dh = (dy @ W2) * (h > 0)
        np.testing.assert_allclose(dx, dh @ W1, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(net.layer(2).param("weight").grad.numpy(), dy.T @ h,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(net.layer(0).param("bias").grad.numpy(), dh.sum(0),
                                   rtol=1e-4, atol=1e-5)

    def test_softmax_cross_entropy_against_numpy(self):
        rng = np.random.RandomState(1)
        z = rng.randn(5, 4).astype(np.float32)
        labels = np.array([0, 3, 1, 1, 2])
        loss, correct, dz = tsq.softmax_cross_entropy(self.ctx, z, labels, grad=True)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        self.assertAlmostEqual(loss, -np.mean(np.log(p[range(5), labels])), places=5)
        self.assertEqual(correct, int(np.sum(z.argmax(1) == labels)))
        onehot = np.eye(4)[labels]
        np.testing.assert_allclose(dz, (p - onehot) / 5, rtol=1e-4, atol=1e-6)
        loss2, _, none = tsq.softmax_cross_entropy(self.ctx, z, list(labels))
        self.assertEqual(loss2, loss)
        self.assertIsNone(none)

    def test_training_reduces_the_loss(self):
        rng = np.random.RandomState(2)
        x = rng.randn(64, 8).astype(np.float32)
        labels = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
        net = mlp(self.ctx, [8, 16, 2])
        net.set_optimizer_sgd(0.1, momentum=0.9)
        net.set_lr_schedule("cosine", steps=50, param=0.0)
        first = net.train_step(x, labels)
        for _ in range(49):
            last = net.train_step(x, labels)
        self.assertLess(last.loss, first.loss / 3)
        self.assertEqual(net.step_count, 50)
        self.assertAlmostEqual(net.lr, 0.0)
        ev = net.evaluate(x, labels)
        self.assertGreaterEqual(ev.correct, 60)
        self.assertEqual(ev.predictions.dtype, np.int32)
        self.assertEqual(int(np.sum(ev.predictions == labels)), ev.correct)
        only = net.evaluate(x)
        np.testing.assert_array_equal(only.predictions, ev.predictions)
        self.assertIsNone(only.loss)
        net.step_count = 3
        self.assertEqual(net.step_count, 3)

    def test_host_driven_update_and_adam(self):
        rng = np.random.RandomState(3)
        x = rng.randn(16, 4).astype(np.float32)
        labels = rng.randint(0, 3, 16)
        net = mlp(self.ctx, [4, 3])
        net.set_optimizer_adam(0.01)
        w = net.layer(0).param("weight").value.numpy().copy()
        net.forward(x, train=True)
        r = net.loss_backward(labels)
        self.assertGreater(r.loss, 0)
        net.update()
        self.assertFalse(np.array_equal(w, net.layer(0).param("weight").value.numpy()))
        self.assertEqual(net.step_count, 1)

    def test_fold_batchnorm_keeps_outputs(self):
        rng = np.random.RandomState(4)
        net = tsq.Net(self.ctx, (2, 6, 6))
        net.append(tsq.Conv2d(self.ctx, 2, 3, 3, pad=1)).append(tsq.BatchNorm(self.ctx, 3))
        net.append(tsq.ReLU(self.ctx)).append(tsq.MaxPool2d(self.ctx, 2))
        net.append(tsq.GlobalAvgPool(self.ctx))
        x = rng.randn(8, 2, 6, 6).astype(np.float32)
        net.set_optimizer_sgd(0.01)
        for _ in range(3):
            net.forward(x, train=True)
        before = net.forward(x)
        bn = net.layer(1)
        states = bn.states()
        self.assertEqual(list(states), ["running_mean", "running_var"])
        self.assertEqual(net.fold_batchnorm(), 1)
        self.assertTrue(bn.closed)                         # the net freed it
        self.assertEqual(len(net), 4)
        np.testing.assert_allclose(net.forward(x), before, rtol=1e-4, atol=1e-5)
        self.assertEqual(net.output_shape, (3,))

    def test_lowbit_and_quantizer_layers(self):
        rng = np.random.RandomState(5)
        codes = rng.randint(-1, 2, size=(3, 4)).astype(np.int8)
        alpha = np.array([0.5, 1.0, 2.0], np.float32)
        bias = np.array([0.0, 1.0, -1.0], np.float32)
        lb = tsq.LowbitDense(self.ctx, 4, 3, weight_bits=2).set(codes, alpha, bias)
        self.assertEqual(lb.info("weight_bits"), 2)
        q = tsq.Quantizer(self.ctx, 2).set_channel(0, 0.5, 1.0)
        aq = tsq.ActQuant.from_quantizer(self.ctx, q)
        self.assertEqual(aq.get_channel(), (0, 2, 0.5, 1.0))
        aq.output_codes = True
        net = tsq.Net(self.ctx, (4,)).append(aq).append(lb)
        x = rng.rand(5, 4).astype(np.float32) * 3
        k = q.encode(x).astype(np.float32)
        y = alpha * (k @ codes.T.astype(np.float32)) + bias
        np.testing.assert_allclose(net.forward(x), y, rtol=1e-6)
        self.assertEqual(net.layer(1).states()["weight_codes"].numpy().tolist(), codes.tolist())
        aq2 = tsq.ActQuant(self.ctx, 3, 0.1, 0.25)
        aq2.set_channel(1, 4, 2, 0.5, 1.0)
        self.assertEqual(aq2.get_channel(1), (4, 2, 0.5, 1.0))
        self.assertEqual(aq2.get_channel(0)[1:], (3, np.float32(0.1), 0.25))
        conv = tsq.LowbitConv2d(self.ctx, 2, 3, (3, 1), stride=1, pad=0, weight_bits=3)
        self.assertEqual((conv.info("kernel_h"), conv.info("kernel_w")), (3, 1))
        self.assertEqual(conv.kind_name, "lowbit_conv2d")


class Ownership(TestCase):

    def test_net_owns_appended_layers(self):
        import gc
        empty = self.alloc.live_blocks
        net = tsq.Net(self.ctx, (3,))
        d = tsq.Dense(self.ctx, 3, 2)
        self.assertTrue(d.owned)
        net.append(d)
        self.assertFalse(d.owned)
        self.assertIs(net.layer(0), d)
        self.assertIs(net.layer(-1), d)
        blocks = self.alloc.live_blocks
        del d
        gc.collect()
        self.assertEqual(self.alloc.live_blocks, blocks)    # not destroyed by Python
        self.assertEqual(net.layer(0).kind_name, "dense")
        self.assertEqual(net.layer(0).sample_shapes, ((3,), (2,)))
        net.close()
        self.assertEqual(self.alloc.live_blocks, empty)     # the net freed its layer

    def test_closing_the_net_invalidates_views(self):
        net = tsq.Net(self.ctx, (3,))
        d = tsq.Dense(self.ctx, 3, 2)
        net.append(d)
        w = d.param("weight").value
        net.close()
        self.assertTrue(d.closed and w.closed)
        with self.assertRaises(ValueError):
            d.kind
        d.close()                                      # harmless

    def test_layer_list_changes_invalidate_params(self):
        net = mlp(self.ctx, [3, 4, 2])
        relu = net.layer(1)
        dense = net.layer(0)
        w = dense.param("weight").value
        ps = net.params()
        net.remove_layer(1)
        self.assertTrue(relu.closed)
        self.assertFalse(dense.closed)
        self.assertTrue(w.closed and ps[0].value.closed)
        self.assertEqual(dense.param("weight").value.shape, (4, 3))
        r = tsq.ReLU(self.ctx)
        net.insert_layer(1, r)
        self.assertIs(net.layer(1), r)
        self.assertEqual([l.kind_name for l in net.layers], ["dense", "relu", "dense"])
        r2 = tsq.ReLU(self.ctx)
        net.replace_layer(1, r2)
        self.assertTrue(r.closed)
        self.assertFalse(r2.owned)

    def test_failed_append_leaves_the_layer_to_the_caller(self):
        net = tsq.Net(self.ctx, (3,))
        d = tsq.Dense(self.ctx, 5, 2)
        with self.assertRaisesTsq("TSQ_ERR_SHAPE", "net_append"):
            net.append(d)
        self.assertTrue(d.owned)
        self.assertEqual(len(net), 0)
        d.close()

    def test_layer_in_two_nets(self):
        a, b = tsq.Net(self.ctx, (3,)), tsq.Net(self.ctx, (3,))
        r = tsq.ReLU(self.ctx)
        a.append(r)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            b.append(r)

    def test_clone_and_copy_params(self):
        net = mlp(self.ctx, [3, 4, 2])
        c = net.clone()
        self.assertTrue(c.owned)
        self.assertEqual([l.kind_name for l in c.layers], ["dense", "relu", "dense"])
        c.layer(0).param("weight").value.fill(0.5)
        net.copy_params_from(c)
        self.assertEqual(set(net.layer(0).param("weight").value.tolist()[0]), {0.5})
        other = mlp(self.ctx, [3, 2])
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            net.copy_params_from(other)


@needs_numpy
class NetTsq(TestCase):
    """Network-level TSQ: learn_codes then fit_transform on a small MLP."""

    def test_two_steps(self):
        rng = np.random.RandomState(6)
        x = rng.randn(128, 6).astype(np.float32)
        labels = (x[:, 0] > x[:, 1]).astype(np.int32)
        net = mlp(self.ctx, [6, 16, 16, 2])
        net.set_optimizer_sgd(0.05, momentum=0.9)
        for _ in range(30):
            net.train_step(x, labels)
        net.set_conversion_option("act_bits", 2).set_conversion_option("eps_mode", "joint")
        self.assertEqual(net.get_conversion_option("act_bits"), 2.0)
        self.assertEqual(tsq.Net.conversion_option_bounds("act_bits"), (1.0, 8.0))
        batches = [x[:64], x[64:]]
        self.assertTrue(net.learn_codes_batches(batches))
        kinds = [l.kind_name for l in net.layers]
        self.assertEqual(kinds.count("act_quant"), 2)
        self.assertNotIn("relu", kinds)
        reg = net.tsq_regressor
        self.assertFalse(reg.owned)
        reg.set_option("rounds", 3)
        passes = net.fit_transform_batches(batches)
        self.assertGreater(passes, 1)
        kinds = [l.kind_name for l in net.layers]
        self.assertEqual(kinds.count("lowbit_dense"), 1)   # first and last stay float
        prog = net.tsq_progress()
        self.assertEqual((prog.stage, prog.unit, prog.units), ("idle", 1, 1))
        best, layer_index = net.tsq_history(0, "best")
        self.assertTrue(best)
        self.assertTrue(all(a >= b for a, b in zip(best, best[1:])))
        self.assertEqual(layer_index, 2)
        ev = net.evaluate(x, labels)
        self.assertGreater(ev.correct, 64)             # better than chance after both steps
        # model file round trip: bit-identical outputs
        data = net.save()
        self.assertEqual(data[:4], b"TSQM")
        loaded = tsq.Net.load(self.ctx, data)
        np.testing.assert_array_equal(loaded.forward(x), net.forward(x))
        self.assertLess(net.weight_bytes, 4 * sum(p.value.size for p in net.params()))
        net.tsq_cancel()

    def test_fit_transform_without_selection(self):
        net = mlp(self.ctx, [4, 3, 2])
        x = np.random.RandomState(7).randn(16, 4).astype(np.float32)
        net.learn_codes(x, last=True)
        with self.assertRaisesTsq("TSQ_ERR_STATE", "net_fit_transform"):
            net.fit_transform(x, last=True)
        net.layer(0).set_option("tsq_select", 1)
        self.assertEqual(net.layer(0).get_option("tsq_select"), 1.0)


class ModelFiles(TestCase):

    def test_save_load_file(self):
        net = mlp(self.ctx, [3, 5, 2])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.tsq")
            net.save_file(path)
            loaded = tsq.Net.load_file(self.ctx, path)
            self.assertEqual(loaded.save(), net.save())
            with self.assertRaisesTsq("TSQ_ERR_IO", os.path.join(tmp, "missing.tsq")):
                tsq.Net.load_file(self.ctx, os.path.join(tmp, "missing.tsq"))
            with self.assertRaisesTsq("TSQ_ERR_IO"):
                net.save_file(os.path.join(tmp, "no", "dir", "m.tsq"))

    def test_corrupt_data(self):
        data = bytearray(mlp(self.ctx, [3, 2]).save())
        data[len(data) // 2] ^= 0xFF
        with self.assertRaisesTsq("TSQ_ERR_FORMAT"):
            tsq.Net.load(self.ctx, bytes(data))
        with self.assertRaisesTsq("TSQ_ERR_FORMAT"):
            tsq.Net.load(self.ctx, b"nonsense")


class LayerErrors(TestCase):

    def test_constructor_errors(self):
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "dense"):
            tsq.Dense(self.ctx, 0, 3)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.Conv2d(self.ctx, 1, 1, 3, pad=3)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.MaxPool2d(self.ctx, 0)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.LowbitDense(self.ctx, 3, 3, weight_bits=1)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            tsq.ActQuant(self.ctx, 9, 0.1, 0.5)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            tsq.ActQuant.from_quantizer(self.ctx, tsq.Quantizer(self.ctx, 2))
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            tsq.Net(self.ctx, (1, 2, 3, 4))

    def test_call_errors(self):
        net = mlp(self.ctx, [3, 2])
        x = [[0.0, 1.0, 2.0]]
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            net.train_step(x, [0])                     # no optimiser
        net.set_optimizer_sgd(0.1)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.train_step(x, [5])                     # label out of range
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.train_step(x, [0, 1])                  # count
        with self.assertRaisesTsq("TSQ_ERR_SHAPE"):
            net.forward([[1.0, 2.0]])
        with self.assertRaisesTsq("TSQ_ERR_NOT_FINITE"):
            net.forward([[1.0, float("inf"), 2.0]])
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.set_optimizer_sgd(-1.0)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.set_lr_schedule("step", steps=0, param=0.5)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.remove_layer(7)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.layer(7)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.set_conversion_option("act_bits", 0)
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.layer(0).info("bits")                  # not a quantizer
        with self.assertRaisesTsq("TSQ_ERR_INVALID"):
            net.layer(0).set_option("bn_momentum", 0.5)
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            tsq.Dense(self.ctx, 2, 2).sample_shapes   # not in a net
        with self.assertRaisesTsq("TSQ_ERR_STATE"):
            mlp(self.ctx, [3, 2]).backward([[1.0, 1.0]])   # no forward
        with self.assertRaisesTsq("TSQ_ERR_INVALID", "lowbit"):
            tsq.LowbitDense(self.ctx, 2, 1).set([[3, 0]], [1.0])   # (out, in): code 3 out of -1..1
        with self.assertRaises(tsq.TsqError) as cm:
            tsq.Layer.option_bounds(99)
        self.assertEqual(cm.exception.name, "TSQ_ERR_INVALID")
        self.assertEqual(tsq.Layer.option_bounds("trainable"), (0.0, 1.0))
        self.assertEqual(tsq.layer_kind_name(tsq.TSQ_LAYER_CONV2D), "conv2d")
        self.assertEqual(tsq.layer_kind_name(99), "unknown")


if __name__ == "__main__":
    unittest.main()
