"""The conformance report: per-requirement statuses, the verdict, JSON and Markdown.

The plugin records one :class:`TestRecord` per property it ran (or skipped) and hands them to
:func:`build_report` with the spec's requirement list. Everything here is plain data and text: no
pytest, no hypothesis, so a report written by one run can be re-rendered later::

    report = json.loads(Path("conformance.json").read_text())
    print(to_markdown(report))

Statuses of a requirement, from its tests:

- ``fail``: at least one of its tests failed (or errored in setup/teardown);
- ``xfail``: every failure was expected (a deviation the adapter declares, or listed in the
  xfails file), none unexpected;
- ``pass``: every test that ran passed;
- ``not-claimed``: every test was skipped because the adapter does not claim a capability;
- ``skipped``: its tests were skipped for other reasons;
- ``not-run``: no test of it ran (none exists, or none was selected), or one of its selected
  tests never ran (the run was interrupted or stopped early) and none failed;
- ``not-in-profile``: outside the run's requirements profile (``--conformance-requirements``),
  not judged (only in runs of a profile other than gpt2).

A report is written twice: when the run starts, an *incomplete* report
(:func:`incomplete_report`: ``"complete": false``, no verdict) replaces whatever the path held,
so a run that dies leaves no stale verdict behind; when it ends, the final report
(``"complete": true``), atomically. ``python -m gpt2_conformance.report check REPORT.json``
(:func:`check_report`) turns a report into an exit status for CI.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Requirement statuses, in the order they are counted and shown.
STATUSES = ("pass", "fail", "xfail", "not-claimed", "skipped", "not-run")
#: The status of a requirement outside the run's requirements profile (a
#: ``--conformance-requirements`` other than gpt2): not judged, never counted as passed, and
#: present only in such runs.
NOT_IN_PROFILE = "not-in-profile"
#: Outcomes of one test.
OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped", "not-claimed", "not-run")
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
        implementation_s: of ``duration_s``, the seconds spent inside the implementation's calls
            (its adapter's ``build`` and every protocol method: logits, loss, gradients, cache,
            save/load...).
        oracle_s: of ``duration_s``, the seconds spent in the NumPy oracle (suite work).
        builds, build_s: the models it built (adapter ``build`` calls) and their seconds (part
            of ``implementation_s``).
        configs, shapes: the distinct configurations, and (configuration, input shape) pairs,
            it built or called the implementation with (in memory only: not in the JSON).
        margin: the largest error as a fraction of its bound over the test's comparisons
            (:class:`gpt2_conformance.checks.Margins`); None when it compared nothing numeric.
    """

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    requirements: tuple[str, ...]
    outcome: str
    duration_s: float = 0.0
    message: str = ""
    details: str = ""
    implementation_s: float = 0.0
    oracle_s: float = 0.0
    observed: str = ""
    hint: str = ""
    hint_requirements: tuple[str, ...] = ()
    hint_matched: bool = False
    builds: int = 0
    build_s: float = 0.0
    configs: frozenset[str] = frozenset()
    shapes: frozenset[str] = frozenset()
    margin: float | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 4),
            "implementation_s": round(self.implementation_s, 4),
            "oracle_s": round(self.oracle_s, 4),
            "builds": self.builds,
            "build_s": round(self.build_s, 4),
            "message": self.message,
        }
        if self.details:
            entry["hypothesis"] = self.details
        if self.observed and self.observed not in self.requirements:
            entry["observed"] = self.observed
        if self.hint:
            entry["hint"] = {
                "text": self.hint,
                "names": list(self.hint_requirements),
                "matched": self.hint_matched,
            }
        if self.margin is not None:
            entry["margin"] = round(self.margin, 6)
        return entry

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], requirements: tuple[str, ...]) -> TestRecord:
        """The record of one test as :meth:`as_dict` wrote it (in a report's requirement)."""
        return cls(
            nodeid=str(entry["nodeid"]),
            requirements=requirements,
            outcome=str(entry["outcome"]),
            duration_s=float(entry.get("duration_s", 0.0)),
            implementation_s=float(entry.get("implementation_s", 0.0)),
            oracle_s=float(entry.get("oracle_s", 0.0)),
            builds=int(entry.get("builds", 0)),
            build_s=float(entry.get("build_s", 0.0)),
            message=str(entry.get("message", "")),
            details=str(entry.get("hypothesis", "")),
            observed=str(entry.get("observed", "")),
            hint=str((entry.get("hint") or {}).get("text", "")),
            hint_requirements=tuple((entry.get("hint") or {}).get("names", ())),
            hint_matched=bool((entry.get("hint") or {}).get("matched", False)),
            margin=worst_margin((entry.get("margin"),)),
        )


def requirement_status(outcomes: Iterable[str]) -> str:
    """The status of a requirement from the outcomes of its tests (see the module docstring)."""
    seen = set(outcomes)
    if not seen:
        return "not-run"
    if seen & _FAILED:
        return "fail"
    if "xfailed" in seen:
        return "xfail"
    if "not-run" in seen:  # a selected test never ran: not checked, whatever the others did
        return "not-run"
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
        "not-run": {"not-run"},
    }.get(status)
    if not wanted:
        return ""
    for test in tests:
        if test.outcome in wanted and test.message:
            return test.message
    return ""


#: The word a verdict gives a conformance class (spec README, "What a verdict says").
CONFORMS = "conforms"
#: Every MUST requirement checked passed, but some were not claimed.
CONFORMS_ON_CLAIMS = "conforms-on-what-it-claims"
#: No MUST requirement of the class was claimed.
CLASS_NOT_CLAIMED = "not-claimed"
DOES_NOT_CONFORM = "does-not-conform"
#: Something of the class was not checked (not run, skipped, a collection error).
INCOMPLETE = "incomplete"
CLASS_STATUSES = (CONFORMS, CONFORMS_ON_CLAIMS, CLASS_NOT_CLAIMED, DOES_NOT_CONFORM, INCOMPLETE)
_CLASS_WORDS = {
    CONFORMS: "CONFORMS",
    CONFORMS_ON_CLAIMS: "CONFORMS ON WHAT IT CLAIMS",
    CLASS_NOT_CLAIMED: "not claimed",
    DOES_NOT_CONFORM: "DOES NOT CONFORM",
    INCOMPLETE: "INCOMPLETE",
}
#: Where an expected failure (status ``xfail``) comes from, told by the plugin's xfail reason.
_DECLARED, _XFAILS_FILE, _EXPECTED = "declared", "xfails-file", "expected"
_SOURCE_WORDS = {
    _DECLARED: "as the adapter declares",
    _XFAILS_FILE: "as listed in the xfails file",
    _EXPECTED: "as expected by an xfail marker",
}
_DEVIATION_WORDS = {
    _DECLARED: "declared by the adapter",
    _XFAILS_FILE: "listed in the xfails file",
    _EXPECTED: "expected by an xfail marker",
}


