"""Holding Ctrl-C back while a block of state changes runs, so it runs whole or not at all.

A training update changes several things in turn (weights, optimizer state, counters, a
metrics row). A ``KeyboardInterrupt`` between two of them leaves a state that no
uninterrupted run ever had, and a checkpoint of it would not resume exactly. Inside
``interrupts_deferred()`` a first Ctrl-C is recorded and raised when the block ends; a second
one raises at once, so a block that hangs can still be stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def interrupts_deferred():
    """Delays SIGINT (Ctrl-C) until the end of the block.

    Only the main thread receives signals in Python: elsewhere, and where SIGINT is not
    handled by Python's default handler (raising ``KeyboardInterrupt``), this does nothing.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received = []

    def record(signum, frame):
        if received:  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        received.append(signum)

    signal.signal(signal.SIGINT, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt
