"""The pytest plugin of the conformance suite (registered through the ``pytest11`` entry point).

It chooses the implementation under test (``--impl`` or ``$GPT2_CONFORMANCE_IMPL``) and the run's
device, dtype and checkpoint; provides the ``suite`` fixture; registers the ``requirement`` and
``capability`` markers and rejects ids the spec does not define; gives the suite's properties the
run's hypothesis profile and a per-property timeout; marks the tests named in an xfails file; and
at the end of the run tells, per requirement of the spec, what happened, with a verdict and
optional JSON and Markdown reports.

The plugin is installed with the package, so it is loaded by every pytest run in the environment.
It stays inert (no header, no profile, no summary) in runs that collect no conformance property,
such as the project's own tests. See docs/running-the-suite.md.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import SUITE_VERSION
from . import report as reports
from .adapter import CAPABILITIES, Adapter, Params
from .adapters import BUILTINS
from .checks import ConformanceFailure
from .suite import SHAPES, WIDE_MODEL_LENGTH, Suite
from .timing import STOPWATCH

ENV_IMPL = "GPT2_CONFORMANCE_IMPL"
NOT_CLAIMED = "not-claimed"

DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "float16")

#: The suite's hypothesis profiles (``--conformance-profile``). ``ci`` is derandomized, so two
#: runs of one suite version against one implementation try the same examples. Its example count
#: keeps a default run against the reference well under a minute on two CPU cores (measured with
#: 53 requirements: about 33 s of CPU at 5 examples, 53 s at 10).
PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"max_examples": 25, "derandomize": True, "database": None},
    "dev": {"max_examples": 5, "derandomize": False},
    "thorough": {"max_examples": 200, "derandomize": False},
}
DEFAULT_PROFILE = "ci"
DEFAULT_TIMEOUT_S = 300.0
#: Examples per property at a large ``--conformance-shape`` (each builds a GPT-2-sized model),
#: unless ``--max-examples`` is given.
LARGE_SHAPE_EXAMPLES = 2

#: The requirement ids a collected conformance test checks (set during collection).
REQUIREMENT_IDS = pytest.StashKey[tuple[str, ...]]()
_RUN = pytest.StashKey["_Run"]()
_PHASE_TIMES = pytest.StashKey[dict[str, float]]()
_USER_PROPERTY = "requirement"
_RECORDER = "gpt2-conformance-recorder"
_PHASES = "gpt2-conformance-phases"


class ConformanceWarning(pytest.PytestWarning):
    """Something about the run's configuration of the conformance suite looks wrong."""


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


# --------------------------------------------------------------------------------------------
# Options and configuration
# --------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpt2-conformance", "GPT-2 conformance suite")
    group.addoption(
        "--impl",
        default=None,
        metavar="NAME",
        help=f"implementation to check: a built-in ({', '.join(BUILTINS)}) or package.module"
        f"[:attribute] naming an Adapter instance, subclass or factory; default ${ENV_IMPL}",
    )
    group.addoption(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="device for the implementation; auto = cuda when available (default: cpu)",
    )
    group.addoption(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="dtype for the implementation; judged with the spec's tolerance for it "
        "(default: float32)",
    )
    group.addoption(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="a canonical GPT-2 checkpoint (directory, or .safetensors file beside config.json) "
        "whose weights the weight-dependent properties use instead of drawn ones",
    )
    group.addoption(
        "--conformance-profile",
        default=DEFAULT_PROFILE,
        choices=tuple(PROFILES),
        help="hypothesis profile of the suite's properties: ci (derandomized, "
        f"{PROFILES['ci']['max_examples']} examples), dev ({PROFILES['dev']['max_examples']}), "
        f"thorough ({PROFILES['thorough']['max_examples']}) (default: {DEFAULT_PROFILE})",
    )
    group.addoption(
        "--max-examples",
        type=int,
        default=None,
        metavar="N",
        help="examples per property, overriding the profile's count",
    )
    group.addoption(
        "--conformance-shape",
        default="tiny",
        choices=tuple(SHAPES),
        help="the configuration the properties use: tiny = small configurations drawn per "
        "example; gpt2-small (d=768, 12 layers, 12 heads, vocabulary 50257, 1024 positions) or "
        "gpt2-medium = that one shape, its weights drawn once per weight scale, rows of at most "
        f"{WIDE_MODEL_LENGTH} tokens, {LARGE_SHAPE_EXAMPLES} examples per property unless "
        "--max-examples says otherwise (default: tiny)",
    )
    group.addoption(
        "--conformance-shard",
        default=None,
        metavar="K/N",
        help="run only the K-th of N interleaved slices of the properties (K = 1..N), e.g. one "
        "per machine; merge their JSON reports with python -m gpt2_conformance.report merge",
    )
    group.addoption(
        "--conformance-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="stop a property after this many seconds and fail its requirement; 0 disables "
        f"(default: {DEFAULT_TIMEOUT_S:g})",
    )
    group.addoption(
        "--xfails-file",
        default=None,
        metavar="PATH",
        help="expected failures: one requirement id or test node id/name per line, # comments",
    )
    group.addoption(
        "--torch-threads",
        default="auto",
        metavar="N",
        help="torch CPU threads while the suite runs: auto = 1 for the small drawn models (they "
        "gain nothing from threads, and on a busy machine OpenMP's spinning makes them 10-100x "
        "slower), torch's default with --checkpoint (default: auto)",
    )
    group.addoption(
        "--conformance-report",
        default=None,
        metavar="PATH",
        help="write the per-requirement report as JSON",
    )
    group.addoption(
        "--conformance-markdown",
        default=None,
        metavar="PATH",
        help="write the per-requirement report as Markdown (e.g. $GITHUB_STEP_SUMMARY)",
    )
    group.addoption(
        "--conformance-requirements",
        default=FULL_REQUIREMENTS,
        metavar="PROFILE",
        help="which requirements to judge, a profile of the spec (spec/README.md, Profiles): "
        "gpt2 (every requirement) or causal-lm (those any decoder-only causal LM must meet; "
        f"the rest are reported not-in-profile) (default: {FULL_REQUIREMENTS})",
    )
    group.addoption(
        "--conformance-seeds",
        default=None,
        metavar="A:B",
        help="run every property once per hypothesis seed A, A+1, ..., B-1 in this one session "
        "(node ids get [seed=N]; seed N draws what --hypothesis-seed=N draws)",
    )


