"""Progress on stderr: stage lines and tqdm bars with an ETA, silenced by one ``quiet`` switch.

Long commands report what they are doing on stderr (stdout stays for results
such as tables): a stage line per step ("meshing", "calibrating",
"compiling", ...) with the seconds elapsed since the start, and a tqdm bar
with rate and ETA for loops. Bars come from :mod:`tqdm.auto`: a widget in
Jupyter when ``ipywidgets`` is installed (the ``[notebooks]`` extra), a text bar
otherwise — without tqdm's "IProgress not found" warning.

    >>> p = Progress(quiet=False)
    >>> p.stage("meshing")                          # "[   0.0 s] meshing" on stderr
    >>> for x in p.bar(range(5), desc="methods"):   # bar with ETA on stderr
    ...     pass

``quiet=None`` reads the environment variable ``JAXEIT_QUIET`` (``1`` silences).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Callable, Iterable

__all__ = ["Progress", "quiet_from_env", "first_and_warm"]


def quiet_from_env() -> bool:
    """``True`` when ``JAXEIT_QUIET`` is set to something other than ``""``, ``"0"`` or ``"false"``."""
    return os.environ.get("JAXEIT_QUIET", "").strip().lower() not in ("", "0", "false", "no")


def _tqdm():
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        # in a notebook without ipywidgets tqdm.auto warns "IProgress not found" and falls back to the
        # text bar; the fallback is what we want, the warning is noise
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm


class Progress:
    """Stage lines and progress bars on a stream (stderr by default).

    Args:
        quiet: print nothing; ``None`` (default) reads ``JAXEIT_QUIET``.
        file: the text stream (default ``sys.stderr`` at each call, so
            redirections such as pytest's capture are honoured).
    """

    def __init__(self, quiet: bool | None = None, file=None):
        self.quiet = quiet_from_env() if quiet is None else bool(quiet)
        self._file = file
        self.start = time.perf_counter()

    @property
    def file(self):
        return sys.stderr if self._file is None else self._file

    def elapsed(self) -> float:
        """Seconds since this object was made."""
        return time.perf_counter() - self.start

    def stage(self, message: str) -> None:
        """Print ``[  12.3 s] message`` (seconds since the start) unless quiet."""
        if not self.quiet:
            print(f"[{self.elapsed():7.1f} s] {message}", file=self.file, flush=True)

    def bar(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
            unit: str = "it", leave: bool = True, **kw):
        """A :mod:`tqdm.auto` bar (rate and ETA) on this stream; disabled (a no-op wrapper) when quiet.

        ``kw`` goes to tqdm. Use as an iterator or call ``.update(n)`` and ``.close()``.
        """
        return _tqdm()(iterable, total=total, desc=desc, unit=unit, leave=leave, file=self.file,
                       disable=self.quiet, dynamic_ncols=True, **kw)


def first_and_warm(fn: Callable, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` twice; return ``(result, first_s, warm_s)``.

    The first call pays for tracing and XLA compilation, the second runs the
    cached programs: ``warm_s`` is the run time, ``first_s − warm_s`` the
    compile (and other one-off set-up) time. ``result`` is the second call's.
    JAX work is waited for (``jax.block_until_ready``) inside each timing.
    """
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, first, time.perf_counter() - t0
