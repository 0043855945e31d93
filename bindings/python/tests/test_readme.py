"""The example of bindings/python/README.md runs and does what it says."""

import os
import re
import unittest

from tsqtest import PYDIR, needs_numpy, run_python, tsq


@needs_numpy
class Readme(unittest.TestCase):

    def test_example(self):
        with open(os.path.join(PYDIR, "README.md")) as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        self.assertEqual(len(blocks), 1)
        code = blocks[0]
        self.assertLessEqual(len(code.strip().splitlines()), 11)
        rc, out, err = run_python(code, env={"TSQ_LIBRARY": tsq.lib.path})
        self.assertEqual(rc, 0, err)
        m = re.search(r"output codes kept: ([0-9.]+)", out)
        self.assertIsNotNone(m, out)
        self.assertGreater(float(m.group(1)), 0.7)
        self.assertLess(float(m.group(1)), 1.0)


if __name__ == "__main__":
    unittest.main()
