"""The suite's own timer (gpt2_conformance.timeouts): a timeout that Python drops, because it was
raised inside a garbage-collector callback or a ``__del__``, is raised again until it reaches the
property; once it has, the next phase is left alone."""

from __future__ import annotations

import contextlib
import time

import pytest

from gpt2_conformance import timeouts

pytestmark = pytest.mark.skipif(
    not timeouts.can_time("signal"), reason="needs SIGALRM in the main thread"
)


def _wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_dropped_timeout_is_raised_again() -> None:
    clock = timeouts.PhaseClock()
    clock.enter("call")
    cancel = timeouts.start_timer(clock, ["causality.batch-independence"], 0.1)
    try:
        with contextlib.suppress(timeouts.ConformanceTimeout):
            _wait(2.0)  # dropped, as inside a gc callback: the property would go on untimed
        with pytest.raises(timeouts.ConformanceTimeout):
            _wait(2.0)  # ... and the timer raises again
    finally:
        cancel()
        clock.leave()


def test_a_delivered_timeout_leaves_the_next_phase_alone() -> None:
    clock = timeouts.PhaseClock()
    clock.enter("call")
    cancel = timeouts.start_timer(clock, ["causality.batch-independence"], 0.1)
    try:
        with pytest.raises(timeouts.ConformanceTimeout):
            _wait(2.0)
        clock.leave()  # the property's call ended with the timeout
        clock.enter("teardown")
        _wait(3 * timeouts.RETRY_S)  # no second timeout in the teardown
    finally:
        cancel()
        clock.leave()
