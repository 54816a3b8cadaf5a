"""A report never claims more than the run showed (gpt2_conformance.report, .plugin).

A run that dies leaves an incomplete report, not the previous run's verdict; ``report check``
turns a report into an exit status; an adapter module that exits on import is a usage error;
properties that never ran (Ctrl-C, ``-x``) are ``not-run``. Runs use pytester on fake adapters
and fake properties written into a temporary folder; a run that kills its own process is a
subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import NOT_CLAIMED

from gpt2_conformance import report

pytest_plugins = ["pytester"]

ADAPTERS = """
import os
import sys

import numpy as np

from gpt2_conformance.adapter import Adapter, Implementation


class Impl(Implementation):
    def __init__(self, config, mode):
        self.config, self.mode = config, mode

    def logits(self, tokens, *, attention_mask=None, position_ids=None):
        if self.mode == "exit":
            os._exit(0)  # an implementation that ends the process mid-run
        B, T = np.shape(tokens)
        return np.zeros((B, T, self.config.vocab_size))


class Fake(Adapter):
    name = "fake"
    version = "1.0"
    capabilities = frozenset({"loss"})
    mode = "ok"

    def build(self, config, *, params, seed, device, dtype):
        return Impl(config, self.mode)


class Exiting(Fake):
    mode = "exit"


adapter = Fake()
"""

EXITS_ON_IMPORT = """
import sys

sys.exit("this adapter module exits when imported")
"""

# Every requirement of the spec is checked by one trivial property (so that a run against the
# fake adapter CONFORMS); the first one calls the implementation.
PROPERTY = """

@pytest.mark.requirement({rid!r})
def test_{n}(suite):
    impl, _ = suite.build(CONFIG, requirement={rid!r})
    checks.call({rid!r}, "computing logits", impl.logits, np.zeros((1, 2), dtype=np.int64))
"""

HEADER = """
import numpy as np
import pytest

from gpt2_conformance import checks
from gpt2_spec import GPT2Config

CONFIG = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
"""


@pytest.fixture
def fake(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(fake_gpt2=ADAPTERS, exits_on_import=EXITS_ON_IMPORT)
    pytester.syspathinsert()
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    monkeypatch.delenv("GPT2_CONFORMANCE_IMPL", raising=False)
    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    return pytester


def every_requirement_properties() -> str:
    from gpt2_spec import load_requirements

    ids = [r.id for r in load_requirements()]
    return HEADER + "".join(PROPERTY.format(rid=rid, n=n) for n, rid in enumerate(ids))


def check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt2_conformance.report", "check", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# A run that dies leaves no stale verdict
# --------------------------------------------------------------------------------------------


def test_a_run_that_exits_mid_run_leaves_an_incomplete_report(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=every_requirement_properties())
    args = ("-p", "no:cacheprovider", "--conformance-report=r.json", "--conformance-markdown=r.md")
    conforming = fake.runpytest_subprocess("--impl=fake_gpt2:Fake", *args, timeout=300)
    assert conforming.ret == pytest.ExitCode.OK
    path = fake.path / "r.json"
    assert load(path)["conforms"] is True
    assert load(path)["complete"] is True
    assert check(path).returncode == report.CHECK_CONFORMS

    exiting = fake.runpytest_subprocess("--impl=fake_gpt2:Exiting", *args, timeout=300)
    assert exiting.ret == 0  # os._exit(0): the process claims success
    data = load(path)
    assert data["complete"] is False
    assert data["verdict"] is None
    assert data["conforms"] is None
    assert data["implementation"]["adapter"] == "fake_gpt2:Exiting"
    assert "did not finish" in data["reason"]
    assert "No verdict" in (fake.path / "r.md").read_text(encoding="utf-8")
    checked = check(path)
    assert checked.returncode == report.CHECK_INCOMPLETE
    assert "incomplete report" in checked.stdout
    assert not list(fake.path.glob(".r.json.*"))  # no temporary file left behind


def test_the_final_report_replaces_the_file_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out" / "r.json"
    replaced: list[tuple[str, str]] = []
    real_replace = report.os.replace

    def spy(source: Any, target: Any) -> None:
        replaced.append((str(source), str(target)))
        assert Path(source).parent == Path(target).parent  # same folder: a rename, atomic
        assert json.loads(Path(source).read_text(encoding="utf-8")) == {"x": 1}
        real_replace(source, target)

    monkeypatch.setattr(report.os, "replace", spy)
    report.write_json({"x": 1}, path)
    assert len(replaced) == 1
    assert replaced[0][1] == str(path)
    assert load(path) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_merge_refuses_an_incomplete_part() -> None:
    part = report.incomplete_report("killed", implementation={"name": "x"})
    with pytest.raises(report.MergeError, match="incomplete report"):
        report.merge_reports([part, part])


# --------------------------------------------------------------------------------------------
# report check
# --------------------------------------------------------------------------------------------


def _report(statuses: dict[str, str], **fields: Any) -> dict[str, Any]:
    """A report whose verdict is computed by report.verdict from the given statuses."""
    entries = [
        {"id": rid, "level": "MUST", "status": s, "message": ""} for rid, s in statuses.items()
    ]
    line, conforms = report.verdict(entries, implementation="x", spec_version="1")
    return {
        "requirements": entries,
        "verdict": line,
        "conforms": conforms,
        "complete": True,
        "interrupted": False,
        "collection_errors": [],
        **fields,
    }


@pytest.mark.parametrize(
    ("statuses", "fields", "require", "expected"),
    [
        # a MUST requirement not claimed: no overall verdict (conforms only on what it claims)
        ({"a": "pass", "b": "not-claimed"}, {}, (), report.CHECK_INCOMPLETE),
        ({"a": "pass"}, {}, (), report.CHECK_CONFORMS),
        ({"a": "pass", "b": "pass"}, {}, ("a", "b"), report.CHECK_CONFORMS),
        ({"a": "pass", "b": "fail"}, {}, (), report.CHECK_DOES_NOT_CONFORM),
        ({"a": "pass", "b": "not-claimed"}, {}, ("b",), report.CHECK_DOES_NOT_CONFORM),
        ({"a": "pass", "b": "not-run"}, {}, (), report.CHECK_INCOMPLETE),
        ({"a": "pass"}, {"interrupted": True}, (), report.CHECK_INCOMPLETE),
        ({"a": "pass"}, {"complete": False, "reason": "killed"}, (), report.CHECK_INCOMPLETE),
        ({"a": "pass"}, {}, ("missing.id",), report.CHECK_INCOMPLETE),
    ],
)
def test_check_report_exit_statuses(
    statuses: dict[str, str], fields: dict[str, Any], require: tuple[str, ...], expected: int
) -> None:
    status, lines = report.check_report(_report(statuses, **fields), require=require)
    assert status == expected, lines


@pytest.mark.parametrize(
    ("statuses", "classes", "expected"),
    [
        ({"a": "pass", "b": "not-claimed"}, "claimed", report.CHECK_CONFORMS),
        ({"a": "pass", "b": "not-claimed"}, "full", report.CHECK_INCOMPLETE),
        ({"a": "pass", "b": "pass"}, "full", report.CHECK_CONFORMS),
        ({"a": "pass", "b": "fail"}, "claimed", report.CHECK_DOES_NOT_CONFORM),
    ],
)
def test_check_report_classes_sets_the_coverage_a_gate_requires(
    statuses: dict[str, str], classes: str, expected: int
) -> None:
    status, lines = report.check_report(_report(statuses), classes=classes)
    assert status == expected, lines


def test_check_exits_non_zero_on_an_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert check(bad).returncode == report.CHECK_INCOMPLETE
    assert check(tmp_path / "absent.json").returncode == report.CHECK_INCOMPLETE
    assert report.check_report([1, 2])[0] == report.CHECK_INCOMPLETE


def test_the_three_check_statuses_differ() -> None:
    codes = {report.CHECK_CONFORMS, report.CHECK_DOES_NOT_CONFORM, report.CHECK_INCOMPLETE}
    assert len(codes) == 3
    assert report.CHECK_CONFORMS == 0


# --------------------------------------------------------------------------------------------
# An adapter module that exits on import
# --------------------------------------------------------------------------------------------


def test_an_adapter_module_that_exits_on_import_is_a_usage_error(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=HEADER + PROPERTY.format(rid="objective.sum-of-terms", n=0))
    stale = fake.path / "r.json"
    stale.write_text(json.dumps(_report({"a": "pass"})), encoding="utf-8")
    assert check(stale).returncode == report.CHECK_CONFORMS
    result = fake.runpytest_subprocess(
        "-p", "no:cacheprovider", "--impl=exits_on_import", "--conformance-report=r.json"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert errors == [
        "ERROR: --impl=exits_on_import: importing 'exits_on_import' called "
        "sys.exit('this adapter module exits when imported'); an adapter module must not exit "
        "when imported"
    ]
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    # A run stopped by a usage error leaves no stale verdict either.
    assert load(stale)["complete"] is False
    assert check(stale).returncode == report.CHECK_INCOMPLETE


# --------------------------------------------------------------------------------------------
# Properties that never ran
# --------------------------------------------------------------------------------------------

INTERRUPTED = (
    HEADER
    + NOT_CLAIMED
    + """


