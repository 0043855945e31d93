"""The generated declarations: up to date, complete, and used."""

import contextlib
import ctypes
import io
import importlib.util
import os
import re
import shutil
import tempfile
import unittest

from tsqtest import PYDIR, REPO, tsq


_GEN = []


def load_generator():
    if _GEN:
        return _GEN[0]
    spec = importlib.util.spec_from_file_location("gen_ffi", os.path.join(PYDIR, "gen_ffi.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _GEN.append(mod)
    return mod


HAVE_HEADERS = os.path.isdir(os.path.join(REPO, "include", "tsq"))


class GeneratedModule(unittest.TestCase):

    @unittest.skipUnless(HAVE_HEADERS, "not in a checkout")
    def test_ffi_is_up_to_date(self):
        gen = load_generator()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "_ffi.py")
            self.assertEqual(gen.main(["--output", path]), 0)
            with open(path) as f:
                fresh = f.read()
        with open(os.path.join(PYDIR, "tsq", "_ffi.py")) as f:
            committed = f.read()
        self.assertTrue(committed == fresh,
                        "bindings/python/tsq/_ffi.py is stale: run "
                        "python3 bindings/python/gen_ffi.py")

    @unittest.skipUnless(HAVE_HEADERS, "not in a checkout")
    def test_check_mode_detects_staleness(self):
        gen = load_generator()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "_ffi.py")
            with open(path, "w") as f:
                f.write("stale\n")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertEqual(gen.main(["--check", "--output", path]), 1)
            self.assertIn("out of date", err.getvalue())
            gen.main(["--output", path])
            self.assertEqual(gen.main(["--check", "--output", path]), 0)

    @unittest.skipUnless(os.path.exists(os.path.join(REPO, "tests", "symbols.txt")),
                         "not in a checkout")
    def test_every_exported_symbol_has_an_entry(self):
        with open(os.path.join(REPO, "tests", "symbols.txt")) as f:
            symbols = [l.strip() for l in f if l.strip()]
        self.assertTrue(symbols)
        missing = [s for s in symbols if s not in tsq.ffi.FUNCTIONS]
        self.assertEqual(missing, [], "symbols without a declaration in _ffi.py")

    def test_every_declared_call_is_bound_with_its_types(self):
        if tsq.lib.version_number == tsq.ffi.HEADER_VERSION_NUMBER:
            self.assertEqual(tsq.lib.missing, [])
        for name, (restype, argtypes, names, header, exp) in tsq.ffi.FUNCTIONS.items():
            if name in tsq.lib.missing:
                continue
            fn = getattr(tsq.lib, name)
            self.assertIs(fn.restype, restype, name)
            self.assertEqual(list(fn.argtypes), list(argtypes), name)
            self.assertEqual(len(names), len(argtypes), name)

    def test_every_call_is_wrapped(self):
        """Each C call is used by a Pythonic wrapper somewhere in the package."""
        source = ""
        pkg = os.path.join(PYDIR, "tsq")
        for fname in sorted(os.listdir(pkg)):
            if fname.endswith(".py") and fname != "_ffi.py":
                with open(os.path.join(pkg, fname)) as f:
                    source += f.read()
        used = set(re.findall(r"\btsq_[a-z0-9_]+", source))
        # calls named through a pattern: tsq_layer_<kind>_create
        for kind in re.findall(r'_create\(ctx, "([a-z0-9_]+)"', source):
            used.add("tsq_layer_%s_create" % kind)
        unwrapped = sorted(set(tsq.ffi.FUNCTIONS) - used)
        self.assertEqual(unwrapped, [], "C calls without a Python wrapper")

    def test_types_are_strict(self):
        """Opaque handles have distinct types: a tensor is not a context."""
        t = ctypes.POINTER(tsq.ffi.tsq_tensor)()
        with self.assertRaises(ctypes.ArgumentError):
            tsq.lib.tsq_context_errmsg(t)
        self.assertEqual(tsq.lib.tsq_context_errmsg(None), b"no context")

    def test_constants(self):
        self.assertEqual(tsq.TSQ_ERR_SHAPE, 3)
        self.assertEqual(tsq.TSQ_VERSION_NUMBER, tsq.ffi.HEADER_VERSION_NUMBER)
        self.assertEqual(tsq.TSQ_CPU_AVX512VNNI, 1 << 5)
        self.assertEqual(tsq.TSQ_MAX_DIMS, 4)
        for name, value in tsq.CONSTANTS.items():
            self.assertEqual(getattr(tsq.ffi, name), value)
        # every status has a name, as the library spells it
        for name, value in tsq.CONSTANTS.items():
            if name.startswith("TSQ_ERR_"):
                self.assertEqual(tsq.status_name(value), name)
                self.assertTrue(tsq.status_string(value).startswith(name), name)