@dataclasses.dataclass
class _TestState:
    requirements: tuple[str, ...]
    outcome: str | None = None
    duration_s: float = 0.0
    implementation_s: float = 0.0
    oracle_s: float = 0.0
    message: str = ""
    details: str = ""


@dataclasses.dataclass
class _Run:
    """The plugin's state for one pytest session (one per process under xdist)."""

    impl: str | None = None
    adapter: Adapter | None = None
    deferred_error: pytest.UsageError | None = None
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
    tests: dict[str, _TestState] = dataclasses.field(default_factory=dict)
    collection_errors: list[dict[str, str]] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)
    report: dict[str, Any] | None = None
    written: list[Path] = dataclasses.field(default_factory=list)
    phase: str | None = None

    # ---- hypothesis -----------------------------------------------------------------------

    def settings(self) -> Any:
        """The hypothesis settings given to every conformance property of this run."""
        from hypothesis import settings

        parent = settings.get_profile(self.hypothesis_profile or _profile_name(self.profile))
        overrides: dict[str, Any] = {"deadline": None, "print_blob": True}
        if self.max_examples is not None:
            overrides["max_examples"] = self.max_examples
        elif self.shape != "tiny":
            overrides["max_examples"] = min(parent.max_examples, LARGE_SHAPE_EXAMPLES)
        if self.seed is not None or self.seeds is not None:
            overrides["derandomize"] = False  # a derandomized run would ignore the seed
        if self.seeds is not None:
            overrides["database"] = None  # seed N must draw the same examples on every machine
        return settings(parent=parent, **overrides)

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

    # ---- implementation -------------------------------------------------------------------

    def require_adapter(self) -> Adapter:
        if self.adapter is not None:
            return self.adapter
        if self.deferred_error is not None:
            raise self.deferred_error
        raise pytest.UsageError(
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


def _profile_name(profile: str) -> str:
    return f"gpt2-conformance-{profile}"


def _register_profiles() -> None:
    from hypothesis import HealthCheck, settings

    for name, values in PROFILES.items():
        settings.register_profile(
            _profile_name(name),
            deadline=None,
            print_blob=True,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow],
            **values,
        )


