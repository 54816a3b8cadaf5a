"""The report's triage: primary failures and their consequences (spec/diagnosis.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpt2_conformance import SUITE_VERSION, report, triage
from gpt2_spec import SPEC_VERSION, SpecFormatError, load_presuppositions, load_requirements

REQUIREMENTS = load_requirements()
IDS = [r.id for r in REQUIREMENTS]
LOG_PROBS = "numerics.log-probs-match-oracle"


def _run(records: list[report.TestRecord]) -> dict[str, Any]:
    """A report where every requirement without a record passes."""
    covered = {rid for r in records for rid in r.requirements}
    records = records + [
        report.TestRecord(f"t.py::test_{k}", (rid,), "passed")
        for k, rid in enumerate(IDS)
        if rid not in covered
    ]
    return report.build_report(
        requirements=REQUIREMENTS,
        tests=records,
        implementation={"name": "x", "version": "1"},
        hypothesis={"profile": "ci", "seed": "derandomized", "max_examples": 10},
        suite_version=SUITE_VERSION,
        spec_version=SPEC_VERSION,
        duration_s=1.0,
    )


def _failed(rid: str, observed: str = "", **kw: Any) -> report.TestRecord:
    message = f"{observed or rid}: something differs"
    return report.TestRecord(
        f"t.py::test_{rid}", (rid,), "failed", message=message, observed=observed or rid, **kw
    )


def _entry(data: dict[str, Any], rid: str) -> dict[str, Any]:
    return next(e for e in data["requirements"] if e["id"] == rid)


def test_presuppositions_cover_every_requirement_without_cycles() -> None:
    closed = load_presuppositions()
    assert set(closed) == set(IDS)
    for rid, presupposed in closed.items():
        assert rid not in presupposed
        assert presupposed <= set(IDS)
    # The map says what the diagnosis page promises, e.g. the oracle comparison rests on causality.
    assert "causality.future-invisible" in closed[LOG_PROBS]
    assert "numerics.log-probs-match-oracle" in closed["numerics.gradients-match-oracle"]


def _spec_with(tmp_path: Path, rows: str) -> Path:
    (tmp_path / "diagnosis.md").write_text(
        "# D\n\n## Presuppositions\n\n| Requirement | Presupposes | Why |\n| --- | --- | --- |\n"
        + rows,
        encoding="utf-8",
    )
    return tmp_path


def test_a_cycle_or_an_unknown_pattern_is_refused(tmp_path: Path) -> None:
    cyclic = _spec_with(
        tmp_path,
        "| `head.tied-gradient` | `head.tied-after-update` | x |\n"
        "| `head.tied-after-update` | `head.tied-gradient` | y |\n",
    )
    with pytest.raises(SpecFormatError, match="presupposes itself"):
        load_presuppositions(cyclic, requirements=REQUIREMENTS)
    unknown = _spec_with(tmp_path, "| `nothing.*` | `head.tied-gradient` | x |\n")
    with pytest.raises(SpecFormatError, match="names no requirement"):
        load_presuppositions(unknown, requirements=REQUIREMENTS)


def test_a_sink_is_primary_and_the_rest_are_explained_by_it() -> None:
    order = ["a", "b", "c", "d"]
    found = triage.triage(
        order,
        {"a": [None], "b": ["a"], "c": [None], "d": [None]},
        {"c": {"b"}, "d": set()},
    )
    assert found["a"].role == triage.PRIMARY
    assert found["b"].explained_by == ("a",)
    assert "observed a violation of a" in found["b"].reason
    assert found["c"].explained_by == ("a",)
    assert "presupposes b" in found["c"].reason
    assert found["d"].role == triage.PRIMARY  # nothing explains it


def test_in_a_cycle_the_member_with_its_own_evidence_is_primary() -> None:
    # x's test saw only y's violation; y presupposes x: y is the cause (x has no evidence).
    found = triage.triage(["x", "y"], {"x": ["y"]}, {"y": {"x"}})
    assert found["y"].role == triage.PRIMARY
    assert found["y"].observed_only
    assert found["x"].role == triage.CONSEQUENCE


def test_a_causal_leak_reads_as_causality_with_consequences() -> None:
    """Every comparison of logits with the oracle fails with "no known deviation": they are
    consequences of the causality failures, which lead the verdict."""
    forward = [r for r in IDS if r.startswith("forward.") and r != "forward.initialisation"]
    records = [_failed("causality.future-invisible"), _failed("causality.prefix-consistency")]
    records += [_failed(rid, LOG_PROBS) for rid in [*forward, "head.tied-to-embedding"]]
    records.append(_failed(LOG_PROBS))
    data = _run(records)
    assert data["triage"]["primary"] == ["causality.future-invisible"]
    for rid in [*forward, "head.tied-to-embedding", LOG_PROBS, "causality.prefix-consistency"]:
        entry = _entry(data, rid)
        assert entry["status"] == "fail"  # every status stays as it is
        assert entry["triage"]["explained_by"] == ["causality.future-invisible"], rid
    assert "primary: causality.future-invisible" in data["verdict"]
    markdown = report.to_markdown(data)
    start = markdown.index("### Start here")
    assert "causality.future-invisible" in markdown[start : markdown.index("| Requirement |")]
    assert "(follows from `causality.future-invisible`)" in markdown
    lines = report.summary_lines(data)
    assert lines[0].startswith("start here")
    assert lines[1].split()[0] == "causality.future-invisible"
    assert data["verdict"].index("causality.future-invisible") < data["verdict"].index(
        "follow from it"
    )


def test_a_violation_seen_by_another_property_fails_its_requirement() -> None:
    data = _run([_failed("objective.sum-of-terms", "numerics.finite")])
    finite = _entry(data, "numerics.finite")
    assert finite["status"] == "fail"
    assert finite["triage"]["observed_only"]
    assert finite["message"].startswith("observed by t.py::test_objective.sum-of-terms")


def test_a_hint_contradicted_by_a_pass_is_withdrawn_and_a_match_is_an_observation() -> None:
    hint = "they match a known deviation: a bias vector added to the logits (head.linear-no-bias)"
    record = _failed(LOG_PROBS, hint=hint, hint_requirements=("head.linear-no-bias",))
    record.message += f"; {hint}"
    record.hint_matched = True
    withdrawn = _entry(_run([record]), LOG_PROBS)
    assert hint not in withdrawn["message"]
    assert report.WITHDRAWN_HINT in withdrawn["message"]
    # the caller's record is not changed
    assert record.hint == hint
    assert hint in record.message
    # The same hint stands when head.linear-no-bias fails too, and explains the log-probs.
    gelu = "they match a known deviation: the exact GELU (forward.gelu-tanh)"
    record = _failed(LOG_PROBS, hint=gelu, hint_requirements=("forward.gelu-tanh",))
    record.message += f"; {gelu}"
    record.hint_matched = True
    data = _run([record, _failed("forward.gelu-tanh")])
    assert gelu in _entry(data, LOG_PROBS)["message"]
    assert data["triage"]["primary"] == ["forward.gelu-tanh"]
    assert _entry(data, LOG_PROBS)["triage"]["explained_by"] == ["forward.gelu-tanh"]


def test_consequences_of_a_declared_deviation_are_declared() -> None:
    declared = report.TestRecord(
        "t.py::test_tied",
        ("head.tied-to-embedding",),
        "xfailed",
        message="declared deviation: head.tied-to-embedding: tied_head=False: ...",
    )
    data = _run([declared, _failed("head.tied-gradient"), _failed("head.tied-after-move")])
    assert data["triage"]["primary"] == []
    assert data["triage"]["declared"] == ["head.tied-to-embedding"]
    for rid in ("head.tied-gradient", "head.tied-after-move"):
        entry = _entry(data, rid)
        assert entry["status"] == "xfail", rid
        assert entry["message"].startswith("declared deviation head.tied-to-embedding explains it")
    assert data["conforms"] is False  # declared MUST deviations still do not conform
    # A failure the declaration does not explain stays a fresh failure.
    data = _run([declared, _failed("causality.future-invisible")])
    assert _entry(data, "causality.future-invisible")["status"] == "fail"
    assert data["triage"]["primary"] == ["causality.future-invisible"]


DECLARED_GELU = """
from gpt2_zoo.weight_bugs import ExactGelu


