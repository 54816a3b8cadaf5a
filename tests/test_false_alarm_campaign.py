"""The false-alarm campaign (``python -m gpt2_evidence.false_alarm_campaign``) and the plugin's
``--conformance-seeds`` option it relies on.

The end-to-end tests run the script on tiny slices (the ``dev`` profile, one seed): once against the
reference, which must be recorded as a clean seed, and once against a broken GPT-2 from the zoo
(:mod:`gpt2_zoo`), which must be recorded as a failure with its requirement, seed and
counterexample, so the campaign provably can report a false alarm when there is one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt2_evidence import false_alarm_campaign as campaign
from gpt2_zoo.sequence_bugs import FullAttention

REPO = Path(__file__).resolve().parent.parent


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt2_evidence.false_alarm_campaign", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGS -p no:cacheprovider`` in the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def _collect_reference(*args: str) -> subprocess.CompletedProcess[str]:
    """Collect (only) the suite's properties for the reference, with ARGS."""
    return _pytest(
        "--pyargs", "gpt2_conformance", "--impl=reference", *args, "--collect-only", "-q"
    )


def _property_count() -> int:
    """How many properties pytest collects for the reference (one seed)."""
    done = _collect_reference("--conformance-seeds=0:1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return sum(1 for line in done.stdout.splitlines() if "[seed=0]" in line)


# --- end to end --------------------------------------------------------------------------------


def test_a_reference_slice_is_recorded_as_a_clean_seed(tmp_path: Path) -> None:
    out = tmp_path / "campaign.json"
    done = _run_script(
        *("--impls", "reference", "--dtypes", "float32", "--seeds", "0:1", "--profile", "dev"),
        *("--out", str(out), "--log-dir", str(tmp_path / "logs")),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["schema"] == campaign.SCHEMA
    [session] = data["sessions"]
    assert (session["impl"], session["dtype"], session["profile"]) == (
        "reference",
        "float32",
        "dev",
    )
    assert session["max_examples"] == 5  # the plugin's dev profile
    assert session["seeds_requested"] == [0, 1]
    assert session["seeds_completed"] == [0]
    assert session["failures"] == []
    properties = _property_count()
    assert session["properties"] == properties
    not_claimed = session["outcomes"].get("not-claimed", 0)
    assert session["properties_run"]["0"] + not_claimed == properties
    assert session["wall_s"] > 0
    assert session["provenance"]["machine"]["cores"] == os.cpu_count()
    assert session["provenance"]["software"]["hypothesis"]
    assert session["provenance"]["date"] == session["started"]
    [row] = campaign.summarize(data)
    assert row["seeds"] == [0]
    assert row["examples"] == 5 * session["properties_run"]["0"]
    markdown = campaign.render_markdown(data)
    assert "| `reference` | float32 | dev (5 per property) | 1 (0) |" in markdown
    assert "### Failures recorded (0: 0 open, 0 cleared by a rerun)" in markdown
    # The suite's report carries margins, and the session keeps the worst per property.
    assert session["margins"], "no property recorded a margin"
    assert all(0 <= m["margin"] <= 1 and m["seed"] == 0 for m in session["margins"].values())
    assert "### Margins" in markdown
    assert "<svg" in markdown

    # A rerun with the same --out resumes: the seed is done, nothing runs again.
    again = _run_script(
        *("--impls", "reference", "--dtypes", "float32", "--seeds", "0:1", "--profile", "dev"),
        *("--out", str(out), "--log-dir", str(tmp_path / "logs")),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(json.loads(out.read_text(encoding="utf-8"))["sessions"]) == 1


def test_a_broken_implementation_is_recorded_as_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "campaign.json"
    prop = "test_changing_future_tokens_changes_no_earlier_row"
    done = _run_script(
        *("--impls", "gpt2_zoo.sequence_bugs:FullAttention", "--dtypes", "float32"),
        *("--seeds", "3:4", "--profile", "dev", "--out", str(out)),
        *("--log-dir", str(tmp_path / "logs"), "--", "-k", prop),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    [session] = json.loads(out.read_text(encoding="utf-8"))["sessions"]
    assert session["extra_args"] == ["-k", prop]
    assert session["seeds_completed"] == [3]  # the seed ran to the end: its failure is a result
    [failure] = session["failures"]
    assert failure["seed"] == 3
    assert failure["outcome"] == "failed"
    assert failure["property"].endswith(f"::{prop}")
    assert failure["requirements"] == ["causality.future-invisible"]
    assert "causality.future-invisible" in FullAttention.must_fail
    assert failure["message"].startswith("causality.future-invisible")
    assert "reproduce_failure" in failure["counterexample"]
    assert prop in failure["counterexample"]
    markdown = campaign.render_markdown(json.loads(out.read_text(encoding="utf-8")))
    assert "### Failures recorded (1: 1 open, 0 cleared by a rerun)" in markdown
    assert "--hypothesis-seed=3" in markdown

    # --rerun-findings runs only the seed with the open finding; the bug is still there.
    again = _run_script(
        *("--impls", "gpt2_zoo.sequence_bugs:FullAttention", "--dtypes", "float32"),
        *("--seeds", "0:10", "--profile", "dev", "--out", str(out), "--rerun-findings"),
        *("--log-dir", str(tmp_path / "logs"), "--", "-k", prop),
    )
    assert again.returncode == 1, again.stdout + again.stderr
    _found, rerun = json.loads(out.read_text(encoding="utf-8"))["sessions"]
    assert rerun["seeds_requested"] == [3, 4]
    assert [f["seed"] for f in rerun["failures"]] == [3]
    data = json.loads(out.read_text(encoding="utf-8"))
    impl = "gpt2_zoo.sequence_bugs:FullAttention"
    assert campaign.open_finding_seeds(data, impl, "float32", "dev", ["-k", prop]) == {3}


def test_the_budget_stops_a_session_and_keeps_its_completed_seeds(tmp_path: Path) -> None:
    # How long one seed takes on this machine now (a busy machine takes several times longer
    # than a quiet one): the budget below leaves room for two, so the test does not depend on
    # the machine's load.
    first = tmp_path / "one-seed.json"
    done = _run_script(
        *("--impls", "reference", "--dtypes", "float32", "--seeds", "0:1"),
        *("--profile", "dev", "--out", str(first), "--log-dir", str(tmp_path / "logs-1")),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [one] = json.loads(first.read_text(encoding="utf-8"))["sessions"]
    budget = max(60, round(2.5 * one["wall_s"]))
    out = tmp_path / "campaign.json"
    done = _run_script(
        *("--impls", "reference", "--dtypes", "float32", "--seeds", "0:200", "--chunk", "200"),
        *("--profile", "dev", "--budget-seconds", str(budget), "--out", str(out)),
        *("--log-dir", str(tmp_path / "logs")),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [session] = json.loads(out.read_text(encoding="utf-8"))["sessions"]
    assert session["stopped_by_budget"]
    assert session["wall_s"] < budget + 30  # interrupted at the deadline, not run to the end
    completed = session["seeds_completed"]
    assert completed, f"no seed of the dev profile finished within {budget} s"
    assert completed == list(range(len(completed)))  # seed by seed: a prefix of the range
    assert len(completed) < 200


# --- the plugin's --conformance-seeds ----------------------------------------------------------


def _draws(*args: str) -> list[str]:
    """The examples one property draws, as hypothesis prints them in verbose mode."""
    done = _pytest(
        "--impl=reference", "--max-examples=3", "--hypothesis-verbosity=verbose", "-s", "-q", *args
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("Draw ")]
    assert lines, done.stdout[-3000:]
    return [re.sub(r"0x[0-9a-f]+", "0x", line) for line in lines]


def test_seed_n_of_a_seeded_session_draws_what_hypothesis_seed_n_draws() -> None:
    prop = "conformance/test_objective.py::test_zero_counted_targets_give_sum_zero_and_no_mean"
    seeded = _draws("--conformance-seeds=7:9", f"{prop}[seed=8]")
    alone = _draws("--hypothesis-seed=8", prop)
    other = _draws("--hypothesis-seed=7", prop)
    assert seeded == alone
    assert seeded != other


def test_conformance_seeds_repeats_each_property_once_per_seed_in_seed_order() -> None:
    done = _collect_reference("--conformance-seeds=4:6")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seeds = [int(m[1]) for m in re.finditer(r"\[seed=(\d+)\]", done.stdout)]
    assert seeds
    assert set(seeds) == {4, 5}
    assert seeds == sorted(seeds)  # seed-major: a run cut short leaves whole seeds done
    assert seeds.count(4) == seeds.count(5)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--conformance-seeds=5:3", "--conformance-seeds=5:3: give A:B"),
        ("--conformance-seeds=x", "--conformance-seeds=x: give A:B"),
        ("--hypothesis-seed=1", "give only one"),
    ],
)
def test_conformance_seeds_rejects_bad_values(option: str, expected: str) -> None:
    extra = ["--conformance-seeds=0:2"] if option.startswith("--hypothesis") else []
    done = _collect_reference(option, *extra)
    assert done.returncode == 4  # usage error
    assert expected in done.stderr


# --- the script's pieces -----------------------------------------------------------------------


def test_seed_node_ids_are_split_into_property_and_seed() -> None:
    split = campaign.split_nodeid
    assert split("c/test_a.py::test_b[seed=12]") == ("c/test_a.py::test_b", 12)
    assert split("c/test_a.py::test_b[x1-seed=3]") == ("c/test_a.py::test_b[x1]", 3)
    assert split("c/test_a.py::test_b[seed=3-x1]") == ("c/test_a.py::test_b[x1]", 3)
    assert split("c/test_a.py::test_b") == ("c/test_a.py::test_b", None)


def test_seed_lists_are_shown_as_ranges() -> None:
    assert campaign.seed_ranges([5, 0, 1, 2, 7, 8]) == "0-2, 5, 7-8"
    assert campaign.seed_ranges([4]) == "4"
    assert campaign.seed_ranges([]) == ""


def test_bad_seed_ranges_are_refused() -> None:
    assert campaign.parse_seeds("2:5") == range(2, 5)
    for text in ("5:2", "3", "a:b", "-1:3", "3:3"):
        with pytest.raises(campaign.CampaignError, match="give A:B"):
            campaign.parse_seeds(text)


def _report(tests: dict[str, str]) -> dict[str, Any]:
    """A minimal suite report: one requirement per test node id and outcome."""
    return {
        "hypothesis": {"max_examples": 200},
        "interrupted": True,
        "requirements": [
            {
                "id": f"req.{i}",
                "tests": [
                    {"nodeid": nodeid, "outcome": outcome, "message": f"m{i}", "hypothesis": "ex"}
                ],
            }
            for i, (nodeid, outcome) in enumerate(tests.items())
        ],
    }


def test_only_seeds_whose_every_property_finished_count_but_every_failure_is_kept() -> None:
    properties = ["t.py::a", "t.py::b"]
    report = _report(
        {
            "t.py::a[seed=0]": "passed",
            "t.py::b[seed=0]": "not-claimed",
            "t.py::a[seed=1]": "failed",  # seed 1 was cut short before b ran
        }
    )
    got = campaign.read_session(report, [0, 1], properties)
    assert got["seeds_completed"] == [0]
    assert got["properties_run"] == {"0": 1}
    [failure] = got["failures"]
    assert (failure["seed"], failure["property"], failure["requirements"]) == (
        1,
        "t.py::a",
        ["req.2"],
    )
    assert got["max_examples"] == 200


def test_the_worst_margin_per_property_is_kept_with_its_seed() -> None:
    properties = ["t.py::a", "t.py::b"]
    report = _report(
        {
            "t.py::a[seed=0]": "passed",
            "t.py::b[seed=0]": "passed",
            "t.py::a[seed=1]": "passed",
            "t.py::b[seed=1]": "skipped",
        }
    )
    margins = {"t.py::a[seed=0]": 0.25, "t.py::a[seed=1]": 0.5, "t.py::b[seed=0]": None}
    for requirement in report["requirements"]:
        for test in requirement["tests"]:
            test["margin"] = margins.get(test["nodeid"])
    got = campaign.read_session(report, [0, 1], properties)
    assert got["margins"] == {"t.py::a": {"margin": 0.5, "seed": 1, "requirements": ["req.2"]}}


def test_the_margins_table_takes_the_worst_over_sessions_per_column() -> None:
    def margins(value: float, seed: int) -> dict[str, Any]:
        return {"t.py::a": {"margin": value, "seed": seed, "requirements": ["r.a"]}}

    trained = ["--checkpoint=docs/data/trained"]
    sessions = [
        _session([0], "A", margins=margins(0.2, 0)),
        _session([1], "A", margins=margins(0.7, 1)),
        _session([2], "A", margins=margins(0.1, 2), extra_args=trained),
    ]
    data = {"schema": campaign.SCHEMA, "sessions": sessions}
    table = campaign.margin_table(campaign.summarize(data))
    assert table["columns"] == ["reference float32", "reference float32 trained"]
    [prop] = table["properties"]
    assert prop["margins"] == [0.7, 0.1]
    assert (prop["worst"], prop["worst_column"], prop["worst_seed"]) == (
        0.7,
        "reference float32",
        1,
    )
    markdown = campaign.render_markdown(data)
    assert "**Maximum: 0.700**" in markdown
    assert "above the goal of 0.5: `t::a` (0.700)" in markdown
    assert "| float32 (trained) |" in markdown
    # one margins table per dtype, random weights' columns before trained ones
    assert "#### float32\n\n| property (requirements) | ref | ref+t |" in markdown
    assert "| `a`<br>`r.a` | 0.700 | 0.100 |" in markdown
    assert "*ref* = `reference`" in markdown
    assert "- `t::a`: 0.700, reference float32, seed 1" in markdown


def test_the_tables_say_which_seeds_ran_on_which_commit() -> None:
    """The run table names, per row, the suite's commits and the seeds completed on each; the
    margins name the commit of the worst and, per column, the seeds that carried margins."""

    def margins(value: float, seed: int) -> dict[str, Any]:
        return {"t.py::a": {"margin": value, "seed": seed, "requirements": ["r.a"]}}

    sessions = [
        _session([0, 1, 2], "A", software={"commit": "aaa"}),  # before margins were recorded
        _session([3], "A", software={"commit": "bbb"}, margins=margins(0.3, 3)),
        _session([4, 5], "A", software={"commit": "ccc"}, margins=margins(0.4, 5)),
        _session([], "A", software={"commit": "ccc"}),  # stopped before a seed completed
        _session([6], "A"),  # no commit recorded
    ]
    data = {"schema": campaign.SCHEMA, "sessions": sessions}
    [row] = campaign.summarize(data)
    assert row["commits"] == {"aaa": [0, 1, 2], "bbb": [3], "ccc": [4, 5], "unrecorded": [6]}
    assert row["margin_commits"] == {"bbb": [3], "ccc": [4, 5]}
    markdown = campaign.render_markdown(data)
    assert "| `aaa` 0-2; `bbb` 3; `ccc` 4-5; `unrecorded` 6 |" in markdown
    assert "**Maximum: 0.400** (`t::a`, reference float32, seed 5, commit `ccc`)" in markdown
    assert "- reference float32: `bbb` 3; `ccc` 4-5" in markdown
    assert campaign.commits_cell({"ddd": []}) == "`ddd` none completed"


def _session(seeds: list[int], machine: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{machine}-{seeds}",
        "impl": "reference",
        "dtype": "float32",
        "profile": "thorough",
        "max_examples": 200,
        "extra_args": [],
        "seeds_completed": seeds,
        "properties_run": {str(s): 50 for s in seeds},
        "failures": [],
        "wall_s": 100.0 * len(seeds),
        "started": "2026-01-01T00:00:00+00:00",
        "machine": {"label": machine},
        "software": {"torch": "2.13"},
        **extra,
    }


def test_merging_adds_other_machines_sessions_once_and_counts_each_seed_once() -> None:
    data = {"schema": campaign.SCHEMA, "sessions": [_session([0, 1], "A")]}
    other = {"schema": campaign.SCHEMA, "sessions": [_session([1, 2, 3], "B")]}
    assert campaign.merge(data, [other, other]) == 1
    [row] = campaign.summarize(data)
    assert row["seeds"] == [0, 1, 2, 3]
    assert row["examples"] == 4 * 50 * 200  # seed 1 ran on both machines, counted once
    assert row["machines"] == ["A", "B"]
    assert "| 4 (0-3) | 40,000 | 0 |" in campaign.render_markdown(data)


def test_sessions_of_both_provenance_layouts_are_summarised_together() -> None:
    """Sessions recorded before the shared provenance layout (``machine``, ``software``) and after
    it (``provenance``) merge into one row; a fact the record leaves empty is not shown."""
    new = _session([2], "B")
    del new["machine"], new["software"]
    new["provenance"] = {
        "date": new["started"],
        "machine": {"label": "B", "cores": 4},
        "software": {"torch": "2.14", "cuda": None, "commit": "ccc"},
    }
    data = {"schema": campaign.SCHEMA, "sessions": [_session([0, 1], "A"), new]}
    [row] = campaign.summarize(data)
    assert row["seeds"] == [0, 1, 2]
    assert row["machines"] == ["A", "B"]
    assert row["software"] == [{"torch": "2.13"}, {"torch": "2.14", "commit": "ccc"}]
    assert "Software, by session:\n\n- commit ccc, torch 2.14\n- torch 2.13\n" in (
        campaign.render_markdown(data)
    )


def test_a_finding_is_cleared_by_a_later_session_that_passes_its_seed() -> None:
    failure = {
        "seed": 1,
        "property": "t.py::a",
        "requirements": ["req.0"],
        "outcome": "failed",
        "message": "req.0: too far",
        "counterexample": "ex",
    }
    found = _session([0, 1], "A", id="found", failures=[failure], software={"commit": "aaa"})
    again = _session(
        [1],
        "A",
        id="again",
        failures=[failure],
        started="2026-01-02T00:00:00+00:00",
        software={"commit": "aaa"},
    )
    data = {"schema": campaign.SCHEMA, "sessions": [found, again]}
    assert campaign.open_finding_seeds(data, "reference", "float32", "thorough") == {1}
    assert "| 2 |" in campaign.render_markdown(data)  # two open failures (one per session)

    fixed = _session(
        [1], "A", id="fixed", started="2026-01-03T00:00:00+00:00", software={"commit": "bbb"}
    )
    data["sessions"].append(fixed)
    assert campaign.open_finding_seeds(data, "reference", "float32", "thorough") == set()
    [row] = campaign.summarize(data)
    assert [f["cleared_by"]["commit"] for f in row["failures"]] == ["bbb", "bbb"]
    markdown = campaign.render_markdown(data)
    assert "| 0 (2 cleared) |" in markdown
    assert "### Failures recorded (2: 0 open, 2 cleared by a rerun)" in markdown
    assert "**Cleared** 2026-01-03: seed 1 passes from commit bbb on." in markdown
    assert [f["commit"] for f in row["failures"]] == ["aaa", "aaa"]  # where each one failed
    assert "Reproduce, in a checkout of the suite at `aaa`" in markdown
    # A session of another dtype clears nothing.
    other = _session([1], "A", id="other", dtype="bfloat16", started="2026-01-04T00:00:00+00:00")
    data["sessions"] = [found, other]
    assert campaign.open_finding_seeds(data, "reference", "float32", "thorough") == {1}


def test_results_files_of_another_kind_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(campaign.CampaignError, match="not a false-alarm campaign file"):
        campaign.load_data(path)
    assert campaign.load_data(tmp_path / "missing.json") == campaign.empty_data()


def test_render_markdown_without_results_says_so() -> None:
    assert "No campaign results" in campaign.render_markdown(campaign.empty_data())


# --- stopping a session: one SIGINT can be lost ---------------------------------------------------

# A child that loses its first SIGINT, as CPython does when the KeyboardInterrupt lands in a
# finaliser ("Exception ignored in ... __del__"), and takes the second as pytest would: it creates
# the marker (what gpt2_evidence.interrupt_marker does) and exits with pytest's status 2. A handler,
# not a try around the loop: a KeyboardInterrupt raised between the loop's statements (the first
# signal can arrive just after "ready", on a busy machine it did) would escape the try.
_LOSES_FIRST_SIGINT = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
seen = []

def handler(signum, frame):
    seen.append(signum)
    if len(seen) == 1:
        return  # lost
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # taken: ignore repeats, as the plugin does
    marker.touch()
    sys.exit(2)

signal.signal(signal.SIGINT, handler)
print("ready", flush=True)
while True:
    time.sleep(0.02)
"""


def test_a_lost_sigint_is_repeated_until_the_session_takes_it(tmp_path: Path) -> None:
    marker = tmp_path / "session.interrupted"
    process = subprocess.Popen(
        [sys.executable, "-c", _LOSES_FIRST_SIGINT, str(marker)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        campaign._stop(process, marker, grace=60.0, repeat=2.0)
    finally:
        if process.poll() is None:
            process.kill()
    # Interrupted as pytest would be (status 2, marker made), not ended by SIGTERM after the grace.
    assert process.returncode == 2
    assert marker.exists()


def test_the_marker_plugin_records_that_pytest_took_the_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2_evidence import interrupt_marker

    marker = tmp_path / "m"
    monkeypatch.setenv(interrupt_marker.ENV, str(marker))
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupt_marker.pytest_keyboard_interrupt(excinfo=None)
        assert marker.exists()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # repeats cannot break the report
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_results_file_does_not_make_the_recorded_commit_dirty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpt2_evidence import provenance

    status = {"text": " M docs/data/false-alarms.json\n"}

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        text = "abc1234\n" if args[0] == "rev-parse" else status["text"]
        return subprocess.CompletedProcess(["git", *args], 0, stdout=text, stderr="")

    monkeypatch.setattr(provenance, "_git", git)
    results = provenance.REPOSITORY / "docs" / "data" / "false-alarms.json"
    assert campaign.suite_revision(results) == "abc1234"
    assert campaign.suite_revision(Path("/elsewhere.json")) == "abc1234-dirty"
    status["text"] += " M conformance/checks.py\n"
    assert campaign.suite_revision(results) == "abc1234-dirty"
