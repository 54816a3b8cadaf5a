"""The conformance report: per-requirement statuses, the verdict, JSON and Markdown.

The plugin records one :class:`TestRecord` per property it ran (or skipped) and hands them to
:func:`build_report` with the spec's requirement list. Everything here is plain data and text: no
pytest, no hypothesis, so a report written by one run can be re-rendered later::

    report = json.loads(Path("conformance.json").read_text())
    print(to_markdown(report))

Statuses of a requirement, from its tests:

- ``fail``: at least one of its tests failed (or errored in setup/teardown);
- ``xfail``: every failure was expected (listed in the xfails file), none unexpected;
- ``pass``: every test that ran passed;
- ``not-claimed``: every test was skipped because the adapter does not claim a capability;
- ``skipped``: its tests were skipped for other reasons;
- ``not-run``: no test of it ran (none exists, or none was selected).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Requirement statuses, in the order they are counted and shown.
STATUSES = ("pass", "fail", "xfail", "not-claimed", "skipped", "not-run")
#: Outcomes of one test.
OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped", "not-claimed")
_FAILED = frozenset({"failed", "error"})
_RAN_OK = frozenset({"passed", "xpassed"})


@dataclasses.dataclass
class TestRecord:
    """What one test (one pytest node id) did.

    Attributes:
        nodeid: pytest's node id.
        requirements: the spec ids the test checks (its ``requirement`` markers).
        outcome: one of :data:`OUTCOMES`.
        duration_s: setup + call + teardown, in seconds.
        message: the failure's message, the skip or the xfail reason ("" when it passed).
        details: hypothesis' notes on a failure (falsifying example, reproduce decorator).
    """

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    requirements: tuple[str, ...]
    outcome: str
    duration_s: float = 0.0
    message: str = ""
    details: str = ""

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 4),
            "message": self.message,
        }
        if self.details:
            entry["hypothesis"] = self.details
        return entry


def requirement_status(outcomes: Iterable[str]) -> str:
    """The status of a requirement from the outcomes of its tests (see the module docstring)."""
    seen = set(outcomes)
    if not seen:
        return "not-run"
    if seen & _FAILED:
        return "fail"
    if "xfailed" in seen:
        return "xfail"
    if seen & _RAN_OK:
        return "pass"
    if seen == {"not-claimed"}:
        return "not-claimed"
    return "skipped"


def _first_message(status: str, tests: Sequence[TestRecord]) -> str:
    wanted = {
        "fail": _FAILED,
        "xfail": {"xfailed"},
        "not-claimed": {"not-claimed"},
        "skipped": {"skipped", "not-claimed"},
    }.get(status)
    if not wanted:
        return ""
    for test in tests:
        if test.outcome in wanted and test.message:
            return test.message
    return ""


def verdict(
    requirements: Sequence[Mapping[str, Any]],
    *,
    implementation: str,
    spec_version: str,
    collection_errors: int = 0,
) -> tuple[str, bool | None]:
    """The one-line verdict and whether the implementation conforms (None: no verdict).

    An implementation conforms when no MUST requirement fails, none is an expected failure, and
    every requirement was checked (passed or not claimed). Failures of SHOULD and MAY
    requirements are deviations: listed, but they do not decide the verdict.
    """
    by_status: dict[str, list[Mapping[str, Any]]] = {s: [] for s in STATUSES}
    for requirement in requirements:
        by_status[requirement["status"]].append(requirement)
    must_fail = [r["id"] for r in by_status["fail"] if r["level"] == "MUST"]
    must_xfail = [r["id"] for r in by_status["xfail"] if r["level"] == "MUST"]
    deviations = [r["id"] for r in by_status["fail"] + by_status["xfail"] if r["level"] != "MUST"]
    counts = ", ".join(f"{len(by_status[s])} {s}" for s in STATUSES if by_status[s])
    head = f"gpt2-conformance: {implementation}"
    spec = f"spec {spec_version}"
    tail = f" ({counts})"
    if deviations:
        tail += f"; SHOULD/MAY deviations: {_ids(deviations)}"
    if must_fail or must_xfail:
        parts = []
        if must_fail:
            parts.append(f"{_count(len(must_fail), 'MUST requirement')} fail ({_ids(must_fail)})")
        if must_xfail:
            parts.append(
                f"{_count(len(must_xfail), 'MUST requirement')} fail as listed in the xfails "
                f"file ({_ids(must_xfail)})"
            )
        return f"{head} DOES NOT CONFORM to {spec}: {'; '.join(parts)}{tail}", False
    unchecked = by_status["not-run"] + by_status["skipped"]
    if unchecked or collection_errors:
        why = []
        if unchecked:
            why.append(f"{_count(len(unchecked), 'requirement')} not checked")
        if collection_errors:
            why.append(f"{_count(collection_errors, 'collection error')}")
        return (
            f"{head} INCOMPLETE against {spec}: {', '.join(why)}, no MUST failure among the "
            f"rest{tail}",
            None,
        )
    return f"{head} CONFORMS to {spec}{tail}", True


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ids(ids: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown}, ... {len(ids) - limit} more"


def build_report(
    *,
    requirements: Sequence[Any],
    tests: Iterable[TestRecord],
    implementation: Mapping[str, Any],
    hypothesis: Mapping[str, Any],
    suite_version: str,
    spec_version: str,
    duration_s: float,
    collection_errors: Sequence[Mapping[str, str]] = (),
    interrupted: bool = False,
    created: str | None = None,
) -> dict[str, Any]:
    """Assemble the report (a JSON-ready dict) from the spec's requirements and the test records.

    ``requirements`` are :class:`gpt2_spec.registry.Requirement` objects (all of the spec's, so
    the ones no test checked are reported ``not-run``). A test with several requirement ids
    counts for each of them.
    """
    tests_by_id: dict[str, list[TestRecord]] = {r.id: [] for r in requirements}
    for test in tests:
        for rid in dict.fromkeys(test.requirements):
            if rid in tests_by_id:
                tests_by_id[rid].append(test)
    entries = []
    for r in requirements:
        its_tests = sorted(tests_by_id[r.id], key=lambda t: t.nodeid)
        status = requirement_status(t.outcome for t in its_tests)
        entries.append(
            {
                "id": r.id,
                "title": r.title,
                "level": r.level,
                "chapter": r.chapter,
                "anchor": f"spec/{r.anchor}",
                "status": status,
                "tests": [t.as_dict() for t in its_tests],
                "message": _first_message(status, its_tests),
            }
        )
    summary = {s: 0 for s in STATUSES}
    for entry in entries:
        summary[entry["status"]] += 1
    line, conforms = verdict(
        entries,
        implementation=str(implementation.get("name", "unknown")),
        spec_version=spec_version,
        collection_errors=len(collection_errors),
    )
    return {
        "suite": suite_version,
        "spec_version": spec_version,
        "implementation": dict(implementation),
        "hypothesis": dict(hypothesis),
        "requirements": entries,
        "summary": summary,
        "verdict": line,
        "conforms": conforms,
        "interrupted": interrupted,
        "collection_errors": [dict(e) for e in collection_errors],
        "duration_s": round(duration_s, 3),
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report as indented JSON (creating parent folders); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return target


def write_markdown(report: Mapping[str, Any], path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(to_markdown(report), encoding="utf-8")
    return target


# --------------------------------------------------------------------------------------------
# Text renderings
# --------------------------------------------------------------------------------------------

_MARK = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "xfail": "⚠️ xfail",
    "not-claimed": "➖ not-claimed",
    "skipped": "⏭️ skipped",
    "not-run": "⬜ not-run",
}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _cell(text: str, limit: int = 200) -> str:
    """One Markdown table cell: a single line, pipes escaped, shortened."""
    line = _first_line(text)
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line.replace("|", "\\|")


def to_markdown(report: Mapping[str, Any]) -> str:
    """Render a report (as built by :func:`build_report`) as Markdown, e.g. for a CI job summary
    (``>> $GITHUB_STEP_SUMMARY``)."""
    impl = report.get("implementation", {})
    hyp = report.get("hypothesis", {})
    summary = report.get("summary", {})
    seed = hyp.get("seed", "")
    lines = [
        f"## GPT-2 conformance: {impl.get('name', 'unknown')} {impl.get('version', '')}".rstrip(),
        "",
        f"**{report.get('verdict', '')}**",
        "",
        "| | |",
        "| --- | --- |",
        f"| Spec | {report.get('spec_version', '')} |",
        f"| Suite | {report.get('suite', '')} |",
        f"| Device, dtype | {impl.get('device', '')}, {impl.get('dtype', '')} |",
        f"| Capabilities | {', '.join(impl.get('capabilities', [])) or 'none'} |",
        f"| Label convention | {impl.get('label_convention', '')} |",
        f"| Tied head | {'yes' if impl.get('tied_head') else 'no'} |",
        f"| Hypothesis | profile {hyp.get('profile', '')}, seed {seed}, "
        f"max_examples {hyp.get('max_examples', '')} |",
        f"| Duration | {report.get('duration_s', 0):.1f} s |",
        "",
        " · ".join(f"{summary.get(s, 0)} {s}" for s in STATUSES),
        "",
    ]
    if report.get("interrupted"):
        lines += ["> The run was interrupted: the report covers only what ran.", ""]
    for error in report.get("collection_errors", []):
        lines += [f"> Collection error in `{error['nodeid']}`: {_cell(error['message'])}", ""]
    lines += ["| Requirement | Level | Status | Note |", "| --- | --- | --- | --- |"]
    for r in report.get("requirements", []):
        note = _cell(r.get("message", ""))
        lines.append(
            f"| [`{r['id']}`]({r['anchor']}) {_cell(r['title'], 80)} | {r['level']} "
            f"| {_MARK.get(r['status'], r['status'])} | {note} |"
        )
    failing = [r for r in report.get("requirements", []) if r["status"] in ("fail", "xfail")]
    if failing:
        lines += ["", "### Failures", ""]
        for r in failing:
            lines.append(f"- **`{r['id']}`** ({r['level']}, {r['status']})")
            for test in r["tests"]:
                if test["outcome"] in ("failed", "error", "xfailed"):
                    lines.append(f"  - `{test['nodeid']}`: {_cell(test['message'], 400)}")
    return "\n".join(lines) + "\n"


def summary_lines(report: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """The end-of-run table for the terminal: one line per requirement (id, level, status), a
    failure's first message line under it, and the verdict last.

    Passing requirements are listed only when ``verbose``; the counts line covers them.
    """
    rows = report.get("requirements", [])
    width = max((len(r["id"]) for r in rows), default=10)
    out = []
    for r in rows:
        if r["status"] == "pass" and not verbose:
            continue
        out.append(f"{r['id']:<{width}}  {r['level']:<6}  {r['status']}")
        if r["status"] in ("fail", "xfail") and r.get("message"):
            out.append(f"{'':<{width}}    {_cell(r['message'], 160)}")
    summary = report.get("summary", {})
    out.append(", ".join(f"{summary.get(s, 0)} {s}" for s in STATUSES))
    out.append(str(report.get("verdict", "")))
    return out