SYNTHETIC = """
#ifndef TSQ_X_H
#define TSQ_X_H
#include "core.h"
#define TSQ_X_LIMIT (3 << 2) /* a comment */
#define TSQ_X_NAME "x"
typedef struct tsq_x tsq_x;
typedef int32_t tsq_status;
typedef void (*tsq_x_fn)(void *user, const char *what, int64_t *n);
enum { TSQ_X_A = 1, TSQ_X_B, TSQ_X_C = TSQ_X_B * 4 /* = 8 */ };
/*! doc: TSQ_API int fake(void); */
TSQ_API tsq_status tsq_x_create(void *ctx, int32_t n,
                                const float *values, tsq_x **out);
TSQ_API const char *tsq_x_name(const tsq_x *x);
TSQ_API void tsq_x_each(tsq_x *x, tsq_x_fn fn, const char **names);
#ifdef TSQ_EXPERIMENTAL
TSQ_API uint64_t tsq_x_new(void);
#endif
#endif
"""

CORE = """
#define TSQ_VERSION_MAJOR 2
#define TSQ_VERSION_MINOR 3
#define TSQ_VERSION_PATCH 4
#define TSQ_VERSION_NUMBER \\
    (TSQ_VERSION_MAJOR * 10000 + TSQ_VERSION_MINOR * 100 + TSQ_VERSION_PATCH)
#define TSQ_VERSION_STRING "2.3.4"
"""


class Generator(unittest.TestCase):
    """The generator on synthetic headers: every construct it must read."""

    def generate(self, headers):
        gen = load_generator()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        os.makedirs(os.path.join(tmp, "tsq"))
        for name, text in headers.items():
            with open(os.path.join(tmp, "tsq", name), "w") as f:
                f.write(text)
        text = gen.generate(tmp)
        scope = {}
        exec(compile(text, "_ffi.py", "exec"), scope)
        return text, scope

    def test_constructs(self):
        text, ns = self.generate({"core.h": CORE, "x.h": SYNTHETIC})
        self.assertIn("GENERATED", text)
        self.assertEqual(ns["HEADER_VERSION_NUMBER"], 20304)
        self.assertEqual(ns["HEADER_VERSION_STRING"], "2.3.4")
        self.assertEqual(ns["TSQ_X_LIMIT"], 12)
        self.assertEqual((ns["TSQ_X_A"], ns["TSQ_X_B"], ns["TSQ_X_C"]), (1, 2, 8))
        F = ns["FUNCTIONS"]
        self.assertEqual(sorted(F), ["tsq_x_create", "tsq_x_each", "tsq_x_name", "tsq_x_new"])
        C = ctypes
        res, args, names, header, exp = F["tsq_x_create"]
        self.assertIs(res, C.c_int32)
        self.assertEqual(names, ["ctx", "n", "values", "out"])
        self.assertEqual(args[:3], [C.c_void_p, C.c_int32, C.POINTER(C.c_float)])
        self.assertIs(args[3], C.POINTER(C.POINTER(ns["tsq_x"])))
        self.assertFalse(exp)
        self.assertIs(F["tsq_x_name"][0], C.c_char_p)
        res, args, _, _, _ = F["tsq_x_each"]
        self.assertIsNone(res)
        self.assertIs(args[1], ns["tsq_x_fn"])
        self.assertIs(args[2], C.POINTER(C.c_char_p))
        self.assertTrue(F["tsq_x_new"][4])
        self.assertIs(F["tsq_x_new"][0], C.c_uint64)
        self.assertEqual(F["tsq_x_new"][1], [])

    def test_refuses_what_the_abi_forbids(self):
        gen = load_generator()
        for bad in ("typedef struct tsq_y tsq_y;\nTSQ_API int32_t tsq_y_f(tsq_y y);\n",
                    "TSQ_API int32_t tsq_y_g(size_t n);\n"):
            with self.assertRaises(gen.HeaderError):
                self.generate({"core.h": CORE, "y.h": bad})

    def test_needs_the_version(self):
        gen = load_generator()
        with self.assertRaises(gen.HeaderError):
            self.generate({"x.h": "TSQ_API void tsq_z(void);\n"})


if __name__ == "__main__":
    unittest.main()