@functools.lru_cache(maxsize=1)
def _spec_class_of_chapter() -> dict[str, str]:
    from gpt2_spec import load_classes

    return {chapter: c.name for c in load_classes() for chapter in c.chapters}


def conformance_class_of(requirement: Mapping[str, Any] | Any) -> str:
    """The conformance class of a report's requirement entry (its ``conformance_class``) or of a
    :class:`gpt2_spec.Requirement`; an entry written before classes existed gets its chapter's
    class in this version of the spec (``function`` when the chapter is unknown)."""
    if isinstance(requirement, Mapping):
        given, chapter = requirement.get("conformance_class"), requirement.get("chapter")
    else:
        given = getattr(requirement, "conformance_class", "")
        chapter = getattr(requirement, "chapter", None)
    if given:
        return str(given)
    return _spec_class_of_chapter().get(str(chapter), "function")


def _expected_failure_source(requirement: Mapping[str, Any]) -> str:
    """Who expected a requirement's failure: the adapter's ``declared_deviations`` (the plugin's
    xfail reason starts "declared deviation"), the xfails file ("listed in FILE"), or an xfail
    marker of another origin."""
    messages = [
        str(t.get("message", ""))
        for t in requirement.get("tests", [])
        if t.get("outcome") == "xfailed"
    ] or [str(requirement.get("message", ""))]
    sources = set()
    for message in messages:
        if message.startswith("declared deviation"):
            sources.add(_DECLARED)
        elif message.startswith("listed in "):
            sources.add(_XFAILS_FILE)
        else:
            sources.add(_EXPECTED)
    return sources.pop() if len(sources) == 1 else _EXPECTED


