"""tsq.torch's shared helpers: the progress display (tqdm where installed,
plain lines otherwise; driven by the library's progress callback where the
library does the counting), reading calibration batches, the default
Context."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ..context import Context


log = logging.getLogger("tsq.torch")


Calibration = Iterable[Any]


class _Progress(object):
    """One bar (tqdm) or one line per step on stderr; INFO lines on the
    "tsq.torch" logger either way. step() counts in Python (calibration
    batches); update() takes the library's own count (see _reporting)."""

    def __init__(self, desc: str, total: Optional[int], enabled: Optional[bool],
                 unit: str = ""):
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.desc, self.total, self.n, self.t0 = desc, total, 0, time.time()
        self.unit, self.note = unit, ""
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm           # optional
                self.bar = tqdm(total=total, desc=desc, leave=False, unit=unit or "it")
            except ImportError:
                self.bar = None

    def step(self, note: str = "") -> None:
        self.update(self.n + 1, self.total, note)

    def update(self, done: int, total: Optional[int], note: Optional[str] = None,
               show: bool = True) -> None:
        """Shows `done` of `total` (None: unknown), with `note` (None: keep
        the last one); show=False only records them, for a note to come."""
        if note is not None:
            self.note = note
        self.n, self.total = done, total
        if not show:
            return
        count = ("%d/%d" % (done, total) if total else "%d" % done) + \
            (" " + self.unit if self.unit else "")
        line = "%s: %s%s" % (self.desc, count, ", " + self.note if self.note else "")
        log.info("%s", line)
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(self.note, refresh=False)
            self.bar.refresh()
        elif self.enabled:
            sys.stderr.write("%s (%.1fs)\n" % (line, time.time() - self.t0))
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _reporting(ctx: Context, stage: str, bar: _Progress,
               show: bool = True) -> Iterator[_Progress]:
    """While inside: the library's reports of `stage` ("regressor pass",
    ...) drive `bar` (show=False: recorded, for the caller to show with a
    note); the context's own progress callback, if the caller set one,
    still gets every report (and can still cancel)."""
    previous = ctx.progress

    def report(name: str, done: int, total: int) -> None:
        if previous is not None:
            previous(name, done, total)
        if name == stage:
            bar.update(done, total, show=show)
    ctx.set_progress(report)
    try:
        yield bar
    finally:
        ctx.set_progress(previous)


def _reiterable(calibration: Calibration) -> Sequence[Any]:
    """The calibration source as something that can be read pass after pass."""
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        raise TypeError("calibration must be an iterable of batches (a list of tensors or a "
                        "DataLoader), not a single %s: wrap it as [x]"
                        % type(calibration).__name__)
    if iter(calibration) is calibration:     # a generator or iterator: read once
        return list(calibration)
    return calibration


def _batches(calibration: Sequence[Any]) -> Iterator[torch.Tensor]:
    for i, item in enumerate(calibration):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError("calibration batch %d is a %s: give torch tensors, or (input, "
                            "target) pairs of them" % (i, type(x).__name__))
        if not x.is_floating_point():
            raise TypeError("calibration batch %d has dtype %s: inputs must be floating point"
                            % (i, x.dtype))
        yield x


def _first_batch(calibration: Sequence[Any]) -> torch.Tensor:
    for x in _batches(calibration):
        return x
    raise ValueError("calibration is empty: give at least one batch")


def _context(ctx: Optional[Context]) -> Tuple[Context, bool]:
    """The caller's context, or a new one (threads as torch, messages to
    the "tsq" logger at its level); the flag says whether to close it."""
    if ctx is not None:
        return ctx, False
    return Context(threads=max(1, min(torch.get_num_threads(), 256)),
                   log=logging.getLogger("tsq")), True


def _len(obj: Any) -> Optional[int]:
    try:
        return len(obj)
    except TypeError:
        return None
