"""SIGINT (Ctrl-C) and SIGTERM as :class:`varshift.errors.RunInterrupted` while a run trains.

A run takes over a signal only where its handler is Python's default (``KeyboardInterrupt`` for SIGINT,
termination for SIGTERM), and only in the main thread, where Python runs signal handlers: a launcher that
handles a signal itself (submitit keeps SIGTERM to requeue a preempted job) keeps it. While the checkpoint of an
epoch is written (:meth:`Interrupts.deferred`) an interrupt waits until the write is done, so the checkpoint that
an interrupted run keeps is always that of a whole epoch. After the first interrupt the signals are Python's
again: a second Ctrl-C while the run winds down (wandb's upload) stops it at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from varshift.errors import RunInterrupted

# each signal with the handler it has when nothing took it over
DEFAULT_HANDLERS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class Interrupts:
    """While entered, SIGINT and SIGTERM raise :class:`RunInterrupted` (with ``signum``, the signal's number)."""

    def __init__(self) -> None:
        self.previous: dict[signal.Signals, object] = {}
        self.pending: int | None = None
        self.depth = 0  # nesting of deferred()

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum, default in DEFAULT_HANDLERS.items():
                if signal.getsignal(signum) is default:
                    self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Give the signals back to the handlers they had."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def handle(self, signum: int, frame) -> None:
        if self.depth:
            self.pending = signum
            return
        self.interrupt(signum)

    def interrupt(self, signum: int) -> None:
        self.release()
        error = RunInterrupted(f"{signal.Signals(signum).name} stopped the run")
        error.signum = signum
        raise error

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that an interrupt does not cut short: it is raised when the block has completed."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending is not None:
            self.interrupt(self.pending)
