"""The suite's command-line options, its hypothesis profiles, and the parsing of option values.

Nothing here needs pytest at import time: :func:`add_options` receives pytest's parser, and a bad
value raises :class:`OptionError`, which the plugin reports as a usage error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .adapters import BUILTINS
from .suite import CI_POOL, SHAPES, WIDE_MODEL_LENGTH

if TYPE_CHECKING:
    import pytest

ENV_IMPL = "GPT2_CONFORMANCE_IMPL"

DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "float16")

#: Hypothesis phases (by name) of the ``ci`` profile: every phase but ``explain``.
CI_PHASES = ("explicit", "reuse", "generate", "target", "shrink")
#: The suite's hypothesis profiles (``--conformance-profile``). ``ci`` is derandomized, so two
#: runs of one suite version against one implementation try the same examples. Its example count
#: keeps a default run against the reference well under a minute on two CPU cores (measured with
#: 53 requirements: about 33 s of CPU at 5 examples, 53 s at 10). ``ci`` runs without
#: hypothesis' explain phase (:data:`CI_PHASES`): on a failing run it replayed the shrunk example
#: with every part varied, which took most of the time (the zoo's CausalLeak: 131 of 207 s) and
#: added notes, not a smaller counterexample; ``dev`` and ``thorough`` keep it.
PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"max_examples": 25, "derandomize": True, "database": None, "phases": CI_PHASES},
    "dev": {"max_examples": 5, "derandomize": False},
    "thorough": {"max_examples": 200, "derandomize": False},
}
DEFAULT_PROFILE = "ci"
#: The configurations each profile draws: ``ci`` those of a fixed pool
#: (:data:`~gpt2_conformance.suite.CI_POOL`: models and compiles are shared between examples),
#: the others any small configuration (None).
PROFILE_POOLS: dict[str, tuple[Any, ...] | None] = {"ci": CI_POOL, "dev": None, "thorough": None}


def profile_pool(profile: str) -> tuple[Any, ...] | None:
    """The configurations the properties of a run with ``--conformance-profile=profile`` draw
    (None: any small one)."""
    return PROFILE_POOLS.get(profile)


def campaign_settings(max_examples: int, *, derandomize: bool) -> dict[str, Any]:
    """Hypothesis settings for running the suite against many implementations in one go (the
    mutant zoo, the kill matrix): explicit and generated examples only (no shrinking), no
    example database, deadline or health checks, one failure per property, no blob."""
    from hypothesis import HealthCheck, Phase

    return {
        "max_examples": max_examples,
        "derandomize": derandomize,
        "database": None,
        "deadline": None,
        "print_blob": False,
        "report_multiple_bugs": False,
        "phases": (Phase.explicit, Phase.generate),
        "suppress_health_check": list(HealthCheck),
    }


DEFAULT_TIMEOUT_S = 300.0
#: Examples per property at a large ``--conformance-shape`` (each builds a GPT-2-sized model),
#: unless ``--max-examples`` is given.
LARGE_SHAPE_EXAMPLES = 2
#: ``--conformance-requirements`` of a run that judges every requirement of the spec.
FULL_REQUIREMENTS = "gpt2"


class OptionError(ValueError):
    """An option of the conformance suite has a value it cannot use (a usage error)."""


def add_options(parser: pytest.Parser) -> None:
    """Register the suite's options in pytest's ``gpt2-conformance`` group."""
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
        "--conformance-require",
        default=None,
        metavar="WHAT",
        help="decide the exit status by the verdict: 'full' (every conformance class claimed "
        "and conforming), 'claimed' (what was claimed conforms) or class names separated by "
        "commas (e.g. 'function'); 0 as required, 1 does not conform, 6 not established "
        "(default: pytest's own exit status)",
    )
    group.addoption(
        "--conformance-report",
        default=None,
        metavar="PATH",
        help="write the per-requirement report as JSON (replaced by an incomplete report when "
        "the run starts, by the final one when it ends)",
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
    group.addoption(
        "--conformance-replay",
        default=None,
        metavar="BLOB",
        help="run the one selected property on exactly the example of a failure: the blob of "
        "the @reproduce_failure('VERSION', b'BLOB') line hypothesis printed (or that whole "
        "line); a failure prints the complete command",
    )


# ---- hypothesis ------------------------------------------------------------------------------


def profile_name(profile: str) -> str:
    """The name under which the suite's profile ``profile`` is registered with hypothesis."""
    return f"gpt2-conformance-{profile}"


