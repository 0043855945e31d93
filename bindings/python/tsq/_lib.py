"""Finding and loading libtsq, the version check, and error handling.

The library is searched, in order, at

1. the ``TSQ_LIBRARY`` environment variable (a file, or a directory holding
   ``libtsq.so``);
2. the build tree, when this package sits in ``bindings/python`` of a
   checkout: ``build/openblas/libtsq.so``, then ``build/cblas/libtsq.so``;
3. the library installed next to this package by ``make install``
   (``tsq/_install.py``, written by the install, records its LIBDIR);
4. the system linker path (``ctypes.util.find_library("tsq")``, then
   ``libtsq.so.0``).
"""

import ctypes
import ctypes.util
import os

from . import _ffi

__all__ = ["TsqError", "TsqVersionError", "load_library", "library_candidates",
           "status_name", "status_string", "version_string"]


class TsqError(Exception):
    """A libtsq call failed.

    Attributes:
        status (int): the ``tsq_status`` the call returned (e.g. 3).
        name (str): the status' name (e.g. ``"TSQ_ERR_SHAPE"``).
        message (str): the library's message for the failed call, taken from
            the ``*_errmsg`` of the object the error was reported on (the
            handle, or the context for constructors); may be empty when the
            call has no object to report on.
        call (str): the C function that failed.
    """

    def __init__(self, status, message="", call=""):
        self.status = int(status)
        self.name = status_name(self.status)
        self.message = message
        self.call = call
        text = "%s (%d)" % (self.name, self.status)
        if message:
            text += ": " + message
        elif call:
            text += " in %s" % call
        Exception.__init__(self, text)


class TsqVersionError(ImportError):
    """The library's major version differs from the headers the bindings
    were generated from."""


_STATUS_NAMES = dict((v, k) for k, v in _ffi.CONSTANTS.items()
                     if k == "TSQ_OK" or k.startswith("TSQ_ERR_"))


def status_name(status):
    """The constant name of a status number ("TSQ_ERR_SHAPE"), or
    "TSQ_STATUS_<n>" for a number the headers do not know."""
    return _STATUS_NAMES.get(int(status), "TSQ_STATUS_%d" % int(status))


def _package_repo_root():
    """The checkout root if this package is bindings/python/tsq of one."""
    here = os.path.dirname(os.path.abspath(__file__))
    python_dir = os.path.dirname(here)
    bindings = os.path.dirname(python_dir)
    if os.path.basename(python_dir) == "python" and os.path.basename(bindings) == "bindings":
        return os.path.dirname(bindings)
    return None


def library_candidates():
    """The paths or names tried, in order, as (origin, path) pairs."""
    out = []
    env = os.environ.get("TSQ_LIBRARY")
    if env:
        if os.path.isdir(env):
            env = os.path.join(env, "libtsq.so")
        out.append(("TSQ_LIBRARY", env))
        return out               # an explicit choice is never second-guessed
    root = _package_repo_root()
    if root:
        for blas in ("openblas", "cblas"):
            path = os.path.join(root, "build", blas, "libtsq.so")
            if os.path.exists(path):
                out.append(("build tree", path))
    try:
        from ._install import LIBDIR        # written by `make install` only
    except ImportError:
        LIBDIR = None
    if LIBDIR:
        out.append(("make install", os.path.join(LIBDIR, "libtsq.so.0")))
    found = ctypes.util.find_library("tsq")
    if found:
        out.append(("linker path", found))
    out.append(("linker path", "libtsq.so.0"))
    return out


def _missing_stub(name, lib_version):
    def stub(*args):
        raise TsqError(_ffi.TSQ_ERR_UNSUPPORTED,
                       "%s is not exported by libtsq %s (these bindings were generated "
                       "from headers %s)" % (name, lib_version, _ffi.HEADER_VERSION_STRING),
                       name)
    stub.__name__ = name
    return stub


class Library(object):
    """The loaded CDLL with every call's argtypes and restype declared.

    Calls the library lacks (an older minor version) are replaced by stubs
    raising TsqError(TSQ_ERR_UNSUPPORTED). ``path`` is where it was found.
    """

    def __init__(self, cdll, path):
        self._cdll = cdll
        self.path = os.path.abspath(path) if os.sep in path else path
        self.missing = _ffi.bind(cdll)
        self.version_number = int(cdll.tsq_version_number())
        self.version = cdll.tsq_version_string().decode()
        for name in self.missing:
            setattr(self, name, _missing_stub(name, self.version))

    def __getattr__(self, name):
        fn = getattr(self._cdll, name)
        setattr(self, name, fn)
        return fn


def check_version(library_version, header_version=None):
    """Raises TsqVersionError unless the major parts of the two
    TSQ_VERSION_NUMBERs (MAJOR*10000 + MINOR*100 + PATCH) agree. The header
    version defaults to the one recorded in _ffi at call time."""
    if header_version is None:
        header_version = _ffi.HEADER_VERSION_NUMBER

    def fmt(v):
        return "%d.%d.%d" % (v // 10000, v // 100 % 100, v % 100)
    if library_version // 10000 != header_version // 10000:
        raise TsqVersionError(
            "libtsq version mismatch: the library is %s (%d) but the Python bindings were "
            "generated from headers %s (%d); the major versions must match. Point "
            "TSQ_LIBRARY at a matching libtsq.so or regenerate bindings/python/tsq/_ffi.py "
            "with gen_ffi.py." % (fmt(library_version), library_version,
                                  fmt(header_version), header_version))


def load_library(path=None):
    """Loads libtsq (from `path`, or the search order of this module),
    declares its calls and checks its version against the headers.

    Raises ImportError (listing what was tried) when no library loads, and
    TsqVersionError when the major versions differ."""
    tried = []
    candidates = [("argument", path)] if path else library_candidates()
    for origin, cand in candidates:
        try:
            cdll = ctypes.CDLL(cand)
        except OSError as e:
            tried.append("%s %s: %s" % (origin, cand, e))
            continue
        if not hasattr(cdll, "tsq_version_number"):
            tried.append("%s %s: not libtsq (no tsq_version_number)" % (origin, cand))
            continue
        lib = Library(cdll, cand)
        check_version(lib.version_number)
        return lib
    raise ImportError("libtsq not found; set TSQ_LIBRARY to the path of libtsq.so. Tried:\n  "
                      + "\n  ".join(tried))


lib = load_library()


def status_string(status):
    """The library's description of a status ("TSQ_ERR_SHAPE: tensor shapes
    do not fit together")."""
    return lib.tsq_status_string(int(status)).decode()


def version_string():
    """The version of the loaded library, "MAJOR.MINOR.PATCH"."""
    return lib.version
