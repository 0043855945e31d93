"""CPU torch tensors are used in place (when Debian's python3-torch is
installed; run in a subprocess so torch stays out of the other tests)."""

import importlib.util
import json
import unittest

from tsqtest import run_python, tsq

SCRIPT = r'''
import json, torch, tsq
out = {}
with tsq.Context() as ctx:
    t = torch.zeros(2, 3)
    x = tsq.Tensor(ctx, t)
    out["copied"] = x.copied
    x.fill(3.0)                                  # the library writes torch's memory
    out["sum"] = float(t.sum())
    q = tsq.Quantizer(ctx, 2).set_channel(0, 0.5, 1.0)
    g = torch.ones(7)
    q.backward(torch.linspace(0, 3, 7), g, out=g)   # in place into a torch tensor
    out["grad"] = g.tolist()
    out["codes"] = q.encode(torch.linspace(0, 3, 7)).tolist()
print(json.dumps(out))
'''


@unittest.skipIf(importlib.util.find_spec("torch") is None, "torch is not installed")
class Torch(unittest.TestCase):

    def test_torch_tensors_zero_copy(self):
        rc, stdout, stderr = run_python(SCRIPT, env={"TSQ_LIBRARY": tsq.lib.path}, timeout=120)
        self.assertEqual(rc, 0, stderr)
        out = json.loads(stdout.strip().splitlines()[-1])
        self.assertFalse(out["copied"])
        self.assertEqual(out["sum"], 18.0)
        self.assertEqual(out["grad"], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
        self.assertEqual(out["codes"], [0, 0, 1, 2, 2, 3, 3])


if __name__ == "__main__":
    unittest.main()
