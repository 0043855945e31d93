"""The library's progress callback from Python: Context(progress=...) sees
every long call's stage with done never decreasing and ending at total; an
exception raised by the callback cancels the call (TSQ_ERR_CANCELLED), is
re-raised from it with the TsqError as its cause, and leaves the outputs
as they were; None removes the callback."""

import unittest

from tsqtest import TestCase, needs_numpy, np, tsq


class Recorder(object):
    def __init__(self, raise_at=None, exc=RuntimeError):
        self.events, self.raise_at, self.exc = [], raise_at, exc

    def __call__(self, stage, done, total):
        self.events.append((stage, done, total))
        if self.raise_at is not None and len(self.events) - 1 == self.raise_at:
            raise self.exc("stop at %d" % self.raise_at)


def check_runs(test, events):
    """Per stage: within a run done never decreases and total stays; a new
    run starts only after the previous one reached total."""
    last = {}
    for stage, done, total in events:
        test.assertIn(stage, tsq.PROGRESS_STAGES.values())
        test.assertTrue(0 <= done <= total and total >= 1, (stage, done, total))
        prev = last.get(stage)
        if prev is not None and prev[0] < prev[1]:
            test.assertEqual(total, prev[1], (stage, done, total, prev))
            test.assertGreaterEqual(done, prev[0], (stage, done, total, prev))
        last[stage] = (done, total)
    return last


@needs_numpy
class Progress(TestCase):

    def quantizer(self, channels=40):
        q = tsq.Quantizer(self.ctx, 2, channels=channels)
        q.observe(np.random.default_rng(1).standard_normal((64, channels)).astype(np.float32))
        return q

    def test_stage_names(self):
        self.assertEqual(sorted(tsq.PROGRESS_STAGES.values()),
                         ["fit transform", "learn codes", "plan create", "quantizer fit",
                          "regressor pass"])
        self.assertEqual(tsq.PROGRESS_STAGES[tsq.TSQ_PROGRESS_QUANTIZER_FIT], "quantizer fit")

    def test_quantizer_fit_reports_channels(self):
        rec = Recorder()
        self.ctx.threads = 2
        self.ctx.set_progress(rec)
        self.assertIs(self.ctx.progress, rec)
        self.assertIn("progress=", repr(self.ctx))
        with self.quantizer() as q:
            q.fit()
        self.assertGreaterEqual(len(rec.events), 3)
        last = check_runs(self, rec.events)
        self.assertEqual(last, {"quantizer fit": (40, 40)})
        self.assertEqual(rec.events[0], ("quantizer fit", 0, 40))

    def test_exception_cancels_and_is_reraised(self):
        with self.quantizer() as q:
            q.fit()
            before = q.parameters()
            q.observe(np.full((8, 40), 7.0, np.float32))     # a new fit would move them
            for k in range(3):
                rec = Recorder(raise_at=k)
                self.ctx.set_progress(rec)
                with self.assertRaises(RuntimeError) as cm:
                    q.fit()
                self.assertEqual(str(cm.exception), "stop at %d" % k)
                cause = cm.exception.__cause__
                self.assertIsInstance(cause, tsq.TsqError)
                self.assertEqual(cause.name, "TSQ_ERR_CANCELLED")
                self.assertIn("cancelled by the progress callback", cause.message)
                self.assertEqual(len(rec.events), k + 1)
                self.assertEqual(q.parameters(), before)
            # learn_codes: the codes array given is left alone
            x = np.random.default_rng(2).standard_normal((16, 40)).astype(np.float32)
            codes = np.full(x.shape, 0xAB, np.uint8)
            self.ctx.set_progress(Recorder(raise_at=0))
            with self.assertRaises(RuntimeError):
                tsq.learn_codes(q, x, codes=codes)
            self.assertTrue((codes == 0xAB).all())
            # KeyboardInterrupt (Ctrl-C during a long call) goes through too
            self.ctx.set_progress(Recorder(raise_at=1, exc=KeyboardInterrupt))
            with self.assertRaises(KeyboardInterrupt):
                q.fit()
            # None removes the callback: nothing reported, nothing cancelled
            self.ctx.set_progress(None)
            self.assertIsNone(self.ctx.progress)
            q.fit()
            self.assertNotEqual(q.parameters(), before)

    def test_refuses_a_non_callable(self):
        with self.assertRaises(TypeError):
            self.ctx.set_progress(3)
        with self.assertRaises(TypeError):
            tsq.Context(progress="bar")

    def make_net(self):
        net = tsq.Net(self.ctx, 6)
        for layer in (tsq.Dense(self.ctx, 6, 12), tsq.ReLU(self.ctx),
                      tsq.Dense(self.ctx, 12, 12), tsq.ReLU(self.ctx),
                      tsq.Dense(self.ctx, 12, 12), tsq.ReLU(self.ctx),
                      tsq.Dense(self.ctx, 12, 3)):
            net.append(layer)
        return net

    def convert(self, net, rec):
        """learn_codes, fit_transform and a plan, reporting to rec; the
        first exception propagates."""
        rng = np.random.default_rng(5)
        batches = [rng.standard_normal((40, 6)).astype(np.float32) for _ in range(3)]
        self.ctx.set_progress(rec)
        try:
            net.learn_codes_batches(batches)
            net.fit_transform_batches(batches)
            tsq.Plan(self.ctx, net).close()
        finally:
            self.ctx.set_progress(None)

    def test_pipeline_stages(self):
        rec = Recorder()
        with self.make_net() as net:
            self.convert(net, rec)
        last = check_runs(self, rec.events)
        self.assertEqual(set(last), set(tsq.PROGRESS_STAGES.values()))
        for stage, (done, total) in last.items():
            self.assertEqual(done, total, stage)
        self.assertEqual([e for e in rec.events if e[0] == "fit transform"],
                         [("fit transform", 0, 2), ("fit transform", 1, 2),
                          ("fit transform", 2, 2)])
        # A cancel at reports all along the pipeline re-raises, and
        # (tearDown) leaves no block allocated.
        for k in range(0, len(rec.events), max(1, len(rec.events) // 12)):
            with self.make_net() as net, self.assertRaises(RuntimeError):
                self.convert(net, Recorder(raise_at=k))

    def test_cancelled_fit_transform_keeps_the_layer(self):
        """Cancelled when the first layer's fit is done: the session ends
        and that layer is not replaced."""
        rec = Recorder()
        with self.make_net() as net:
            self.convert(net, rec)
        k = rec.events.index(("fit transform", 1, 2))
        with self.make_net() as net:
            with self.assertRaises(RuntimeError):
                self.convert(net, Recorder(raise_at=k))
            self.assertEqual(net.tsq_progress().stage, "idle")
            self.assertEqual([l.kind_name for l in net.layers].count("lowbit_dense"), 0)
            self.assertEqual([l.kind_name for l in net.layers].count("act_quant"), 3)


if __name__ == "__main__":
    unittest.main()