def _seed(value: Any) -> Any:
    """``--hypothesis-seed`` as hypothesis reads it: an int when it is one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _shard(text: str | None) -> tuple[int, int] | None:
    """``--conformance-shard=K/N`` as ``(K, N)``."""
    if text is None:
        return None
    k, slash, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = (0, 0)
    if not slash or not 1 <= shard[0] <= shard[1]:
        raise pytest.UsageError(
            f"--conformance-shard={text}: give K/N with 1 <= K <= N, e.g. 2/3 for the second of "
            "three slices"
        )
    return shard


def _run(config: pytest.Config) -> _Run:
    return config.stash[_RUN]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requirement(*ids): the spec requirement ids this property checks"
    )
    config.addinivalue_line(
        "markers", "capability(*names): adapter capabilities the property needs"
    )
    _register_profiles()
    run = _Run(
        profile=config.getoption("conformance_profile"),
        hypothesis_profile=config.getoption("hypothesis_profile", None),
        max_examples=config.getoption("max_examples"),
        seed=_seed(config.getoption("hypothesis_seed", None)),
        timeout_s=config.getoption("conformance_timeout"),
        xfails_path=config.getoption("xfails_file"),
        shape=config.getoption("conformance_shape"),
        shard=_shard(config.getoption("conformance_shard")),
    )
    config.stash[_RUN] = run
    config.pluginmanager.register(_PhaseTracker(run), _PHASES)
    if not _is_worker(config):
        config.pluginmanager.register(_Recorder(config), _RECORDER)
    if run.max_examples is not None and run.max_examples < 1:
        raise pytest.UsageError(f"--max-examples={run.max_examples}: give a positive count")
    if run.timeout_s < 0:
        raise pytest.UsageError(f"--conformance-timeout={run.timeout_s:g}: give 0 or more seconds")
    run.seeds = parse_seeds(config.getoption("conformance_seeds"))
    if run.seeds is not None and run.seed is not None:
        raise pytest.UsageError(
            "--conformance-seeds and --hypothesis-seed both choose the seed: give only one "
            "(--conformance-seeds=N:N+1 is one seed)"
        )
    run.requirements_profile = _requirements_profile(config.getoption("conformance_requirements"))
    if run.xfails_path:
        run.xfails = read_xfails(run.xfails_path)

    option = config.getoption("impl")
    run.impl = option or os.environ.get(ENV_IMPL) or None
    if run.impl is None:
        return
    try:
        _configure_implementation(config, run)
    except pytest.UsageError as error:
        if option:
            raise
        # Chosen only by the environment: do not break runs that collect no property (the
        # project's own tests); the error is raised if conformance properties are collected.
        run.deferred_error = pytest.UsageError(f"{ENV_IMPL}={run.impl}: {error}")
        run.adapter = None


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in (_RECORDER, _PHASES):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)


def _configure_implementation(config: pytest.Config, run: _Run) -> None:
    assert run.impl is not None
    adapter = load_adapter(run.impl)
    run.device = _resolve_device(config.getoption("device"), adapter)
    run.dtype = config.getoption("dtype")
    if run.dtype not in adapter.dtypes:
        raise pytest.UsageError(
            f"--dtype={run.dtype}: the adapter {adapter.name!r} supports "
            f"{', '.join(adapter.dtypes)} (its `dtypes`); choose one of those"
        )
    checkpoint = config.getoption("checkpoint")
    if checkpoint:
        run.checkpoint, run.checkpoint_path = load_checkpoint(checkpoint)
    shape = SHAPES[run.shape]
    if shape is not None and run.checkpoint is not None:
        raise pytest.UsageError(
            f"--conformance-shape={run.shape} and --checkpoint both set the configuration; the "
            "checkpoint's config is used with --checkpoint: drop --conformance-shape"
        )
    if shape is not None and adapter.supported_configs is not None:
        raise pytest.UsageError(
            f"--conformance-shape={run.shape}: the adapter {adapter.name!r} declares the "
            "configurations it supports (its `supported_configs`), which the suite uses; drop "
            "--conformance-shape"
        )
    run.adapter = adapter


def _resolve_device(requested: str, adapter: Adapter) -> str:
    supported = tuple(adapter.devices)
    if requested == "auto":
        return "cuda" if "cuda" in supported and _cuda_available() else "cpu"
    if requested == "cuda" and not _cuda_available():
        raise pytest.UsageError(
            "--device=cuda: CUDA is not available here (torch.cuda.is_available() is False); "
            "use --device=cpu, or --device=auto to take CUDA only when present"
        )
    if requested not in supported:
        raise pytest.UsageError(
            f"--device={requested}: the adapter {adapter.name!r} supports "
            f"{', '.join(supported)} (its `devices`); choose one of those"
        )
    return requested


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_adapter(name: str) -> Adapter:
    """Resolve ``--impl``: a built-in name, ``package.module`` or ``package.module:attribute``.

    The attribute may be an :class:`Adapter` instance, an Adapter subclass (instantiated with no
    arguments) or a zero-argument factory returning an Adapter. Without ``:attribute`` the module's
    ``adapter`` attribute is used, or else the one Adapter subclass the module defines.

    Raises:
        pytest.UsageError: with what was wrong and how to fix it.
    """
    target = BUILTINS.get(name, name)
    module_name, _, attribute = target.partition(":")
    where = f"--impl={name}"
    if not module_name:
        raise pytest.UsageError(f"{where}: give a module, as package.module[:attribute]")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise pytest.UsageError(
                f"{where}: cannot import module {module_name!r} ({error}). Install the package "
                "that provides it, or add its folder to PYTHONPATH; or name a built-in: "
                f"{', '.join(BUILTINS)}"
            ) from error
        raise pytest.UsageError(
            f"{where}: importing {module_name!r} failed because a module it needs is missing "
            f"({error}); install that dependency"
        ) from error
    except Exception as error:
        raise pytest.UsageError(
            f"{where}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    obj = _adapter_object(module, module_name, attribute, where)
    if isinstance(obj, type):
        if not issubclass(obj, Adapter):
            raise pytest.UsageError(
                f"{where}: {obj.__qualname__} is a class but not a subclass of "
                "gpt2_conformance.adapter.Adapter; derive your adapter from it"
            )
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            raise pytest.UsageError(
                f"{where}: the adapter {obj.__qualname__} is missing required method {missing}; "
                "implement it (see gpt2_conformance.adapter.Adapter)"
            )
    if not isinstance(obj, Adapter):
        if not callable(obj):
            raise pytest.UsageError(
                f"{where}: {module_name}.{attribute or 'adapter'} is of type "
                f"{type(obj).__name__}, not a gpt2_conformance.Adapter (nor a class or factory "
                "that makes one)"
            )
        try:
            obj = obj()
        except Exception as error:
            raise pytest.UsageError(
                f"{where}: creating the adapter with {module_name}.{getattr(obj, '__name__', '?')}"
                f"() raised {type(error).__name__}: {error}"
            ) from error
        if not isinstance(obj, Adapter):
            raise pytest.UsageError(
                f"{where}: the factory returned an object of type {type(obj).__name__}, not a "
                "gpt2_conformance.Adapter"
            )
    _check_adapter(obj, where)
    return obj


def _adapter_object(module: Any, module_name: str, attribute: str, where: str) -> Any:
    if attribute:
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise pytest.UsageError(
                f"{where}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if hasattr(module, "adapter"):
        return module.adapter
    defined = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Adapter)
        and value.__module__ == module.__name__
        and not inspect.isabstract(value)
    ]
    if len(defined) == 1:
        return defined[0]
    found = f" (it defines {', '.join(c.__name__ for c in defined)})" if defined else ""
    raise pytest.UsageError(
        f"{where}: module {module_name!r} has no attribute 'adapter'{found}; name the adapter "
        f"as {module_name}:ATTRIBUTE or set `adapter = YourAdapter()` in the module"
    )


def _check_adapter(adapter: Adapter, where: str) -> None:
    unknown = sorted(set(adapter.capabilities) - set(CAPABILITIES))
    if unknown:
        raise pytest.UsageError(
            f"{where}: the adapter claims unknown capabilities {', '.join(unknown)}; known: "
            f"{', '.join(CAPABILITIES)}"
        )
    if adapter.label_convention not in ("inputs", "shifted"):
        raise pytest.UsageError(
            f"{where}: label_convention is {adapter.label_convention!r}; it must be "
            "'inputs' or 'shifted'"
        )


def load_checkpoint(path_text: str) -> tuple[tuple[Any, Params], Path]:
    """Read ``--checkpoint``: a checkpoint directory, or a weights file beside its config.json.

    Returns ``((config, float64 params), path)``; a bad checkpoint is a usage error.
    """
    from gpt2_reference import checkpoint as ck

    path = Path(path_text).expanduser()
    try:
        config = None
        if path.is_file() and (path.parent / ck.CONFIG_FILE).is_file():
            config = ck.read_config(path.parent)
        config, state_dict = ck.load_checkpoint(path, config)
        params = ck.to_numpy_params(state_dict)
    except ck.CheckpointError as error:
        raise pytest.UsageError(f"--checkpoint={path_text}: {error}") from error
    return (config, params), path


def read_xfails(path: str) -> list[str]:
    """The entries of an xfails file: one per line; ``#`` starts a comment; blanks ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise pytest.UsageError(f"--xfails-file={path}: cannot read it ({error})") from error
    entries = []
    for line in text.splitlines():
        entry = line.split(" #", 1)[0].strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    return entries


