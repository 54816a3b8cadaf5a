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
oracle calls are inside the implementation's time, not counted twice.

The same boundary isolates the implementation's inputs (:class:`InputIsolation`): every NumPy
array a protocol call or the adapter's ``build`` receives is the implementation's own read-only
copy, while the property keeps the suite's array for the oracle and its comparisons. An
implementation that writes into an input, at once or later, fails ``model.inputs-unchanged``
(spec chapter 1) and cannot change what it is judged against. The plugin resets the stopwatch
before each test phase and reads it after (see ``timeouts.PhaseClock``); everything a test
spends that is in neither bucket is the suite's own work.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from gpt2_reference import oracle as _oracle

from .adapter import Implementation

if TYPE_CHECKING:
    from .checks import ConformanceFailure

T = TypeVar("T")

#: The buckets a test's time is split into besides the suite's own work.
KINDS = ("implementation", "oracle")


class Stopwatch:
    """Accumulates wall seconds per kind; nested timed calls count once, for the outermost.

    It also counts the models built (:meth:`built`: how many, their seconds, which are part of
    the implementation's) and the distinct configurations and input shapes the implementation
    was called with (:meth:`called`): an implementation that compiles per shape pays once per
    distinct shape.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._inside: str | None = None
        self._clear_counts()

    def _clear_counts(self) -> None:
        self.builds = 0
        self.build_s = 0.0
        self.configs: set[str] = set()
        self.shapes: set[str] = set()

    def take(self) -> dict[str, Any]:
        """The seconds gathered since the last :meth:`take` (per kind), with ``builds``,
        ``build_s``, and the sorted ``configs`` and ``shapes`` seen (plain values: they travel
        from an xdist worker); then start again from zero."""
        taken: dict[str, Any] = self.seconds
        self.seconds = dict.fromkeys(KINDS, 0.0)
        taken.update(
            builds=self.builds,
            build_s=self.build_s,
            configs=sorted(self.configs),
            shapes=sorted(self.shapes),
        )
        self._clear_counts()
        return taken

    def built(self, config: str, seconds: float) -> None:
        """Note one model of ``config`` built in ``seconds``."""
        self.builds += 1
        self.build_s += seconds
        self.configs.add(config)

    def called(self, config: str, shape: tuple[int, ...]) -> None:
        """Note a call of a model of ``config`` on an input of ``shape``."""
        self.configs.add(config)
        self.shapes.add(f"{config} {'x'.join(map(str, shape))}")

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


def config_key(config: Any) -> str:
    """A short name of a configuration for the build counts, e.g. ``V97 P32 d16 L2 H4``."""
    try:
        return (
            f"V{config.vocab_size} P{config.n_positions} d{config.n_embd} L{config.n_layer} "
            f"H{config.n_head}"
        )
    except AttributeError:
        return repr(config)


def _timed_method(name: str) -> Callable[..., Any]:
    def method(self: TimedImplementation, *args: Any, **kwargs: Any) -> Any:
        if self.config is not None and args and isinstance(args[0], np.ndarray):
            STOPWATCH.called(self.config, args[0].shape)
        function = functools.partial(STOPWATCH.call, "implementation", getattr(self.inner, name))
        result = self.isolation.run(f"{name}()", function, *args, **kwargs)
        if name in _RETURNS_IMPLEMENTATION and isinstance(result, Implementation):
            again = timed(result)
            if isinstance(again, TimedImplementation) and again.config is None:
                again.config = None if name == "load_checkpoint" else self.config
            return again
        return result

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The wrapped implementation's ``{name}``, timed."
    return method


_RETURNS_IMPLEMENTATION = frozenset({"load", "load_checkpoint", "moved"})


class TimedImplementation(Implementation):
    """An implementation whose protocol calls are timed; everything else reaches ``inner``."""

    def __init__(
        self,
        inner: Implementation,
        isolation: InputIsolation | None = None,
        config: str | None = None,
    ) -> None:
        self.inner = inner
        #: The arrays handed to ``inner`` (each call gets read-only copies; see InputIsolation).
        self.isolation = isolation or InputIsolation()
        #: :func:`config_key` of the model's configuration, when known (for the shape counts).
        self.config = config

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


def timed(
    implementation: Implementation,
    isolation: InputIsolation | None = None,
    config: str | None = None,
) -> Implementation:
    """``implementation`` with its protocol calls timed and its inputs isolated (unchanged if it
    already is); ``isolation``: the arrays already handed to it (by its adapter's ``build``);
    ``config``: its configuration's :func:`config_key`, for the shape counts."""
    if isinstance(implementation, TimedImplementation):
        return implementation
    return TimedImplementation(implementation, isolation, config)


def check_inputs(implementation: Implementation) -> None:
    """Fail ``model.inputs-unchanged`` if ``implementation`` (as :func:`timed` wrapped it) has
    changed any array the suite handed it and remembers (see :class:`InputIsolation`)."""
    if isinstance(implementation, TimedImplementation):
        implementation.isolation.check()


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


# ---- input isolation ---------------------------------------------------------------------------

#: The requirement an implementation breaks when it changes an array the suite handed it.
INPUTS_UNCHANGED = "model.inputs-unchanged"
#: Handed arrays up to this size that the implementation still holds after the call (it kept
#: them, or a tensor sharing their memory) are checked again at every later call of the same
#: implementation: one that changes a kept input later is caught then. Larger ones (whole weight
#: matrices) are checked when the call that received them returns.
REMEMBER_BYTES = 1 << 20
#: At most this many kept arrays are checked per implementation (the most recent ones).
REMEMBER_COUNT = 256


@dataclasses.dataclass
class _Handed:
    """One array given to an implementation: its read-only copy, and the suite's value."""

    what: str
    given: np.ndarray
    pristine: np.ndarray


@dataclasses.dataclass
class _Kept:
    """A handed array the implementation kept: a weak reference to the copy's memory (alive
    only while the implementation holds it) and the bytes it must still hold."""

    what: str
    owner: weakref.ref[np.ndarray]
    pristine: np.ndarray
    data: bytes
    #: Held until the next call's check (a change made then, even to an array the
    #: implementation drops in the same call, is still seen), weakly after that.
    strong: np.ndarray | None = None


def _own_copy(value: np.ndarray) -> np.ndarray:
    """A read-only view of a fresh read-only copy: the view's writeable flag cannot be set again,
    so writing into it needs deliberate work (its base), which the comparison then finds."""
    owner = np.array(value, copy=True, order="C")
    owner.flags.writeable = False
    return owner.view()


def _isolate(value: Any, what: str, handed: list[_Handed]) -> Any:
    """``value`` with every NumPy array in it (itself, or the values of a mapping) replaced by the
    implementation's own read-only copy, each recorded in ``handed``."""
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        given = _own_copy(value)
        handed.append(_Handed(what, given, value))
        return given
    if isinstance(value, Mapping) and any(isinstance(v, np.ndarray) for v in value.values()):
        return {k: _isolate(v, f"{what}[{k!r}]", handed) for k, v in value.items()}
    return value


def _bytes(array: np.ndarray) -> np.ndarray:
    """The array's values as one row of bytes (NaNs compare by their bits)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _changed(given: np.ndarray, pristine: np.ndarray) -> str | None:
    """How the implementation's copy now differs from what the suite gave, or None."""
    if given.shape != pristine.shape or given.dtype != pristine.dtype:
        return (
            f"it now has shape {given.shape} and dtype {given.dtype} (given {pristine.shape}, "
            f"{pristine.dtype})"
        )
    same = _bytes(given) == _bytes(pristine)
    if bool(same.all()):
        return None
    first = int(np.argmin(same)) // max(given.dtype.itemsize, 1)
    index = tuple(int(i) for i in np.unravel_index(first, given.shape)) if given.ndim else ()
    changed = given.size - int(same.reshape(given.size, -1).all(axis=1).sum())
    return (
        f"{changed} of its {given.size} entries changed, the first at index {index} "
        f"({pristine[index].tolist()!r} became {given[index].tolist()!r})"
    )


def _equal_in_chunks(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 24) -> bool:
    """Bitwise equality of two arrays of one shape and dtype, 16 MiB at a time."""
    x, y = _bytes(a), _bytes(b)
    return all(np.array_equal(x[i : i + chunk], y[i : i + chunk]) for i in range(0, x.size, chunk))


def _read_only_error(error: BaseException) -> bool:
    return isinstance(error, ValueError) and "read-only" in str(error)


class InputIsolation:
    """The arrays handed to one implementation, checked for changes after each call."""

    def __init__(self) -> None:
        self.kept: list[_Kept] = []

    def run(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function`` called with read-only copies of its array arguments; then those arrays,
        and every array this implementation kept from earlier calls, are checked."""
        handed: list[_Handed] = []
        args = tuple(_isolate(a, f"argument {i + 1}", handed) for i, a in enumerate(args))
        kwargs = {k: _isolate(v, f"argument {k}", handed) for k, v in kwargs.items()}
        for item in handed:
            item.what = f"{item.what} of {what}"
        try:
            with warnings.catch_warnings():
                # torch.as_tensor on a read-only array warns that the tensor may be written:
                # writing it is exactly what the comparison below finds, so the warning (about
                # the suite's choice, not the implementation) is not shown.
                warnings.filterwarnings(
                    "ignore", message=".*NumPy array is not writable", category=UserWarning
                )
                result = function(*args, **kwargs)
        except Exception as error:
            if _read_only_error(error):
                raise _failure(
                    f"{what} tried to write into an array it was given ({type(error).__name__}: "
                    f"{error})"
                ) from error
            self._check_handed(handed)
            raise
        self._check_handed(handed)
        self.check()
        for item in handed:  # remembered weakly: only what the implementation holds is checked
            if item.given.nbytes <= REMEMBER_BYTES:
                owner = item.given.base
                assert isinstance(owner, np.ndarray)
                pristine = item.pristine.copy()  # the suite's array may change later
                data = pristine.tobytes()
                self.kept.append(_Kept(item.what, weakref.ref(owner), pristine, data, owner))
        del self.kept[:-REMEMBER_COUNT]
        return result

    @staticmethod
    def _check_handed(handed: Sequence[_Handed]) -> None:
        for item in handed:
            given, pristine = item.given, item.pristine
            if given.shape == pristine.shape and given.dtype == pristine.dtype:
                if given.nbytes <= REMEMBER_BYTES:  # small: one memcmp of two byte strings
                    if given.tobytes() == pristine.tobytes():
                        continue
                elif _equal_in_chunks(given, pristine):  # weights: no array-sized temporaries
                    continue
            change = _changed(given, pristine)
            if change is not None:
                raise _changed_failure(item.what, change)

    def check(self) -> None:
        """Fail :data:`INPUTS_UNCHANGED` if the implementation changed an array it was handed
        earlier and still holds."""
        alive = []
        for item in self.kept:
            owner, item.strong = item.owner() if item.strong is None else item.strong, None
            if owner is None:  # the implementation let it go: it cannot change it any more
                continue
            if owner.tobytes() != item.data:
                change = _changed(owner, item.pristine)
                raise _changed_failure(item.what, change or "its bytes changed")
            alive.append(item)
        self.kept = alive


def _changed_failure(what: str, change: str) -> ConformanceFailure:
    return _failure(f"the implementation changed {what}, an array it was given: {change}")


def _failure(message: str) -> ConformanceFailure:
    from .checks import ConformanceFailure  # checks imports this module

    return ConformanceFailure(
        INPUTS_UNCHANGED,
        f"{message}. An implementation must treat its inputs as read-only (the suite hands it "
        "read-only copies, and judges it on the values it gave): copy an input before changing it",
    )


#: :mod:`gpt2_reference.oracle`, timed: properties call ``oracle.forward(...)`` through it.
#: Its ``random_params`` is memoised (:class:`_ParamsMemo`: the last 256 results, enough for the
#: ``ci`` pool's models, at most 3 GiB).
oracle: Any = _TimedModule(_oracle, "oracle")
_PARAMS = _ParamsMemo(256, 3 << 30)


@functools.wraps(_oracle.random_params)
def _random_params(config: Any, *, seed: int, scale: float | None = None) -> dict[str, Any]:
    return STOPWATCH.call("oracle", _PARAMS, config, seed=seed, scale=scale)


oracle._functions["random_params"] = _random_params

__all__ = [
    "INPUTS_UNCHANGED",
    "KINDS",
    "STOPWATCH",
    "InputIsolation",
    "Stopwatch",
    "TimedImplementation",
    "check_inputs",
    "config_key",
    "oracle",
    "timed",
]