@pytest.mark.requirement("objective.ignore-index")
def test_b_passes(suite):
    pass


@pytest.mark.requirement("objective.one-row-per-position")
def test_c_interrupt(suite):
    raise KeyboardInterrupt


@pytest.mark.requirement("objective.sum-of-terms", "objective.ignore-index")
def test_d_never_runs(suite):
    pass
"""
)


def test_properties_that_never_ran_after_ctrl_c_are_not_run(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=INTERRUPTED)
    result = fake.runpytest_subprocess(
        "-p", "no:cacheprovider", "--impl=fake_gpt2:Fake", "--conformance-report=r.json"
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = load(fake.path / "r.json")
    status = {r["id"]: r["status"] for r in data["requirements"]}
    # One test of each was skipped or passed, another never ran: neither is fully checked.
    assert status["objective.sum-of-terms"] == "not-run"
    assert status["objective.ignore-index"] == "not-run"
    assert status["objective.one-row-per-position"] == "not-run"
    outcomes = {
        t["nodeid"].rpartition("::")[2]: t["outcome"]
        for r in data["requirements"]
        for t in r["tests"]
    }
    assert outcomes == {
        "test_not_claimed": "not-claimed",
        "test_b_passes": "passed",
        "test_c_interrupt": "not-run",
        "test_d_never_runs": "not-run",
    }
    assert data["interrupted"] is True
    assert data["conforms"] is None
    assert check(fake.path / "r.json").returncode == report.CHECK_INCOMPLETE


def test_properties_after_a_stop_on_first_failure_are_not_run(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_props=INTERRUPTED.replace("raise KeyboardInterrupt", "raise AssertionError('x')")
    )
    result = fake.runpytest_inprocess(
        "-p", "no:cacheprovider", "--impl=fake_gpt2:Fake", "--conformance-report=r.json", "-x"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    status = {r["id"]: r["status"] for r in load(fake.path / "r.json")["requirements"]}
    assert status["objective.one-row-per-position"] == "fail"
    assert status["objective.sum-of-terms"] == "not-run"
    assert status["objective.ignore-index"] == "not-run"