FULL_REQUIREMENTS = "gpt2"


def _requirements_profile(name: str) -> Any:
    """``--conformance-requirements``: the spec's profile of that name (None for gpt2: every
    requirement), read from spec/README.md; an unknown name is a usage error."""
    if name == FULL_REQUIREMENTS:
        return None
    from gpt2_spec import load_profiles

    profiles = load_profiles()
    if name not in profiles:
        raise pytest.UsageError(
            f"--conformance-requirements={name}: the spec defines the profiles "
            f"{', '.join(profiles)} (spec/README.md, Profiles); choose one of those"
        )
    return profiles[name]


def _apply_requirements_profile(
    config: pytest.Config, items: list[pytest.Item], profile: Any
) -> None:
    """Deselect the properties that check no requirement of the run's requirements profile
    (the report shows those requirements as not-in-profile)."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        ids = _marker_args(item, "requirement")
        (drop if ids and not any(rid in profile.requirements for rid in ids) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _skip_tied_only(item: pytest.Item) -> None:
    """In a profile whose head.tied-* requirements apply to declared-tied heads only, a model
    that declares an untied head has them reported not-claimed."""
    profile = _run(item.config).requirements_profile
    ids = item.stash.get(REQUIREMENT_IDS, ())
    if profile is None or not ids or not all(rid in profile.tied_only for rid in ids):
        return
    if not _run(item.config).require_adapter().tied_head:
        pytest.skip(
            f"{NOT_CLAIMED}: the adapter declares an untied head (tied_head=False); in the "
            f"{profile.name} profile {', '.join(ids)} apply to a head declared tied"
        )


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = _run(config)
    if run.adapter is None:
        return None
    from gpt2_spec import SPEC_VERSION

    a = run.adapter
    hyp = run.hypothesis_info()
    caps = ", ".join(sorted(a.capabilities)) or "none (logits only)"
    lines = [
        f"gpt2-conformance {SUITE_VERSION}, spec {SPEC_VERSION}",
        f"implementation: {a.name} {a.version} (--impl={run.impl}) on {run.device}, {run.dtype}",
        f"claimed capabilities: {caps}",
        f"label convention: {a.label_convention}; tied head: {'yes' if a.tied_head else 'no'}",
        f"hypothesis profile: {hyp['profile']}, seed: {hyp['seed']}, "
        f"max_examples: {hyp['max_examples']}",
        "conformance timeout: " + (f"{run.timeout_s:g} s per property" if run.timeout_s else "off"),
    ]
    if run.checkpoint_path is not None:
        lines.append(f"checkpoint: {run.checkpoint_path}")
    if run.shape != "tiny":
        lines.append(f"shape: {run.shape} ({SHAPES[run.shape]})")
    if run.shard is not None:
        lines.append(f"shard: {run.shard[0]}/{run.shard[1]} of the properties")
    if run.xfails_path:
        lines.append(f"xfails file: {run.xfails_path} ({len(run.xfails)} entries)")
    if run.requirements_profile is not None:
        lines.append(
            f"requirements: the {run.requirements_profile.name} profile "
            f"({len(run.requirements_profile.requirements)} of {len(_known_requirements())}; "
            "the rest are reported not-in-profile)"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


@functools.cache
def _known_requirements() -> dict[str, Any]:
    from gpt2_spec import load_requirements

    return {r.id: r for r in load_requirements()}


def _marker_args(item: pytest.Item, name: str) -> tuple[str, ...]:
    values: list[str] = []
    for marker in item.iter_markers(name):
        values.extend(marker.args)
    return tuple(dict.fromkeys(values))


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Reject, as a collection error of the module, markers naming ids the spec lacks."""
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Item):
            _validate_markers(item)
    return result


