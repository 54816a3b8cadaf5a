"""The conformance suite catches weight, forward, numerics and validation bugs (spec chapters 1
and 5 to 8).

Each broken GPT-2 of ``tests/broken/weight_bugs.py`` has one realistic bug, names the
requirements it must fail (``must_fail``), the words some of those failures must contain
(``diagnosis``: the suite must say *what* is wrong) and requirements it must not fail
(``must_pass``: a forward property does not blame a mismatch that another requirement's known
deviation explains). The suite runs against each one in a pytest session, restricted to the
properties tagged with those requirements, derandomized, with few examples and no shrinking; the
reference
runs every property of these chapters with the same settings and must pass them all (a property
that failed the reference would "catch" every bug).

The runs are pytest sessions started in this process (``pytester.runpytest_inprocess``): a
subprocess per run spent most of its time importing torch and hypothesis again, and seventeen of
them took about two minutes of CPU on two cores. Each session gets its own configuration, plugin
state, report and Suite; the hypothesis profile it loads and torch's thread count are restored
afterwards.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

import gpt2_conformance
from gpt2_conformance import diagnose
from gpt2_reference import oracle
from gpt2_spec import GPT2Config, load_requirements, spec_definitions

if str(Path(__file__).parent) not in sys.path:  # ``broken`` is importable beside this file
    sys.path.insert(0, str(Path(__file__).parent))
from broken import properties_by_requirement, weight_bugs

pytest_plugins = ["pytester"]

CONFORMANCE = Path(gpt2_conformance.__file__).parent
MODULES = (
    "test_model",
    "test_embedding_head",
    "test_forward",
    "test_numerics",
    "test_input_validation",
)
FAMILIES = ("model", "embedding", "head", "forward", "numerics", "input")
EXAMPLES = 5  # per property; derandomized, so every run tries the same examples
PROFILE = "gpt2-conformance-weight-bugs"
# No shrinking: the first failing example is enough to check a message, and shrinking would
# re-run slow broken models many times.
settings.register_profile(
    PROFILE,
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    report_multiple_bugs=False,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
S = spec_definitions()


PROPERTIES = properties_by_requirement(MODULES)


def _requirement_ids() -> list[str]:
    return [r.id for r in load_requirements() if r.id.split(".")[0] in FAMILIES]


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
    pytester: pytest.Pytester, impl: str, requirements: set[str]
) -> tuple[pytest.RunResult, dict[str, Any]]:
    """Run the properties of ``requirements`` against ``impl``; the outcome and the JSON report."""
    node_ids = sorted({node for rid in requirements for node in PROPERTIES[rid]})
    report = pytester.path / f"report-{impl.rpartition(':')[2]}.json"
    with _restored():
        result = pytester.runpytest_inprocess(
            *node_ids,
            f"--impl={impl}",
            f"--hypothesis-profile={PROFILE}",
            f"--max-examples={EXAMPLES}",
            f"--conformance-report={report}",
            "-p",
            "no:cacheprovider",
            "-q",
            "--tb=no",  # the report holds the messages; formatting tracebacks cost seconds
        )
    assert report.exists(), f"{impl}: the suite wrote no report\n{result.stdout.str()}"
    return result, json.loads(report.read_text(encoding="utf-8"))


def _selected(bug: type[weight_bugs.WeightBug]) -> set[str]:
    return set(bug.must_fail) | set(bug.must_pass)


@pytest.fixture
def suite_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("GPT2_CONFORMANCE_IMPL", raising=False)
    return pytester


def test_every_requirement_of_these_chapters_has_a_property() -> None:
    ids = _requirement_ids()
    assert len(ids) == 32
    assert sorted(set(ids) - set(PROPERTIES)) == []


def test_every_declared_requirement_has_properties() -> None:
    for bug in weight_bugs.ALL:
        assert bug.must_fail, f"{bug.__name__} declares no requirement to fail"
        for rid in _selected(bug):
            assert PROPERTIES.get(rid), f"{bug.__name__}: no property is tagged {rid}"
        assert set(bug.diagnosis) <= set(bug.must_fail), bug.__name__
        assert not set(bug.must_fail) & set(bug.must_pass), bug.__name__


@pytest.mark.parametrize("bug", list(weight_bugs.ALL), ids=lambda bug: bug.__name__)
def test_the_broken_adapter_builds_and_runs(bug: type[weight_bugs.WeightBug]) -> None:
    """A bug must show as a wrong answer (or a wrong refusal), not as a broken adapter."""
    config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    params = oracle.random_params(config, seed=0, scale=0.1)
    implementation = bug().build(config, params=params, seed=0, device="cpu", dtype="float32")
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


@pytest.mark.parametrize("bug", list(weight_bugs.ALL), ids=lambda bug: bug.__name__)
def test_the_suite_fails_each_declared_requirement(
    suite_dir: pytest.Pytester, bug: type[weight_bugs.WeightBug]
) -> None:
    result, report = run_suite(suite_dir, f"broken.weight_bugs:{bug.__name__}", _selected(bug))
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    entries = {entry["id"]: entry for entry in report["requirements"]}
    for rid in bug.must_fail:
        entry = entries[rid]
        assert entry["status"] == "fail", f"{bug.__name__} passed {rid}:\n{output}"
        messages = [t["message"] for t in entry["tests"] if t["outcome"] == "failed"]
        assert any(m.startswith(f"{rid}:") for m in messages), messages
        if rid in bug.diagnosis:
            words = bug.diagnosis[rid]
            assert any(words in m for m in messages), f"{rid}: no {words!r} in {messages}"
    for rid in bug.must_pass:
        entry = entries[rid]
        messages = [t["message"] for t in entry["tests"] if t["outcome"] == "failed"]
        assert entry["status"] == "pass", f"{bug.__name__} failed {rid}: {messages}"


def test_the_reference_passes_every_property(suite_dir: pytest.Pytester) -> None:
    result, report = run_suite(suite_dir, "reference", set(PROPERTIES))
    statuses = {entry["id"]: entry["status"] for entry in report["requirements"]}
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert {rid: statuses[rid] for rid in PROPERTIES} == dict.fromkeys(PROPERTIES, "pass")
