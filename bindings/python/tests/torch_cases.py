"""tsq.torch's tests (run by test_torch_api.py in a subprocess, so that
torch stays out of the other tests' process). Small models, seconds each."""

import copy
import io
import logging
import os
import pickle
import sys
import tempfile
import unittest

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tsq                      # noqa: E402
import tsq.torch as tt          # noqa: E402

torch.set_num_threads(1)


class SmallCNN(nn.Module):
    """A torchvision-style model class (not a Sequential), functional ReLUs."""

    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.bn3 = nn.BatchNorm1d(32)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = self.drop(F.relu(self.bn3(self.fc1(x))))
        return self.fc2(x)


def data(n=192, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, :, :4].mean((1, 2, 3)) > 0).long()
    return x, y


def trained(seed=0, steps=25):
    torch.manual_seed(seed)
    m = SmallCNN()
    x, y = data()
    opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def acc(m, x, y):
    with torch.no_grad():
        return float((m(x).argmax(1) == y).float().mean())


class Pipeline(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.x, cls.y = data()
        cls.calib = [(cls.x[i:i + 64], cls.y[i:i + 64]) for i in range(0, len(cls.x), 64)]
        cls.fp = trained()
        cls.prepared = tt.prepare(cls.fp, cls.calib, progress=False)
        cls.converted = tt.convert(cls.prepared, cls.calib, rounds=2, positions=16,
                                   progress=False)

    def test_prepare_swaps_the_three_relus(self):
        qs = tt.quant_modules(self.prepared)
        self.assertEqual(len(qs), 3)
        for _, q in qs:
            self.assertEqual(int(q.bits), 2)
            self.assertGreater(float(q.delta[0]), 0)
        self.assertFalse(tt.quant_modules(self.fp))           # the model itself untouched
        self.assertGreater(acc(self.prepared, self.x, self.y), 0.6)

    def test_convert_keeps_first_and_last_float(self):
        names = [n for n, _ in tt.lowbit_modules(self.converted)]
        self.assertEqual(names, ["conv2", "fc1"])
        self.assertIsInstance(self.converted.conv1, nn.Conv2d)
        self.assertIsInstance(self.converted.fc2, nn.Linear)
        for _, m in tt.lowbit_modules(self.converted):
            w = m.weight_codes()
            self.assertTrue(bool(((w == -1) | (w == 0) | (w == 1)).all()))
        self.assertGreater(acc(self.converted, self.x, self.y), 0.6)

    def test_codes_feed_the_lowbit_layers(self):
        acts = dict(tt.quant_modules(self.converted))
        self.assertTrue(bool(acts["tsq_act_conv1"].codes))
        self.assertTrue(bool(acts["tsq_act_conv2"].codes))
        self.assertFalse(bool(acts["tsq_act_fc1"].codes))   # feeds the float fc2

    def test_to_tsq_plan_and_from_tsq_give_the_same_outputs(self):
        with torch.no_grad():
            ref = self.converted(self.x).numpy()
        net = tt.to_tsq(self.converted)
        ctx = net.context
        self.assertEqual(net.output_shape, (4,))
        np.testing.assert_allclose(net.forward(self.x.numpy()), ref, rtol=1e-5, atol=1e-5)
        plan = tsq.Plan(ctx, net)
        np.testing.assert_allclose(plan.run(self.x.numpy()), ref, rtol=1e-4, atol=1e-4)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.tsq")
            net.save_file(path)
            again = tsq.Net.load_file(ctx, path)
            np.testing.assert_allclose(again.forward(self.x.numpy()), ref, rtol=1e-5,
                                       atol=1e-5)
        back = tt.from_tsq(net)
        with torch.no_grad():
            np.testing.assert_allclose(back(self.x).numpy(), ref, rtol=1e-5, atol=1e-5)
        ctx.close()

    def test_fine_tuning_updates_the_shadow_weights(self):
        m = copy.deepcopy(self.converted).train()
        opt = torch.optim.SGD(m.parameters(), 0.01)
        before = m.fc1.shadow.detach().clone()
        loss = F.cross_entropy(m(self.x), self.y)
        loss.backward()
        opt.step()
        self.assertFalse(torch.equal(before, m.fc1.shadow.detach()))
        self.assertIsNone(m.fc1.alpha.grad)                     # alpha held by default

    def test_state_dict_torch_save_deepcopy_pickle(self):
        for model in (self.prepared, self.converted):
            with torch.no_grad():
                ref = model(self.x)
            buf = io.BytesIO()
            torch.save(model, buf)
            buf.seek(0)
            loaded = torch.load(buf)
            clone = copy.deepcopy(model)
            unpickled = pickle.loads(pickle.dumps(model))
            for other in (loaded, clone, unpickled):
                with torch.no_grad():
                    self.assertTrue(torch.equal(other(self.x), ref))
            sd = model.state_dict()
            self.assertIn("tsq_act_conv1.eps", sd)
            self.assertIn("tsq_act_conv1.delta", sd)
            self.assertIn("tsq_act_conv1.bits", sd)
            # a state_dict alone restores a model of the same structure
            fresh = copy.deepcopy(model)
            for _, q in tt.quant_modules(fresh):
                q.eps.fill_(0.0)
                q.delta.fill_(123.0)
            fresh.load_state_dict(sd)
            with torch.no_grad():
                self.assertTrue(torch.equal(fresh(self.x), ref))

    def test_per_channel_quantizers_through_the_pipeline(self):
        p = tt.prepare(self.fp, self.calib, per_channel=True, progress=False)
        self.assertEqual([tuple(q.eps.shape) for _, q in tt.quant_modules(p)],
                         [(8,), (16,), (32,)])
        c = tt.convert(p, self.calib, rounds=1, positions=16, progress=False)
        with torch.no_grad():
            ref = c(self.x).numpy()
        net = tt.to_tsq(c)
        self.assertIn("8 channels", repr(net.layer(2)))
        np.testing.assert_allclose(net.forward(self.x.numpy()), ref, rtol=1e-5, atol=1e-5)
        plan = tsq.Plan(net.context, net)
        np.testing.assert_allclose(plan.run(self.x.numpy()), ref, rtol=1e-4, atol=1e-4)
        back = tt.from_tsq(net)
        with torch.no_grad():
            np.testing.assert_allclose(back(self.x).numpy(), ref, rtol=1e-5, atol=1e-5)
        net.context.close()

    def test_cached_rows_equal_streaming_every_pass(self):
        a = tt.convert(self.prepared, self.calib, rounds=2, positions=16, progress=False)
        b = tt.convert(self.prepared, self.calib, rounds=2, positions=16, progress=False,
                       cache_rows=False)
        for (na, ma), (nb, mb) in zip(tt.lowbit_modules(a), tt.lowbit_modules(b)):
            self.assertEqual(na, nb)
            self.assertTrue(torch.equal(ma.weight_codes(), mb.weight_codes()))
            self.assertTrue(torch.equal(ma.alpha, mb.alpha))
            self.assertTrue(torch.equal(ma.bias, mb.bias))

    def test_dataloader_calibration(self):
        ds = torch.utils.data.TensorDataset(self.x, self.y)
        dl = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
        p = tt.prepare(self.fp, dl, progress=False)          # (input, target) pairs
        a = dict(tt.quant_modules(p))["tsq_act_conv1"]
        self.assertTrue(torch.equal(a.delta, dict(tt.quant_modules(self.prepared))[
            "tsq_act_conv1"].delta))
        tt.convert(p, dl, rounds=1, positions=8, progress=False)
        with self.assertRaisesRegex(ValueError, "shuffle=False"):
            tt.convert(p, torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True))

    def test_generator_calibration_is_read_once(self):
        gen = (b for b, _ in self.calib)
        p = tt.prepare(self.fp, gen, progress=False)
        a = dict(tt.quant_modules(p))["tsq_act_conv1"]
        b = dict(tt.quant_modules(self.prepared))["tsq_act_conv1"]
        self.assertTrue(torch.equal(a.delta, b.delta))