def suppressed_health_checks() -> list[Any]:
    """The health checks every conformance property runs without.

    ``too_slow``: building models is slow by nature. ``function_scoped_fixture``: properties may
    take the function-scoped ``requirement`` fixture, an immutable string that is the same for
    every example, so sharing it between examples is safe.
    """
    from hypothesis import HealthCheck

    return [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


def register_profiles() -> None:
    """Register :data:`PROFILES` with hypothesis (as ``gpt2-conformance-NAME``), on top of the
    profile loaded now (which carries ``--hypothesis-verbosity`` and ``--hypothesis-explain``)."""
    from hypothesis import Phase, settings

    for name, values in PROFILES.items():
        values = dict(values)
        if "phases" in values:  # named here: hypothesis is imported only now
            values["phases"] = tuple(Phase[phase] for phase in values["phases"])
        settings.register_profile(
            profile_name(name),
            deadline=None,
            print_blob=True,
            report_multiple_bugs=False,
            suppress_health_check=suppressed_health_checks(),
            **values,
        )


def hypothesis_settings(
    *,
    profile: str,
    hypothesis_profile: str | None,
    max_examples: int | None,
    shape: str,
    seed: Any,
    seeds: range | None,
) -> Any:
    """The hypothesis settings given to every conformance property of a run."""
    from hypothesis import settings

    parent = settings.get_profile(hypothesis_profile or profile_name(profile))
    overrides: dict[str, Any] = {
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": sorted(
            {*parent.suppress_health_check, *suppressed_health_checks()}, key=lambda h: h.value
        ),
    }
    if max_examples is not None:
        overrides["max_examples"] = max_examples
    elif shape != "tiny":
        overrides["max_examples"] = min(parent.max_examples, LARGE_SHAPE_EXAMPLES)
    if seed is not None or seeds is not None:
        overrides["derandomize"] = False  # a derandomized run would ignore the seed
    if seeds is not None:
        overrides["database"] = None  # seed N must draw the same examples on every machine
    elif hypothesis_profile is None and "database" not in PROFILES[profile]:
        # Where hypothesis takes the environment for CI ($CI, $GITHUB_ACTIONS, ...) it loads
        # its own ``ci`` profile, without an example database; a profile of ours that keeps one
        # (``dev``, ``thorough``) keeps it there too. Read now: the storage folder is set.
        overrides["database"] = settings.get_profile("default").database
    return settings(parent=parent, **overrides)


#: Where hypothesis keeps its files (example database, constants cache) when set; the suite
#: then leaves them there.
ENV_HYPOTHESIS_STORAGE = "HYPOTHESIS_STORAGE_DIRECTORY"


def hypothesis_storage() -> str | None:
    """Where a conformance run keeps hypothesis' files, instead of ``.hypothesis/`` in the
    directory it was started from: ``$XDG_CACHE_HOME/gpt2-conformance/hypothesis`` (default
    ``~/.cache/...``). None when ``$HYPOTHESIS_STORAGE_DIRECTORY`` already says where (set it to
    ``.hypothesis`` to keep them in the current directory)."""
    import os
    from pathlib import Path

    if os.environ.get(ENV_HYPOTHESIS_STORAGE):
        return None
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "gpt2-conformance" / "hypothesis")


def use_hypothesis_storage() -> None:
    """Point hypothesis at :func:`hypothesis_storage` (before any property runs)."""
    where = hypothesis_storage()
    if where is not None:
        from hypothesis.configuration import set_hypothesis_home_dir

        set_hypothesis_home_dir(where)


def without_shrinking(chosen: Any) -> Any:
    """``chosen`` without the shrink and explain phases (for properties expected to fail)."""
    from hypothesis import Phase, settings

    phases = [p for p in chosen.phases if p not in (Phase.shrink, Phase.explain)]
    return settings(chosen, phases=phases)


# ---- option values ---------------------------------------------------------------------------


