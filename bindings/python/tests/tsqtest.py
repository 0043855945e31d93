"""Shared helpers of the Python binding tests (stdlib unittest only)."""

import contextlib
import ctypes
import gc
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)                       # bindings/python
REPO = os.path.dirname(os.path.dirname(PYDIR))
if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)

import tsq                                          # noqa: E402

try:
    import numpy as np
except ImportError:                                 # pragma: no cover
    np = None

needs_numpy = unittest.skipIf(np is None, "numpy is not installed")


class TestCase(unittest.TestCase):
    """Adds a context with a counting allocator that must be empty at the
    end of each test (so every test also proves the library freed all it
    allocated), and assertRaisesTsq."""

    def setUp(self):
        self.alloc = tsq.CountingAllocator()
        self.ctx = tsq.Context(allocator=self.alloc)

    def tearDown(self):
        self.ctx.close()
        gc.collect()
        self.assertEqual(self.alloc.live_blocks, 0,
                         "%d blocks (%d bytes) still allocated after the test"
                         % (self.alloc.live_blocks, self.alloc.live_bytes))

    @contextlib.contextmanager
    def assertRaisesTsq(self, status, *fragments):
        """The block raises TsqError with this status (a number or a name
        like "TSQ_ERR_SHAPE") and a message containing every fragment."""
        if isinstance(status, str):
            status = tsq.CONSTANTS[status]
        with self.assertRaises(tsq.TsqError) as cm:
            yield cm
        e = cm.exception
        self.assertEqual(e.status, status, "expected %s, got %r" % (tsq.status_name(status), e))
        self.assertEqual(e.name, tsq.status_name(status))
        self.assertTrue(e.message, "the library gave no message: %r" % e)
        for f in fragments:
            self.assertIn(f, e.message)
        self.assertIn(e.message, str(e))


def raw_tensor(ctx, arr):
    """A tsq_tensor made through the raw C API over a numpy array (for
    computing expected values without the wrappers). Caller destroys it."""
    codes = {"float32": tsq.TSQ_DTYPE_F32, "uint8": tsq.TSQ_DTYPE_U8, "int8": tsq.TSQ_DTYPE_I8}
    shape = (ctypes.c_int64 * arr.ndim)(*arr.shape)
    out = ctypes.POINTER(tsq.ffi.tsq_tensor)()
    st = tsq.lib.tsq_tensor_wrap(ctx.handle, codes[arr.dtype.name], arr.ndim, shape,
                                 ctypes.c_void_p(arr.ctypes.data), arr.nbytes, ctypes.byref(out))
    assert st == 0, tsq.lib.tsq_context_errmsg(ctx.handle)
    return out


def rss_pages():
    """Resident set size in pages, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


def run_python(code, env=None, timeout=60):
    """Runs code in a fresh /usr/bin/python3 (or this interpreter) with the
    bindings on the path; returns (returncode, stdout, stderr)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = PYDIR + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    p = subprocess.run([sys.executable, "-c", code], env=full_env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, universal_newlines=True)
    return p.returncode, p.stdout, p.stderr