class QuantModule(unittest.TestCase):

    def test_codes_equal_the_library(self):
        with tsq.Context() as ctx:
            q = tsq.Quantizer(ctx, bits=2).set_channel(0, 0.3271, 0.6541)
            eps, delta = q.get_channel(0)
            m = tt.ActQuant(eps, delta, 2, codes=True)
            edges = torch.tensor([eps, -eps, 0, delta / 2, 1.5 * delta, 2.5 * delta, 3 * delta,
                                  1e30, -1e30])
            x = torch.cat([torch.randn(50000) * 1.5, edges,
                           torch.nextafter(edges, torch.full_like(edges, 1e38)),
                           torch.nextafter(edges, torch.full_like(edges, -1e38))])
            mine = m(x).to(torch.uint8).numpy()
            np.testing.assert_array_equal(mine, q.encode(x.numpy()))
            m.codes.fill_(0)
            np.testing.assert_array_equal(m(x).numpy(), q.forward(x.numpy()))

    def test_straight_through_gradient(self):
        m = tt.ActQuant(0.25, 0.5, 2)
        x = torch.linspace(-1, 2, 31, requires_grad=True)
        m(x).sum().backward()
        mask = ((x > 0) & (x < 1.5)).float()
        self.assertTrue(torch.equal(x.grad, mask))

    def test_per_channel(self):
        m = tt.ActQuant([0.1, 0.2], [0.5, 1.0], 2, codes=True)
        x = torch.tensor([[[[0.6]], [[0.6]]]])
        self.assertEqual(m(x).reshape(-1).tolist(), [1.0, 1.0])
        x = torch.tensor([[[[1.1]], [[1.1]]]])
        self.assertEqual(m(x).reshape(-1).tolist(), [2.0, 1.0])

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            tt.ActQuant(0.1, 0.0, 2)
        with self.assertRaises(ValueError):
            tt.ActQuant(0.1, 0.5, 9)
        with self.assertRaises(ValueError):
            tt.ActQuant(0.1, 0.5, 2.0)

    def test_lowbit_set_refuses_the_transposed_codes(self):
        m = tt.LowbitLinear(3, 2)
        codes = torch.tensor([[1, 0, -1], [0, 1, 1]])
        m.set(codes, torch.tensor([0.5, 2.0]))
        self.assertTrue(torch.equal(m.weight_codes(), codes.float()))
        with self.assertRaisesRegex(ValueError, r"shape \(2, 3\)"):
            m.set(codes.t(), torch.tensor([0.5, 2.0]))
        with self.assertRaisesRegex(ValueError, "-1..1"):
            m.set(codes * 2, torch.tensor([0.5, 2.0]))


