"""Stopping a property that runs too long (``--conformance-timeout``).

The suite uses pytest-timeout's ``timeout`` marker but its own timer: pytest-timeout's signal
handler calls ``pytest.fail``, which hypothesis catches and replays while shrinking, so a hanging
implementation would hang again, untimed. :func:`start_timer` raises :class:`ConformanceTimeout`
from SIGALRM instead, and only while a test is inside a runtest phase (:class:`PhaseClock`):
pytest turns an exception raised inside a phase into that phase's report, while between phases
it would end the whole session. No pytest here.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .timing import STOPWATCH

#: After a timeout is raised, how often it is raised again while the same phase still runs (when
#: the first one was dropped, see :func:`start_timer`).
RETRY_S = 0.5


class ConformanceTimeout(BaseException):
    """A property ran past ``--conformance-timeout``.

    A BaseException, like KeyboardInterrupt, so that hypothesis does not treat it as a failing
    example to shrink (which would run the hanging implementation again): it ends the test at
    once and pytest reports it as that test's failure.
    """

    def __init__(self, requirements: Sequence[str], seconds: float) -> None:
        ids = ", ".join(requirements) or "conformance"
        super().__init__(
            f"{ids}: the implementation did not finish within {seconds:g} s and was stopped "
            "(--conformance-timeout)"
        )


class PhaseClock:
    """Which runtest phase (setup, call, teardown) of a conformance test is running, if any, and
    where the phase's time went (the :data:`~gpt2_conformance.timing.STOPWATCH` buckets)."""

    def __init__(self) -> None:
        self.phase: str | None = None
        #: Phases entered so far: tells one phase from the next of the same name.
        self.entered = 0

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.entered += 1
        STOPWATCH.take()  # what ran between tests is not this phase's

    def leave(self) -> dict[str, float]:
        """End the phase; returns its seconds inside the implementation and the oracle."""
        self.phase = None
        return STOPWATCH.take()


def can_time(method: str) -> bool:
    """Whether :func:`start_timer` can time a test here with pytest-timeout's ``method``."""
    return (
        method == "signal"
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )


def start_timer(
    clock: PhaseClock, requirements: Sequence[str], seconds: float
) -> Callable[[], None]:
    """Raise :class:`ConformanceTimeout` in the main thread after ``seconds`` (waiting, if it
    fires between phases, until the next phase begins); returns the function that cancels it and
    restores an enclosing timer (pytest run inside pytest)."""

    raised_in: int | None = None  # the phase (its entry number) the timeout was raised in

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised_in
        if raised_in is not None and clock.entered != raised_in:
            return  # the phase it was raised in has ended: it reached the test
        if clock.phase is None:  # between phases: try again shortly
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        # Python drops an exception raised inside a garbage-collector callback or a __del__
        # ("Exception ignored in ..."), and the property would run on untimed: until the phase
        # ends, raise again every RETRY_S.
        raised_in = clock.entered
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        raise ConformanceTimeout(requirements, seconds)

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, handler)
    outer = signal.setitimer(signal.ITIMER_REAL, seconds)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer[0] > 0:  # an enclosing timer keeps running
            left = outer[0] - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.01), outer[1])

    return cancel
