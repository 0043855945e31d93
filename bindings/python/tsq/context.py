"""The context: threads, seed, logging, allocator, build information."""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List,  # noqa: F401
                    Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:                                   # names used in annotations only
    from .tensor import Tensor  # noqa: F401

import ctypes
import logging
import sys
import threading
import weakref

from . import _buffers as B
from . import _ffi
from ._buffers import ArrayLike, DTypeLike  # noqa: F401
from ._base import Handle, check_static
from ._keys import key_names, lookup
from ._lib import TsqError, lib

__all__ = ["Context", "Allocator", "CountingAllocator", "PROGRESS_STAGES"]

# TSQ_PROGRESS_* stage numbers -> the names the progress callback gets.
PROGRESS_STAGES = {getattr(_ffi, k): lib.tsq_progress_stage_name(getattr(_ffi, k)).decode()
                   for k in _ffi.CONSTANTS if k.startswith("TSQ_PROGRESS_")}

# "version", "blas", "blas_core", "cpu", "build", "summary".
_INFO_KEYS = key_names("TSQ_INFO_", 0x0A00)

_OPTION_KEYS = key_names("TSQ_CONTEXT_", 0x0100)        # "threads", "log_level", "cpu_mask"

# libtsq log levels -> logging levels.
_LOG_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}

# The names of the library's info string: the constant's name in lowercase,
# except where the usual spelling has a hyphen.
_CPU_SPELLING = {"amxint8": "amx-int8"}
_CPU_NAMES = [(getattr(_ffi, k), _CPU_SPELLING.get(k[len("TSQ_CPU_"):].lower(),
                                                   k[len("TSQ_CPU_"):].lower()))
              for k in sorted(_ffi.CONSTANTS, key=lambda n: _ffi.CONSTANTS[n])
              if k.startswith("TSQ_CPU_")]


def _level_for(pylevel):
    """libtsq's log_level for a logging level: the most verbose libtsq
    level whose records the logger keeps."""
    for lvl in (4, 3, 2, 1):
        if pylevel <= _LOG_LEVELS[lvl]:
            return lvl
    return 0


class Allocator(object):
    """Base class of Python allocators for Context(allocator=...).

    Subclasses implement alloc(size, alignment) -> address (int, 0 on
    failure) and free(address). They are called by libtsq for every block
    the context and its objects use (from worker threads too, when the
    context has several threads; ctypes takes the GIL). An exception in
    alloc counts as a failed allocation (TSQ_ERR_NO_MEMORY)."""

    def alloc(self, size: int, alignment: int) -> int:
        """Returns the address of a block of at least `size` bytes aligned
        to `alignment` (a power of two, at most 64), or 0 on failure."""
        raise NotImplementedError

    def free(self, address: int) -> None:
        """Releases a block that alloc returned."""
        raise NotImplementedError


class CountingAllocator(Allocator):
    """An allocator over the C library's posix_memalign/free that counts
    live blocks and bytes, to check that nothing leaks:

        alloc = tsq.CountingAllocator()
        with tsq.Context(allocator=alloc) as ctx:
            ...
        assert alloc.live_blocks == 0

    ``fail_after`` (optional) makes the allocation after that many
    successful ones fail, to exercise out-of-memory paths."""

    def __init__(self, fail_after: Optional[int] = None) -> None:
        libc = ctypes.CDLL(None)
        self._memalign = libc.posix_memalign
        self._memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                                   ctypes.c_size_t]
        self._memalign.restype = ctypes.c_int
        self._free = libc.free
        self._free.argtypes = [ctypes.c_void_p]
        self._free.restype = None
        self.sizes = {}
        self.live_blocks = 0
        self.live_bytes = 0
        self.peak_bytes = 0
        self.total_blocks = 0
        self.fail_after = fail_after

    def alloc(self, size: int, alignment: int) -> int:
        """posix_memalign, counted (see Allocator.alloc)."""
        if self.fail_after is not None:
            if self.fail_after <= 0:
                return 0
            self.fail_after -= 1
        p = ctypes.c_void_p()
        if self._memalign(ctypes.byref(p), max(alignment, ctypes.sizeof(ctypes.c_void_p)),
                          max(size, 1)) != 0 or not p.value:
            return 0
        self.sizes[p.value] = size
        self.live_blocks += 1
        self.live_bytes += size
        self.total_blocks += 1
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return p.value

    def free(self, address: int) -> None:
        """free, counted; refuses a block this allocator did not give."""
        size = self.sizes.pop(address, None)
        if size is None:
            raise RuntimeError("free of a block this allocator did not give: %#x" % address)
        self.live_blocks -= 1
        self.live_bytes -= size
        self._free(address)


