"""Python logging integration: libtsq's levels become logging levels, a
Logger's effective level sets how much the library sends, and an exception
in a log target does not cross the C frames."""

import logging
import unittest

from tsqtest import TestCase, tsq


class Logging(TestCase):

    def test_logger_level_sets_the_library_level(self):
        cases = ((logging.DEBUG, 4), (logging.INFO, 3), (logging.WARNING, 2),
                 (logging.ERROR, 1), (logging.CRITICAL, 0))
        for pylevel, want in cases:
            logger = logging.getLogger("tsq.test.level%d" % pylevel)
            logger.setLevel(pylevel)
            self.ctx.set_log(logger)
            self.assertEqual(self.ctx.log_level, want)
        self.ctx.set_log(logging.getLogger("tsq.test.explicit"), level=2)
        self.assertEqual(self.ctx.log_level, 2)

    def test_errors_arrive_as_error_records(self):
        logger = logging.getLogger("tsq.test.records")
        logger.setLevel(logging.DEBUG)
        self.ctx.set_log(logger)
        q = tsq.Quantizer(self.ctx, 2)
        with self.assertLogs(logger, logging.DEBUG) as cm:
            with self.assertRaises(tsq.TsqError):
                q.encode([1.0])                       # not fitted
        self.assertEqual(cm.records[0].levelno, logging.ERROR)
        self.assertIn("quantizer_encode", cm.records[0].getMessage())

    def test_callable_gets_numeric_levels(self):
        got = []
        self.ctx.set_log(lambda lvl, msg: got.append((lvl, msg)), level=4)
        with self.assertRaises(tsq.TsqError):
            tsq.Quantizer(self.ctx, 2).encode([1.0])
        self.assertEqual(got[0][0], 1)

    def test_raising_target_is_contained(self):
        def bad(lvl, msg):
            raise RuntimeError("boom")
        self.ctx.set_log(bad, level=1)
        with self.assertLogs("tsq", logging.ERROR):
            with self.assertRaises(tsq.TsqError):
                tsq.Quantizer(self.ctx, 2).encode([1.0])


if __name__ == "__main__":
    unittest.main()
