"""The run's context, handed to every property as the ``suite`` fixture.

It holds the adapter under test and the run's options (device, dtype, checkpoint), builds
implementations with canonical weights from the oracle, and gives the spec's tolerances for the
run's dtype. Properties use only this object and :mod:`gpt2_conformance.checks`; they never reach
into an adapter's internals.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_spec import GPT2Config, spec_definitions

from .adapter import Adapter, AdapterError, Implementation, Params, native_numpy
from .checks import ConformanceFailure, ImplementationError
from .timing import STOPWATCH, InputIsolation, config_key, oracle, timed

S = spec_definitions()

#: Longest rows the token strategies draw for a configuration wider than the spec's measured
#: domain (``--conformance-shape=gpt2-small``): the float64 oracle then runs on few tokens.
WIDE_MODEL_LENGTH = 8
#: Weight scales used at a fixed ``--conformance-shape`` (outside the spec's measured ``DOMAIN``):
#: measured at GPT-2 small's shape (scripts/measure_shape_tolerances.py, spec chapter 7), honest
#: float32 implementations stay within a fifth of every bound at GPT-2's init and at 0.1, while at
#: 0.3 their gradients exceed the gradient bound several times over (12 layers compound the
#: rounding), so the larger scale is not used there.
LARGE_SHAPE_SCALES: tuple[float | None, ...] = (None, 0.1)
#: ``--conformance-shape``: the configuration every property draws (``tiny``: small configurations
#: drawn per example, the default), with GPT-2's published sizes (vocabulary 50257, 1024
#: positions).
SHAPES: dict[str, GPT2Config | None] = {
    "tiny": None,
    "gpt2-small": GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16
    ),
}


#: The configurations the ``ci`` profile draws (:attr:`Suite.pool`), instead of any small one:
#: a fixed set, so that a model built for one example can serve the next (``reuse = "copy"``)
#: and an implementation that compiles per configuration compiles nine times. Heads (1, 2, 4),
#: widths per head (4, 8, 16) and layers (1 to 3) form a Latin square: every pair of their
#: values occurs once. Vocabularies (5 to 97) and contexts (8 to 64 positions) span the drawn
#: ranges, both smaller and larger than one another, never equal to one another or to the width
#: (a swapped or transposed matrix keeps its shape only then), and average about what the free
#: draw does (47 tokens and 39 positions against 51 and 36), so that rows are as long. The first
#: is the smallest of all, the configuration a failing example shrinks to.
CI_POOL: tuple[GPT2Config, ...] = tuple(
    GPT2Config(vocab_size=V, n_positions=P, n_embd=n_head * width, n_layer=L, n_head=n_head)
    for V, P, n_head, width, L in (
        (5, 8, 1, 4, 1),
        (97, 64, 1, 8, 2),
        (6, 57, 1, 16, 3),
        (64, 45, 2, 4, 2),
        (31, 64, 2, 8, 3),
        (71, 24, 2, 16, 1),
        (50, 17, 4, 4, 3),
        (89, 40, 4, 8, 1),
        (7, 33, 4, 16, 2),
    )
)

#: Built models an adapter with ``reuse = "copy"`` has copies made of: the most recent this many
#: (enough for every model the ``ci`` pool draws: 9 configurations x 4 seeds x 3 scales) ...
ORIGINALS_KEPT = 128
#: ... holding at most this many weights together (GPT-2 small has 124M).
ORIGINALS_KEPT_WEIGHTS = 256_000_000


@dataclasses.dataclass
class _Original:
    """A model built for copies (``Adapter.reuse == "copy"``), never handed to a property, and
    its weights as built (None when the adapter does not claim ``params``)."""

    implementation: Implementation
    weights: dict[str, bytes] | None


@dataclasses.dataclass
class Suite:
    """What a property needs to know about the run.

    Attributes:
        adapter: the implementation's adapter.
        device: "cpu" or "cuda" (never "auto": the plugin resolves it).
        dtype: "float32", "bfloat16" or "float16".
        checkpoint: a canonical checkpoint (config and float64 weights) used by weight-dependent
            properties instead of drawn weights, or None.
        shape: the one configuration every property uses (``--conformance-shape``), with one
            weight seed per scale; None draws small configurations and seeds per example.
        pool: the configurations the properties draw from (the ``ci`` profile's
            :data:`CI_POOL`); None draws any small configuration. An adapter's
            ``supported_configs``, a checkpoint and a fixed shape take precedence.
    """

    adapter: Adapter
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint: tuple[GPT2Config, Params] | None = None
    checkpoint_path: Path | None = None
    shape: GPT2Config | None = None
    pool: tuple[GPT2Config, ...] | None = None
    #: Models kept for copies (``Adapter.reuse == "copy"``). Not an init field: hypothesis
    #: prints a falsifying example's dataclasses by their init fields.
    _originals: OrderedDict[tuple[Any, ...], _Original] = dataclasses.field(
        default_factory=OrderedDict, init=False, repr=False
    )
    #: The strategies made for this suite (:func:`gpt2_conformance.strategies.reused`).
    _strategies: dict[Any, Any] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How hypothesis prints the suite in a failing example (the report keeps those notes):
        the adapter and what the run set, not the pool's configurations one by one."""
        parts = [f"adapter={type(self.adapter).__name__}", f"device={self.device!r}"]
        parts.append(f"dtype={self.dtype!r}")
        if self.checkpoint_path is not None:
            parts.append(f"checkpoint={str(self.checkpoint_path)!r}")
        if self.shape is not None:
            parts.append(f"shape={self.shape!r}")
        if self.pool is not None:
            parts.append(f"pool=<{len(self.pool)} configurations>")
        printer.text(f"Suite({', '.join(parts)})")

    def claims(self, capability: str) -> bool:
        return capability in self.adapter.capabilities

    def tolerance(self, kind: str = "oracle") -> Any:
        """The spec's tolerance (chapter 7) for ``kind`` ("oracle" or "self") at the run's dtype."""
        return S.TOLERANCES[(kind, self.dtype)]

    @property
    def weight_scales(self) -> tuple[float | None, ...]:
        """Weight scales inside the spec's measured domain for this dtype (at a fixed shape, only
        those of :data:`LARGE_SHAPE_SCALES`)."""
        return self._at_shape(S.DOMAIN["weight_scales"][self.dtype])

    @property
    def gradient_weight_scales(self) -> tuple[float | None, ...]:
        """Weight scales on which the spec promises gradient comparisons for this dtype (at a fixed
        shape, only those of :data:`LARGE_SHAPE_SCALES`)."""
        return self._at_shape(S.DOMAIN["gradient_weight_scales"][self.dtype])

    def _at_shape(self, scales: Any) -> tuple[float | None, ...]:
        if self.shape is None:
            return tuple(scales)
        return tuple(s for s in scales if s in LARGE_SHAPE_SCALES)

    def build(
        self,
        config: GPT2Config,
        *,
        requirement: str,
        params: Params | None = None,
        seed: int = 0,
        scale: float | None = None,
    ) -> tuple[Implementation, Params | None]:
        """Build an implementation of ``config``.

        When the adapter claims ``params``, canonical weights are drawn from the oracle
        (``oracle.random_params(config, seed=seed, scale=scale)``) unless ``params`` is given, and
        returned alongside so the property can compare with the oracle. Otherwise the
        implementation initialises itself from ``seed`` and the returned params are None.
        A failure to build is reported against ``requirement``.

        The adapter gets its own read-only copy of ``params``; the returned params are the
        suite's, which the oracle uses (an adapter that writes into what it was given fails
        ``model.inputs-unchanged``: see :class:`~gpt2_conformance.timing.InputIsolation`).

        An adapter whose ``reuse`` is "copy" builds each drawn model (configuration, seed, scale)
        once: that model is kept unused and every property gets a ``copy.deepcopy`` of it, so a
        model trained, moved or resized by one example never reaches the next. Before each copy
        the original's weights are compared with those it was built with; a change means a copy
        shares state with it (an :class:`AdapterError`). Models built from weights a property
        gives (``params``) are always built.
        """
        reuse = getattr(self.adapter, "reuse", "rebuild")
        if reuse not in ("rebuild", "copy"):
            raise AdapterError(
                f"{type(self.adapter).__name__}.reuse is {reuse!r}: give 'rebuild' or 'copy'"
            )
        key = (config, int(seed), scale) if reuse == "copy" and params is None else None
        if self.claims("params"):
            if params is None:  # memoised: see gpt2_conformance.timing
                params = oracle.random_params(config, seed=seed, scale=scale)
        else:
            params = None
        if key is None:
            implementation, isolation = self._build(config, params, seed, requirement)
            return timed(implementation, isolation, config_key(config)), params
        original = self._originals.get(key)
        if original is None:
            built, _ = self._build(config, params, seed, requirement)
            weights = self._weights(built, requirement) if self.claims("params") else None
            original = self._originals[key] = _Original(built, weights)
            while len(self._originals) > 1 and (
                len(self._originals) > ORIGINALS_KEPT
                or sum(k[0].parameter_count for k in self._originals) > ORIGINALS_KEPT_WEIGHTS
            ):
                self._originals.popitem(last=False)
        else:
            self._originals.move_to_end(key)
            self._check_unchanged(original, config, requirement)
        return timed(self._copy(original.implementation), None, config_key(config)), params

    def _build(
        self, config: GPT2Config, params: Params | None, seed: int, requirement: str
    ) -> tuple[Implementation, InputIsolation]:
        """The adapter's ``build``, timed and counted, its inputs isolated."""
        isolation = InputIsolation()
        spent = [0.0]

        def build(*args: Any, **kwargs: Any) -> Any:
            # Only the adapter's own call counts as building (the input isolation around it is
            # the suite's), so that build_s is part of the implementation's time.
            started = time.perf_counter()
            try:
                return self.adapter.build(*args, **kwargs)
            finally:
                spent[0] = time.perf_counter() - started

        try:
            implementation = isolation.run(
                "the adapter's build()",
                STOPWATCH.call,
                "implementation",
                build,
                config,
                params=params,
                seed=seed,
                device=self.device,
                dtype=self.dtype,
            )
        except ConformanceFailure:
            raise
        except Exception as error:
            raise ImplementationError(
                requirement,
                f"the adapter could not build {config} ({type(error).__name__}: {error})",
            ) from error
        finally:
            STOPWATCH.built(config_key(config), spent[0])
        if not isinstance(implementation, Implementation):
            raise ImplementationError(
                requirement,
                f"{type(self.adapter).__name__}.build returned {type(implementation).__name__}, "
                "not a gpt2_conformance.Implementation",
            )
        return implementation, isolation

    def _copy(self, implementation: Implementation) -> Implementation:
        """A deep copy of a kept model (the adapter itself is shared, not copied)."""
        try:
            return STOPWATCH.call(
                "implementation",
                copy.deepcopy,
                implementation,
                {id(self.adapter): self.adapter},
            )
        except Exception as error:
            raise AdapterError(
                f"{type(self.adapter).__name__}.reuse is 'copy', but copy.deepcopy of its "
                f"model failed ({type(error).__name__}: {error}); set reuse = 'rebuild'"
            ) from error

    def _weights(self, implementation: Implementation, requirement: str) -> dict[str, bytes]:
        """The model's canonical weights, each as its shape, dtype and bytes (compared byte for
        byte: a NaN equals itself, and no array is converted or kept)."""
        got = STOPWATCH.call("implementation", implementation.get_params)
        return {name: _fingerprint(value) for name, value in got.items()}

    def _check_unchanged(self, original: _Original, config: GPT2Config, requirement: str) -> None:
        if original.weights is None:
            return
        now = self._weights(original.implementation, requirement)
        changed = sorted(name for name, value in original.weights.items() if now.get(name) != value)
        if changed:
            raise AdapterError(
                f"{type(self.adapter).__name__}.reuse is 'copy', but the model of {config} the "
                f"suite built and only copied has changed ({', '.join(changed[:3])}): its copies "
                "share state with it (a tensor or submodule copy.deepcopy does not copy), so one "
                "example's model leaks into the next; set reuse = 'rebuild'"
            )


def _fingerprint(value: Any) -> bytes:
    """A weight's shape, dtype and values as bytes (its own dtype: no float64 conversion)."""
    array = np.ascontiguousarray(native_numpy(value))
    return f"{array.shape} {array.dtype.str} ".encode() + array.tobytes()
