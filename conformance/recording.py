"""Recording what each conformance test did, and building the run's report from the records.

The plugin hands every phase report of a conformance test to :meth:`Recording.add` (on the xdist
controller when distributed) and notes each selected property with :meth:`Recording.select`; a
selected property that never reported (the run was interrupted, or stopped by ``-x``) is recorded
``not-run``. Statuses travel as data, in the reports' ``user_properties``
(:data:`STATUS_PROPERTY`), never as text to parse. A failure's conformance message and
hypothesis notes are taken from its exception (:func:`find_failure`, :func:`hypothesis_notes`)
and the message is put above pytest's traceback (:class:`HeadedFailure`). No pytest here:
reports are read by attribute.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

from . import SUITE_VERSION
from . import report as reports
from .checks import ConformanceFailure
from .timeouts import ConformanceTimeout

#: The ``user_properties`` key naming a requirement a test checks (also in JUnit XML).
REQUIREMENT_PROPERTY = "requirement"
#: The ``user_properties`` key giving the outcome the plugin decided for a skipped test.
STATUS_PROPERTY = "conformance-status"
NOT_CLAIMED = "not-claimed"
NOT_RUN = "not-run"
#: Longest message or hypothesis note kept per test.
MESSAGE_LIMIT = 4000


def property_values(user_properties: Iterable[tuple[str, object]], key: str) -> tuple[str, ...]:
    """The values of ``key`` among a report's ``user_properties``, in order, without repeats."""
    return tuple(dict.fromkeys(str(v) for k, v in user_properties if k == key))


def skip_reason(longrepr: Any) -> str:
    """The reason of a skipped test's report (pytest keeps ``(path, line, reason)``)."""
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr or "")
    return reason.removeprefix("Skipped: ")


def failure_message(report: Any) -> str:
    """The first line that says why a failed phase failed."""
    message = getattr(report, "conformance_message", None)
    if message:
        return str(message)
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    text = report.longreprtext.strip()
    return text.splitlines()[-1] if text else f"{report.when} failed"


def find_failure(error: BaseException) -> BaseException | None:
    """The ConformanceFailure (or timeout) in ``error``, looking inside exception groups."""
    if isinstance(error, (ConformanceFailure, ConformanceTimeout)):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = find_failure(inner)
        if found is not None:
            return found
    return None


def hypothesis_notes(error: BaseException) -> str:
    notes = [str(n) for n in getattr(error, "__notes__", ())]
    return "\n".join(n for n in notes if n.strip())


def _note_failure(test: reports.TestRecord, report: Any) -> None:
    """Keep what a failure names (the requirement observed violated, a hint and what it names)."""
    test.observed = str(getattr(report, "conformance_observed", "") or "")
    test.hint = str(getattr(report, "conformance_hint", "") or "")
    test.hint_requirements = tuple(getattr(report, "conformance_hint_requirements", ()) or ())
    test.hint_matched = bool(getattr(report, "conformance_hint_matched", False))


class HeadedFailure:
    """A failure's representation with the conformance message above pytest's traceback.

    It forwards to pytest's own representation (``toterminal``, ``reprcrash``), which it only
    wraps; where it has to become text (sent by an xdist worker, written to JUnit XML) it is
    the message followed by the traceback's text.
    """

    def __init__(self, message: str, longrepr: Any) -> None:
        self.message = message.rstrip("\n")
        self.longrepr = longrepr
        self.reprcrash = getattr(longrepr, "reprcrash", None)

    def toterminal(self, tw: Any) -> None:
        tw.line(self.message, red=True, bold=True)
        self.longrepr.toterminal(tw)

    def __str__(self) -> str:
        return f"{self.message}\n\n{self.longrepr}"


