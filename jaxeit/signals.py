"""Stopping long jobs cleanly on SIGINT / SIGTERM: the signal only sets a flag, the job stops at a boundary.

A handler that saves from inside the signal would see a half-finished step (and,
under ``jit`` with donated buffers, arrays already freed). Instead
:class:`StopSignals` records the signal; the job checks :attr:`StopSignals.signum`
between steps (or shards), saves the last completed one and raises
:class:`Interrupted`, whose ``exit_code`` (130 for SIGINT, 143 for SIGTERM) the
command lines return.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["StopSignals", "Interrupted"]


class Interrupted(Exception):
    """A job stopped by SIGINT or SIGTERM after saving its last completed unit of work.

    Attributes:
        signum: the signal number.
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), for command lines.
    """

    def __init__(self, signum: int, what: str):
        self.signum, self.exit_code = int(signum), 128 + int(signum)
        super().__init__(f"interrupted by {signal.Signals(signum).name} {what}; run the same command again "
                         "to resume")


class StopSignals:
    """Context manager: while active, SIGINT/SIGTERM set :attr:`signum` instead of stopping the process.

    Only in the main thread (Python delivers signals there); elsewhere, or with
    ``enabled=False``, it changes nothing. The previous handlers come back on exit.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.signum: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopSignals":
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            for s in self._old:
                signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    @property
    def stopped(self) -> bool:
        """True once a signal has arrived."""
        return self.signum is not None
