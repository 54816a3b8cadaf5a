"""The conformance suite catches sequence bugs (spec chapters 2 to 4).

Each broken GPT-2 of ``tests/broken/sequence_bugs.py`` has one realistic bug and names the
requirements it must fail. The suite runs against it, restricted to the properties tagged with
those requirements, with a small derandomized example count; each named requirement must be
reported failed, with a message in its own terms. The reference runs the same properties and must
pass them: a property that failed the reference would "catch" every bug.

The runs happen in two subprocesses, away from this process's hypothesis settings and imports.
Each subprocess imports torch once and runs ``pytest.main`` once per implementation (a fresh
pytest process per run would spend most of the time importing); the two share the CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpt2_conformance
from gpt2_spec import GPT2Config

if str(Path(__file__).parent) not in sys.path:  # ``broken`` is importable beside this file
    sys.path.insert(0, str(Path(__file__).parent))
from broken import properties_by_requirement, sequence_bugs

TESTS = Path(__file__).parent
CONFORMANCE = Path(gpt2_conformance.__file__).parent
MODULES = ("test_objective", "test_causality", "test_inference")
EXAMPLES = 10  # per property
WORKERS = 2
# Words that mean the implementation crashed rather than computed a wrong answer.
CRASHED = ("raised", "could not build", "NotImplementedError")

# Runs pytest once per job in one process. The hypothesis profile is derandomized (every run tries
# the same examples) and skips the shrink phase, which would spend up to minutes per failing
# property minimising its example.
DRIVER = """
import json
import sys

import pytest
from hypothesis import Phase, settings