def failure_site(error: BaseException, path: str) -> tuple[str, int, str, str] | None:
    """Where in the property's own file (``path``) the failing check was called: the last
    traceback frame in that file, as (file, line, function, source line); None when no frame is
    (a failure raised from elsewhere)."""
    import linecache

    found = None
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == path:
            first = last = tb.tb_lineno
            positions = list(code.co_positions())  # the whole statement, not its first line
            if 0 <= tb.tb_lasti // 2 < len(positions):
                start, end = positions[tb.tb_lasti // 2][:2]
                if start and end and start <= first <= end and end - start < 12:
                    first, last = start, end
            lines = [
                linecache.getline(code.co_filename, n).rstrip() for n in range(first, last + 1)
            ]
            indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
            source = "\n".join(x[indent:] for x in lines)
            found = (code.co_filename, first, code.co_name, source)
        tb = tb.tb_next
    return found


#: Arguments of hypothesis' "Falsifying example" call that say nothing about the example.
_FIXTURE_ARGUMENTS = ("suite", "requirement", "data", "gpt2_conformance_seed")


def counterexample(notes: str) -> list[str]:
    """Hypothesis' notes on a failure, without what says nothing about the example: in the
    "Falsifying example"/"Failing test case" call, the fixture arguments (the suite, the
    requirement id, ``data``, whose draws follow as "Draw N" lines), and the explain phase's
    lines."""
    kept: list[str] = []
    call: list[str] = []
    in_call = in_explain = dropping = False
    for line in notes.splitlines():
        stripped = line.strip()
        if stripped.startswith(("Failing test case:", "Falsifying example:")):
            if stripped.endswith(")"):
                kept.append(line.rstrip())
                continue
            in_call, call, dropping = True, [line.rstrip()], False
            continue
        if in_call:
            if line.startswith(")"):
                in_call = False
                if len(call) > 1:
                    kept += [*call, line.rstrip()]
                continue
            if line.startswith("    ") and not line.startswith("     "):  # a new argument
                name = stripped.split("=", 1)[0]
                dropping = name in _FIXTURE_ARGUMENTS
            if not dropping:
                call.append(line.rstrip())
            continue
        if stripped.startswith("Explanation:"):
            in_explain = True
            continue
        if in_explain:
            if line.startswith("    ") or not stripped:
                continue
            in_explain = False
        if stripped:
            kept.append(line.rstrip())
    return kept


class _Lines:
    """A failure's text as lines with their terminal markup (``lines``), written to pytest's
    terminal or, where it has to become text (an xdist worker, JUnit XML), joined."""

    def lines(self) -> list[tuple[str, dict[str, bool]]]:
        raise NotImplementedError

    def toterminal(self, tw: Any) -> None:
        for text, markup in self.lines():
            tw.line(text, **markup)

    def __str__(self) -> str:
        return "\n".join(text for text, _ in self.lines())


class FailureBlock(_Lines):
    """One failure as the terminal shows it by default: the conformance message once, the line
    of the property that made the failing check (with a caret under it), the minimal
    counterexample hypothesis found, and how to replay it. ``--tb=long`` (or any style other
    than pytest's default) shows pytest's full traceback instead (:class:`HeadedFailure`).
    Where it has to become text (an xdist worker, JUnit XML) it is the same lines.
    """

    def __init__(
        self,
        message: str,
        site: tuple[str, int, str, str] | None,
        notes: str,
        reprcrash: Any = None,
        *,
        replay: str | None = None,
    ) -> None:
        self.message = message.rstrip("\n")
        self.site = site
        self.example = counterexample(notes)
        if replay:  # the command replaces hypothesis' edit-the-source recipe
            self.example = [x for x in self.example if "@reproduce_failure(" not in x]
        self.replay = replay
        self.reprcrash = reprcrash

    def lines(self) -> list[tuple[str, dict[str, bool]]]:
        out: list[tuple[str, dict[str, bool]]] = [(self.message, {"red": True, "bold": True})]
        if self.site is not None:
            path, number, function, source = self.site
            out += [("", {}), (f"{path}:{number}: in {function}", {})]
            if source:
                out += [(f"    {line}", {}) for line in source.splitlines()]
                width = max(len(line) for line in source.splitlines())
                out.append((f"    {'^' * width}", {"red": True}))
        if self.example:
            out += [("", {}), ("counterexample (shrunk by hypothesis):", {})]
            out += [(f"    {line}", {}) for line in self.example]
        if self.replay:
            out += [("", {}), ("replay this example:", {}), (f"    {self.replay}", {})]
        return out


class FoldedFailure(_Lines):
    """A failure that the run's triage explains by another (a consequence, or a declared
    deviation's), as the terminal shows it by default: its message (unless a failure shown in
    full said the same) and what it follows from; not the property's source, hypothesis' example
    or the replay command. The primary failures keep their full :class:`FailureBlock` and come
    first; ``-v`` shows every failure in full."""

    def __init__(self, message: str | None, causes: Sequence[str], reprcrash: Any = None) -> None:
        self.message = message.rstrip("\n") if message else None
        self.causes = tuple(causes)
        self.reprcrash = reprcrash  # pytest's short summary takes the message from it

    def lines(self) -> list[tuple[str, dict[str, bool]]]:
        out: list[tuple[str, dict[str, bool]]] = []
        if self.message:
            out.append((self.message, {"red": True}))
        said = "" if self.message else "the same message as above; "
        out.append((f"{said}follows from {', '.join(self.causes)} (-v shows it in full)", {}))
        return out


def fold_explained_failures(failed: list[Any], report: dict[str, Any]) -> list[Any]:
    """``failed`` (pytest's failed reports, in run order) with the failures that show the
    primary causes first, in full, and every failure the triage explains by them folded into a
    :class:`FoldedFailure` after them.

    Each primary requirement keeps one failure in full: the first of its own tests, or else the
    first test that observed it. Any other failure is folded when each requirement it fails has
    a cause in the report's triage (``explained_by``). Reports without a conformance message
    (an error in the suite itself, say) are left as they are."""
    roles: dict[str, dict[str, Any]] = {}  # nodeid -> {failing requirement: its triage}
    for requirement in report.get("requirements", []):
        for test in requirement.get("tests", []):
            if test.get("outcome") == "failed":
                roles.setdefault(test["nodeid"], {})[requirement["id"]] = (
                    requirement.get("triage") or {}
                )

    shown: set[int] = set()  # indices in ``failed`` of the reports kept in full
    for primary in (report.get("triage") or {}).get("primary", []):
        own = [i for i, e in enumerate(failed) if primary in roles.get(e.nodeid, {})]
        seen = [
            i
            for i, e in enumerate(failed)
            if str(getattr(e, "conformance_observed", "") or "") == primary
        ]
        if own or seen:
            shown.add((own or seen)[0])
    folded = []
    for i, entry in enumerate(failed):
        mine = roles.get(entry.nodeid) or {}
        explained = bool(mine) and all(role.get("explained_by") for role in mine.values())
        # A FailureBlock, or its text when the report came from an xdist worker.
        if (
            i not in shown
            and explained
            and getattr(entry, "conformance_message", None)
            and isinstance(entry.longrepr, (FailureBlock, str))
        ):
            folded.append(entry)
        else:
            shown.add(i)
    full = [failed[i] for i in sorted(shown)]
    said = {str(getattr(entry, "conformance_message", "")) for entry in full}
    for entry in folded:
        message = str(entry.conformance_message)
        causes = sorted({c for role in roles[entry.nodeid].values() for c in role["explained_by"]})
        crash = getattr(entry.longrepr, "reprcrash", None)
        entry.longrepr = FoldedFailure(None if message in said else message, causes, crash)
    return full + folded


def describe_failure(
    report: Any, error: BaseException, *, path: str, replay: str | None, block: bool
) -> None:
    """Put on a failed phase's ``report`` (a pytest TestReport) what the run's report and the
    terminal say about ``error``: its message and hypothesis notes, what a conformance failure
    names (for the report's triage), how to replay the example (``replay``: the command, if
    any), and, with ``block``, a :class:`FailureBlock` (the property's file is ``path``) instead
    of pytest's traceback; otherwise the message above the traceback (:class:`HeadedFailure`).
    Everything put on it is plain data: it travels from an xdist worker to the controller."""
    failure = find_failure(error)
    details = hypothesis_notes(error)
    if failure is not None:
        message = str(failure)
        if block:
            report.longrepr = FailureBlock(
                message,
                failure_site(failure, path),
                details,
                getattr(report.longrepr, "reprcrash", None),
                replay=replay,
            )
        elif hasattr(report.longrepr, "toterminal"):
            report.longrepr = HeadedFailure(message, report.longrepr)
        report.conformance_observed = str(getattr(failure, "requirement", "") or "")
        report.conformance_hint = str(getattr(failure, "hint", "") or "")
        report.conformance_hint_requirements = list(getattr(failure, "hint_requirements", ()))
        report.conformance_hint_matched = bool(getattr(failure, "hint_matched", False))
    else:
        message = f"{type(error).__name__}: {error}"
    report.conformance_message = message[:MESSAGE_LIMIT]
    if replay is None:
        report.conformance_details = details[:MESSAGE_LIMIT]
    else:
        if not (block and failure is not None):  # the failure block shows it already
            report.sections.append(("gpt2-conformance: replay this example", replay))
        line = f"\nReplay this example: {replay}"
        report.conformance_details = details[: max(0, MESSAGE_LIMIT - len(line))] + line


@dataclasses.dataclass
class Recording:
    """The tests of one run: what each selected property did, and the collection errors."""

    #: Each test's outcome so far, folded from its phase reports (``outcome`` "": none yet).
    tests: dict[str, reports.TestRecord] = dataclasses.field(default_factory=dict)
    selected: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    collection_errors: list[dict[str, str]] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def select(self, nodeid: str, requirements: Sequence[str]) -> None:
        """Note a property the run will run (it is ``not-run`` until it reports)."""
        self.selected.setdefault(nodeid, tuple(requirements))

    def add(self, report: Any) -> None:
        """Fold one phase's report (a pytest TestReport) into its test's outcome."""
        ids = property_values(report.user_properties, REQUIREMENT_PROPERTY)
        if not ids:
            return
        test = self.tests.setdefault(report.nodeid, reports.TestRecord(report.nodeid, ids, ""))
        test.duration_s += report.duration
        timing = getattr(report, "conformance_timing", None) or {}
        test.implementation_s += float(timing.get("implementation", 0.0))
        test.oracle_s += float(timing.get("oracle", 0.0))
        test.builds += int(timing.get("builds", 0))
        test.build_s += float(timing.get("build_s", 0.0))
        test.configs = test.configs.union(timing.get("configs", ()))
        test.shapes = test.shapes.union(timing.get("shapes", ()))
        margin = getattr(report, "conformance_margin", None)
        test.margin = reports.worst_margin((test.margin, margin))
        xfailed = hasattr(report, "wasxfail")
        if report.failed:
            if report.when == "call":
                test.outcome = "failed"
            elif test.outcome not in ("failed", "error"):
                test.outcome = "error"
            else:
                return  # a teardown error after a failure: keep the failure's message
            test.message = failure_message(report)
            test.details = str(getattr(report, "conformance_details", "") or "")
            _note_failure(test, report)
        elif report.skipped:
            if xfailed:
                test.outcome = "xfailed"
                failure = str(getattr(report, "conformance_message", "") or "")
                test.message = f"{report.wasxfail}: {failure}" if failure else str(report.wasxfail)
                test.details = str(getattr(report, "conformance_details", "") or "")
                _note_failure(test, report)
            else:
                status = property_values(report.user_properties, STATUS_PROPERTY)
                test.outcome = status[0] if status else "skipped"
                test.message = skip_reason(report.longrepr)
        elif report.when == "call":
            test.outcome = "xpassed" if xfailed else "passed"

    def add_collection_error(self, nodeid: str, text: str) -> None:
        lines = text.strip().splitlines()
        self.collection_errors.append(
            {"nodeid": nodeid, "message": lines[-1] if lines else "error"}
        )

    def records(self) -> list[reports.TestRecord]:
        """Every test with an outcome, and every selected property that never ran (``not-run``)."""
        records = [test for test in self.tests.values() if test.outcome]
        finished = {r.nodeid for r in records}
        records.extend(
            reports.TestRecord(nodeid=nodeid, requirements=ids, outcome=NOT_RUN)
            for nodeid, ids in self.selected.items()
            if nodeid not in finished
        )
        return records


def run_report(
    recording: Recording,
    *,
    implementation: dict[str, Any],
    hypothesis: dict[str, Any],
    shard: tuple[int, int] | None,
    requirements_profile: Any,
    interrupted: bool,
) -> dict[str, Any]:
    """The report of a run (see :mod:`gpt2_conformance.report`)."""
    from gpt2_spec import SPEC_VERSION, load_requirements

    return reports.build_report(
        requirements=load_requirements(),
        tests=recording.records(),
        implementation=implementation,
        hypothesis=hypothesis,
        suite_version=SUITE_VERSION,
        spec_version=SPEC_VERSION,
        duration_s=time.monotonic() - recording.started,
        collection_errors=recording.collection_errors,
        interrupted=interrupted,
        shard=f"{shard[0]}/{shard[1]}" if shard else None,
        profile=requirements_profile,
    )
