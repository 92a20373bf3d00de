import os
import signal

import pytest

from experiments.interrupts import interrupts_deferred


def test_ctrl_c_waits_for_the_block_to_finish():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("first half")
            done.append("second half")
    assert done == ["first half", "second half"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_does_not_wait():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            done.append("never")
    assert done == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_block_without_ctrl_c_runs_as_usual():
    with interrupts_deferred():
        value = 1 + 1
    assert value == 2 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_stops_at_the_point_it_names_not_before():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred() as deferred:
            deferred.raise_if_received()  # nothing waiting yet: goes on
            os.kill(os.getpid(), signal.SIGINT)
            done.append("update")
            assert deferred.received
            deferred.raise_if_received()
            done.append("never")
    assert done == ["update"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