def parse_seed(value: Any) -> Any:
    """``--hypothesis-seed`` as hypothesis reads it: an int when it is one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--conformance-shard=K/N`` as ``(K, N)``."""
    if text is None:
        return None
    k, slash, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = (0, 0)
    if not slash or not 1 <= shard[0] <= shard[1]:
        raise OptionError(
            f"--conformance-shard={text}: give K/N with 1 <= K <= N, e.g. 2/3 for the second of "
            "three slices"
        )
    return shard


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
        raise OptionError(
            f"--conformance-seeds={text}: give A:B with whole numbers 0 <= A < B (seeds A to B-1)"
        )
    return seeds


def requirements_profile(name: str) -> Any:
    """``--conformance-requirements``: the spec's profile of that name (None for gpt2: every
    requirement), read from spec/README.md; an unknown name is an :class:`OptionError`."""
    if name == FULL_REQUIREMENTS:
        return None
    from gpt2_spec import load_profiles

    profiles = load_profiles()
    if name not in profiles:
        raise OptionError(
            f"--conformance-requirements={name}: the spec defines the profiles "
            f"{', '.join(profiles)} (spec/README.md, Profiles); choose one of those"
        )
    return profiles[name]


def torch_threads(option: str, *, checkpoint: bool, shape: str, device: str) -> int | None:
    """``--torch-threads``: the thread count to set, or None to keep torch's default."""
    if option == "auto":
        if checkpoint or shape != "tiny" or device != "cpu":
            return None
        return 1
    try:
        return int(option)
    except ValueError:
        raise OptionError(f"--torch-threads must be auto or a number, got {option!r}") from None


# ---- replaying one failure (--conformance-replay) -------------------------------------------

_REPRODUCE_LINE = re.compile(
    r"""@reproduce_failure\(\s*['"]([^'"]+)['"]\s*,\s*b['"]([^'"]+)['"]\s*\)"""
)
_BLOB = re.compile(r"""^b?['"]?([A-Za-z0-9+/=]+)['"]?$""")


def parse_replay(text: str | None) -> tuple[str, bytes] | None:
    """``--conformance-replay``: the hypothesis version and blob of a failure to replay.

    ``text`` is the blob hypothesis printed in ``@reproduce_failure('VERSION', b'BLOB')`` (with
    or without ``b'...'``), or that whole line; a bare blob is taken to come from the installed
    hypothesis. A blob from another hypothesis version is refused (its examples would differ).
    """
    if text is None:
        return None
    from hypothesis import __version__ as installed

    line = _REPRODUCE_LINE.search(text)
    if line is not None:
        version, blob = line.group(1), line.group(2)
    else:
        bare = _BLOB.match(text.strip())
        if bare is None:
            raise OptionError(
                f"--conformance-replay={text!r}: give the blob hypothesis printed in "
                "@reproduce_failure('VERSION', b'BLOB') (the part between b' and '), or the "
                "whole @reproduce_failure(...) line"
            )
        version, blob = installed, bare.group(1)
    if version != installed:
        raise OptionError(
            f"--conformance-replay: the failure was found with hypothesis {version}, and "
            f"hypothesis {installed} is installed; a blob replays only under the version that "
            f"printed it: pip install 'hypothesis=={version}'"
        )
    return version, blob.encode("ascii")


def printed_blob(text: str) -> bytes | None:
    """The blob of the ``@reproduce_failure`` line in hypothesis' output ``text``, if any."""
    line = _REPRODUCE_LINE.search(text)
    return None if line is None else line.group(2).encode("ascii")


def installed_nodeid(module: str, name: str) -> str:
    """The argument that selects property ``name`` of module ``module`` (e.g.
    ``gpt2_conformance.test_causality``) with ``--pyargs``, from any directory and from a wheel
    install as well as a checkout."""
    return f"{module}::{name}"


def replay_command(nodeid: str, blob: bytes, *, impl: str | None, options: dict[str, str]) -> str:
    """The command that replays one failing example: ``nodeid`` as :func:`installed_nodeid`
    gives it, ``blob`` as hypothesis printed it, and the run's options that change what the
    property computes (``options``: name without ``--`` to value, those that differ from their
    default)."""
    import shlex

    parts = ["python", "-m", "pytest", "--pyargs", shlex.quote(nodeid)]
    if impl is not None:
        parts.append(shlex.quote(f"--impl={impl}"))
    parts += [shlex.quote(f"--{name}={value}") for name, value in options.items()]
    parts.append(shlex.quote(f"--conformance-replay={blob.decode('ascii')}"))
    return " ".join(parts)
