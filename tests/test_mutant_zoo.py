"""The conformance suite catches every mutant of the zoo (``zoo/``, :mod:`gpt2_zoo`).

Each mutant is a GPT-2 with one realistic bug, built on the reference or on transformers'
``GPT2LMHeadModel``, that names the requirements it must fail (``must_fail``), for some of them
words the failure must contain (``diagnosis``: the suite says *what* is wrong), and requirements it
must not fail (``must_pass``: a forward property does not blame a mismatch that another
requirement explains). For each mutant the suite runs the properties of those requirements, in the
``ci`` profile (its example count, derandomized) without hypothesis' shrink phase (the first
failing example is enough, and shrinking would rerun slow broken models many times). Each
declared requirement must be reported failed with a message in its own terms. The unmodified
implementation each mutant is built on runs the same properties and must pass them: a property
that failed the reference would "catch" every bug.

The runs are pytest sessions started in this process (``pytester.runpytest_inprocess``): a
subprocess per run would spend most of its time importing torch again. Each mutant is its own
test, so ``-n 2`` spreads them over two workers. ``python -m gpt2_evidence.kill_matrix`` runs
the whole suite on every mutant under several hypothesis seeds; this test is the fast gate.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import settings

import gpt2_conformance
from gpt2_conformance import diagnose
from gpt2_conformance.options import PROFILES, campaign_settings
from gpt2_reference import oracle
from gpt2_spec import GPT2Config, load_requirements, spec_definitions
from gpt2_zoo import Mutant, controls, properties_by_requirement, zoo

pytest_plugins = ["pytester"]

CONFORMANCE = Path(gpt2_conformance.__file__).parent
MODULES = tuple(sorted(p.stem for p in CONFORMANCE.glob("test_*.py")))
PROPERTIES = properties_by_requirement(MODULES)
ZOO = zoo()
CONTROLS = controls()
PROFILE = "gpt2-conformance-zoo"
# The ci profile's examples, derandomized, without the shrink phase.
settings.register_profile(
    PROFILE, **campaign_settings(PROFILES["ci"]["max_examples"], derandomize=True)
)
# Words that mean the implementation crashed rather than computed a wrong answer (allowed only
# where a mutant's bug *is* a late crash, declared in its diagnosis).
CRASHED = ("could not build", "NotImplementedError")
S = spec_definitions()


@contextlib.contextmanager
def _restored() -> Iterator[None]:
    """Give back what an in-process session changes globally: the loaded hypothesis profile, and
    torch's thread count (one thread: tiny models gain nothing from more, and spinning worker
    threads slowed runs five-fold on two busy cores)."""
    profile, threads = settings.get_current_profile_name(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        settings.load_profile(profile)
        torch.set_num_threads(threads)


def run_suite(
    pytester: pytest.Pytester, impl: str, requirements: set[str], dtype: str = "float32"
) -> tuple[pytest.RunResult, dict[str, dict[str, Any]]]:
    """Run the properties of ``requirements`` against ``impl``: the outcome and the report's
    entries by requirement id."""
    node_ids = sorted({node for rid in requirements for node in PROPERTIES[rid]})
    report = pytester.path / f"report-{impl.rpartition(':')[2]}-{dtype}.json"
    with _restored():
        result = pytester.runpytest_inprocess(
            *node_ids,
            f"--impl={impl}",
            f"--dtype={dtype}",
            f"--hypothesis-profile={PROFILE}",
            f"--conformance-report={report}",
            "-p",
            "no:cacheprovider",
            "-q",
            "--tb=no",  # the report holds the messages; formatting tracebacks costs seconds
        )
    assert report.exists(), f"{impl}: the suite wrote no report\n{result.stdout.str()}"
    entries = json.loads(report.read_text(encoding="utf-8"))["requirements"]
    return result, {entry["id"]: entry for entry in entries}


@pytest.fixture(scope="session")
def transformers_imported() -> None:
    """An in-process session removes the modules it imported when it ends; transformers imports
    its submodules lazily and breaks ("Could not import module 'GPT2LMHeadModel'") when they are
    removed under it. Using it once, before any Pytester takes its snapshot of the modules, puts
    them in every snapshot."""
    from gpt2_conformance.loading import load_adapter

    config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    implementation = load_adapter("transformers").build(
        config, params=None, seed=0, device="cpu", dtype="float32"
    )
    tokens = np.arange(8).reshape(2, 4) % 11
    mask = np.ones_like(tokens)
    implementation.logits(tokens, attention_mask=mask, position_ids=mask.cumsum(-1) - 1)
    _, cache = implementation.prefill(tokens[:, :2])
    implementation.extend(cache, tokens[:, 2:])
    implementation.gradients(tokens, tokens)
    with tempfile.TemporaryDirectory() as folder:
        implementation.save(Path(folder))
        implementation.load(Path(folder))


@pytest.fixture
def suite_dir(
    transformers_imported: None, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.delenv("GPT2_CONFORMANCE_IMPL", raising=False)
    return pytester


def _selected(mutant: Mutant) -> set[str]:
    return set(mutant.must_fail) | set(mutant.must_pass)


def _failures(entry: dict[str, Any]) -> list[str]:
    return [t["message"] for t in entry["tests"] if t["outcome"] == "failed"]


# --- The zoo itself ------------------------------------------------------------------------------


def test_the_zoo_covers_every_family_and_both_adapter_paths() -> None:
    assert len(ZOO) >= 25
    assert len({m.name for m in ZOO}) == len(ZOO), "two mutants share a class name"
    assert sum(m.origin == "transformers" for m in ZOO) >= 8
    families = {r.id.split(".")[0] for r in load_requirements()}
    declared = {rid.split(".")[0] for m in ZOO for rid in m.must_fail}
    assert sorted(families - declared) == []


def test_every_requirement_has_a_property() -> None:
    assert sorted({r.id for r in load_requirements()} - set(PROPERTIES)) == []


@pytest.mark.parametrize("mutant", ZOO, ids=lambda m: m.name)
def test_each_mutant_declares_what_it_breaks(mutant: Mutant) -> None:
    assert mutant.must_fail, f"{mutant.name} declares no requirement to fail"
    assert mutant.story, f"{mutant.name} has no docstring telling how the bug arises"
    for rid in _selected(mutant):
        assert PROPERTIES.get(rid), f"{mutant.name}: no property is tagged {rid}"
    assert set(mutant.diagnosis) <= set(mutant.must_fail), mutant.name
    assert not set(mutant.must_fail) & set(mutant.must_pass), mutant.name


@pytest.mark.parametrize("mutant", ZOO, ids=lambda m: m.name)
def test_each_mutant_builds_and_runs(mutant: Mutant) -> None:
    """A bug must show as a wrong answer (or a wrong refusal), not as a broken adapter."""
    from gpt2_conformance.loading import load_adapter

    config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    params = oracle.random_params(config, seed=0, scale=0.1)
    adapter = load_adapter(mutant.impl)
    implementation = adapter.build(config, params=params, seed=0, device="cpu", dtype=mutant.dtype)
    tokens = np.arange(12).reshape(2, 6) % 11
    assert tuple(implementation.logits(tokens).shape) == (2, 6, 11)
    float(implementation.loss(tokens, tokens, reduction="mean"))  # a number (inf for some bugs)


def test_variants_without_a_substitution_are_the_spec() -> None:
    """The diagnosis evaluates fresh copies of the spec: with nothing substituted they compute
    the oracle's logits, and substituting leaves the shared definitions alone."""
    config = GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=2, n_head=2)
    params = oracle.random_params(config, seed=1, scale=0.3)
    tokens = np.random.default_rng(0).integers(0, 13, (2, 7))
    expected = oracle.forward(params, config, tokens).logits
    for name in diagnose._SUBSTITUTIONS:
        diagnose._namespace(name)  # every substitution applied to its own copy
    x = np.linspace(-3, 3, 13)
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_array_equal(spec_definitions().gelu(x), tanh_form)  # shared: unchanged
    np.testing.assert_array_equal(diagnose._namespace("exact-gelu")["gelu"](x), S.gelu_exact(x))
    plain = diagnose._spec_logits(None, params, config, tokens)
    np.testing.assert_allclose(plain, expected, rtol=0, atol=1e-12)
    for variant in diagnose.VARIANTS:
        logits = variant.logits(params, config, tokens)
        assert logits is not None, variant.name
        assert logits.shape == expected.shape, variant.name
        assert np.abs(logits - expected).max() > 1e-9, f"{variant.name} changes nothing"