def _validate_markers(item: pytest.Item) -> None:
    markers = list(item.iter_markers("requirement"))
    if not markers:
        return
    known = _known_requirements()
    for marker in markers:
        if not marker.args:
            raise pytest.Collector.CollectError(
                f"{item.nodeid}: @pytest.mark.requirement needs at least one requirement id"
            )
        for rid in marker.args:
            if rid not in known:
                raise pytest.Collector.CollectError(
                    f"{item.nodeid}: requirement marker names {rid!r}, which is not a "
                    f"requirement of the spec (see gpt2_spec.load_requirements())"
                )
    for cap in _marker_args(item, "capability"):
        if cap not in CAPABILITIES:
            raise pytest.Collector.CollectError(
                f"{item.nodeid}: capability marker names {cap!r}, which is not a capability; "
                f"known: {', '.join(CAPABILITIES)}"
            )


def parse_seeds(text: str | None) -> range | None:
    """``--conformance-seeds A:B`` as ``range(A, B)`` (None when not given)."""
    if text is None:
        return None
    first, colon, stop = text.partition(":")
    try:
        seeds = range(int(first), int(stop))
    except ValueError:
        seeds = range(0)
        colon = ""
    if not colon or not seeds or seeds.start < 0:
        raise pytest.UsageError(
            f"--conformance-seeds={text}: give A:B with whole numbers 0 <= A < B (seeds A to B-1)"
        )
    return seeds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With ``--conformance-seeds``, repeat each property once per seed (seed-major order)."""
    run = metafunc.config.stash.get(_RUN, None)
    if run is None or run.seeds is None:
        return
    if metafunc.definition.get_closest_marker("requirement") is None:
        return
    metafunc.fixturenames.append(SEED_FIXTURE)
    metafunc.parametrize(
        SEED_FIXTURE, list(run.seeds), indirect=True, ids=lambda s: f"seed={s}", scope="session"
    )


SEED_FIXTURE = "gpt2_conformance_seed"


@pytest.fixture(scope="session")
def gpt2_conformance_seed(request: pytest.FixtureRequest) -> int:
    """The hypothesis seed of a property repeated by ``--conformance-seeds``."""
    return int(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    shard = _run(config).shard
    if shard is not None:
        _apply_shard(config, items, shard)
    requirements_profile = _run(config).requirements_profile
    if requirements_profile is not None:
        _apply_requirements_profile(config, items, requirements_profile)
    properties = [i for i in items if i.get_closest_marker("requirement") is not None]
    if not properties:
        return
    run = _run(config)
    run.collected = True
    run.require_adapter()
    chosen = run.settings()
    with_timeout = run.timeout_s > 0 and config.pluginmanager.hasplugin("timeout")
    for item in properties:
        ids = _marker_args(item, "requirement")
        item.stash[REQUIREMENT_IDS] = ids
        for rid in ids:
            item.user_properties.append((_USER_PROPERTY, rid))
        if with_timeout and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(run.timeout_s))
    deviating = _apply_declared_deviations(run.require_adapter(), properties)
    # A declared deviation is expected to fail: its first counterexample is enough, so it is
    # not shrunk or explained. Settings belong to the test function, shared by its
    # parametrizations: only a function all of whose items deviate is left unshrunk.
    shrunk = {_function_of(i) for i in properties if i.nodeid not in deviating}
    expected_to_fail = _without_shrinking(chosen)
    for item in properties:
        _apply_settings(item, chosen if _function_of(item) in shrunk else expected_to_fail)
    if run.xfails:
        _apply_xfails(run, properties)
    if _is_worker(config):
        config.workeroutput["gpt2_conformance"] = {  # type: ignore[attr-defined]
            "unmatched_xfails": run.unmatched_xfails
        }


def _apply_shard(config: pytest.Config, items: list[pytest.Item], shard: tuple[int, int]) -> None:
    """``--conformance-shard=K/N``: keep every N-th test (by sorted node id) from the K-th on."""
    k, n = shard
    order = {nodeid: i for i, nodeid in enumerate(sorted(item.nodeid for item in items))}
    kept = [item for item in items if order[item.nodeid] % n == k - 1]
    dropped = [item for item in items if order[item.nodeid] % n != k - 1]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _function_of(item: pytest.Item) -> Any:
    return getattr(item, "function", None)


def _apply_settings(item: pytest.Item, chosen: Any) -> None:
    """Give a property the run's settings, unless it carries its own @settings."""
    function = _function_of(item)
    if function is None or not getattr(function, "is_hypothesis_test", False):
        return
    if getattr(function, "_hypothesis_internal_settings_applied", False):
        return  # ours already (a parametrized property), or the property's own
    # H2: suppress function_scoped_fixture (H1 does this in the split)
    from hypothesis import HealthCheck, settings

    suppressed = [*chosen.suppress_health_check, HealthCheck.function_scoped_fixture]
    settings(chosen, suppress_health_check=suppressed)(function)


