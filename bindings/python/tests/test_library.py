"""Finding the library, the version check, missing calls."""

import os
import shutil
import tempfile
import unittest

from tsqtest import PYDIR, REPO, run_python, tsq


class Loading(unittest.TestCase):

    def test_loaded_library_matches_headers(self):
        self.assertEqual(tsq.version_number() // 10000, tsq.ffi.HEADER_VERSION_NUMBER // 10000)
        self.assertEqual(tsq.__version__, tsq.version_string())
        self.assertEqual(tsq.lib.tsq_version_string().decode(), tsq.__version__)
        if os.environ.get("TSQ_LIBRARY"):
            self.assertEqual(tsq.library_candidates()[0][0], "TSQ_LIBRARY")

    def test_tsq_library_variable_is_obeyed(self):
        rc, out, err = run_python("import tsq", env={"TSQ_LIBRARY": "/nonexistent/libtsq.so"})
        self.assertNotEqual(rc, 0)
        self.assertIn("ImportError", err)
        self.assertIn("/nonexistent/libtsq.so", err)
        self.assertIn("TSQ_LIBRARY", err)

    def test_tsq_library_may_name_a_directory(self):
        path = tsq.lib.path
        rc, out, err = run_python("import tsq; print(tsq.lib.path)",
                                  env={"TSQ_LIBRARY": os.path.dirname(os.path.abspath(path))})
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.strip().endswith("libtsq.so"), out)

    def test_not_libtsq_is_refused(self):
        libc = "libc.so.6"
        rc, out, err = run_python("import tsq", env={"TSQ_LIBRARY": libc})
        self.assertNotEqual(rc, 0)
        self.assertIn("not libtsq", err)

    def test_build_tree_then_linker_path(self):
        rc, out, err = run_python(
            "import os; os.environ.pop('TSQ_LIBRARY', None)\n"
            "from tsq import _lib\n"
            "print([o for o, p in _lib.library_candidates()])\n"
            "print(_lib.library_candidates()[0][1])\n",
            env={"TSQ_LIBRARY": tsq.lib.path})
        self.assertEqual(rc, 0, err)
        origins = eval(out.splitlines()[0])
        self.assertEqual(origins[-1], "linker path")
        if os.path.exists(os.path.join(REPO, "build", "openblas", "libtsq.so")):
            self.assertEqual(origins[0], "build tree")
            self.assertEqual(out.splitlines()[1],
                             os.path.join(REPO, "build", "openblas", "libtsq.so"))


class Versions(unittest.TestCase):

    def test_major_mismatch_is_a_clear_error(self):
        saved = tsq.ffi.HEADER_VERSION_NUMBER
        lib_version = tsq.version_number()
        try:
            tsq.ffi.HEADER_VERSION_NUMBER = lib_version + 10000     # headers one major ahead
            with self.assertRaises(tsq.TsqVersionError) as cm:
                tsq.load_library(tsq.lib.path)
        finally:
            tsq.ffi.HEADER_VERSION_NUMBER = saved
        msg = str(cm.exception)
        self.assertIsInstance(cm.exception, ImportError)
        lib_str = "%d.%d.%d" % (lib_version // 10000, lib_version // 100 % 100, lib_version % 100)
        hdr = lib_version + 10000
        hdr_str = "%d.%d.%d" % (hdr // 10000, hdr // 100 % 100, hdr % 100)
        self.assertIn(lib_str, msg)
        self.assertIn(hdr_str, msg)
        self.assertIn("major", msg)

    def test_mismatch_at_import(self):
        """A package generated from other headers (a copy whose _ffi.py
        records another major version) refuses to import."""
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        pkg = os.path.join(tmp, "tsq")
        shutil.copytree(os.path.join(PYDIR, "tsq"), pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
        with open(os.path.join(pkg, "_ffi.py")) as f:
            text = f.read()
        v = tsq.ffi.HEADER_VERSION_NUMBER
        text = text.replace("HEADER_VERSION_NUMBER = %d" % v,
                            "HEADER_VERSION_NUMBER = %d" % (v + 20000))
        with open(os.path.join(pkg, "_ffi.py"), "w") as f:
            f.write(text)
        rc, out, err = run_python("import sys; sys.path.insert(0, %r); import tsq" % tmp,
                                  env={"TSQ_LIBRARY": tsq.lib.path})
        self.assertNotEqual(rc, 0)
        self.assertIn("TsqVersionError", err)
        self.assertIn("version mismatch", err)
        self.assertIn("(%d)" % (v + 20000), err)
        self.assertIn("(%d)" % tsq.version_number(), err)

    def test_minor_difference_is_accepted(self):
        v = tsq.version_number()
        tsq.check_version(v, (v // 10000) * 10000 + 99 * 100 + 9)
        with self.assertRaises(tsq.TsqVersionError):
            tsq.check_version(v, v + 10000)

    def test_missing_call_raises_unsupported(self):
        from tsq import _lib
        stub = _lib._missing_stub("tsq_future_call", "0.0.1")
        with self.assertRaises(tsq.TsqError) as cm:
            stub(1, 2)
        self.assertEqual(cm.exception.name, "TSQ_ERR_UNSUPPORTED")
        self.assertIn("tsq_future_call", cm.exception.message)
        self.assertIn("0.0.1", cm.exception.message)


if __name__ == "__main__":
    unittest.main()
