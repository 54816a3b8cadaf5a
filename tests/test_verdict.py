"""The verdict per conformance class (spec README, "Conformance classes"), the exit status a gate
uses (``gpt2_conformance.report.exit_status``), and the function class's principle checked on
transformers' GPT-2: it meets every MUST requirement of the class through an adapter that adds
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gpt2_conformance import SUITE_VERSION, report
from gpt2_spec import (
    SPEC_VERSION,
    SpecFormatError,
    load_classes,
    load_profiles,
    load_requirements,
)
from gpt2_spec.registry import SPEC_DIR

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = load_requirements()
BY_ID = {r.id: r for r in REQUIREMENTS}
FUNCTION = [r.id for r in REQUIREMENTS if r.conformance_class == "function"]
VALIDATED = [r.id for r in REQUIREMENTS if r.conformance_class == "validated-input"]
FUNCTION_MUST = [i for i in FUNCTION if BY_ID[i].level == "MUST"]
VALIDATED_MUST = [i for i in VALIDATED if BY_ID[i].level == "MUST"]
SHOULD = next(r.id for r in REQUIREMENTS if r.level == "SHOULD")
HEAD = f"gpt2-conformance: x, spec {SPEC_VERSION}: "


def _build(
    outcomes: dict[str, str],
    *,
    messages: dict[str, str] | None = None,
    implementation: dict[str, Any] | None = None,
    profile: Any = None,
) -> dict[str, Any]:
    """A report in which every requirement has one test, passed unless ``outcomes`` says
    otherwise ("none": no test at all)."""
    messages = messages or {}
    records = [
        report.TestRecord(
            f"t.py::test_{k}", (r.id,), outcomes.get(r.id, "passed"), 0.1, messages.get(r.id, "msg")
        )
        for k, r in enumerate(REQUIREMENTS)
        if outcomes.get(r.id) != "none"
    ]
    return report.build_report(
        requirements=REQUIREMENTS,
        tests=records,
        implementation=implementation or {"name": "x", "version": "1"},
        hypothesis={"profile": "ci", "seed": "derandomized", "max_examples": 10},
        suite_version=SUITE_VERSION,
        spec_version=SPEC_VERSION,
        duration_s=1.0,
        profile=profile,
    )


def _statuses(data: dict[str, Any]) -> dict[str, str]:
    return {name: c["status"] for name, c in data["classes"].items()}


def test_verdicts() -> None:
    ids = [r.id for r in load_requirements()]
    should = next(r.id for r in load_requirements() if r.level == "SHOULD")
    must = [r.id for r in load_requirements() if r.level == "MUST"]

    full = _build({})
    assert full["conforms"] is True
    assert full["verdict"] == (
        f"gpt2-conformance: x, spec {SPEC_VERSION}: function CONFORMS; validated input CONFORMS "
        f"({len(ids)} pass)"
    )

    # A MUST requirement not claimed: the class conforms on what it claims only, not as a whole.
    claimed = _build({ids[0]: "not-claimed"})
    assert claimed["conforms"] is None
    function_must = sum(1 for r in load_requirements() if r.level == "MUST" and r.chapter < "08")
    assert claimed["verdict"] == (
        f"gpt2-conformance: x, spec {SPEC_VERSION}: function CONFORMS ON WHAT IT CLAIMS "
        f"({function_must - 1} of {function_must} MUST requirements checked; not claimed: "
        f"{ids[0]}); validated input CONFORMS ({len(ids) - 1} pass, 1 not-claimed)"
    )

    deviation = _build({should: "failed"})
    assert deviation["conforms"] is True
    assert deviation["verdict"].endswith(f"; SHOULD/MAY deviations: {should}")

    broken = _build({must[0]: "failed", must[1]: "error", should: "failed"})
    assert broken["conforms"] is False
    assert broken["verdict"].startswith(
        f"gpt2-conformance: x, spec {SPEC_VERSION}: function DOES NOT CONFORM (2 MUST "
        f"requirements fail; primary: {must[0]} (1 other follows from it))"
    )
    assert [must[0], must[1]] == ["model.canonical-names", "model.canonical-layout"]

    partial = _build({ids[0]: "none", ids[1]: "skipped"})
    assert partial["conforms"] is None
    assert "function INCOMPLETE (2 requirements not checked;" in partial["verdict"]


def test_markdown_escapes_table_cells() -> None:
    data = _build({})
    data["requirements"][0]["status"] = "fail"
    data["requirements"][0]["message"] = "a | b\nsecond line"
    text = report.to_markdown(data)
    assert "| ❌ fail | a \\| b |" in text
    assert "second line" not in text


def test_summary_lines_list_failures_and_end_with_the_verdict() -> None:
    must = next(r.id for r in load_requirements() if r.level == "MUST")
    data = _build({must: "failed"})
    quiet = report.summary_lines(data)
    assert quiet[0].startswith("start here")
    assert quiet[1].split() == [must, "MUST", "fail"]
    assert quiet[2].strip() == "msg"
    assert quiet[-1] == data["verdict"]
    assert len(report.summary_lines(data, verbose=True)) == len(load_requirements()) + 4


def _exits(data: dict[str, Any]) -> dict[str, int]:
    return {
        require: report.exit_status(data, require=require)
        for require in ("claimed", "full", "function", "validated-input")
    }


# ---- the classes in the spec -------------------------------------------------------------------


def test_every_requirement_is_in_exactly_one_class_its_chapters() -> None:
    classes = load_classes()
    assert [c.name for c in classes] == ["function", "validated-input"]
    chapters = [chapter for c in classes for chapter in c.chapters]
    assert sorted(chapters) == sorted({r.chapter for r in REQUIREMENTS})
    assert len(chapters) == len(set(chapters))
    of_chapter = {chapter: c.name for c in classes for chapter in c.chapters}
    assert all(r.conformance_class == of_chapter[r.chapter] for r in REQUIREMENTS)
    assert {BY_ID[i].family for i in VALIDATED} == {"input"}
    assert "input" not in {BY_ID[i].family for i in FUNCTION}


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("### Class `a`\n\n- [1](01-x.md)\n", "02-y.md are in no conformance class"),
        (
            "### Class `a`\n\n- [1](01-x.md)\n- [2](02-y.md)\n\n### Class `b`\n\n- [2](02-y.md)\n",
            "02-y.md is in class a already",
        ),
        ("### Class `a`\n\n- [1](01-x.md)\n- [2](02-y.md)\n- [3](03-z.md)\n", "03-z.md, which"),
        ("Prose only.\n", "no '### Class `name`'"),
    ],
)
def test_a_malformed_class_section_is_refused(tmp_path: Path, classes: str, message: str) -> None:
    for name in ("01-x.md", "02-y.md"):
        (tmp_path / name).write_text("# x\n")
    (tmp_path / "README.md").write_text(f"# Spec\n\n## Conformance classes\n\n{classes}\n## Next\n")
    with pytest.raises(SpecFormatError, match=message):
        load_classes(tmp_path)


def test_a_folder_of_chapters_without_a_readme_has_no_classes(tmp_path: Path) -> None:
    (tmp_path / "01-x.md").write_text(
        textwrap.dedent(
            """\
            ### A title {#a.b}

            **Requirement `a.b`** · MUST

            Text that MUST hold.
            """
        )
    )
    assert [r.conformance_class for r in load_requirements(tmp_path)] == [""]


def test_the_readme_states_the_classes_and_the_principle() -> None:
    text = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    assert "GPT2LMHeadModel" in text
    assert "OpenAI's released code" in text
    for word in ("CONFORMS", "CONFORMS ON WHAT IT CLAIMS", "not claimed", "DOES NOT CONFORM"):
        assert f"**{word}**" in text


# ---- the verdict line --------------------------------------------------------------------------


def test_a_logits_only_adapter_does_not_read_conforms() -> None:
    """Only a few requirements checked (the rest not claimed): not a claim of conformance."""
    checked = FUNCTION_MUST[:8]
    data = _build({i: "not-claimed" for i in BY_ID if i not in checked})
    assert "CONFORMS;" not in data["verdict"]
    assert not data["verdict"].endswith("CONFORMS")
    assert data["verdict"].startswith(
        f"{HEAD}function CONFORMS ON WHAT IT CLAIMS ({len(checked)} of {len(FUNCTION_MUST)} MUST "
        f"requirements checked; not claimed: {', '.join(FUNCTION_MUST[8:11])}, ... "
        f"{len(FUNCTION_MUST) - 11} more); validated input not claimed ("
    )
    assert data["conforms"] is None
    assert _statuses(data) == {"function": "conforms-on-what-it-claims",
                               "validated-input": "not-claimed"}  # fmt: skip
    assert _exits(data) == {"claimed": 0, "full": 6, "function": 6, "validated-input": 6}


def test_function_conforms_and_validated_input_not_claimed() -> None:
    data = _build({i: "not-claimed" for i in VALIDATED})
    assert data["verdict"] == (
        f"{HEAD}function CONFORMS; validated input not claimed ({len(FUNCTION)} pass, "
        f"{len(VALIDATED)} not-claimed)"
    )
    assert data["conforms"] is True
    assert _exits(data) == {"claimed": 0, "full": 6, "function": 0, "validated-input": 6}


def test_every_class_conforms() -> None:
    data = _build({})
    assert data["verdict"] == (
        f"{HEAD}function CONFORMS; validated input CONFORMS ({len(REQUIREMENTS)} pass)"
    )
    assert data["conforms"] is True
    assert set(_exits(data).values()) == {0}
    assert report.exit_status(data, require="function,validated-input") == 0


@pytest.mark.parametrize("failing", [FUNCTION_MUST[3], VALIDATED_MUST[1]])
def test_a_must_failure_in_either_class_does_not_conform(failing: str) -> None:
    data = _build({failing: "failed"})
    failed_class = BY_ID[failing].conformance_class
    other = "validated-input" if failed_class == "function" else "function"
    assert data["classes"][failed_class]["status"] == "does-not-conform"
    assert data["classes"][other]["status"] == "conforms"
    title = failed_class.replace("-", " ")
    assert f"{title} DOES NOT CONFORM (1 MUST requirement fail: {failing})" in data["verdict"]
    assert data["conforms"] is False
    assert set(_exits(data).values()) == {1}


def test_a_should_failure_is_a_deviation_not_a_failure() -> None:
    data = _build({SHOULD: "failed"})
    assert data["conforms"] is True
    assert data["verdict"].endswith(f"; SHOULD/MAY deviations: {SHOULD}")
    assert report.exit_status(data, require="full") == 0
    # pytest's own status still fails the run: the SHOULD test failed.
    assert report.exit_status(data, require="full", pytest_status=1) == 1


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("declared deviation: x: why", "as the adapter declares"),
        ("listed in known.txt: it failed", "as listed in the xfails file"),
        ("a reason of its own", "as expected by an xfail marker"),
    ],
)
def test_an_expected_failure_says_where_it_comes_from(message: str, words: str) -> None:
    must = FUNCTION_MUST[0]
    data = _build({must: "xfailed"}, messages={must: message})
    assert f"function DOES NOT CONFORM (1 MUST requirement fail {words}: {must})" in data["verdict"]
    assert data["conforms"] is False
    if "xfails file" not in words:
        assert "xfails file" not in data["verdict"]


def test_a_declared_should_deviation_is_named_as_declared() -> None:
    data = _build({SHOULD: "xfailed"}, messages={SHOULD: "declared deviation: x"})
    assert data["verdict"].endswith(f"; SHOULD/MAY deviations: {SHOULD} (declared by the adapter)")
    assert "xfails file" not in data["verdict"]
    assert data["conforms"] is True


def test_unchecked_requirements_make_their_class_incomplete() -> None:
    data = _build({FUNCTION[0]: "none", FUNCTION[1]: "skipped"})
    assert "function INCOMPLETE (2 requirements not checked; no MUST failure" in data["verdict"]
    assert data["classes"]["validated-input"]["status"] == "conforms"
    assert data["conforms"] is None
    assert set(_exits(data).values()) == {6}


def test_an_untied_model_in_the_causal_lm_profile_is_not_held_to_the_tied_requirements() -> None:
    profile = load_profiles()["causal-lm"]
    outcomes = {i: "not-claimed" for i in profile.tied_only}
    outcomes.update({i: "not-claimed" for i in VALIDATED})
    untied = _build(outcomes, implementation={"name": "x", "tied_head": False}, profile=profile)
    in_function = [i for i in profile.requirements if i in FUNCTION_MUST]
    assert untied["verdict"].startswith(
        f"{HEAD.removesuffix(': ')}, causal-lm profile: function CONFORMS; validated input not "
        "claimed ("
    )
    assert untied["classes"]["function"]["must"] == len(in_function) - len(profile.tied_only)
    assert untied["conforms"] is True
    # A model that declares a tied head and does not claim them is held to them.
    tied = _build(outcomes, implementation={"name": "x", "tied_head": True}, profile=profile)
    assert tied["classes"]["function"]["status"] == "conforms-on-what-it-claims"


def test_a_report_written_before_classes_is_judged_by_the_chapters() -> None:
    data = _build({VALIDATED_MUST[0]: "failed"})
    for entry in data["requirements"]:
        del entry["conformance_class"]
    del data["classes"]
    line, conforms = report.verdict(
        data["requirements"], implementation="x", spec_version=SPEC_VERSION
    )
    assert line.startswith(f"{HEAD}function CONFORMS; validated input DOES NOT CONFORM")
    assert conforms is False
    assert report.exit_status(data, require="function") == 1


# ---- the exit status -------------------------------------------------------------------------


def test_without_require_the_exit_status_is_pytests() -> None:
    data = _build({FUNCTION_MUST[0]: "xfailed"})  # does not conform, but pytest saw no failure
    assert report.exit_status(data) == 0
    assert report.exit_status(data, pytest_status=1) == 1
    assert report.exit_status(data, require="claimed") == report.EXIT_DOES_NOT_CONFORM == 1


@pytest.mark.parametrize("status", [2, 3, 4, 5])
def test_pytests_own_errors_stand(status: int) -> None:
    assert report.exit_status(_build({}), require="full", pytest_status=status) == status


def test_an_interrupted_run_establishes_nothing() -> None:
    data = dict(_build({}), interrupted=True)
    assert report.exit_status(data, require="claimed") == report.EXIT_NOT_ESTABLISHED == 6


def test_nothing_claimed_establishes_nothing() -> None:
    data = _build({i: "not-claimed" for i in BY_ID})
    assert data["verdict"].startswith(f"{HEAD}function not claimed; validated input not claimed (")
    assert data["conforms"] is None
    assert set(_exits(data).values()) == {6}


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("full", ("full",)),
        ("claimed", ("claimed",)),
        ("function", ("function",)),
        (" function , validated-input ", ("function", "validated-input")),
    ],
)
def test_require_values(value: str, parsed: tuple[str, ...]) -> None:
    assert report.parse_require(value) == parsed


@pytest.mark.parametrize("value", ["", "everything", "function,full", "functions"])
def test_a_bad_require_value_names_the_choices(value: str) -> None:
    with pytest.raises(ValueError, match="expected 'claimed', 'full' or conformance class names"):
        report.parse_require(value)
    with pytest.raises(ValueError, match="function, validated-input"):
        report.exit_status(_build({}), require=value)


# ---- the suite itself ------------------------------------------------------------------------


def _suite(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "gpt2_conformance", *args,
         f"--conformance-report={out}", "--max-examples=3", "-p", "no:cacheprovider",
         "-W", "ignore", "-q", "--tb=no"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(tmp_path),
            "OMP_NUM_THREADS": "1",  # tiny models: threads only spin on a busy machine
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert data["verdict"] in done.stdout
    return data


def test_a_logits_only_adapter_with_the_exact_gelu_is_not_said_to_conform(tmp_path: Path) -> None:
    """The bug breaks a MUST requirement that only the claimed weights could show; the verdict
    must not read as conformance, and a gate that requires the function class fails."""
    (tmp_path / "logits_only.py").write_text(
        textwrap.dedent(
            """\
            from gpt2_zoo.weight_bugs import ExactGelu

            class LogitsOnlyExactGelu(ExactGelu):
                name = "logits-only-exact-gelu"
                capabilities = frozenset()
            """
        )
    )
    data = _suite(tmp_path, "--impl=logits_only:LogitsOnlyExactGelu")
    assert data["summary"]["fail"] == 0  # the bug is invisible to what was claimed
    assert data["classes"]["function"]["status"] == "conforms-on-what-it-claims"
    assert " function CONFORMS ON WHAT IT CLAIMS (" in data["verdict"]
    assert "validated input not claimed" in data["verdict"]
    assert data["conforms"] is None
    assert report.exit_status(data, require="function") == report.EXIT_NOT_ESTABLISHED


def _check_the_principle(data: dict[str, Any]) -> None:
    """Every MUST requirement of the function class passes; every other outcome of the class is
    a deviation the adapter declares from a requirement whose text names transformers."""
    from gpt2_conformance.adapters.transformers_gpt2 import TransformersGPT2Adapter

    declared = TransformersGPT2Adapter.declared_deviations
    for entry in data["requirements"]:
        if entry["conformance_class"] != "function" or entry["status"] == "pass":
            continue
        rid = entry["id"]
        assert entry["status"] == "xfail", f"{rid}: {entry['status']}: {entry['message']}"
        assert entry["message"].startswith("declared deviation"), (rid, entry["message"])
        assert rid in declared, rid
        assert "transformers" in BY_ID[rid].text, f"{rid}'s text does not name transformers"
        assert entry["level"] != "MUST", f"{rid}: a MUST requirement transformers fails"
    assert data["classes"]["function"]["status"] == "conforms", data["verdict"]


def test_transformers_meets_the_function_class_as_it_is(tmp_path: Path) -> None:
    """The function class's principle (spec README), on a live run of transformers' GPT-2 with
    SDPA attention; the published reports below cover eager attention too."""
    pytest.importorskip("transformers")
    data = _suite(tmp_path, "--impl=transformers-sdpa")
    _check_the_principle(data)
    assert data["conforms"] is True
    assert data["verdict"].startswith(
        f"gpt2-conformance: transformers-sdpa, spec {SPEC_VERSION}: function CONFORMS; "
        "validated input not claimed ("
    )


@pytest.mark.parametrize("name", ["transformers-eager", "transformers-sdpa"])
def test_the_published_transformers_reports_meet_the_function_class(name: str) -> None:
    data = json.loads((ROOT / "docs/data/reports" / f"{name}.json").read_text(encoding="utf-8"))
    for entry in data["requirements"]:
        entry.setdefault("conformance_class", BY_ID[entry["id"]].conformance_class)
    data["classes"] = report.class_verdicts(data["requirements"])
    _check_the_principle(data)


@pytest.mark.parametrize(("require", "status"), [("full", 6), ("claimed", 0), ("function", 6)])
def test_the_plugin_exits_as_conformance_require_decides(
    tmp_path: Path, require: str, status: int
) -> None:
    """numpy claims no key/value cache: its function class conforms only on what it claims, so a
    gate that requires the class (or everything) is not established, and one that takes what
    was claimed is met; the summary says which, with the status the run exits with."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "gpt2_conformance", "--impl=numpy",
         f"--conformance-require={require}", "--max-examples=2", "-p", "no:cacheprovider",
         "-q", "--tb=no"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == status, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--conformance-require={require}: " in done.stdout
    assert f"(exit status {status})" in done.stdout