def _without_shrinking(chosen: Any) -> Any:
    from hypothesis import Phase, settings

    phases = [p for p in chosen.phases if p not in (Phase.shrink, Phase.explain)]
    return settings(chosen, phases=phases)


def _apply_declared_deviations(adapter: Adapter, items: Sequence[pytest.Item]) -> set[str]:
    """A requirement the adapter declares it deviates from is expected to fail (reported xfail,
    with the declaration as the reason); a declared MUST deviation still means no conformance.
    Returns the node ids so marked."""
    declared = dict(getattr(adapter, "declared_deviations", {}) or {})
    unknown = sorted(set(declared) - set(_known_requirements()))
    if unknown:
        raise pytest.UsageError(
            f"adapter {adapter.name!r} declares deviations from unknown requirements {unknown}"
        )
    marked: set[str] = set()
    for item in items:
        reasons = [
            f"{rid}: {declared[rid]}" for rid in item.stash[REQUIREMENT_IDS] if rid in declared
        ]
        if reasons:
            reason = "declared deviation: " + "; ".join(reasons)
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
            marked.add(item.nodeid)
    return marked


def _xfail_matches(entry: str, item: pytest.Item) -> bool:
    nodeid = item.nodeid
    return (
        entry in item.stash[REQUIREMENT_IDS]
        or entry == nodeid
        or entry == item.name
        or entry == getattr(item, "originalname", None)
        or nodeid.endswith("/" + entry)
        or nodeid.endswith("::" + entry)
    )


def _apply_xfails(run: _Run, items: Sequence[pytest.Item]) -> None:
    used: set[str] = set()
    for item in items:
        hits = [e for e in run.xfails if _xfail_matches(e, item)]
        if hits:
            used.update(hits)
            item.add_marker(pytest.mark.xfail(reason=f"listed in {run.xfails_path}", strict=False))
    run.unmatched_xfails = [e for e in run.xfails if e not in used]
    for entry in run.unmatched_xfails:
        warnings.warn(
            ConformanceWarning(
                f"{run.xfails_path}: entry {entry!r} matches no collected conformance test"
            ),
            stacklevel=1,
        )


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> Suite:
    """The run's :class:`~gpt2_conformance.suite.Suite`: the adapter and the run's options."""
    run = _run(pytestconfig)
    adapter = run.require_adapter()
    _set_torch_threads(pytestconfig.getoption("torch_threads"), run)
    return Suite(
        adapter,
        device=run.device,
        dtype=run.dtype,
        checkpoint=run.checkpoint,
        checkpoint_path=run.checkpoint_path,
        shape=SHAPES[run.shape],
    )


