"""The state of one conformance run (one per pytest process; under xdist one per worker, and
one on the controller): the options as read, the adapter, and what the run has learned.

No pytest here: the plugin builds a :class:`RunState` from pytest's options
(:meth:`RunState.from_options`) and reports an :class:`~gpt2_conformance.options.OptionError` or a
:class:`~gpt2_conformance.loading.LoadError` as a usage error. The run's ends are here too: the
:class:`~gpt2_conformance.suite.Suite` it hands the properties, its report and its summary.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import SUITE_VERSION, options
from . import report as reports
from .adapter import Adapter, Params
from .adapters import BUILTINS
from .loading import (
    LoadError,
    load_adapter,
    load_checkpoint,
    missing_xfails,
    read_xfails,
    resolve_device,
)
from .options import DEFAULT_PROFILE, DEFAULT_TIMEOUT_S, ENV_IMPL, OptionError, hypothesis_settings
from .recording import Recording, run_report
from .suite import SHAPES, Suite
from .timeouts import PhaseClock

#: Reads one of pytest's options by its name (``config.getoption``: name, default).
GetOption = Callable[..., Any]
#: What ``--conformance-require``'s exit status means.
_REQUIRED = {0: "met", 1: "not met: it does not conform", 6: "not established"}


def _no_options(name: str, default: Any = None) -> Any:
    return default


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
    #: ``--conformance-replay``: the hypothesis version and blob of the example to replay.
    replay: tuple[str, bytes] | None = None
    #: Whether a placeholder report was written (it is replaced when the run ends).
    placeholder: bool = False
    option: GetOption = _no_options

    @classmethod
    def from_options(cls, option: GetOption) -> RunState:
        """The run's state as pytest's options give it (``option``: ``config.getoption``); the
        options that can be wrong are read by :meth:`check_options`."""
        return cls(
            impl=option("impl") or os.environ.get(ENV_IMPL) or None,
            profile=option("conformance_profile"),
            hypothesis_profile=option("hypothesis_profile", None),
            max_examples=option("max_examples"),
            seed=options.parse_seed(option("hypothesis_seed", None)),
            timeout_s=option("conformance_timeout"),
            xfails_path=option("xfails_file"),
            shape=option("conformance_shape"),
            option=option,
        )

    def check_options(self, warn: Callable[[str], None] | None) -> None:
        """Read and check the options whose values can be wrong; ``warn`` (None: say nothing)
        is told what looks wrong without being an error.

        Raises:
            OptionError: an option's value cannot be used.
            LoadError: the xfails file cannot be read.
        """
        option = self.option
        self.shard = options.parse_shard(option("conformance_shard"))
        if self.max_examples is not None and self.max_examples < 1:
            raise OptionError(f"--max-examples={self.max_examples}: give a positive count")
        if self.timeout_s < 0:
            raise OptionError(f"--conformance-timeout={self.timeout_s:g}: give 0 or more seconds")
        self.seeds = options.parse_seeds(option("conformance_seeds"))
        if self.seeds is not None and self.seed is not None:
            raise OptionError(
                "--conformance-seeds and --hypothesis-seed both choose the seed: give only one "
                "(--conformance-seeds=N:N+1 is one seed)"
            )
        self.requirements_profile = options.requirements_profile(option("conformance_requirements"))
        require = option("conformance_require")
        if require is not None:
            try:
                reports.parse_require(require)
            except ValueError as error:
                raise OptionError(str(error)) from None
        if self.xfails_path:
            self.xfails = read_xfails(self.xfails_path)
            missing = missing_xfails(self.xfails_path)
            if missing is not None and warn is not None:
                warn(missing)
        self.replay = options.parse_replay(option("conformance_replay"))

    def load_chosen(self) -> None:
        """Load the implementation the run names, if it names one. Named by ``--impl``, an
        error is raised; named only by the environment, it is kept for :meth:`require_adapter`,
        so that runs collecting no property (the project's own tests) are not broken.

        Raises:
            LoadError, OptionError: as :meth:`load_implementation` (``--impl`` given).
        """
        if self.impl is None:
            return
        try:
            self.load_implementation(
                device=self.option("device"),
                dtype=self.option("dtype"),
                checkpoint=self.option("checkpoint"),
            )
        except (OptionError, LoadError) as error:
            if self.option("impl"):
                raise
            self.deferred_error = OptionError(f"{ENV_IMPL}={self.impl}: {error}")
            self.adapter = None

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

    def suite(self) -> Suite:
        """The :class:`~gpt2_conformance.suite.Suite` the properties are given (``--torch-threads``
        applied when the implementation uses torch)."""
        adapter = self.require_adapter()
        threads = options.torch_threads(
            self.option("torch_threads"),
            checkpoint=self.checkpoint is not None,
            shape=self.shape,
            device=self.device,
        )
        torch = sys.modules.get("torch")  # only when the implementation uses torch (imported it)
        if threads is not None and torch is not None:
            torch.set_num_threads(threads)
        return Suite(
            adapter,
            device=self.device,
            dtype=self.dtype,
            checkpoint=self.checkpoint,
            checkpoint_path=self.checkpoint_path,
            shape=SHAPES[self.shape],
            pool=options.profile_pool(self.profile),
        )

    def replay_command(self, module: str, function: str, details: str) -> str | None:
        """The command that replays the example hypothesis printed in ``details`` (None: it
        printed none) of property ``function`` in the suite's module ``module`` (its last name)."""
        # Hypothesis prints no blob while replaying: the replayed one is meant then.
        blob = options.printed_blob(details) or (self.replay[1] if self.replay else None)
        if blob is None:
            return None
        package = __name__.rpartition(".")[0]  # the properties run from the installed package
        nodeid = options.installed_nodeid(f"{package}.{module}", function)
        changed = {
            "device": self.device if self.device != "cpu" else None,
            "dtype": self.dtype if self.dtype != "float32" else None,
            "checkpoint": self.option("checkpoint"),
            "conformance-shape": self.shape if self.shape != "tiny" else None,
            # the profile decides which configurations are drawn (the ci pool, or any)
            "conformance-profile": self.profile
            if options.profile_pool(self.profile) != options.profile_pool(options.DEFAULT_PROFILE)
            else None,
            "conformance-requirements": self.option("conformance_requirements")
            if self.requirements_profile is not None
            else None,
        }
        return options.replay_command(
            nodeid, blob, impl=self.impl, options={k: str(v) for k, v in changed.items() if v}
        )

    def _report_paths(self) -> tuple[str | None, str | None]:
        return self.option("conformance_report"), self.option("conformance_markdown")

    def write_placeholder(self, reason: str) -> None:
        """Write, where the run's reports go, a report saying the run is not complete (why:
        ``reason``); a run that stops early then leaves no earlier run's verdict behind.

        Raises:
            OSError: a report path cannot be written.
        """
        from gpt2_spec import SPEC_VERSION

        json_path, markdown_path = self._report_paths()
        placeholder = reports.incomplete_report(
            reason,
            implementation=self.implementation_info(),
            suite_version=SUITE_VERSION,
            spec_version=SPEC_VERSION,
        )
        reports.write_incomplete(placeholder, json_path=json_path, markdown_path=markdown_path)
        self.placeholder = bool(json_path or markdown_path)

    def finish(self, *, interrupted: bool, pytest_status: int) -> int | None:
        """Build the run's report and write its files; returns the exit status
        ``--conformance-require`` decides (None without the option)."""
        self.report = run_report(
            self.recording,
            implementation=self.implementation_info(),
            hypothesis=self.hypothesis_info(),
            shard=self.shard,
            requirements_profile=self.requirements_profile,
            interrupted=interrupted,
        )
        require = self.option("conformance_require")
        if require is not None:
            self.required_status = reports.exit_status(
                self.report, require=require, pytest_status=pytest_status
            )
        json_path, markdown_path = self._report_paths()
        if json_path:
            self.written.append(reports.write_json(self.report, json_path))
        if markdown_path:
            self.written.append(reports.write_markdown(self.report, markdown_path))
        return self.required_status

    def summary(self, *, verbose: bool) -> list[tuple[str, dict[str, bool]]]:
        """The run's terminal summary (after :meth:`finish`): lines with their markup."""
        assert self.report is not None
        lines = reports.summary_lines(self.report, verbose=verbose)
        out: list[tuple[str, dict[str, bool]]] = [(line, {}) for line in lines[:-1]]
        out += [
            (
                f"warning: {self.xfails_path}: entry {entry!r} matches no collected conformance "
                "test",
                {"yellow": True},
            )
            for entry in self.unmatched_xfails
        ]
        timing = reports.timing_line(self.report)
        if timing:
            out.append((timing, {}))
        out += [(f"conformance report written to {path}", {}) for path in self.written]
        colour = {True: "green", False: "red", None: "yellow"}[self.report["conforms"]]
        out.append((lines[-1], {colour: True, "bold": True}))
        if self.required_status is not None:
            status = self.required_status
            out.append(
                (
                    f"--conformance-require={self.option('conformance_require')}: "
                    f"{_REQUIRED.get(status, 'not met')} (exit status {status})",
                    {},
                )
            )
        return out

    def worker_output(self) -> dict[str, Any]:
        """What an xdist worker learned while collecting, for the controller
        (:meth:`add_worker_output`)."""
        return {
            "unmatched_xfails": self.unmatched_xfails,
            "selected": [[nodeid, list(ids)] for nodeid, ids in self.recording.selected.items()],
        }

    def add_worker_output(self, output: dict[str, Any]) -> None:
        self.collected = True
        for entry in output.get("unmatched_xfails", []):
            if entry not in self.unmatched_xfails:
                self.unmatched_xfails.append(entry)
        for nodeid, ids in output.get("selected", []):
            self.recording.select(nodeid, ids)