class DeclaredExactGelu(ExactGelu):
    declared_deviations = {"forward.gelu-tanh": "nn.GELU() (exact erf), as nanoGPT's MLP"}
"""


def test_a_declared_deviation_and_its_consequences_read_as_one_declaration(
    tmp_path: Path,
) -> None:
    """The adapter guide's nanoGPT example, run: an exact GELU, declared. The GELU property is an
    expected failure, and the log-probabilities' disagreement it causes is reported as declared
    with it, not as a fresh MUST failure."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "declared_gelu.py").write_text(DECLARED_GELU, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("GPT2_CONFORMANCE_IMPL", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "gpt2_conformance",
            "--impl=declared_gelu:DeclaredExactGelu",
            "-k",
            "gelu_is_the_tanh or log_probabilities_agree_with_the_oracle",
            "--conformance-report=r.json",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    gelu, logp = _entry(data, "forward.gelu-tanh"), _entry(data, LOG_PROBS)
    assert gelu["status"] == "xfail", run.stdout[-3000:]
    assert logp["status"] == "xfail", run.stdout[-3000:]
    assert logp["triage"]["explained_by"] == ["forward.gelu-tanh"]
    assert data["triage"] == {
        "primary": [],
        "declared": ["forward.gelu-tanh"],
        "consequence": [LOG_PROBS],
    }
    assert "fail as the adapter declares; primary: forward.gelu-tanh" in data["verdict"]
    assert data["conforms"] is False


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "reading-a-failure.md"
LEAK_REPORT = (
    Path(__file__).resolve().parents[1] / "docs" / "data" / "examples" / "causal-leak.json"
)


def test_the_failure_guide_shows_the_committed_run_as_the_suite_prints_it() -> None:
    """The guide's cascade is the terminal summary of a committed report of the run it names
    (python -m pytest --pyargs gpt2_conformance --impl=gpt2_zoo.sequence_bugs:CausalLeak
    --conformance-report=docs/data/examples/causal-leak.json), rendered by the current code."""
    import json

    data = json.loads(LEAK_REPORT.read_text(encoding="utf-8"))
    assert data["implementation"]["adapter"].endswith("CausalLeak")
    lines = report.summary_lines(data)
    text = GUIDE.read_text(encoding="utf-8")
    for line in lines:
        assert line in text, line
    failing = data["summary"]["fail"]
    prose = " ".join(text.split())
    assert f"ends with {failing} failing requirements out of {len(data['requirements'])}" in prose
    assert data["triage"]["primary"] == [
        "causality.future-invisible",
        "causality.jacobian-lower-triangular",
    ]
    gelu = next(e for e in data["requirements"] if e["id"] == "forward.gelu-tanh")
    assert f'"reason": "{gelu["triage"]["reason"]}"' in prose  # the JSON the guide quotes