def class_verdicts(
    requirements: Sequence[Mapping[str, Any]],
    *,
    collection_errors: int = 0,
    not_applicable: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """Each conformance class's standing in a run, by class name, in the order of the
    requirements (the spec's).

    Only the requirements in the run's profile count (not ``not-in-profile``), and of them not
    those in ``not_applicable`` (requirements that do not apply to the implementation, such as the
    causal-lm profile's tied-only ones for a model that declares an untied head). A class with no
    requirement in the profile is left out. Each value holds ``status`` (one of
    :data:`CLASS_STATUSES`), ``must`` (how many MUST requirements apply), ``must_passed``, and the
    ids that are ``failed``, ``expected_to_fail`` (by source: ``declared``, ``xfails-file``,
    ``expected``), ``not_claimed`` (MUST) and ``unchecked``.
    """
    entries: dict[str, list[Mapping[str, Any]]] = {}
    for requirement in requirements:
        if requirement["status"] == NOT_IN_PROFILE or requirement["id"] in not_applicable:
            continue
        entries.setdefault(conformance_class_of(requirement), []).append(requirement)
    standing: dict[str, dict[str, Any]] = {}
    for name, members in entries.items():
        must = [r for r in members if r["level"] == "MUST"]
        failed = [r["id"] for r in must if r["status"] == "fail"]
        expected: dict[str, list[str]] = {}
        for r in must:
            if r["status"] == "xfail":
                expected.setdefault(_expected_failure_source(r), []).append(r["id"])
        passed = [r["id"] for r in must if r["status"] == "pass"]
        not_claimed = [r["id"] for r in must if r["status"] == "not-claimed"]
        unchecked = [r["id"] for r in members if r["status"] in ("not-run", "skipped")]
        if failed or expected:
            status = DOES_NOT_CONFORM
        elif unchecked or collection_errors:
            status = INCOMPLETE
        elif must and not passed:
            status = CLASS_NOT_CLAIMED
        elif not_claimed:
            status = CONFORMS_ON_CLAIMS
        else:
            status = CONFORMS
        primary = [
            r["id"]
            for r in must
            if r["status"] in ("fail", "xfail")
            and (r.get("triage") or {}).get("role", "primary") == "primary"
        ]
        causes = [
            c
            for r in must
            if r["status"] in ("fail", "xfail")
            for c in (r.get("triage") or {}).get("explained_by", [])
        ]
        standing[name] = {
            "status": status,
            "must": len(must),
            "must_passed": len(passed),
            "primary": primary,
            "causes": list(dict.fromkeys(causes)),
            "failed": failed,
            "expected_to_fail": expected,
            "not_claimed": not_claimed,
            "unchecked": unchecked,
        }
    return standing


def overall_conforms(classes: Mapping[str, Mapping[str, Any]]) -> bool | None:
    """The report's ``conforms``: False when a class does not conform; True when every class of
    the profile conforms or is not claimed and at least one conforms; None (no verdict) when a
    class is incomplete, conforms only on what it claims, or nothing was claimed."""
    statuses = [c["status"] for c in classes.values()]
    if DOES_NOT_CONFORM in statuses:
        return False
    if CONFORMS in statuses and all(s in (CONFORMS, CLASS_NOT_CLAIMED) for s in statuses):
        return True
    return None


def classes_of(report: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """A report's ``classes``; for a report written before classes existed, judged from its
    requirements as :func:`class_verdicts` does."""
    classes = report.get("classes")
    if isinstance(classes, Mapping):
        return classes
    return class_verdicts(
        report.get("requirements", []),
        collection_errors=len(report.get("collection_errors", [])),
    )


def class_headline(report: Mapping[str, Any]) -> str:
    """The verdict's words per class, without the details: ``function CONFORMS; validated input
    not claimed``."""
    return "; ".join(
        f"{name.replace('-', ' ')} {_CLASS_WORDS[standing['status']]}"
        for name, standing in classes_of(report).items()
    )


def _failed_phrase(
    ids: Sequence[str], primary: Sequence[str], how: str, causes: Sequence[str] = ()
) -> str:
    """``3 MUST requirements fail: a, b, c``; when some of them are consequences, ``24 MUST
    requirements fail; primary: a, b (22 others follow from them)``; when all of them are
    consequences of failures in another class, ``1 MUST requirement fail, following from x: a``.
    """
    first = [r for r in ids if r in primary]
    text = f"{_count(len(ids), 'MUST requirement')} fail{how}"
    if not first and causes:
        return f"{text}, following from {_ids(causes, limit=3)}: {_ids(ids)}"
    if first and len(first) < len(ids):
        rest = len(ids) - len(first)
        follow = "follows" if rest == 1 else "follow"
        source = "it" if len(first) == 1 else "them"
        return f"{text}; primary: {_ids(first)} ({_count(rest, 'other')} {follow} from {source})"
    return f"{text}: {_ids(ids)}"


def _class_phrase(name: str, standing: Mapping[str, Any], collection_errors: int) -> str:
    """``function CONFORMS``, ``validated input not claimed``, ... with what decided it."""
    status = standing["status"]
    words = f"{name.replace('-', ' ')} {_CLASS_WORDS[status]}"
    if status == DOES_NOT_CONFORM:
        parts = []
        primary = standing.get("primary", [])
        causes = standing.get("causes", [])
        if standing["failed"]:
            parts.append(_failed_phrase(standing["failed"], primary, "", causes))
        for source, ids in standing["expected_to_fail"].items():
            parts.append(_failed_phrase(ids, primary, f" {_SOURCE_WORDS[source]}", causes))
        return f"{words} ({'; '.join(parts)})"
    if status == INCOMPLETE:
        why = []
        if standing["unchecked"]:
            why.append(f"{_count(len(standing['unchecked']), 'requirement')} not checked")
        if collection_errors:
            why.append(_count(collection_errors, "collection error"))
        return f"{words} ({', '.join(why)}; no MUST failure among the rest)"
    if status == CONFORMS_ON_CLAIMS:
        return (
            f"{words} ({standing['must_passed']} of {standing['must']} MUST requirements "
            f"checked; not claimed: {_ids(standing['not_claimed'], limit=3)})"
        )
    return words


def verdict(
    requirements: Sequence[Mapping[str, Any]],
    *,
    implementation: str,
    spec_version: str,
    collection_errors: int = 0,
    profile: str | None = None,
    not_applicable: Collection[str] = (),
) -> tuple[str, bool | None]:
    """The one-line verdict and whether the implementation conforms (None: no verdict).

    The line judges each conformance class of the run's profile on its own (spec README,
    "Conformance classes" and "What a verdict says"), e.g. ``gpt2-conformance: x, spec 1.0.0:
    function CONFORMS; validated input not claimed (45 pass, 7 not-claimed)``. A class CONFORMS
    only when every MUST requirement of it was claimed and passed; one whose checked MUST
    requirements pass but some were not claimed CONFORMS ON WHAT IT CLAIMS, with how many were
    checked; a MUST requirement that fails, or is expected to fail (declared by the adapter or
    listed in an xfails file, each said as such), makes its class DOES NOT CONFORM. Failures of
    SHOULD and MAY requirements are deviations: listed, but they decide nothing. With a
    requirements ``profile`` (other than gpt2) the verdict is against that profile, and the
    requirements outside it (status ``not-in-profile``) are counted but judge nothing;
    ``not_applicable`` ids are left out of their class (see :func:`class_verdicts`). The boolean
    is :func:`overall_conforms`.
    """
    by_status: dict[str, list[Mapping[str, Any]]] = {s: [] for s in (*STATUSES, NOT_IN_PROFILE)}
    for requirement in requirements:
        by_status[requirement["status"]].append(requirement)
    classes = class_verdicts(
        requirements, collection_errors=collection_errors, not_applicable=not_applicable
    )
    deviations = [r["id"] for r in by_status["fail"] if r["level"] != "MUST"]
    deviations += [
        f"{r['id']} ({_DEVIATION_WORDS[_expected_failure_source(r)]})"
        for r in by_status["xfail"]
        if r["level"] != "MUST"
    ]
    counts = ", ".join(
        f"{len(by_status[s])} {s}" for s in (*STATUSES, NOT_IN_PROFILE) if by_status[s]
    )
    spec = f"spec {spec_version}"
    if profile:
        spec += f", {profile} profile"
    phrases = [_class_phrase(name, c, collection_errors) for name, c in classes.items()]
    line = f"gpt2-conformance: {implementation}, {spec}: {'; '.join(phrases) or 'nothing judged'}"
    line += f" ({counts})"
    if deviations:
        line += f"; SHOULD/MAY deviations: {_ids(deviations)}"
    return line, overall_conforms(classes)


#: Exit statuses of a run that requires a level of conformance (``--conformance-require``):
#: conformance as required; a MUST requirement fails (or is expected to fail), as pytest's own
#: "tests failed"; the run checked too little to establish what was required. pytest's statuses 2
#: to 5 (interrupted, internal error, usage error, no tests) are passed on unchanged.
EXIT_CONFORMS = 0
EXIT_DOES_NOT_CONFORM = 1
EXIT_NOT_ESTABLISHED = 6
#: ``--conformance-require`` values besides class names: ``claimed``, every class judged is
#: CONFORMS, CONFORMS ON WHAT IT CLAIMS or not claimed and one at least is claimed; ``full``,
#: every class of the run's profile CONFORMS.
REQUIRE_LEVELS = ("claimed", "full")


def parse_require(value: str) -> tuple[str, ...]:
    """Check a ``--conformance-require`` value: ``claimed``, ``full``, or conformance class
    names separated by commas (``function``, ``function,validated-input``: those classes must
    CONFORM). Returns the normalised words; raises ValueError with the choices otherwise."""
    from gpt2_spec import load_classes

    names = [c.name for c in load_classes()]
    words = tuple(dict.fromkeys(w.strip() for w in value.split(",") if w.strip()))
    if len(words) == 1 and words[0] in REQUIRE_LEVELS:
        return words
    unknown = [w for w in words if w not in names]
    if not words or unknown:
        raise ValueError(
            f"--conformance-require={value}: expected 'claimed', 'full' or conformance class "
            f"names separated by commas ({', '.join(names)})"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return words


def exit_status(
    report: Mapping[str, Any], *, require: str | None = None, pytest_status: int = 0
) -> int:
    """The exit status of a conformance run, from its report and pytest's own status.

    Without ``require`` it is pytest's status, unchanged. With it (see :func:`parse_require`):
    pytest's 2 to 5 stand; :data:`EXIT_DOES_NOT_CONFORM` (1) when a class DOES NOT CONFORM or
    pytest saw a failure (a SHOULD/MAY deviation or a test outside the suite fails the run as
    any failed test does); :data:`EXIT_NOT_ESTABLISHED` (6) when the run was interrupted, a
    class is INCOMPLETE, or the coverage falls short of ``require`` (``full``: a class of the
    profile CONFORMS ON WHAT IT CLAIMS or is not claimed; class names: one of them does not
    CONFORM; ``claimed``: nothing was claimed); :data:`EXIT_CONFORMS` (0) otherwise.
    """
    if require is None:
        return pytest_status
    wanted = parse_require(require)
    if pytest_status not in (0, 1):
        return pytest_status
    statuses = {name: str(c["status"]) for name, c in classes_of(report).items()}
    if DOES_NOT_CONFORM in statuses.values() or pytest_status == 1:
        return EXIT_DOES_NOT_CONFORM
    if report.get("interrupted") or INCOMPLETE in statuses.values():
        return EXIT_NOT_ESTABLISHED
    if wanted == ("claimed",):
        met = any(s in (CONFORMS, CONFORMS_ON_CLAIMS) for s in statuses.values())
    elif wanted == ("full",):
        met = bool(statuses) and all(s == CONFORMS for s in statuses.values())
    else:
        met = all(statuses.get(name) == CONFORMS for name in wanted)
    return EXIT_CONFORMS if met else EXIT_NOT_ESTABLISHED


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
    shard: str | None = None,
    profile: Any = None,
) -> dict[str, Any]:
    """Assemble the report (a JSON-ready dict) from the spec's requirements and the test records.

    ``profile`` is the run's requirements profile (a :class:`gpt2_spec.Profile`; None or the
    gpt2 profile: every requirement). Requirements outside it are reported ``not-in-profile``
    whatever ran, and the report's ``requirements_profile`` names it.

    ``requirements`` are :class:`gpt2_spec.registry.Requirement` objects (all of the spec's, so
    the ones no test checked are reported ``not-run``). A test with several requirement ids
    counts for each of them; its time is shared evenly among them, so that the requirements'
    times add up to the tests' (see :func:`timing_summary`).
    """
    tests = [dataclasses.replace(t) for t in tests]  # the caller's records stay as they were
    partial = profile is not None and len(profile.requirements) < len(requirements)
    tests_by_id: dict[str, list[TestRecord]] = {r.id: [] for r in requirements}
    for test in tests:
        for rid in dict.fromkeys(test.requirements):
            if rid in tests_by_id:
                tests_by_id[rid].append(test)
    statuses = {
        r.id: NOT_IN_PROFILE
        if partial and r.id not in profile.requirements
        else requirement_status(t.outcome for t in tests_by_id[r.id])
        for r in requirements
    }
    _withdraw_contradicted_hints(tests, statuses)
    entries = []
    for r in requirements:
        its_tests = sorted(tests_by_id[r.id], key=lambda t: t.nodeid)
        status = statuses[r.id]
        if status == NOT_IN_PROFILE:
            its_tests = []
        entries.append(
            {
                "id": r.id,
                "title": r.title,
                "level": r.level,
                "chapter": r.chapter,
                "conformance_class": conformance_class_of(r),
                "anchor": f"spec/{r.anchor}",
                "status": status,
                **_shared_times(its_tests),
                "tests": [t.as_dict() for t in its_tests],
                "message": _first_message(status, its_tests),
                "margin": worst_margin(t.margin for t in its_tests),
            }
        )
    triaged = apply_triage(entries, tests_by_id)
    summary = {s: 0 for s in (*STATUSES, NOT_IN_PROFILE) if s != NOT_IN_PROFILE or partial}
    for entry in entries:
        summary[entry["status"]] += 1
    # A head.tied-* requirement of a profile that applies it to declared-tied heads only does not
    # apply to a model that declares an untied head (reported not-claimed, counted in no class).
    not_applicable = (
        frozenset(getattr(profile, "tied_only", ()))
        if partial and implementation.get("tied_head") is False
        else frozenset()
    )
    line, conforms = verdict(
        entries,
        implementation=str(implementation.get("name", "unknown")),
        spec_version=spec_version,
        collection_errors=len(collection_errors),
        profile=profile.name if partial else None,
        not_applicable=not_applicable,
    )
    classes = class_verdicts(
        entries, collection_errors=len(collection_errors), not_applicable=not_applicable
    )
    report: dict[str, Any] = {
        "suite": suite_version,
        "spec_version": spec_version,
        "implementation": dict(implementation),
        "hypothesis": dict(hypothesis),
        "requirements": entries,
        "summary": summary,
        "complete": True,
        "verdict": line,
        "conforms": conforms,
        "classes": classes,
        "triage": triaged,
        "interrupted": interrupted,
        "collection_errors": [dict(e) for e in collection_errors],
        "duration_s": round(duration_s, 3),
        "timing": timing_summary(tests, wall_s=duration_s),
        "requirements_profile": profile.name if profile is not None else "gpt2",
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if shard:
        report["shard"] = shard
    return report


#: What replaces a hint that names a requirement which passes in the same run.
WITHDRAWN_HINT = "no known deviation consistent with this run explains it"


def _withdraw_contradicted_hints(tests: Iterable[TestRecord], statuses: Mapping[str, str]) -> None:
    """A failure's hint ("they match a known deviation: ... (head.linear-no-bias)") is withdrawn
    when a requirement it names passes in the same run: the run shows that deviation is absent
    (spec/diagnosis.md); the test's message keeps everything else. A hint that stands and
    matched its deviations (not merely the closest) makes the failure an observation of the
    first requirement it names, for the triage."""
    for test in tests:
        if not test.hint:
            continue
        passing = [rid for rid in test.hint_requirements if statuses.get(rid) == "pass"]
        if passing:
            withdrawn = (
                f"{WITHDRAWN_HINT} (a hint naming {', '.join(passing)} was withdrawn: it passes)"
            )
            test.message = test.message.replace(test.hint, withdrawn)
            test.hint, test.hint_requirements, test.hint_matched = "", (), False
        elif test.hint_matched and test.hint_requirements:
            test.observed = test.hint_requirements[0]


@functools.lru_cache(maxsize=1)
def _presuppositions() -> Mapping[str, frozenset[str]]:
    from gpt2_spec import load_presuppositions

    return load_presuppositions()


_TRIAGED = frozenset({"fail", "xfail"})


def apply_triage(
    entries: Sequence[dict[str, Any]], tests_by_id: Mapping[str, Sequence[TestRecord]]
) -> dict[str, list[str]]:
    """Separate the primary failures from their consequences (:mod:`.triage`), in place.

    Each failing entry gets ``triage`` (``role``, and for a consequence ``explained_by`` and
    ``reason``). A requirement whose violation another requirement's test observed fails, with
    ``observed_only``, even where its own tests passed. A consequence whose causes are all
    deviations the adapter declares is itself reported as declared (status ``xfail``). Returns
    the report's ``triage``: the ``primary`` and ``consequence`` ids, in the spec's order.
    """
    from . import triage

    judged = [e for e in entries if e["status"] != NOT_IN_PROFILE]
    order = [e["id"] for e in judged]
    failures: dict[str, list[str | None]] = {}
    for entry in judged:
        if entry["status"] in _TRIAGED:
            names = [
                t.observed or None
                for t in tests_by_id.get(entry["id"], ())
                if t.outcome in ("failed", "error", "xfailed")
            ]
            failures[entry["id"]] = names or [None]
    findings = triage.triage(order, failures, _presuppositions())
    by_id = {e["id"]: e for e in judged}
    for rid, finding in findings.items():
        entry = by_id[rid]
        if finding.observed_only:
            witness = next(
                t
                for tests in tests_by_id.values()
                for t in tests
                if t.observed == rid and t.outcome in ("failed", "error", "xfailed")
            )
            entry["status"] = "fail" if witness.outcome != "xfailed" else "xfail"
            entry["message"] = f"observed by {witness.nodeid}: {witness.message}"
    for rid, finding in findings.items():
        entry = by_id[rid]
        entry["triage"] = finding.as_dict()
        causes = finding.explained_by
        if (
            entry["status"] == "fail"
            and causes
            and all(
                by_id[c]["status"] == "xfail" and _expected_failure_source(by_id[c]) == _DECLARED
                for c in causes
            )
        ):
            entry["status"] = "xfail"
            entry["message"] = (
                f"declared deviation {', '.join(causes)} explains it ({finding.reason}): "
                f"{entry['message']}"
            )
    expected = [rid for rid, e in by_id.items() if e["status"] == "xfail"]
    return triage.summary(findings, order, expected)


def worst_margin(margins: Iterable[Any]) -> float | None:
    """The largest of ``margins`` (errors as fractions of their bounds; None entries are tests
    that compared nothing), rounded for the report; None when there is none."""
    numbers = [float(m) for m in margins if m is not None]
    return round(max(numbers), 6) if numbers else None


def _shared_times(tests: Sequence[TestRecord]) -> dict[str, float]:
    """A requirement's seconds: each of its tests' times divided by how many requirements the
    test checks."""
    totals = {"duration_s": 0.0, "implementation_s": 0.0, "oracle_s": 0.0}
    for test in tests:
        share = 1.0 / max(len(dict.fromkeys(test.requirements)), 1)
        totals["duration_s"] += test.duration_s * share
        totals["implementation_s"] += test.implementation_s * share
        totals["oracle_s"] += test.oracle_s * share
    return {key: round(value, 4) for key, value in totals.items()}


def timing_summary(tests: Iterable[TestRecord], *, wall_s: float) -> dict[str, Any]:
    """Where the run's time went, and how many models it built.

    ``tests_s`` is the sum of every test's setup, call and teardown (more than the wall time when
    xdist runs tests side by side; less, by collection and start-up, otherwise). Of it,
    ``implementation_s`` was spent inside the implementation's calls and the rest, ``suite_s``, is
    the suite's own work (strategies, hypothesis, comparisons, pytest), of which ``oracle_s`` in
    the NumPy oracle. The shares are fractions of ``tests_s``.

    ``builds`` models were built (the adapter's ``build``) in ``build_s`` seconds (part of
    ``implementation_s``); ``configs`` and ``shapes`` count the distinct configurations and
    (configuration, input shape) pairs used: what an implementation that compiles per shape
    compiles. Both are None when the records do not know them (a merged report's: the JSON keeps
    the build counts, not the sets).
    """
    tests = list(tests)
    tests_s = sum(t.duration_s for t in tests)
    implementation_s = min(sum(t.implementation_s for t in tests), tests_s)
    oracle_s = sum(t.oracle_s for t in tests)
    suite_s = tests_s - implementation_s
    builds = sum(t.builds for t in tests)
    configs, shapes = _distinct(tests)

    def share(seconds: float) -> float:
        return round(seconds / tests_s, 4) if tests_s > 0 else 0.0

    return {
        "wall_s": round(wall_s, 3),
        "tests_s": round(tests_s, 3),
        "implementation_s": round(implementation_s, 3),
        "suite_s": round(suite_s, 3),
        "oracle_s": round(oracle_s, 3),
        "implementation_share": share(implementation_s),
        "suite_share": share(suite_s),
        "oracle_share": share(oracle_s),
        "builds": builds,
        "build_s": round(sum(t.build_s for t in tests), 3),
        "configs": configs,
        "shapes": shapes,
    }


def _distinct(tests: Sequence[TestRecord]) -> tuple[int | None, int | None]:
    """How many distinct configurations and shapes the tests used (None, None when their records
    do not say: built models without any configuration noted)."""
    configs = set().union(*(t.configs for t in tests))
    shapes = set().union(*(t.shapes for t in tests))
    if not configs and any(t.builds for t in tests):
        return None, None
    return len(configs), len(shapes)


def timing_line(report: Mapping[str, Any]) -> str:
    """One line for the terminal, e.g. ``time: 18.2 s wall, 16.9 s in tests: 71% inside the
    implementation, 29% suite (oracle 12%); 410 models built in 3.1 s (37 configurations, 290
    shapes)``; "" for a report without timings."""
    timing = report.get("timing")
    if not timing or not timing.get("tests_s"):
        return ""
    line = (
        f"time: {timing['wall_s']:.1f} s wall, {timing['tests_s']:.1f} s in tests: "
        f"{timing['implementation_share']:.0%} inside the implementation, "
        f"{timing['suite_share']:.0%} suite (oracle {timing['oracle_share']:.0%})"
    )
    if timing.get("builds"):
        line += f"; {timing['builds']} models built in {timing.get('build_s', 0.0):.1f} s"
        if timing.get("configs") is not None:
            line += f" ({timing['configs']} configurations, {timing.get('shapes')} shapes)"
    return line


def _write_atomically(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` (creating parent folders) so that a reader sees the old file or
    the new one, never a part: a temporary file in the same folder, then :func:`os.replace`.
    A path that is not a regular file (a pipe, /dev/stdout) is written directly."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_file():
        target.write_text(text, encoding="utf-8")
        return target
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report as indented JSON, atomically (creating parent folders); returns the path."""
    return _write_atomically(json.dumps(report, indent=2) + "\n", path)


def write_markdown(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report as Markdown (:func:`to_markdown`), atomically; returns the path."""
    return _write_atomically(to_markdown(report), path)


def incomplete_report(
    reason: str,
    *,
    implementation: Mapping[str, Any] | None = None,
    suite_version: str = "",
    spec_version: str = "",
) -> dict[str, Any]:
    """The report that stands in for a run's until the run ends: ``"complete": false``, no
    verdict, and why (a run that dies leaves this, never the previous run's verdict)."""
    return {
        "suite": suite_version,
        "spec_version": spec_version,
        "implementation": dict(implementation or {}),
        "complete": False,
        "verdict": None,
        "conforms": None,
        "reason": reason,
        "requirements": [],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def incomplete_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown of an :func:`incomplete_report`."""
    name = report.get("implementation", {}).get("name", "unknown")
    return f"# gpt2-conformance: {name}\n\n**No verdict: {report.get('reason', 'incomplete')}**\n"


def write_incomplete(
    report: Mapping[str, Any], *, json_path: str | Path | None, markdown_path: str | Path | None
) -> list[Path]:
    """Replace the report files of a run that is starting with an :func:`incomplete_report`."""
    written = []
    if json_path:
        written.append(_write_atomically(json.dumps(report, indent=2) + "\n", json_path))
    if markdown_path:
        written.append(_write_atomically(incomplete_markdown(report), markdown_path))
    return written


#: Exit statuses of :func:`check_report` (``python -m gpt2_conformance.report check``).
CHECK_CONFORMS = 0
CHECK_DOES_NOT_CONFORM = 1
CHECK_INCOMPLETE = 2


def check_report(
    report: Any, *, require: Sequence[str] = (), classes: str | None = None
) -> tuple[int, list[str]]:
    """Whether a report is the complete report of a run that conforms: ``(status, lines)``.

    ``status`` is :data:`CHECK_CONFORMS` (0) for a complete report that conforms, whose run was
    not interrupted, had no collection error, and in which every id of ``require`` passed;
    :data:`CHECK_DOES_NOT_CONFORM` (1) for a complete report with the verdict DOES NOT CONFORM
    or a required requirement that did not pass; :data:`CHECK_INCOMPLETE` (2) for anything else
    (an incomplete report, an interrupted run, no verdict, not a report at all). ``lines`` say
    why, the verdict first.
    """
    if not isinstance(report, Mapping) or not isinstance(report.get("requirements"), list):
        return CHECK_INCOMPLETE, ["not a conformance report (no 'requirements' list)"]
    if report.get("complete") is False:
        reason = report.get("reason") or "the run did not finish"
        return CHECK_INCOMPLETE, [f"incomplete report, no verdict: {reason}"]
    lines = [str(report.get("verdict"))]
    statuses = {str(r.get("id")): r for r in report["requirements"] if isinstance(r, Mapping)}
    for entry in statuses.values():
        if entry.get("status") == "fail":
            lines.append(f"  {entry.get('id')} ({entry.get('level')}): {entry.get('message')}")
    unknown = [rid for rid in require if rid not in statuses]
    if unknown:
        lines.append(f"required requirements not in the report: {', '.join(unknown)}")
        return CHECK_INCOMPLETE, lines
    conforms = report.get("conforms")
    failed = [
        rid for rid in require if statuses[rid].get("status") in ("fail", "xfail", "not-claimed")
    ]
    if conforms is False or failed:
        if failed:
            lines.append(f"required requirements that fail or are not claimed: {', '.join(failed)}")
        return CHECK_DOES_NOT_CONFORM, lines
    unchecked = [rid for rid in require if statuses[rid].get("status") != "pass"]
    if unchecked:
        lines.append(f"required requirements not passed: {', '.join(unchecked)}")
        return CHECK_INCOMPLETE, lines
    if report.get("interrupted") or report.get("collection_errors"):
        lines.append("the run was cut short or a module did not import: no verdict")
        return CHECK_INCOMPLETE, lines
    if classes is not None:
        # The gate's own coverage rule (see exit_status): 6, not established, reads as 2 here.
        decided = exit_status(report, require=classes)
        if decided == EXIT_CONFORMS:
            return CHECK_CONFORMS, lines
        if decided == EXIT_DOES_NOT_CONFORM:
            return CHECK_DOES_NOT_CONFORM, lines
        lines.append(f"--classes={classes}: the run does not establish it")
        return CHECK_INCOMPLETE, lines
    if conforms is not True:
        lines.append(
            "no overall verdict: a class conforms only on what it claims, or nothing was "
            "claimed (--classes says what this gate requires)"
        )
        return CHECK_INCOMPLETE, lines
    return CHECK_CONFORMS, lines


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
    NOT_IN_PROFILE: "◻️ not-in-profile",
}


def _shown(summary: Mapping[str, Any]) -> tuple[str, ...]:
    """The statuses a counts line shows: all of them, and not-in-profile where a profile ran."""
    return STATUSES + ((NOT_IN_PROFILE,) if NOT_IN_PROFILE in summary else ())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _cell(text: str, limit: int = 200) -> str:
    """One Markdown table cell: a single line, pipes escaped, shortened."""
    line = _first_line(text)
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line.replace("|", "\\|")


#: Overrides the documentation site that Markdown reports link requirements to.
ENV_DOCS_URL = "GPT2_CONFORMANCE_DOCS_URL"


def docs_url() -> str | None:
    """The documentation site Markdown reports link to: ``$GPT2_CONFORMANCE_DOCS_URL``, else the
    installed package's ``Documentation`` project URL (pyproject.toml), unless that still holds
    the ``OWNER`` placeholder; None: no site, links stay relative."""
    import os
    from importlib import metadata

    if os.environ.get(ENV_DOCS_URL):
        return os.environ[ENV_DOCS_URL]
    try:
        urls = metadata.metadata("gpt2-conformance").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation" and "OWNER" not in url:
            return url.strip()
    return None


def requirement_link(anchor: str, base_url: str | None) -> str:
    """A report's ``anchor`` (``spec/02-objective.md#objective.ignore-index``) as a link: on the
    site at ``base_url`` (``BASE/spec/02-objective/#objective.ignore-index``), or as it is."""
    if not base_url:
        return anchor
    page, _, rid = anchor.partition("#")
    return f"{base_url.rstrip('/')}/{page.removesuffix('.md')}/#{rid}"


def to_markdown(report: Mapping[str, Any], *, base_url: str | None = None) -> str:
    """Render a report (as built by :func:`build_report`) as Markdown, e.g. for a CI job summary
    (``>> $GITHUB_STEP_SUMMARY``). Requirements link to the documentation site at ``base_url``
    (None: :func:`docs_url`), so that the links work in a job summary or a PR comment; with no
    site (``""``, or none configured) they are relative to the repository."""
    base_url = docs_url() if base_url is None else base_url
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
    ]
    spent = timing_line(report).removeprefix("time: ")
    if spent:
        lines.append(f"| Time | {_cell(spent)} |")
    if report.get("shard"):
        lines.append(f"| Shard | {report['shard']} |")
    if report.get("requirements_profile", "gpt2") != "gpt2":
        lines.append(f"| Requirements profile | {report['requirements_profile']} |")
    lines += ["", " · ".join(f"{summary.get(s, 0)} {s}" for s in _shown(summary)), ""]
    if report.get("interrupted"):
        lines += ["> The run was interrupted: the report covers only what ran.", ""]
    for error in report.get("collection_errors", []):
        lines += [f"> Collection error in `{error['nodeid']}`: {_cell(error['message'])}", ""]
    primary = [
        r for r in report.get("requirements", []) if r["status"] == "fail" and _role(r) == "primary"
    ]
    if primary:
        lines += [
            "### Start here",
            "",
            "The primary failures; every other failure follows from them.",
            "",
        ]
        for r in primary:
            lines.append(
                f"- [`{r['id']}`]({requirement_link(r['anchor'], base_url)}) ({r['level']}): "
                f"{_cell(r['message'], 400)}"
            )
        lines.append("")
    lines += [
        "| Requirement | Level | Status | Note | Time (inside the implementation) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report.get("requirements", []):
        note = _cell(r.get("message", ""))
        status = _MARK.get(r["status"], r["status"])
        if _role(r) == "consequence":
            status += f" (follows from {', '.join(f'`{c}`' for c in _explained(r))})"
        lines.append(
            f"| [`{r['id']}`]({requirement_link(r['anchor'], base_url)}) "
            f"{_cell(r['title'], 80)} | {r['level']} "
            f"| {status} | {note} | {_seconds(r)} |"
        )
    tests = {t["nodeid"]: t for r in report.get("requirements", []) for t in r.get("tests", [])}
    slowest = sorted(tests.values(), key=lambda t: -float(t.get("duration_s", 0.0)))[:10]
    if slowest and float(slowest[0].get("duration_s", 0.0)) > 0:
        lines += [
            "",
            "### Slowest properties",
            "",
            "| Property | Time (inside the implementation) | Oracle |",
            "| --- | --- | --- |",
        ]
        for test in slowest:
            lines.append(
                f"| `{test['nodeid']}` | {_seconds(test)} "
                f"| {float(test.get('oracle_s', 0.0)):.2f} s |"
            )
    failing = [r for r in report.get("requirements", []) if r["status"] in ("fail", "xfail")]
    failing.sort(key=lambda r: _role(r) == "consequence")  # primaries first, else spec order
    if failing:
        lines += ["", "### Failures", ""]
        for r in failing:
            role = _role(r)
            if role == "consequence":
                role = f"consequence of {', '.join(_explained(r))}: {r['triage'].get('reason', '')}"
            lines.append(
                f"- **`{r['id']}`** ({r['level']}, {r['status']}{', ' + role if role else ''})"
            )
            for test in r["tests"]:
                if test["outcome"] in ("failed", "error", "xfailed"):
                    lines.append(f"  - `{test['nodeid']}`: {_cell(test['message'], 400)}")
    return "\n".join(lines) + "\n"


def _seconds(entry: Mapping[str, Any]) -> str:
    """``"1.23 s (71%)"``: an entry's time and the share of it inside the implementation."""
    total = float(entry.get("duration_s", 0.0))
    inside = float(entry.get("implementation_s", 0.0))
    return f"{total:.2f} s ({inside / total:.0%})" if total > 0 else "-"


def _role(entry: Mapping[str, Any]) -> str:
    return str((entry.get("triage") or {}).get("role", ""))


def _explained(entry: Mapping[str, Any]) -> list[str]:
    return list((entry.get("triage") or {}).get("explained_by", []))


def summary_lines(report: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """The end-of-run table for the terminal, the verdict last.

    Failures come first and in the triage's order: the primary failures ("start here"), each
    with its message, then the consequences grouped by what explains them, one line per group.
    Then the requirements that were not checked (not claimed, skipped, not run), and, when
    ``verbose``, the passing ones; the counts line covers everything.
    """
    rows = [r for r in report.get("requirements", []) if r["status"] != NOT_IN_PROFILE]
    width = max((len(r["id"]) for r in rows), default=10)
    out: list[str] = []

    def row(r: Mapping[str, Any], message: bool = True) -> None:
        out.append(f"  {r['id']:<{width}}  {r['level']:<6}  {r['status']}")
        if message and r.get("message"):
            out.append(f"  {'':<{width}}    {_cell(r['message'], 160)}")

    failing = [r for r in rows if r["status"] in ("fail", "xfail")]
    primary = [r for r in failing if _role(r) != "consequence"]
    consequences = [r for r in failing if _role(r) == "consequence"]
    if primary:
        fresh = [r for r in primary if r["status"] == "fail"]
        if fresh:
            out.append("start here (primary failures; the others follow from them):")
            for r in fresh:
                row(r)
        declared = [r for r in primary if r["status"] == "xfail"]
        if declared:
            out.append("expected to fail (declared or listed):")
            for r in declared:
                row(r)
    if consequences:
        groups: dict[tuple[str, ...], list[str]] = {}
        for r in consequences:
            groups.setdefault(tuple(_explained(r)), []).append(r["id"])
        out.append(f"consequences ({len(consequences)}; each still fails, see the report):")
        for causes, ids in groups.items():
            out.append(f"  explained by {', '.join(causes)}: {_ids(ids, limit=8)}")
    others = [r for r in rows if r["status"] not in ("fail", "xfail", "pass")]
    if verbose:
        for r in others + [r for r in rows if r["status"] == "pass"]:
            row(r, message=False)
    else:
        by_status: dict[str, list[str]] = {}
        for r in others:
            by_status.setdefault(r["status"], []).append(r["id"])
        for status, ids in by_status.items():
            out.append(f"{status} ({len(ids)}): {_ids(ids, limit=8)}")
    summary = report.get("summary", {})
    out.append(", ".join(f"{summary.get(s, 0)} {s}" for s in _shown(summary)))
    out.append(str(report.get("verdict", "")))
    return out


# --------------------------------------------------------------------------------------------
# Merging the reports of a run split over several machines (--conformance-shard=K/N)
# --------------------------------------------------------------------------------------------

#: What must be equal in reports that are parts of one run.
_SAME_RUN = ("suite", "spec_version", "hypothesis", "requirements_profile")
_SAME_IMPLEMENTATION = ("name", "version", "adapter", "device", "dtype", "checkpoint", "shape")


@dataclasses.dataclass(frozen=True)
class _Requirement:
    """A requirement as a report lists it (what :func:`build_report` reads of one)."""

    id: str
    title: str
    level: str
    chapter: Any
    anchor: str


class MergeError(ValueError):
    """The reports are not parts of one run (or not conformance reports at all)."""


def merge_reports(
    parts: Sequence[Mapping[str, Any]], *, names: Sequence[str] = ()
) -> dict[str, Any]:
    """One report from the reports of the slices of one run (``--conformance-shard=K/N`` on
    several machines, or any runs of disjoint tests with the same options).

    Statuses and the verdict are recomputed from all the tests, exactly as one run over all of
    them would. ``duration_s`` (and the timing's ``wall_s``) is the longest part's, as the parts
    ran side by side; the tests' times add up.

    Raises:
        MergeError: when the parts differ in suite, spec, implementation or hypothesis settings,
            or a test appears in two parts.
    """
    names = list(names) or [f"report {i + 1}" for i in range(len(parts))]
    if not parts:
        raise MergeError("give at least one report to merge")
    for name, part in zip(names, parts, strict=True):
        if not isinstance(part, Mapping) or not isinstance(part.get("requirements"), list):
            raise MergeError(f"{name} is not a conformance report (no 'requirements' list)")
        if part.get("complete") is False:
            raise MergeError(
                f"{name} is an incomplete report ({part.get('reason', 'the run did not finish')}): "
                "run that slice again"
            )
    first, first_name = parts[0], names[0]
    for name, part in zip(names[1:], parts[1:], strict=True):
        for key in _SAME_RUN:
            if part.get(key) != first.get(key):
                raise MergeError(
                    f"{name} and {first_name} differ in {key!r} ({part.get(key)!r} vs "
                    f"{first.get(key)!r}): they are not parts of one run"
                )
        for key in _SAME_IMPLEMENTATION:
            mine = part.get("implementation", {}).get(key)
            theirs = first.get("implementation", {}).get(key)
            if mine != theirs:
                raise MergeError(
                    f"{name} and {first_name} checked different implementations or options "
                    f"(implementation {key!r}: {mine!r} vs {theirs!r})"
                )
    requirements: dict[str, _Requirement] = {}
    tests: dict[str, tuple[str, dict[str, Any], list[str]]] = {}
    for name, part in zip(names, parts, strict=True):
        seen_here: set[str] = set()
        for entry in part["requirements"]:
            requirements.setdefault(
                entry["id"],
                _Requirement(
                    id=entry["id"],
                    title=entry.get("title", ""),
                    level=entry.get("level", "MUST"),
                    chapter=entry.get("chapter"),
                    anchor=str(entry.get("anchor", "")).removeprefix("spec/"),
                ),
            )
            for test in entry.get("tests", []):
                nodeid = test["nodeid"]
                if nodeid in tests and nodeid not in seen_here:
                    raise MergeError(
                        f"{nodeid} ran in both {tests[nodeid][0]} and {name}: merge the reports "
                        "of disjoint slices (--conformance-shard=K/N with the same N)"
                    )
                seen_here.add(nodeid)
                ids = tests.setdefault(nodeid, (name, dict(test), []))[2]
                ids.append(entry["id"])
    records = [TestRecord.from_dict(test, tuple(ids)) for _, test, ids in tests.values()]
    errors = [dict(e) for part in parts for e in part.get("collection_errors", [])]
    profile = None
    profile_name = first.get("requirements_profile")
    if profile_name and profile_name != "gpt2":
        from gpt2_spec import load_profiles

        profile = load_profiles().get(profile_name)
        if profile is None:
            raise MergeError(
                f"{first_name} was run with the requirements profile {profile_name!r}, which this "
                "version of the spec does not define"
            )
    merged = build_report(
        requirements=list(requirements.values()),
        tests=records,
        implementation=first.get("implementation", {}),
        hypothesis=first.get("hypothesis", {}),
        suite_version=str(first.get("suite", "")),
        spec_version=str(first.get("spec_version", "")),
        duration_s=max(float(part.get("duration_s", 0.0)) for part in parts),
        collection_errors=[dict(t) for t in {tuple(sorted(e.items())) for e in errors}],
        interrupted=any(bool(part.get("interrupted")) for part in parts),
        profile=profile,
    )
    shards = sorted({str(part["shard"]) for part in parts if part.get("shard")})
    if shards:
        merged["merged_shards"] = shards
    return merged


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m gpt2_conformance.report",
        description="Work with conformance reports (--conformance-report JSON files).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser(
        "merge",
        help="merge the reports of the slices of one run (--conformance-shard=K/N)",
        description="Merge the JSON reports of the slices of one run into one report, with "
        "statuses and the verdict recomputed over all tests. Exit status: 0 when the merged "
        "report conforms, 1 when it does not or is incomplete, 2 on bad input.",
    )
    merge.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json")
    merge.add_argument("-o", "--output", type=Path, required=True, metavar="ALL.json")
    merge.add_argument("--markdown", type=Path, default=None, metavar="ALL.md")
    check = commands.add_parser(
        "check",
        help="exit 0 only when a report is complete and conforms (a CI gate)",
        description="Check a report for CI. Exit status: 0 when the report is complete, the run "
        "was not interrupted and the implementation conforms (and every --require id passed); "
        "1 when it does not conform (or a --require id fails or is not claimed); 2 when the "
        "report is incomplete (the run died or was interrupted, a requirement was not checked, "
        "no verdict) or cannot be read.",
    )
    check.add_argument("report", type=Path, metavar="REPORT.json")
    check.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="ID",
        help="a requirement id that must pass, whatever its level (repeatable)",
    )
    check.add_argument(
        "--classes",
        default=None,
        metavar="WHAT",
        help="what coverage the gate requires, as --conformance-require takes it: 'full', "
        "'claimed' or class names separated by commas (e.g. 'function'); a report that falls "
        "short of it exits 2 (default: the report's own conforms flag decides)",
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        if args.classes is not None:
            try:
                parse_require(args.classes)
            except ValueError as error:
                parser.error(str(error))
        return _check(args.report, args.require, args.classes)
    parts = []
    for path in args.reports:
        try:
            parts.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            print(f"error: cannot read the report {path}: {error}", file=sys.stderr)
            return 2
    try:
        merged = merge_reports(parts, names=[str(p) for p in args.reports])
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shards = merged.get("merged_shards", [])
    counts = {s.partition("/")[2] for s in shards}
    if len(counts) == 1 and len(shards) != int(next(iter(counts))):
        print(
            f"warning: merged {len(shards)} of {next(iter(counts))} shards ({', '.join(shards)})",
            file=sys.stderr,
        )
    write_json(merged, args.output)
    if args.markdown:
        write_markdown(merged, args.markdown)
    print(f"merged {len(parts)} reports into {args.output}")
    for line in summary_lines(merged)[-2:]:
        print(line)
    timing = timing_line(merged)
    if timing:
        print(timing)
    return 0 if merged["conforms"] else 1


def _check(path: Path, require: Sequence[str], classes: str | None = None) -> int:
    import sys

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"error: cannot read the report {path}: {error}", file=sys.stderr)
        return CHECK_INCOMPLETE
    status, lines = check_report(report, require=require, classes=classes)
    for line in lines:
        print(line)
    return status


if __name__ == "__main__":
    raise SystemExit(_main())
