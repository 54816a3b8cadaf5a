"""Nothing an implementation does to its inputs can change what it is judged against.

The suite hands every implementation its own read-only copy of each array (``gpt2_conformance.
timing.InputIsolation``) and keeps the suite's for the oracle. The mutants below write into what
they are given in the ways an implementation can: a plain NumPy assignment, a write through a
tensor that shares the array's memory (which ignores NumPy's read-only flag), a write through the
copy's base made writeable again, a write into a kept reference at a later call, and a write into
the canonical weights given to ``build``. Each one computes honestly on what it changed, so before
the isolation the oracle computed on the same corrupted arrays and the mutant conformed.

The mutants live in the zoo (``gpt2_zoo.input_bugs``); each must fail ``model.inputs-unchanged``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import gpt2_conformance
from gpt2_conformance import checks, timing
from gpt2_conformance.adapters.reference import ReferenceAdapter
from gpt2_conformance.suite import Suite
from gpt2_spec import GPT2Config
from gpt2_zoo.input_bugs import (
    RID,
    BuildWritesWeights,
    InputBug,
    ScramblesLater,
    WritesFirstToken,
    WritesThroughBase,
    WritesThroughTensor,
)

pytest_plugins = ["pytester"]

CONFIG = GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=1, n_head=2)
CONFORMANCE = Path(gpt2_conformance.__file__).parent


MUTANTS = [WritesFirstToken, WritesThroughTensor, WritesThroughBase, ScramblesLater]


def _tokens() -> np.ndarray:
    return (np.arange(10).reshape(2, 5) * 7 + 3) % CONFIG.vocab_size


def _two_forwards(adapter: ReferenceAdapter) -> tuple[np.ndarray, np.ndarray]:
    """Build through the suite and compute logits twice, as a property does; the suite's tokens."""
    implementation, _ = Suite(adapter=adapter).build(CONFIG, requirement="some.requirement")
    tokens = _tokens()
    for _ in range(2):
        checks.logits_of("some.requirement", implementation, tokens, vocab_size=CONFIG.vocab_size)
    timing.check_inputs(implementation)
    return tokens, implementation.logits(tokens)


def test_the_reference_passes_and_its_inputs_stay_as_given() -> None:
    tokens, _ = _two_forwards(ReferenceAdapter())
    assert np.array_equal(tokens, _tokens())


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.__name__)
def test_a_write_into_an_input_fails_its_own_requirement(mutant: type[InputBug]) -> None:
    with pytest.raises(checks.ConformanceFailure) as caught:
        _two_forwards(mutant())
    assert caught.value.requirement == RID, str(caught.value)
    assert "copy an input before changing it" in str(caught.value)


def test_the_suite_judges_on_its_own_copy() -> None:
    """The suite's array is untouched whatever the implementation did to its copy."""
    implementation, _ = Suite(adapter=WritesThroughTensor()).build(CONFIG, requirement="x")
    tokens = _tokens()
    with pytest.raises(checks.ConformanceFailure):
        implementation.logits(tokens)
    assert np.array_equal(tokens, _tokens())


def test_a_write_into_the_weights_given_to_build_fails() -> None:
    with pytest.raises(checks.ConformanceFailure) as caught:
        Suite(adapter=BuildWritesWeights()).build(CONFIG, requirement="x")
    assert caught.value.requirement == RID
    assert "transformer.wpe.weight" in str(caught.value)
    assert "build()" in str(caught.value)


def test_a_later_write_is_caught_at_the_next_call_and_names_the_first_call() -> None:
    implementation, _ = Suite(adapter=ScramblesLater()).build(CONFIG, requirement="x")
    implementation.logits(_tokens())
    with pytest.raises(checks.ConformanceFailure, match=r"argument 1 of logits\(\)"):
        implementation.logits(_tokens())


def test_the_verdict_names_the_requirement(pytester: pytest.Pytester) -> None:
    """End to end: the mutant no longer conforms, and a forward property that sees the write
    says model.inputs-unchanged, not a numerical mismatch."""
    nodes = [
        str(CONFORMANCE / "test_model.py::test_inputs_are_left_unchanged"),
        str(CONFORMANCE / "test_numerics.py::test_log_probabilities_agree_with_the_oracle"),
    ]
    report = pytester.path / "report.json"
    result = pytester.runpytest_inprocess(
        *nodes,
        "--impl=gpt2_zoo.input_bugs:WritesThroughTensor",
        f"--conformance-report={report}",
        "--max-examples=3",
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=no",
    )
    data = json.loads(report.read_text(encoding="utf-8"))
    entries = {entry["id"]: entry for entry in data["requirements"]}
    assert entries[RID]["status"] == "fail", result.stdout.str()
    assert entries[RID]["message"].startswith(RID)
    forward = entries["numerics.log-probs-match-oracle"]
    assert forward["status"] == "fail"
    assert forward["message"].startswith(RID), forward["message"]
    assert "DOES NOT CONFORM" in data["verdict"], data["verdict"]


def test_copies_are_cheap_for_a_suite_sized_batch() -> None:
    """The isolation of one call on a [3, 32] batch costs well under a millisecond."""
    isolation = timing.InputIsolation()
    tokens = np.zeros((3, 32), dtype=np.int64)
    started = time.perf_counter()
    for _ in range(200):
        isolation.run("logits()", np.sum, tokens)
    assert (time.perf_counter() - started) / 200 < 1e-3


def test_a_write_into_a_large_input_is_caught_when_the_call_returns() -> None:
    """Arrays above REMEMBER_BYTES (weight matrices) are compared in chunks after the call."""
    weights = np.linspace(0.0, 1.0, (timing.REMEMBER_BYTES // 8) * 3).reshape(3, -1)

    def writes(params: dict[str, np.ndarray]) -> None:
        owner = params["w"].base
        owner.flags.writeable = True
        owner[2, -1] = -1.0

    with pytest.raises(checks.ConformanceFailure, match=r"1 of its \d+ entries changed") as caught:
        timing.InputIsolation().run("build()", writes, params={"w": weights})
    assert "params['w'] of build()" in str(caught.value)
    assert weights[2, -1] == 1.0  # the suite's array is untouched
