"""The suite's own timer (gpt2_conformance.timeouts): a timeout that Python drops, because it was
raised inside a garbage-collector callback or a ``__del__``, is raised again until it reaches the
property; once it has, the next phase is left alone."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from gpt2_conformance import timeouts

pytestmark = pytest.mark.skipif(
    not timeouts.can_time("signal"), reason="needs SIGALRM in the main thread"
)


def _wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def _timed_call() -> Iterator[timeouts.PhaseClock]:
    """A property's call phase with a 0.1 s timeout; the timer is cancelled afterwards."""
    clock = timeouts.PhaseClock()
    clock.enter("call")
    cancel = timeouts.start_timer(clock, ["causality.batch-independence"], 0.1)
    try:
        yield clock
    finally:
        cancel()
        clock.leave()


def test_a_dropped_timeout_is_raised_again() -> None:
    with _timed_call():
        with contextlib.suppress(timeouts.ConformanceTimeout):
            _wait(2.0)  # dropped, as inside a gc callback: the property would go on untimed
        with pytest.raises(timeouts.ConformanceTimeout):
            _wait(2.0)  # ... and the timer raises again


def test_a_delivered_timeout_leaves_the_next_phase_alone() -> None:
    with _timed_call() as clock:
        with pytest.raises(timeouts.ConformanceTimeout):
            _wait(2.0)
        clock.leave()  # the property's call ended with the timeout
        clock.enter("teardown")
        _wait(3 * timeouts.RETRY_S)  # no second timeout in the teardown
