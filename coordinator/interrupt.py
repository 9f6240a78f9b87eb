"""Stopping a run on SIGINT or SIGTERM: the finished rounds are reported, marked incomplete.

Within :func:`raise_on_signals` the first SIGINT or SIGTERM raises :class:`RunInterrupted`
(a ``KeyboardInterrupt``, so no ``except Exception`` swallows it) in the main thread, where
the coordinator catches it and reports the rounds it finished; later signals are ignored
until the block ends, so the report is written whole. The store stays consistent because its
writes are transactions (SQLite) or single commands and scripts (Redis), and build locks are
released on the way out (or expire). Outside the main thread (Flower's simulation runs the
ServerApp in a thread) nothing is installed: the process that owns the run stops it and
reports from the run's progress file (:mod:`coordinator.report`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from powertrain.errors import PowerfleetError

#: The signals that stop a run, and the shell's exit code for each (128 + number).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_of(signal_name: str) -> int:
    """The conventional exit code of a process stopped by ``signal_name`` (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signal.Signals[signal_name]) if signal_name in signal.Signals.__members__ else 130


class RunInterrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signal_name`` is ``SIGINT`` or ``SIGTERM``."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class RunStoppedError(PowerfleetError):
    """A run stopped by a signal after writing its partial report (exit 130 or 143)."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = exit_code_of(signal_name)


class SignalState:
    """Which stop signal arrived inside :func:`raise_on_signals` (empty: none)."""

    def __init__(self) -> None:
        self.signal_name = ""
        self.armed = True  # False: a signal is only recorded (while cleaning up), nothing is raised


_active: SignalState | None = None  # the outermost raise_on_signals block's state


@contextlib.contextmanager
def raise_on_signals() -> Iterator[SignalState]:
    """Inside the block the first SIGINT/SIGTERM raises :class:`RunInterrupted` (main thread only;
    elsewhere a no-op); the previous handlers come back when it ends. Nested blocks share the
    outermost one's state, so a run stopped once is not interrupted again while it reports."""
    global _active
    if _active is not None and threading.current_thread() is threading.main_thread():
        yield _active
        return
    state = SignalState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if state.signal_name:
            return  # already stopping: let the report be written
        state.signal_name = signal.Signals(signum).name
        if state.armed:
            raise RunInterrupted(state.signal_name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    _active = state
    try:
        yield state
    finally:
        _active = None
        for sig, old in previous.items():
            signal.signal(sig, old)