def _set_torch_threads(option: str, run: _Run) -> None:
    if option == "auto":
        if run.checkpoint is not None or run.shape != "tiny" or run.device != "cpu":
            return
        threads = 1
    else:
        try:
            threads = int(option)
        except ValueError:
            raise pytest.UsageError(
                f"--torch-threads must be auto or a number, got {option!r}"
            ) from None
    torch = sys.modules.get("torch")  # only when the implementation uses torch (imported it)
    if torch is not None:
        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Seed the property's hypothesis run (``--conformance-seeds``); skip a property whose
    capability is not claimed, reporting it ``not-claimed``."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and SEED_FIXTURE in callspec.params:
        from hypothesis import seed

        seed(callspec.params[SEED_FIXTURE])(item.obj)  # type: ignore[attr-defined]
    _skip_tied_only(item)
    marker = item.get_closest_marker("capability")
    if marker is None:
        return
    adapter = _run(item.config).require_adapter()
    missing = [c for c in marker.args if c not in adapter.capabilities]
    if missing:
        pytest.skip(f"{NOT_CLAIMED}: the adapter does not claim {', '.join(missing)}")


class _PhaseTracker:
    """Notes when a conformance test is inside a runtest phase (setup, call, teardown).

    The timeout may interrupt only then: pytest turns an exception raised inside a phase into
    that phase's report, while between phases it would end the whole session.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run

    def _track(self, item: pytest.Item, when: str) -> Iterator[None]:
        if REQUIREMENT_IDS not in item.stash:
            return (yield)
        self.run.phase = when
        STOPWATCH.take()  # what ran between tests is not this phase's
        try:
            return (yield)
        finally:
            self.run.phase = None
            item.stash[_PHASE_TIMES] = STOPWATCH.take()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._track(item, "setup"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._track(item, "call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._track(item, "teardown"))


# ---- timeouts: pytest-timeout's marker, with a timer that hypothesis does not intercept ------


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Time a conformance property with SIGALRM raising :class:`ConformanceTimeout`.

    pytest-timeout's own signal handler calls ``pytest.fail``, which hypothesis catches and
    replays while shrinking: a hanging implementation would hang again, untimed. Other tests,
    and platforms or threads without SIGALRM, keep pytest-timeout's behaviour.
    """
    ids = item.stash.get(REQUIREMENT_IDS, None)
    if (
        ids is None
        or settings.method != "signal"
        or not hasattr(signal, "SIGALRM")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    run = _run(item.config)
    seconds = float(settings.timeout)

    def handler(signum: int, frame: Any) -> None:
        if run.phase is None:  # between phases: try again shortly
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise ConformanceTimeout(ids, seconds)

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, handler)
    outer = signal.setitimer(signal.ITIMER_REAL, seconds)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer[0] > 0:  # an enclosing timer (pytest run inside pytest) keeps running
            left = outer[0] - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.01), outer[1])

    item.stash[_CANCEL] = cancel
    return True


_CANCEL = pytest.StashKey[Callable[[], None]]()


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    cancel = item.stash.get(_CANCEL, None)
    if cancel is None:
        return None
    del item.stash[_CANCEL]
    cancel()
    return True


# ---- reports -------------------------------------------------------------------------------


def _find_failure(error: BaseException) -> BaseException | None:
    """The ConformanceFailure (or timeout) in ``error``, looking inside exception groups."""
    if isinstance(error, (ConformanceFailure, ConformanceTimeout)):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = _find_failure(inner)
        if found is not None:
            return found
    return None


def _hypothesis_notes(error: BaseException) -> str:
    notes = [str(n) for n in getattr(error, "__notes__", ())]
    return "\n".join(n for n in notes if n.strip())


