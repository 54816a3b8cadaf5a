"""The run's context, handed to every property as the ``suite`` fixture.

It holds the adapter under test and the run's options (device, dtype, checkpoint), builds
implementations with canonical weights from the oracle, and gives the spec's tolerances for the
run's dtype. Properties use only this object and :mod:`gpt2_conformance.checks`; they never reach
into an adapter's internals.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gpt2_reference import oracle
from gpt2_spec import GPT2Config, spec_definitions

from .adapter import Adapter, Implementation, Params
from .checks import ImplementationError

S = spec_definitions()


@dataclasses.dataclass
class Suite:
    """What a property needs to know about the run.

    Attributes:
        adapter: the implementation's adapter.
        device: "cpu" or "cuda" (never "auto": the plugin resolves it).
        dtype: "float32", "bfloat16" or "float16".
        checkpoint: a canonical checkpoint (config and float64 weights) used by weight-dependent
            properties instead of drawn weights, or None.
    """

    adapter: Adapter
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint: tuple[GPT2Config, Params] | None = None
    checkpoint_path: Path | None = None

    def claims(self, capability: str) -> bool:
        return capability in self.adapter.capabilities

    def tolerance(self, kind: str = "oracle") -> Any:
        """The spec's tolerance (chapter 7) for ``kind`` ("oracle" or "self") at the run's dtype."""
        return S.TOLERANCES[(kind, self.dtype)]

    @property
    def weight_scales(self) -> tuple[float | None, ...]:
        """Weight scales inside the spec's measured domain for this dtype."""
        return tuple(S.DOMAIN["weight_scales"][self.dtype])

    @property
    def gradient_weight_scales(self) -> tuple[float | None, ...]:
        """Weight scales on which the spec promises gradient comparisons for this dtype."""
        return tuple(S.DOMAIN["gradient_weight_scales"][self.dtype])

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
        """
        if self.claims("params"):
            if params is None:
                params = oracle.random_params(config, seed=seed, scale=scale)
        else:
            params = None
        try:
            implementation = self.adapter.build(
                config, params=params, seed=seed, device=self.device, dtype=self.dtype
            )
        except Exception as error:
            raise ImplementationError(
                requirement,
                f"the adapter could not build {config} ({type(error).__name__}: {error})",
            ) from error
        if not isinstance(implementation, Implementation):
            raise ImplementationError(
                requirement,
                f"{type(self.adapter).__name__}.build returned {type(implementation).__name__}, "
                "not a gpt2_conformance.Implementation",
            )
        return implementation, params