# --- The suite against the zoo -------------------------------------------------------------------


@pytest.mark.parametrize("mutant", ZOO, ids=lambda m: m.name)
def test_the_suite_fails_each_declared_requirement(
    suite_dir: pytest.Pytester, mutant: Mutant
) -> None:
    result, entries = run_suite(suite_dir, mutant.impl, _selected(mutant), mutant.dtype)
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    for rid in mutant.must_fail:
        entry = entries[rid]
        messages = _failures(entry) or [
            t["message"] for t in entry["tests"] if t["outcome"] == "xfailed"
        ]
        # A deviation the mutant declares (tied_head=False), and its consequences, are expected
        # failures; anything else must fail outright.
        declared = entry["status"] == "xfail" and entry["message"].startswith("declared deviation")
        assert entry["status"] == "fail" or declared, f"{mutant.name} passed {rid}:\n{output}"
        # Each failure names the requirement it saw broken: this one, or another that the run
        # also finds broken (its test observed that one's violation; spec/diagnosis.md).
        named = {m.split(":", 1)[0] for m in messages}
        assert (
            declared
            or rid in named
            or any(entries[n]["status"] in ("fail", "xfail") for n in named if n in entries)
        ), messages
        assert not any(word in m for m in messages for word in CRASHED), messages
        if rid in mutant.diagnosis:
            words = mutant.diagnosis[rid]
            assert any(words in m for m in messages), f"{rid}: no {words!r} in {messages}"
    for rid in mutant.must_pass:
        entry = entries[rid]
        assert entry["status"] == "pass", f"{mutant.name} failed {rid}: {_failures(entry)}"


