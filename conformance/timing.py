"""Where a conformance run spends its time: inside the implementation, in the oracle, or in the
suite's own work (strategies, comparisons, hypothesis).

The suite times itself at the boundary where it calls the implementation: every
:class:`~gpt2_conformance.adapter.Implementation` that :meth:`Suite.build` hands to a property is a
:class:`TimedImplementation`, which adds the wall time of each protocol call (``logits``, ``loss``,
``gradients``, ``prefill``/``extend``, ``save``/``load``...) to :data:`STOPWATCH`, and
:func:`gpt2_conformance.checks.call` and the adapter's ``build`` are timed the same way. The
oracle is reached through :data:`oracle`, a view of :mod:`gpt2_reference.oracle` whose functions
are timed as ``"oracle"``.

Only the outermost timed call counts: the NumPy adapter's implementation *is* the oracle, and its
oracle calls are inside the implementation's time, not counted twice. The plugin resets the
stopwatch before each test phase and reads it after (see ``timeouts.PhaseClock``); everything a
test spends that is in neither bucket is the suite's own work.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from gpt2_reference import oracle as _oracle

from .adapter import Implementation

T = TypeVar("T")

#: The buckets a test's time is split into besides the suite's own work.
KINDS = ("implementation", "oracle")


class Stopwatch:
    """Accumulates wall seconds per kind; nested timed calls count once, for the outermost."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._inside: str | None = None

    def take(self) -> dict[str, float]:
        """The seconds gathered since the last :meth:`take`, and start again from zero."""
        taken, self.seconds = self.seconds, dict.fromkeys(KINDS, 0.0)
        return taken

    def call(self, kind: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, its wall time added to ``kind`` unless already timed."""
        if self._inside is not None:
            return function(*args, **kwargs)
        self._inside = kind
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[kind] += time.perf_counter() - started
            self._inside = None


#: The process' stopwatch (one per process; under xdist each worker has its own).
STOPWATCH = Stopwatch()


def _timed_method(name: str) -> Callable[..., Any]:
    def method(self: TimedImplementation, *args: Any, **kwargs: Any) -> Any:
        result = STOPWATCH.call("implementation", getattr(self.inner, name), *args, **kwargs)
        if name in _RETURNS_IMPLEMENTATION and isinstance(result, Implementation):
            return timed(result)
        return result

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The wrapped implementation's ``{name}``, timed."
    return method


_RETURNS_IMPLEMENTATION = frozenset({"load", "load_checkpoint", "moved"})


class TimedImplementation(Implementation):
    """An implementation whose protocol calls are timed; everything else reaches ``inner``."""

    def __init__(self, inner: Implementation) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    logits = _timed_method("logits")  # abstract in Implementation: defined here


#: Every method of the protocol, timed (new protocol methods are picked up automatically).
PROTOCOL = tuple(
    name
    for name, value in vars(Implementation).items()
    if callable(value) and not name.startswith("_")
)
for _name in PROTOCOL:
    if _name != "logits":
        setattr(TimedImplementation, _name, _timed_method(_name))


def timed(implementation: Implementation) -> Implementation:
    """``implementation`` with its protocol calls timed (unchanged if it already is)."""
    if isinstance(implementation, TimedImplementation):
        return implementation
    return TimedImplementation(implementation)


class _TimedModule:
    """A module whose functions are timed as ``kind`` when called through this view."""

    def __init__(self, module: ModuleType, kind: str) -> None:
        self._module = module
        self._kind = kind
        self._functions: dict[str, Callable[..., Any]] = {}

    def __getattr__(self, name: str) -> Any:
        if name in self._functions:
            return self._functions[name]
        value = getattr(self._module, name)
        if not callable(value) or isinstance(value, type):
            return value
        kind, module = self._kind, self._module

        @functools.wraps(value)
        def function(*args: Any, **kwargs: Any) -> Any:  # looked up per call: patches apply
            return STOPWATCH.call(kind, getattr(module, name), *args, **kwargs)

        self._functions[name] = function
        return function


class _ParamsMemo:
    """``oracle.random_params`` remembering its last ``limit`` results (fewer when they hold
    more than ``limit_bytes``).

    The suite asks for the same weights many times: hypothesis replays examples while it
    generates and shrinks, several calls in one property rebuild the drawn model, and a run at a
    fixed shape (``--conformance-shape``) uses one seed per weight scale. Drawing GPT-2 small's
    124M float64 weights takes seconds, copying them a fraction of that; each caller gets its own
    copy, so a property that changes its arrays in place changes nobody else's.
    """

    def __init__(self, limit: int, limit_bytes: int) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._entries: OrderedDict[tuple[Any, ...], dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def __call__(self, config: Any, *, seed: int, scale: float | None = None) -> dict[str, Any]:
        key = (config, int(seed), scale)
        params = self._entries.get(key)
        if params is None:
            params = _oracle.random_params(config, seed=seed, scale=scale)
            self._entries[key] = params
            self._bytes += _nbytes(params)
            while len(self._entries) > 1 and (
                len(self._entries) > self.limit or self._bytes > self.limit_bytes
            ):
                self._bytes -= _nbytes(self._entries.popitem(last=False)[1])
        else:
            self._entries.move_to_end(key)
        return {name: array.copy() for name, array in params.items()}


def _nbytes(params: dict[str, np.ndarray]) -> int:
    return sum(array.nbytes for array in params.values())


#: :mod:`gpt2_reference.oracle`, timed: properties call ``oracle.forward(...)`` through it.
#: Its ``random_params`` is memoised (:class:`_ParamsMemo`: the last 32 results, at most 3 GiB).
oracle: Any = _TimedModule(_oracle, "oracle")
_PARAMS = _ParamsMemo(32, 3 << 30)


@functools.wraps(_oracle.random_params)
def _random_params(config: Any, *, seed: int, scale: float | None = None) -> dict[str, Any]:
    return STOPWATCH.call("oracle", _PARAMS, config, seed=seed, scale=scale)


oracle._functions["random_params"] = _random_params

__all__ = [
    "KINDS",
    "STOPWATCH",
    "Stopwatch",
    "TimedImplementation",
    "oracle",
    "timed",
]
