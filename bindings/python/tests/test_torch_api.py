"""tsq.torch (when Debian's python3-torch is installed): the unit tests of
torch_cases.py and the 2-process DistributedDataParallel run of
torch_ddp.py, each in its own interpreter so torch stays out of this one."""

import importlib.util
import os
import subprocess
import sys
import unittest

from tsqtest import HERE, PYDIR, tsq


def _run(args, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = PYDIR + os.pathsep + env.get("PYTHONPATH", "")
    env["TSQ_LIBRARY"] = tsq.lib.path
    env.setdefault("OMP_NUM_THREADS", "1")
    p = subprocess.run([sys.executable] + args, cwd=HERE, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, universal_newlines=True)
    return p.returncode, p.stdout


@unittest.skipIf(importlib.util.find_spec("torch") is None, "torch is not installed")
class TorchApi(unittest.TestCase):

    def test_torch_module(self):
        rc, out = _run(["-m", "unittest", "-v", "torch_cases"], 300)
        self.assertEqual(rc, 0, out)
        self.assertIn("OK", out)

    def test_distributed_data_parallel_two_processes(self):
        rc, out = _run(["torch_ddp.py"], 300)
        self.assertEqual(rc, 0, out)
        self.assertIn("ddp ok", out)


if __name__ == "__main__":
    unittest.main()