class Errors(unittest.TestCase):

    def test_untraceable_model_is_named(self):
        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                self.bn = nn.BatchNorm1d(4)

            def forward(self, x):
                if x.sum() > 0:                 # data-dependent: fx cannot trace it
                    return self.fc(x)
                return F.relu(self.bn(self.fc(x)))
        with self.assertRaisesRegex(TypeError, "Branchy"):
            tt.prepare(Branchy(), [torch.randn(8, 4)])

    def test_no_pattern(self):
        with self.assertRaisesRegex(ValueError, "Sequential has no"):
            tt.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), [torch.randn(8, 4)])

    def test_calibration_types(self):
        m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        with self.assertRaisesRegex(TypeError, "single Tensor"):
            tt.prepare(m, torch.randn(8, 4))
        with self.assertRaisesRegex(TypeError, "batch 0 is a ndarray"):
            tt.prepare(m, [np.zeros((8, 4), np.float32)])
        with self.assertRaisesRegex(TypeError, "batch 0 has dtype torch.int64"):
            tt.prepare(m, [torch.zeros(8, 4, dtype=torch.int64)])
        with self.assertRaisesRegex(ValueError, "empty"):
            tt.prepare(m, [])

    def test_wrapped_model_refused(self):
        m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU())
        with self.assertRaisesRegex(TypeError, "DataParallel"):
            tt.prepare(nn.DataParallel(m), [torch.randn(8, 4)])

    def test_to_tsq_refuses_a_residual_and_names_it(self):
        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)

            def forward(self, x):
                return self.fc(x) + x
        with self.assertRaisesRegex(TypeError, "add"):
            tt.to_tsq(Res(), input_shape=(4,))

    def test_to_tsq_refuses_unsupported_conv(self):
        m = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2))
        with self.assertRaisesRegex(TypeError, "groups=1"):
            tt.to_tsq(m, input_shape=(2, 6, 6))


