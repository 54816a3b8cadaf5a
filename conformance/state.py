"""The state of one conformance run (one per pytest process; under xdist one per worker, and
one on the controller): the options as read, the adapter, and what the run has learned.

No pytest here: the plugin builds a :class:`RunState` from its options and reports an
:class:`~gpt2_conformance.options.OptionError` as a usage error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import SUITE_VERSION
from .adapter import Adapter, Params
from .adapters import BUILTINS
from .loading import load_adapter, load_checkpoint, resolve_device
from .options import DEFAULT_PROFILE, DEFAULT_TIMEOUT_S, ENV_IMPL, OptionError, hypothesis_settings
from .recording import Recording
from .suite import SHAPES
from .timeouts import PhaseClock


@dataclasses.dataclass
class RunState:
    """The plugin's state for one pytest session."""

    impl: str | None = None
    adapter: Adapter | None = None
    deferred_error: Exception | None = None
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint: tuple[Any, Params] | None = None
    checkpoint_path: Path | None = None
    shape: str = "tiny"
    shard: tuple[int, int] | None = None
    profile: str = DEFAULT_PROFILE
    hypothesis_profile: str | None = None
    max_examples: int | None = None
    seed: Any = None
    seeds: range | None = None
    requirements_profile: Any = None  # a gpt2_spec.Profile; None: every requirement (gpt2)
    timeout_s: float = DEFAULT_TIMEOUT_S
    xfails_path: str | None = None
    xfails: list[str] = dataclasses.field(default_factory=list)
    unmatched_xfails: list[str] = dataclasses.field(default_factory=list)
    collected: bool = False
    recording: Recording = dataclasses.field(default_factory=Recording)
    clock: PhaseClock = dataclasses.field(default_factory=PhaseClock)
    report: dict[str, Any] | None = None
    #: The exit status ``--conformance-require`` decided (None without the option).
    required_status: int | None = None
    written: list[Path] = dataclasses.field(default_factory=list)

    def load_implementation(self, *, device: str, dtype: str, checkpoint: str | None) -> None:
        """Load the adapter named by ``impl`` and check the options that depend on it
        (``--device``, ``--dtype``, ``--checkpoint``, ``--conformance-shape``).

        Raises:
            LoadError: the adapter or checkpoint cannot be loaded, or the device is unusable.
            OptionError: an option does not fit the adapter.
        """
        assert self.impl is not None
        adapter = load_adapter(self.impl)
        self.device = resolve_device(device, adapter)
        self.dtype = dtype
        if dtype not in adapter.dtypes:
            raise OptionError(
                f"--dtype={dtype}: the adapter {adapter.name!r} supports "
                f"{', '.join(adapter.dtypes)} (its `dtypes`); choose one of those"
            )
        if checkpoint:
            self.checkpoint, self.checkpoint_path = load_checkpoint(checkpoint)
        shape = SHAPES[self.shape]
        if shape is not None and self.checkpoint is not None:
            raise OptionError(
                f"--conformance-shape={self.shape} and --checkpoint both set the configuration; "
                "the checkpoint's config is used with --checkpoint: drop --conformance-shape"
            )
        if shape is not None and adapter.supported_configs is not None:
            raise OptionError(
                f"--conformance-shape={self.shape}: the adapter {adapter.name!r} declares the "
                "configurations it supports (its `supported_configs`), which the suite uses; drop "
                "--conformance-shape"
            )
        self.adapter = adapter

    def settings(self) -> Any:
        """The hypothesis settings given to every conformance property of this run."""
        return hypothesis_settings(
            profile=self.profile,
            hypothesis_profile=self.hypothesis_profile,
            max_examples=self.max_examples,
            shape=self.shape,
            seed=self.seed,
            seeds=self.seeds,
        )

    def hypothesis_info(self) -> dict[str, Any]:
        chosen = self.settings()
        if self.seeds is not None:
            seed: Any = f"{self.seeds.start}:{self.seeds.stop}"
        elif chosen.derandomize:
            seed = "derandomized"
        elif self.seed is not None:
            seed = self.seed
        else:
            seed = "random"
        profile = (
            f"hypothesis:{self.hypothesis_profile}" if self.hypothesis_profile else self.profile
        )
        return {"profile": profile, "seed": seed, "max_examples": chosen.max_examples}

    def require_adapter(self) -> Adapter:
        """The adapter under test; raises the reason there is none."""
        if self.adapter is not None:
            return self.adapter
        if self.deferred_error is not None:
            raise self.deferred_error
        raise OptionError(
            f"choose the implementation to check: --impl=NAME or {ENV_IMPL}=NAME, where NAME is "
            f"a built-in ({', '.join(BUILTINS)}) or package.module[:attribute] naming your adapter"
        )

    def implementation_info(self) -> dict[str, Any]:
        if self.adapter is None:
            return {"name": self.impl or "unknown", "adapter": self.impl}
        return {
            **self.adapter.describe(),
            "adapter": self.impl,
            "device": self.device,
            "dtype": self.dtype,
            "checkpoint": str(self.checkpoint_path) if self.checkpoint_path else None,
            "shape": self.shape,
        }

    def header_lines(self, known_requirements: int) -> list[str]:
        """What pytest's header says about the run (the adapter must be loaded)."""
        from gpt2_spec import SPEC_VERSION

        a = self.require_adapter()
        hyp = self.hypothesis_info()
        caps = ", ".join(sorted(a.capabilities)) or "none (logits only)"
        timeout = f"{self.timeout_s:g} s per property" if self.timeout_s else "off"
        lines = [
            f"gpt2-conformance {SUITE_VERSION}, spec {SPEC_VERSION}",
            f"implementation: {a.name} {a.version} (--impl={self.impl}) on {self.device}, "
            f"{self.dtype}",
            f"claimed capabilities: {caps}",
            f"label convention: {a.label_convention}; tied head: {'yes' if a.tied_head else 'no'}",
            f"hypothesis profile: {hyp['profile']}, seed: {hyp['seed']}, "
            f"max_examples: {hyp['max_examples']}",
            f"conformance timeout: {timeout}",
        ]
        if self.checkpoint_path is not None:
            lines.append(f"checkpoint: {self.checkpoint_path}")
        if self.shape != "tiny":
            lines.append(f"shape: {self.shape} ({SHAPES[self.shape]})")
        if self.shard is not None:
            lines.append(f"shard: {self.shard[0]}/{self.shard[1]} of the properties")
        if self.xfails_path:
            lines.append(f"xfails file: {self.xfails_path} ({len(self.xfails)} entries)")
        if self.requirements_profile is not None:
            lines.append(
                f"requirements: the {self.requirements_profile.name} profile "
                f"({len(self.requirements_profile.requirements)} of {known_requirements}; "
                "the rest are reported not-in-profile)"
            )
        return lines