def _prepend(longrepr: Any, text: str) -> None:
    """Put ``text`` first in pytest's failure output, before the traceback (survives xdist)."""
    from _pytest._code.code import ReprEntryNative

    chain = getattr(longrepr, "chain", None)
    if not chain:
        return
    entries = getattr(chain[0][0], "reprentries", None)
    if isinstance(entries, list):
        entries.insert(0, ReprEntryNative([text.rstrip("\n") + "\n"]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    ids = item.stash.get(REQUIREMENT_IDS, None)
    if ids is not None:
        # This phase's seconds inside the implementation and the oracle (plain floats: they
        # travel with the report from an xdist worker to the controller).
        report.conformance_timing = item.stash.get(_PHASE_TIMES, {})
        item.stash[_PHASE_TIMES] = {}
    if ids is None or call.excinfo is None or call.excinfo.errisinstance(pytest.skip.Exception):
        return report
    error = call.excinfo.value
    failure = _find_failure(error)
    if failure is not None:
        message = str(failure)
        _prepend(report.longrepr, message)
    else:
        message = f"{type(error).__name__}: {error}"
    report.conformance_message = message[:4000]
    report.conformance_details = _hypothesis_notes(error)[:4000]
    return report


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr or "")
    return reason.removeprefix("Skipped: ")


def _failure_message(report: pytest.TestReport) -> str:
    message = getattr(report, "conformance_message", None)
    if message:
        return str(message)
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = report.longreprtext.strip()
    return text.splitlines()[-1] if text else f"{report.when} failed"


class _Recorder:
    """Per-session plugin object gathering test outcomes (on the xdist controller when
    distributed: it receives the workers' reports)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run = _run(config)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.run.started = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        ids = tuple(dict.fromkeys(str(v) for k, v in report.user_properties if k == _USER_PROPERTY))
        if ids:
            _record(self.run, report, ids)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            text = report.longreprtext.strip()
            self.run.collection_errors.append(
                {"nodeid": report.nodeid, "message": text.splitlines()[-1] if text else "error"}
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Gather what an xdist worker learned while collecting."""
        output = getattr(node, "workeroutput", {}).get("gpt2_conformance")
        if not output:
            return
        self.run.collected = True
        for entry in output.get("unmatched_xfails", []):
            if entry not in self.run.unmatched_xfails:
                self.run.unmatched_xfails.append(entry)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = self.config
        if config.option.collectonly or not (self.run.tests or self.run.collected):
            return
        run = self.run
        run.report = build_run_report(config, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        json_path = config.getoption("conformance_report")
        if json_path:
            run.written.append(reports.write_json(run.report, json_path))
        markdown_path = config.getoption("conformance_markdown")
        if markdown_path:
            run.written.append(reports.write_markdown(run.report, markdown_path))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        run = self.run
        if run.report is None:
            return
        tr = terminalreporter
        tr.write_sep("=", "gpt2-conformance: requirements")
        lines = reports.summary_lines(run.report, verbose=self.config.option.verbose >= 0)
        for line in lines[:-1]:
            tr.write_line(line)
        for entry in run.unmatched_xfails:
            tr.write_line(
                f"warning: {run.xfails_path}: entry {entry!r} matches no collected conformance "
                "test",
                yellow=True,
            )
        timing = reports.timing_line(run.report)
        if timing:
            tr.write_line(timing)
        for path in run.written:
            tr.write_line(f"conformance report written to {path}")
        colour = {True: "green", False: "red", None: "yellow"}[run.report["conforms"]]
        tr.write_line(lines[-1], **{colour: True, "bold": True})


def _record(run: _Run, report: pytest.TestReport, ids: tuple[str, ...]) -> None:
    """Fold one phase's report into the test's outcome."""
    test = run.tests.setdefault(report.nodeid, _TestState(ids))
    test.duration_s += report.duration
    timing = getattr(report, "conformance_timing", None) or {}
    test.implementation_s += float(timing.get("implementation", 0.0))
    test.oracle_s += float(timing.get("oracle", 0.0))
    xfailed = hasattr(report, "wasxfail")
    if report.failed:
        if report.when == "call":
            test.outcome = "failed"
        elif test.outcome not in ("failed", "error"):
            test.outcome = "error"
        else:
            return  # a teardown error after a failure: keep the failure's message
        test.message = _failure_message(report)
        test.details = str(getattr(report, "conformance_details", "") or "")
    elif report.skipped:
        if xfailed:
            test.outcome = "xfailed"
            failure = str(getattr(report, "conformance_message", "") or "")
            test.message = f"{report.wasxfail}: {failure}" if failure else str(report.wasxfail)
            test.details = str(getattr(report, "conformance_details", "") or "")
        else:
            reason = _skip_reason(report)
            test.outcome = NOT_CLAIMED if reason.startswith(NOT_CLAIMED) else "skipped"
            test.message = reason
    elif report.when == "call":
        test.outcome = "xpassed" if xfailed else "passed"


def build_run_report(config: pytest.Config, *, interrupted: bool = False) -> dict[str, Any]:
    """The report of this session (see :mod:`gpt2_conformance.report`)."""
    from gpt2_spec import SPEC_VERSION, load_requirements

    run = _run(config)
    records = [
        reports.TestRecord(
            nodeid=nodeid,
            requirements=t.requirements,
            outcome=t.outcome,
            duration_s=t.duration_s,
            implementation_s=t.implementation_s,
            oracle_s=t.oracle_s,
            message=t.message,
            details=t.details,
        )
        for nodeid, t in run.tests.items()
        if t.outcome is not None
    ]
    return reports.build_report(
        requirements=load_requirements(),
        tests=records,
        implementation=run.implementation_info(),
        hypothesis=run.hypothesis_info(),
        suite_version=SUITE_VERSION,
        spec_version=SPEC_VERSION,
        duration_s=time.monotonic() - run.started,
        collection_errors=run.collection_errors,
        interrupted=interrupted,
        shard=f"{run.shard[0]}/{run.shard[1]}" if run.shard else None,
        profile=run.requirements_profile,
    )


# H2: the properties' `requirement` fixture (gpt2_conformance.properties) is registered with the
# plugin by being a name of this module; H1's split should keep this import in the plugin module.
from gpt2_conformance.properties import requirement  # noqa: E402, F401