def _alloc_thunk(allocator):
    def alloc(user, size, alignment):
        try:
            p = allocator.alloc(int(size), int(alignment))
        except Exception:               # a failed allocation, reported by libtsq
            return None
        return p or None
    return _ffi.tsq_alloc_fn(alloc)


def _free_thunk(allocator):
    def free(user, ptr):
        allocator.free(int(ptr))
    return _ffi.tsq_free_fn(free)


class Context(Handle):
    """A libtsq context: allocator, worker threads, random seed, logging.

    Every other object is made from a context and keeps it alive; the C
    context is destroyed only after them. Closing a context (close(), or the
    end of ``with tsq.Context() as ctx:``) closes every object made from it
    that is still open.

    Args:
        threads: worker threads for libtsq's own loops (1..256, default 1).
        seed: 64-bit seed of every random stream derived afterwards.
        log: where libtsq's messages go: a logging.Logger, a callable
            ``f(level, message)`` (level 1 error .. 4 debug), or None.
        log_level: 0 none .. 4 debug (libtsq default 1: errors).
        allocator: an Allocator (e.g. CountingAllocator) for every block of
            memory the context and its objects use.
        progress: a callable ``f(stage, done, total)`` the long calls report
            to (see set_progress), or None.
    """

    _destroy_name = "tsq_context_destroy"
    _errmsg_name = "tsq_context_errmsg"

    def __init__(self, threads: Optional[int] = None, seed: Optional[int] = None, log: Any = None,
                 log_level: Optional[int] = None, allocator: Optional[Allocator] = None,
                 progress: Optional[Callable[[str, int, int], Any]] = None) -> None:
        self._children = weakref.WeakSet()
        self._log_thunk = None
        self._log_target = None
        self._progress_thunk = None
        self._progress_target = None
        self._progress_raised = {}      # thread id -> exc_info of a callback that raised
        self.allocator = allocator
        out = ctypes.POINTER(_ffi.tsq_context)()
        if allocator is None:
            st = lib.tsq_context_create(ctypes.byref(out))
            keep = None
        else:
            if not isinstance(allocator, Allocator):
                raise TypeError("allocator must be a tsq.Allocator")
            thunks = (_alloc_thunk(allocator), _free_thunk(allocator))
            st = lib.tsq_context_create_with_allocator(ctypes.byref(out), thunks[0],
                                                       thunks[1], None)
            keep = (thunks, allocator)      # the C context is freed through them
        if st:
            raise TsqError(st, "context_create: %s" % lib.tsq_status_string(st).decode(),
                           "tsq_context_create")
        self._adopt(None, out, keep)
        try:
            if threads is not None:
                self.threads = threads
            if seed is not None:
                self.seed = seed
            if log_level is not None:
                self.log_level = log_level
            if log is not None:
                self.set_log(log)
            if progress is not None:
                self.set_progress(progress)
        except BaseException:
            self.close()
            raise

    # ---- options ---------------------------------------------------------

    def set_option(self, key: Union[str, int], value: float) -> None:
        """Sets an integer option (tsq_context_set_option): key "threads",
        "log_level", "cpu_mask" (the TSQ_CPU_* bits the kernels may use,
        e.g. all but tsq.TSQ_CPU_AMXINT8) or a TSQ_CONTEXT_* number."""
        self._call("tsq_context_set_option", lookup(_OPTION_KEYS, key, "context option"),
                   B.int_arg(value, key if isinstance(key, str) else "value"))

    def get_option(self, key: Union[str, int]) -> float:
        """Reads an integer option (tsq_context_get_option; see set_option)."""
        v = ctypes.c_double()
        self._call("tsq_context_get_option", lookup(_OPTION_KEYS, key, "context option"),
                   ctypes.byref(v))
        return int(v.value)

    @staticmethod
    def option_bounds(key: Union[str, int]) -> Any:
        """The inclusive (lo, hi) range of an option's values
        (tsq_context_option_bounds)."""
        lo, hi = ctypes.c_double(), ctypes.c_double()
        check_static(lib.tsq_context_option_bounds(lookup(_OPTION_KEYS, key, "context option"),
                                                   ctypes.byref(lo), ctypes.byref(hi)),
                     "tsq_context_option_bounds")
        return int(lo.value), int(hi.value)

    @property
    def threads(self):
        """Worker threads for libtsq's own loops (1..256)."""
        return self.get_option("threads")

    @threads.setter
    def threads(self, value):
        self.set_option("threads", value)

    @property
    def log_level(self):
        """Messages at or below this level reach the log callback
        (0 none, 1 errors, 2 warnings, 3 info, 4 debug)."""
        return self.get_option("log_level")

    @log_level.setter
    def log_level(self, value):
        self.set_option("log_level", value)

    @property
    def seed(self):
        """The 64-bit seed of random streams derived from now on."""
        v = ctypes.c_uint64()
        self._call("tsq_context_get_seed", ctypes.byref(v))
        return v.value

    @seed.setter
    def seed(self, value):
        value = B.int_arg(value, "value")
        if not 0 <= value < 1 << 64:
            raise ValueError("seed must be in 0 .. 2**64 - 1")
        self._call("tsq_context_set_seed", value)

    # ---- logging -------------------------------------------------------

    def set_log(self, target: Any, level: Optional[int] = None) -> None:
        """Sends libtsq's messages to `target`: a logging.Logger (libtsq's
        levels 1 error, 2 warning, 3 info, 4 debug become ERROR, WARNING,
        INFO, DEBUG records), a callable f(level, message), or None to stop.

        `level` sets log_level too; with a Logger and no level, log_level
        follows the logger's effective level at this call (INFO -> 3, so
        the progress messages of long calls are sent; DEBUG -> 4): call
        set_log again after changing the logger's level. Messages come from
        the thread that made the call."""
        if target is None:
            thunk = _ffi.tsq_log_fn()
        else:
            if isinstance(target, logging.Logger):
                logger = target

                def emit(lvl, msg):
                    py = _LOG_LEVELS.get(lvl, logging.DEBUG)
                    if logger.isEnabledFor(py):
                        logger.log(py, "%s", msg)
                if level is None:
                    level = _level_for(logger.getEffectiveLevel())
            elif callable(target):
                emit = target
            else:
                raise TypeError("log target must be a logging.Logger, a callable or None")

            def callback(user, lvl, msg):
                try:
                    emit(int(lvl), msg.decode("utf-8", "replace") if msg else "")
                except Exception:           # never let an exception cross the C frames
                    logging.getLogger("tsq").exception("tsq: the log target raised")
            thunk = _ffi.tsq_log_fn(callback)
        self._call("tsq_context_set_log", thunk, None)
        self._log_thunk = thunk if target is not None else None
        self._log_target = target
        if level is not None:
            self.log_level = level

    @property
    def log(self):
        """The current log target (see set_log)."""
        return self._log_target

    # ---- progress ------------------------------------------------------

    def set_progress(self, target: Optional[Callable[[str, int, int], Any]]) -> None:
        """Calls ``target(stage, done, total)`` as the long calls of objects
        made from this context progress, or stops with None.

        stage is the stage's name: "quantizer fit" (Quantizer.fit,
        learn_codes: channels), "learn codes" (Net.learn_codes: quantizers),
        "regressor pass" (fit_transform, Regressor.end_pass, each layer of
        Net.fit_transform: passes, of the most the fit can take),
        "fit transform" (Net.fit_transform: layers) or "plan create" (Plan:
        network stages). Within a run of a stage, done never decreases and
        total stays; a completed run ends at done == total.

        To stop the call in progress, raise from target (KeyboardInterrupt
        from Ctrl-C included): the library call is cancelled
        (TSQ_ERR_CANCELLED), leaves its outputs as they were, and the
        exception is re-raised from the call, its __cause__ the TsqError.
        The return value is ignored. Called from the thread that made the
        call; it must not use the objects that call is working on."""
        if target is None:
            thunk = _ffi.tsq_progress_fn()
        elif callable(target):
            raised = self._progress_raised

            def callback(user, stage, done, total):
                try:
                    target(PROGRESS_STAGES.get(stage, str(stage)), int(done), int(total))
                    return 0
                except BaseException:       # cancel; re-raised by the failed call
                    raised[threading.get_ident()] = sys.exc_info()
                    return 1
            thunk = _ffi.tsq_progress_fn(callback)
        else:
            raise TypeError("progress must be a callable f(stage, done, total) or None")
        self._call("tsq_context_set_progress", thunk, None)
        self._progress_thunk = thunk if target is not None else None
        self._progress_target = target

    @property
    def progress(self):
        """The current progress callback (see set_progress), or None."""
        return self._progress_target

    def _reraise_progress(self, error):
        """After a failed call: re-raises the exception a progress callback
        raised on this thread (which cancelled the call), from `error`."""
        info = self._progress_raised.pop(threading.get_ident(), None)
        if info is not None and error.status == _ffi.TSQ_ERR_CANCELLED:
            raise info[1].with_traceback(info[2]) from error

    # ---- information -----------------------------------------------------

    def info(self, key: Union[str, int] = 'summary') -> Any:
        """A description of the build: key "version", "blas", "blas_core",
        "cpu", "build" or "summary" (or a TSQ_INFO_* number)."""
        out = ctypes.c_char_p()
        self._call("tsq_context_info", lookup(_INFO_KEYS, key, "info key"), ctypes.byref(out))
        return out.value.decode("utf-8", "replace") if out.value else ""

    def cpu_features(self) -> int:
        """The TSQ_CPU_* bits the context detected when it was made (what its
        kernel choices see; tsq_context_cpu_features)."""
        bits = ctypes.c_uint32()
        self._call("tsq_context_cpu_features", ctypes.byref(bits))
        return bits.value

    def cpu_feature_names(self) -> List[str]:
        """cpu_features() as lowercase names ("avx2", "avx512vnni", ...), in
        the order of the TSQ_CPU_* bits."""
        bits = self.cpu_features()
        return [name for bit, name in _CPU_NAMES if bits & bit]

    # ---- object factories ------------------------------------------------

    def tensor(self, data: ArrayLike, dtype: Optional[DTypeLike] = None) -> Tensor:
        """A Tensor over `data` (zero-copy when possible; see Tensor)."""
        from .tensor import Tensor
        return Tensor(self, data, dtype=dtype)

    def zeros(self, shape: Union[int, Sequence[int]], dtype: DTypeLike = 'float32') -> Tensor:
        """A zero-filled Tensor that owns its memory."""
        from .tensor import Tensor
        return Tensor.zeros(self, shape, dtype)

    # ---- lifetime --------------------------------------------------------

    def close(self) -> None:
        """Closes every object made from this context that is still open
        (newest first), then destroys the context."""
        if self._h is None:
            return
        children = sorted(self._children, key=lambda c: c._serial, reverse=True)
        for child in children:
            child.close()
        Handle.close(self)

    def __repr__(self) -> str:
        if self.closed:
            return "<tsq.Context closed>"
        return "<tsq.Context threads=%d seed=%d log_level=%d%s%s>" % (
            self.threads, self.seed, self.log_level,
            " log=%r" % (self._log_target,) if self._log_target is not None else "",
            " progress=%r" % (self._progress_target,)
            if self._progress_target is not None else "")