def _baselines() -> list[tuple[str, str, frozenset[str]]]:
    """(implementation, dtype, the requirements its mutants select) for each unmodified
    implementation the zoo is built on."""
    groups: dict[tuple[str, str], set[str]] = {}
    for mutant in ZOO:
        groups.setdefault((mutant.baseline, mutant.dtype), set()).update(_selected(mutant))
    return [(impl, dtype, frozenset(rids)) for (impl, dtype), rids in sorted(groups.items())]


@pytest.mark.parametrize(
    ("impl", "dtype", "requirements"), _baselines(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_unmodified_implementation_passes_the_same_properties(
    suite_dir: pytest.Pytester, impl: str, dtype: str, requirements: frozenset[str]
) -> None:
    result, entries = run_suite(suite_dir, impl, set(requirements), dtype)
    output = result.stdout.str()
    statuses = {rid: entries[rid]["status"] for rid in requirements}
    failed = {rid: _failures(entries[rid]) for rid, status in statuses.items() if status == "fail"}
    assert not failed, f"{impl} at {dtype} fails {failed}:\n{output}"
    # transformers' GPT2LMHeadModel does not validate its input, so its adapter does not claim
    # input-validation: those properties are not-claimed for it, never silently passed.
    unclaimed = {rid for rid, status in statuses.items() if status == "not-claimed"}
    if impl == "reference":
        assert not unclaimed, statuses
    else:
        assert all(rid.startswith("input.") for rid in unclaimed), statuses
    assert set(statuses.values()) <= {"pass", "not-claimed"}, statuses


@pytest.mark.parametrize("control", CONTROLS, ids=lambda m: m.name)
def test_a_declared_difference_passes_every_sequence_property(
    suite_dir: pytest.Pytester, control: Mutant
) -> None:
    """A correct implementation of the "shifted" label convention, declared as such, passes the
    objective, causality and inference properties: they follow the declared convention."""
    chapters = ("objective.", "causality.", "inference.")
    requirements = {rid for rid in PROPERTIES if rid.startswith(chapters)}
    result, entries = run_suite(suite_dir, control.impl, requirements)
    failed = {
        rid: _failures(entries[rid]) for rid in requirements if entries[rid]["status"] == "fail"
    }
    assert not failed, f"{control.name} fails {failed}:\n{result.stdout.str()}"
    assert {entries[rid]["status"] for rid in requirements} == {"pass"}