settings.register_profile(
    "sequence-bugs",
    max_examples=int(sys.argv[2]),
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
for job in json.loads(open(sys.argv[1], encoding="utf-8").read()):
    print(f"===== {job['impl']} at {job['dtype']}", flush=True)
    pytest.main(
        [
            *job["node_ids"],
            f"--impl={job['impl']}",
            f"--dtype={job['dtype']}",
            "--hypothesis-profile=sequence-bugs",
            f"--conformance-report={job['report']}",
            "-p",
            "no:cacheprovider",
            "-q",
            "--no-header",
            "-rfE",
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",  # hypothesis is imported above
        ]
    )
"""


PROPERTIES = properties_by_requirement(MODULES)
BUGS = list(sequence_bugs.ALL)
DTYPES = sorted(set(sequence_bugs.ALL.values()))


def _job(impl: str, requirements: set[str], dtype: str, folder: Path) -> dict[str, Any]:
    node_ids = sorted({node for rid in requirements for node in PROPERTIES[rid]})
    name = f"{impl.rpartition(':')[2]}-{dtype}"
    return {"impl": impl, "dtype": dtype, "node_ids": node_ids, "report": str(folder / name)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """(implementation, dtype) -> (its JSON report or None, the output of its subprocess)."""
    folder = tmp_path_factory.mktemp("sequence-bugs")
    jobs = [
        _job(f"broken.sequence_bugs:{bug.__name__}", set(bug.must_fail), dtype, folder)
        for bug, dtype in sequence_bugs.ALL.items()
    ]
    for control in sequence_bugs.CONTROLS:  # correct in a declared way: every property
        jobs.append(
            _job(f"broken.sequence_bugs:{control.__name__}", set(PROPERTIES), "float32", folder)
        )
    for dtype in DTYPES:  # the reference, on the properties its dtype's bugs are checked with
        bugs = [bug for bug in BUGS if sequence_bugs.ALL[bug] == dtype]
        jobs.append(_job("reference", {r for bug in bugs for r in bug.must_fail}, dtype, folder))
    jobs.sort(key=lambda job: -len(job["node_ids"]))  # longest first, dealt out in turn
    driver = folder / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("GPT2_CONFORMANCE_IMPL", None)
    workers = []
    for w in range(WORKERS):
        batch = folder / f"jobs-{w}.json"
        batch.write_text(json.dumps(jobs[w::WORKERS]), encoding="utf-8")
        log = (folder / f"worker-{w}.log").open("w", encoding="utf-8")
        command = [sys.executable, str(driver), str(batch), str(EXAMPLES)]
        workers.append(
            (
                subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder
                ),
                log,
                w,
            )
        )
    results: dict[tuple[str, str], Any] = {}
    for process, log, w in workers:
        try:
            process.wait(timeout=600)
        finally:
            process.kill()
            log.close()
        output = (folder / f"worker-{w}.log").read_text(encoding="utf-8")
        for job in jobs[w::WORKERS]:
            path = Path(job["report"])
            report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
            results[(job["impl"], job["dtype"])] = (report, _section(output, job))
    return results


def _section(output: str, job: dict[str, Any]) -> str:
    """The part of a worker's output that belongs to ``job`` (all of it if not found)."""
    head = f"===== {job['impl']} at {job['dtype']}"
    start = output.find(head)
    if start < 0:
        return output
    end = output.find("\n===== ", start + len(head))
    return output[start : end if end >= 0 else len(output)]


def _statuses(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in report["requirements"]}


def test_every_declared_requirement_has_properties() -> None:
    for bug in BUGS:
        assert bug.must_fail, f"{bug.__name__} declares no requirement to fail"
        for rid in bug.must_fail:
            assert PROPERTIES.get(rid), f"{bug.__name__}: no property is tagged {rid}"


@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: bug.__name__)
def test_the_broken_adapter_builds_and_runs(bug: type[sequence_bugs.SequenceBug]) -> None:
    """A bug must show as a wrong answer, not as a crash: the broken model runs."""
    config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    implementation = bug().build(
        config, params=None, seed=0, device="cpu", dtype=sequence_bugs.ALL[bug]
    )
    tokens = np.arange(12).reshape(2, 6) % 11
    logits = implementation.logits(tokens)
    assert tuple(logits.shape) == (2, 6, 11)
    loss = implementation.loss(tokens, tokens, reduction="mean")
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: bug.__name__)
def test_the_suite_fails_each_declared_requirement(
    reports: dict[tuple[str, str], Any], bug: type[sequence_bugs.SequenceBug]
) -> None:
    report, output = reports[(f"broken.sequence_bugs:{bug.__name__}", sequence_bugs.ALL[bug])]
    assert report is not None, f"the run against {bug.__name__} wrote no report:\n{output}"
    entries = _statuses(report)
    for rid in bug.must_fail:
        entry = entries[rid]
        assert entry["status"] == "fail", f"{bug.__name__} passed {rid}:\n{output}"
        messages = [t["message"] for t in entry["tests"] if t["outcome"] == "failed"]
        assert any(m.startswith(f"{rid}:") for m in messages), messages
        assert not any(word in m for m in messages for word in CRASHED), messages


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_reference_passes_the_same_properties(
    reports: dict[tuple[str, str], Any], dtype: str
) -> None:
    report, output = reports[("reference", dtype)]
    assert report is not None, f"the reference run wrote no report:\n{output}"
    bugs = [bug for bug in BUGS if sequence_bugs.ALL[bug] == dtype]
    entries = _statuses(report)
    for rid in {rid for bug in bugs for rid in bug.must_fail}:
        assert entries[rid]["status"] == "pass", f"the reference fails {rid}:\n{output}"


@pytest.mark.parametrize("control", sequence_bugs.CONTROLS, ids=lambda control: control.__name__)
def test_a_declared_difference_passes_every_property(
    reports: dict[tuple[str, str], Any], control: type[sequence_bugs.SequenceBug]
) -> None:
    report, output = reports[(f"broken.sequence_bugs:{control.__name__}", "float32")]
    assert report is not None, f"the run against {control.__name__} wrote no report:\n{output}"
    failed = {rid for rid, entry in _statuses(report).items() if entry["status"] == "fail"}
    assert not failed, f"{control.__name__} fails {sorted(failed)}:\n{output}"
    assert {_statuses(report)[rid]["status"] for rid in PROPERTIES} == {"pass"}
