"""Holding Ctrl-C back while a run changes its state, so it stops only where it can resume.

A training update changes several things in turn (weights, optimizer state, counters, a
metrics row). A ``KeyboardInterrupt`` between two of them leaves a state that no
uninterrupted run ever had, and a checkpoint of it would not resume exactly. Inside
``interrupts_deferred()`` a first Ctrl-C is recorded; it is raised by the block's
``raise_if_received()`` (where the run has just checkpointed) or when the block ends. A second
Ctrl-C raises at once, so a run that hangs can still be stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Deferred:
    """What ``interrupts_deferred`` yields: whether a Ctrl-C is waiting, and a way to raise it."""

    def __init__(self):
        self.received = False

    def raise_if_received(self) -> None:
        """Raises the waiting ``KeyboardInterrupt``, if any: call where stopping is safe."""
        if self.received:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_deferred():
    """Delays SIGINT (Ctrl-C) until ``raise_if_received()`` or the end of the block.

    Only the main thread receives signals in Python: elsewhere, and where SIGINT is not
    handled by Python's default handler (raising ``KeyboardInterrupt``), this does nothing.
    """
    deferred = Deferred()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield deferred
        return

    def record(signum, frame):
        if deferred.received:  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        deferred.received = True

    signal.signal(signal.SIGINT, record)
    try:
        yield deferred
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    deferred.raise_if_received()