class Logging(unittest.TestCase):

    def test_progress_goes_to_the_logger(self):
        fp = trained(steps=5)
        x, _ = data()
        with self.assertLogs("tsq.torch", logging.INFO) as cm:
            p = tt.prepare(fp, [x[:64], x[64:]], progress=False)
            tt.convert(p, [x[:64], x[64:]], rounds=1, positions=8, progress=False)
        text = "\n".join(cm.output)
        self.assertIn("calibration batches: 2/2", text)
        self.assertIn("convert: conv2 ->", text)
        self.assertIn("convert: fc1 ->", text)


class ProgressDisplay(unittest.TestCase):
    """convert's display follows the library's progress reports: passes of
    the most the regressor can take, ending at that total."""

    @classmethod
    def setUpClass(cls):
        cls.x, _ = data()
        cls.calib = [cls.x[:64], cls.x[64:]]
        cls.prepared = tt.prepare(trained(steps=5), cls.calib, progress=False)

    def convert(self, **kw):
        return tt.convert(self.prepared, self.calib, rounds=1, positions=8, **kw)

    def test_plain_lines_without_tqdm(self):
        saved, err = sys.modules.get("tqdm"), io.StringIO()
        sys.modules["tqdm"] = None                  # import tqdm raises ImportError
        old, sys.stderr = sys.stderr, err
        try:
            self.convert(progress=True)
        finally:
            sys.stderr = old
            if saved is None:
                del sys.modules["tqdm"]
            else:
                sys.modules["tqdm"] = saved
        lines = err.getvalue().splitlines()
        for layer in ("conv2 (1/2)", "fc1 (2/2)"):
            mine = [l for l in lines if l.startswith("tsq convert %s: " % layer)]
            self.assertTrue(mine, err.getvalue())
            counts = [l.split(": ", 1)[1].split(" passes")[0] for l in mine]
            done = [int(c.split("/")[0]) for c in counts]
            total = {int(c.split("/")[1]) for c in counts}
            self.assertEqual(len(total), 1, mine)           # one total per layer
            self.assertEqual(done, sorted(done), mine)      # never goes back
            self.assertEqual(done[-1], total.pop(), mine)   # ends at the total
            self.assertIn("objective", mine[-1])

    def test_tqdm_bar(self):
        bars = []

        class FakeBar(object):
            def __init__(self, total=None, desc="", leave=True, unit="it"):
                self.total, self.desc, self.n, self.unit = total, desc, 0, unit
                self.seen, self.closed = [], False
                bars.append(self)

            def set_postfix_str(self, s, refresh=True):
                self.postfix = s

            def refresh(self):
                self.seen.append((self.n, self.total))

            def update(self, k=1):
                self.n += k

            def close(self):
                self.closed = True
        fake = type(sys)("tqdm")
        fake.tqdm = FakeBar
        saved = sys.modules.get("tqdm")
        sys.modules["tqdm"] = fake
        try:
            self.convert(progress=True)
        finally:
            if saved is None:
                del sys.modules["tqdm"]
            else:
                sys.modules["tqdm"] = saved
        conv = [b for b in bars if b.desc.startswith("tsq convert")]
        self.assertEqual(len(conv), 2)
        for b in conv:
            self.assertTrue(b.closed)
            self.assertEqual(b.unit, "passes")
            self.assertIsInstance(b.total, int)
            self.assertEqual(b.seen[-1], (b.total, b.total))
            self.assertIn("objective", b.postfix)

    def test_a_raising_callback_stops_convert(self):
        seen = []

        def stop(stage, done, total):
            seen.append(stage)
            if stage == "regressor pass" and done >= 2:
                raise KeyboardInterrupt()
        with tsq.Context(progress=stop) as ctx:
            with self.assertRaises(KeyboardInterrupt) as cm:
                self.convert(ctx=ctx, progress=False)
            self.assertEqual(cm.exception.__cause__.name, "TSQ_ERR_CANCELLED")
            self.assertIs(ctx.progress, stop)       # the caller's callback is back
        self.assertIn("regressor pass", seen)


if __name__ == "__main__":
    unittest.main()
