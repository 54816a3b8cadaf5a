"""The false-alarm campaign: run the conformance suite against conformant GPT-2s over many seeds.

A conformance suite that fails a correct implementation is switched off by the people it is meant
to help. This script runs the suite against the implementations the project believes conformant
(the built-in adapters ``reference``, ``numpy``, ``transformers-eager`` and ``transformers-sdpa``)
at each dtype whose tolerances the spec defines, under many hypothesis seeds, and records every
failure: each one is a finding (a tolerance that was never justified, a strategy that draws inputs
outside the spec, or a real bug).

One pytest session runs many seeds (the plugin's ``--conformance-seeds A:B`` repeats each property
once per seed, seed N drawing exactly what ``--hypothesis-seed=N`` draws), spread over
pytest-xdist workers with ``-n``. Each session's outcome is read from the suite's JSON report
(``--conformance-report``). Seeds are run in batches (``--chunk`` seeds per session), breadth
first: every implementation at the first dtype, then at the next, gets its first batch before
any gets a second. Results go
to ``--out`` after every batch; a rerun with the same ``--out`` skips the seeds already done, so a
campaign can be stopped (``--budget-seconds``, Ctrl-C) and resumed, and the files of several
machines can be combined with ``--merge``.

Usage::

    python -m gpt2_evidence.false_alarm_campaign --seeds 0:200 -n 16
    python -m gpt2_evidence.false_alarm_campaign --impls reference --seeds 0:2 --profile dev
    python -m gpt2_evidence.false_alarm_campaign --merge machine-b.json    # into docs/data/...

See docs/evidence/false-alarms.md. ``render_markdown(data)`` renders the committed JSON into that
page at docs build time; importing this module has no side effects and does not import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gpt2_conformance.adapters import baselines
from gpt2_evidence import interrupt_marker, provenance
from gpt2_evidence.provenance import DATA, REPOSITORY

DEFAULT_OUT = DATA / "false-alarms.json"
DEFAULT_IMPLS = baselines()
DEFAULT_DTYPES = ("float32", "bfloat16")
DEFAULT_SEEDS = "0:200"
DTYPE_ORDER = ("float32", "bfloat16", "float16")
PROFILES = ("ci", "dev", "thorough")
SCHEMA = 1
FAILED = frozenset({"failed", "error"})
RAN = frozenset({"passed", "failed", "error", "xfailed", "xpassed"})
# "[seed=12]" or "[other-seed=12]" at the end of a node id (the plugin's --conformance-seeds ids)
_SEED_ID = re.compile(r"^(?P<base>.*)\[(?P<pre>.*?)-?seed=(?P<seed>\d+)(?P<post>-.*)?\]$")


class CampaignError(Exception):
    """Bad arguments or unusable input files; the message says what to do."""


# ------------------------------------------------------------------------------------------
# Seeds and node ids
# ------------------------------------------------------------------------------------------


def parse_seeds(text: str) -> range:
    """``A:B`` as ``range(A, B)``."""
    first, colon, stop = text.partition(":")
    try:
        seeds = range(int(first), int(stop)) if colon else range(0)
    except ValueError:
        seeds = range(0)
    if not seeds or seeds.start < 0:
        raise CampaignError(
            f"--seeds {text}: give A:B with whole numbers 0 <= A < B (seeds A..B-1)"
        )
    return seeds


def split_nodeid(nodeid: str) -> tuple[str, int | None]:
    """A node id of a seeded run as (the node id without the seed, the seed)."""
    match = _SEED_ID.match(nodeid)
    if match is None:
        return nodeid, None
    params = "-".join(p for p in (match["pre"], (match["post"] or "")[1:]) if p)
    base = f"{match['base']}[{params}]" if params else match["base"]
    return base, int(match["seed"])


def seed_ranges(seeds: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    ordered = sorted(set(seeds))
    parts: list[str] = []
    start = prev = None
    for seed in [*ordered, None]:
        if start is not None and (seed is None or seed != prev + 1):  # type: ignore[operator]
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if seed is not None and start is None:
            start = seed
        prev = seed
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------
# Reading one session's JSON report
# ------------------------------------------------------------------------------------------


def read_session(
    report: dict[str, Any], seeds: Sequence[int], properties: Sequence[str]
) -> dict[str, Any]:
    """What a seeded session did, from its ``--conformance-report``.

    ``properties`` are the collected node ids without seeds; a seed is complete when every one of
    them ran for it (a report lists the properties a stopped session never reached as
    ``not-run``). Failures are kept whether or not their seed completed.
    """
    tests: dict[str, dict[str, Any]] = {}
    for requirement in report.get("requirements", []):
        for test in requirement.get("tests", []):
            entry = tests.setdefault(test["nodeid"], {**test, "requirements": []})
            entry["requirements"].append(requirement["id"])
    done: dict[int, set[str]] = {s: set() for s in seeds}
    ran: dict[int, int] = dict.fromkeys(seeds, 0)
    outcomes: dict[str, int] = {}
    failures: list[dict[str, Any]] = []
    deviations: set[str] = set()
    margins: dict[str, dict[str, Any]] = {}
    for nodeid, test in sorted(tests.items()):
        base, seed = split_nodeid(nodeid)
        outcome = test["outcome"]
        if seed is None or seed not in done or outcome == "not-run":
            continue  # a selected property the session never reached (it was stopped)
        done[seed].add(base)
        if outcome in ("passed", "failed") and test.get("margin") is not None:
            _note_margin(margins, base, float(test["margin"]), seed, test["requirements"])
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome in RAN:
            ran[seed] += 1
        if outcome == "xfailed":
            deviations.update(test["requirements"])
        if outcome in FAILED:
            failures.append(
                {
                    "seed": seed,
                    "nodeid": nodeid,
                    "property": base,
                    "requirements": test["requirements"],
                    "outcome": outcome,
                    "message": strip_machine_paths(test.get("message", "")),
                    "counterexample": strip_machine_paths(test.get("hypothesis", "")),
                }
            )
    wanted = set(properties)
    complete = [s for s in seeds if wanted and done[s] >= wanted]
    return {
        "seeds_completed": complete,
        "properties_run": {str(s): ran[s] for s in complete},
        "outcomes": outcomes,
        "failures": failures,
        "margins": margins,
        "declared_deviations": sorted(deviations),
        "max_examples": report.get("hypothesis", {}).get("max_examples"),
        "interrupted": bool(report.get("interrupted")),
        "implementation": report.get("implementation", {}),
    }


def _note_margin(
    margins: dict[str, dict[str, Any]],
    prop: str,
    margin: float,
    seed: int | None,
    requirements: Sequence[str],
    commit: str | None = None,
) -> None:
    """Keep, per property, the largest margin (error as a fraction of its bound), its seed and
    (when summarising sessions) the suite's commit it ran on."""
    known = margins.get(prop)
    if known is None or margin > known["margin"]:
        margins[prop] = {"margin": margin, "seed": seed, "requirements": list(requirements)}
        if commit is not None:
            margins[prop]["commit"] = commit


#: A property whose worst margin exceeds this is investigated (issue 16's goal: every property
#: stays within half of its bound over the whole campaign).
MARGIN_GOAL = 0.5


def weights_of(extra_args: Sequence[str]) -> str:
    """ "trained" when the session's extra pytest arguments pass a --checkpoint, else "random"."""
    return "trained" if any(a.startswith("--checkpoint") for a in extra_args) else "random"


def dtype_cell(row: dict[str, Any]) -> str:
    """A row's dtype as the page's tables and lists name it: ``bfloat16 (trained)`` for a run on
    the trained checkpoint."""
    return row["dtype"] + (" (trained)" if weights_of(row["extra_args"]) == "trained" else "")


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------


def spec_dtypes() -> tuple[str, ...]:
    """The dtypes for which spec chapter 7 defines a tolerance against the oracle."""
    from gpt2_spec import spec_definitions

    return tuple(d for kind, d in spec_definitions().TOLERANCES if kind == "oracle")


def adapter_dtypes(impl: str) -> tuple[str, ...]:
    """The dtypes the adapter named by ``impl`` declares (``Adapter.dtypes``)."""
    from gpt2_conformance.loading import AdapterLoadError, load_adapter

    try:
        return tuple(load_adapter(impl).dtypes)
    except AdapterLoadError as error:
        raise CampaignError(f"--impls {impl}: {error}") from error


def _pytest_command(
    impl: str, dtype: str, profile: str, seeds: range, workers: int, extra: Sequence[str]
) -> list[str]:
    command = [
        "--pyargs",
        "gpt2_conformance",
        f"--impl={impl}",
        f"--dtype={dtype}",
        f"--conformance-profile={profile}",
        f"--conformance-seeds={seeds.start}:{seeds.stop}",
        "-p",
        "no:cacheprovider",
    ]
    if workers > 1:
        command += ["-n", str(workers)]
    return [*command, *extra]


def collect_properties(
    impl: str, dtype: str, profile: str, extra: Sequence[str], env: dict[str, str]
) -> list[str]:
    """The node ids (without seed) of the properties a session collects for this combination."""
    command = _pytest_command(impl, dtype, profile, range(0, 1), 1, extra)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *command, "--collect-only", "-q"],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    ids = sorted(
        {
            split_nodeid(line.strip())[0]
            for line in done.stdout.splitlines()
            if "::" in line and "seed=" in line
        }
    )
    if done.returncode != 0 or not ids:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise CampaignError(
            f"collecting the suite for --impl={impl} --dtype={dtype} failed "
            f"(pytest exit status {done.returncode}):\n{tail}"
        )
    return ids


def run_session(
    impl: str,
    dtype: str,
    profile: str,
    seeds: range,
    workers: int,
    extra: Sequence[str],
    deadline: float,
    log_dir: Path,
    env: dict[str, str],
) -> tuple[dict[str, Any] | None, int, float, Path, bool]:
    """Run one pytest session; stop it (SIGINT, so it still writes its report) at ``deadline``.

    Returns (the JSON report or None, exit status, wall seconds, log path, stopped by budget).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = (
        f"{impl.replace(':', '_').replace('/', '_')}-{dtype}-{profile}-{seeds.start}-{seeds.stop}"
    )
    log = log_dir / f"{stem}.log"
    report_path = log_dir / f"{stem}.json"
    report_path.unlink(missing_ok=True)
    marker = log_dir / f"{stem}.interrupted"
    marker.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *_pytest_command(impl, dtype, profile, seeds, workers, extra),
        f"--conformance-report={report_path}",
        "-q",
        "-rfE",
        "-p",
        "gpt2_evidence.interrupt_marker",
    ]
    started = time.monotonic()
    stopped = False
    with log.open("w", encoding="utf-8") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        process = subprocess.Popen(
            command,
            cwd=REPOSITORY,
            env={**env, interrupt_marker.ENV: str(marker)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            stopped = True
            _stop(process, marker)
    wall = time.monotonic() - started
    report = None
    if report_path.is_file():
        with contextlib.suppress(ValueError):
            report = json.loads(report_path.read_text(encoding="utf-8"))
    return report, process.returncode, wall, log, stopped


def _default_sigint() -> None:
    """In the session's process: let SIGINT interrupt it (and write its report) even when the
    campaign itself was started in the background, where shells ignore SIGINT for children."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: How long a session may take to finish its report after pytest took the interrupt, and how
#: often SIGINT is repeated until it does.
INTERRUPT_GRACE_S = 120.0
INTERRUPT_REPEAT_S = 5.0


def _stop(
    process: subprocess.Popen[Any],
    marker: Path,
    *,
    grace: float = INTERRUPT_GRACE_S,
    repeat: float = INTERRUPT_REPEAT_S,
) -> None:
    """Interrupt the session's process group as Ctrl-C would; force it if it lingers.

    One SIGINT is not always enough. CPython raises the KeyboardInterrupt wherever the main thread
    is, and when that is a finaliser (a ``__del__`` or weakref callback that the garbage
    collector runs, frequent while models are built and dropped), the exception is reported as
    "Exception ignored" and swallowed: the session runs on as if nothing happened. So SIGINT is
    repeated every ``repeat`` seconds until pytest has taken it (the ``interrupt_marker`` plugin
    creates ``marker``), then the session gets ``grace`` seconds to write its report before
    SIGTERM and SIGKILL.
    """
    give_up = time.monotonic() + grace
    while not marker.exists() and time.monotonic() < give_up:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=repeat)
            return
        except subprocess.TimeoutExpired:
            continue
    try:
        process.wait(timeout=max(give_up - time.monotonic(), 0.1))
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=10.0)
            return
        except subprocess.TimeoutExpired:
            continue


# ------------------------------------------------------------------------------------------
# The results file
# ------------------------------------------------------------------------------------------


def empty_data() -> dict[str, Any]:
    return {"schema": SCHEMA, "sessions": []}


def load_data(path: Path) -> dict[str, Any]:
    if not path.exists():
        return empty_data()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CampaignError(f"{path}: not a JSON file ({error})") from error
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise CampaignError(
            f"{path}: not a false-alarm campaign file of schema {SCHEMA} (written by "
            "gpt2_evidence.false_alarm_campaign); pass another --out or --merge file"
        )
    return data


def save_data(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def merge(data: dict[str, Any], others: Iterable[dict[str, Any]]) -> int:
    """Add the sessions of ``others`` that ``data`` lacks (by session id); return how many."""
    known = {s["id"] for s in data["sessions"]}
    added = 0
    for other in others:
        for session in other["sessions"]:
            if session["id"] not in known:
                data["sessions"].append(session)
                known.add(session["id"])
                added += 1
    data["sessions"].sort(key=lambda s: (s["started"], s["id"]))
    return added


def _key(session: dict[str, Any]) -> tuple[Any, ...]:
    return (
        session["impl"],
        session["dtype"],
        session["profile"],
        session["max_examples"],
        tuple(session.get("extra_args", [])),
    )


def cleared_by(
    failure: dict[str, Any], session: dict[str, Any], sessions: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The first later session of the same implementation, dtype and profile that completed the
    failure's seed without that property failing (after a fix: ``--rerun-findings``), or None
    while the finding is open."""
    for later in sorted(sessions, key=lambda s: (s["started"], s["id"])):
        if (
            later["started"] <= session["started"]
            or later["id"] == session["id"]
            or _key(later) != _key(session)
            or failure["seed"] not in later["seeds_completed"]
        ):
            continue
        if not any(
            f["property"] == failure["property"] and f["seed"] == failure["seed"]
            for f in later["failures"]
        ):
            return {
                "session": later["id"],
                "started": later["started"],
                "commit": provenance.read(later)["software"].get("commit") or "?",
            }
    return None


def open_finding_seeds(
    data: dict[str, Any], impl: str, dtype: str, profile: str, extra_args: Sequence[str] = ()
) -> set[int]:
    """The seeds of this implementation, dtype, profile (and extra pytest arguments) with a
    failure no later session has cleared."""
    return {
        f["seed"]
        for row in summarize(data)
        if (row["impl"], row["dtype"], row["profile"], row["extra_args"])
        == (impl, dtype, profile, list(extra_args))
        for f in row["failures"]
        if f["cleared_by"] is None
    }


def summarize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per implementation, dtype, profile (and example count, extra pytest arguments)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for session in data["sessions"]:
        row = rows.setdefault(
            _key(session),
            {
                "impl": session["impl"],
                "dtype": session["dtype"],
                "profile": session["profile"],
                "max_examples": session["max_examples"],
                "extra_args": list(session.get("extra_args", [])),
                "seeds": set(),
                "examples": 0,
                "properties": 0,
                "failures": [],
                "wall_s": 0.0,
                "machines": [],
                "software": [],
                "declared_deviations": set(),
                "margins": {},
                "commits": {},
                "margin_commits": {},
            },
        )
        origin = provenance.read(session)
        commit = str(origin["software"].get("commit") or "unrecorded")
        for prop, worst in session.get("margins", {}).items():
            _note_margin(row["margins"], prop, **worst, commit=commit)
        row["commits"].setdefault(commit, set()).update(session["seeds_completed"])
        if session.get("margins"):
            row["margin_commits"].setdefault(commit, set()).update(session["seeds_completed"])
        for seed in session["seeds_completed"]:
            if seed not in row["seeds"]:
                row["seeds"].add(seed)
                ran = session["properties_run"][str(seed)]
                row["properties"] = max(row["properties"], ran)
                row["examples"] += ran * (session["max_examples"] or 0)
        row["failures"].extend(
            {
                **f,
                "session": session["id"],
                "commit": commit,
                "cleared_by": cleared_by(f, session, data["sessions"]),
            }
            for f in session["failures"]
        )
        row["wall_s"] += session["wall_s"]
        row["declared_deviations"].update(session.get("declared_deviations", []))
        machine = origin["machine"]["label"]
        if machine not in row["machines"]:
            row["machines"].append(machine)
        software = {k: v for k, v in origin["software"].items() if v is not None}
        if software not in row["software"]:
            row["software"].append(software)
    ordered = sorted(
        rows.values(),
        key=lambda r: (
            list(DEFAULT_IMPLS).index(r["impl"]) if r["impl"] in DEFAULT_IMPLS else 99,
            r["impl"],
            DTYPE_ORDER.index(r["dtype"]) if r["dtype"] in DTYPE_ORDER else 99,
            r["profile"],
        ),
    )
    for row in ordered:
        row["seeds"] = sorted(row["seeds"])
        row["declared_deviations"] = sorted(row["declared_deviations"])
        row["commits"] = {c: sorted(seeds) for c, seeds in row["commits"].items()}
        row["margin_commits"] = {c: sorted(s) for c, s in row["margin_commits"].items()}
    return ordered


def commits_cell(commits: dict[str, list[int]]) -> str:
    """Which seeds completed on which commit of the suite: ```9e6a2b1` 2-8; `2319c86` 12``
    (a commit whose sessions completed no seed: "none completed"; ``-dirty``: the checkout had
    uncommitted changes)."""
    return "; ".join(
        f"`{commit}` {seed_ranges(seeds) if seeds else 'none completed'}"
        for commit, seeds in commits.items()
    )


def suite_revision(out: Path) -> str | None:
    """The checkout's commit as :func:`provenance.commit` gives it, except that the results file
    ``out`` does not make it ``-dirty``: a campaign that resumes writes into it, and a change there
    changes no property (None: let provenance decide)."""
    try:
        head = provenance._git("rev-parse", "--short", "HEAD")
        changed = provenance._git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or changed.returncode != 0:
        return None
    ours = out.resolve()
    dirty = [
        line
        for line in changed.stdout.splitlines()
        if line.strip() and (provenance.REPOSITORY / line[3:].strip()).resolve() != ours
    ]
    return head.stdout.strip() + ("-dirty" if dirty else "")


def campaign(args: argparse.Namespace, data: dict[str, Any], out: Path) -> int:
    """Run the requested seeds that ``data`` lacks; save after every session. Returns failures."""
    allowed = spec_dtypes()
    for dtype in args.dtypes:
        if dtype not in allowed:
            raise CampaignError(
                f"--dtypes {dtype}: spec chapter 7 defines tolerances for {', '.join(allowed)} only"
            )
    combos: list[tuple[str, str]] = []  # dtype by dtype: every implementation at the first one
    declared = {impl: adapter_dtypes(impl) for impl in args.impls}
    for dtype in args.dtypes:
        for impl in args.impls:
            if dtype in declared[impl]:
                combos.append((impl, dtype))
            else:
                print(f"skip {impl} at {dtype}: the adapter declares {', '.join(declared[impl])}")
    extra = list(args.pytest_args)
    env = dict(os.environ)
    deadline = time.monotonic() + (args.budget_seconds or float("inf"))
    revision = args.suite_revision or suite_revision(out)
    origin = provenance.collect(label=args.machine_label, revision=revision)
    log_dir = Path(args.log_dir)
    properties: dict[tuple[str, str], list[str]] = {}
    per_seed: dict[tuple[str, str], float] = {}
    broken: set[tuple[str, str]] = set()  # no report: not run further
    out_of_budget: set[tuple[str, str]] = set()  # a seed would take longer than what is left
    failures = 0
    seeds = parse_seeds(args.seeds)
    chunks = [
        range(s, min(s + args.chunk, seeds.stop))
        for s in range(seeds.start, seeds.stop, args.chunk)
    ]
    for chunk in chunks:
        for impl, dtype in combos:
            if args.rerun_findings:
                findings = open_finding_seeds(data, impl, dtype, args.profile, extra)
                todo = [s for s in chunk if s in findings]
            else:
                done = {
                    seed
                    for session in data["sessions"]
                    if (session["impl"], session["dtype"], session["profile"])
                    == (impl, dtype, args.profile)
                    and list(session.get("extra_args", [])) == extra
                    for seed in session["seeds_completed"]
                }
                todo = [s for s in chunk if s not in done]
            if not todo or (impl, dtype) in broken | out_of_budget:
                continue
            left = deadline - time.monotonic()
            estimate = per_seed.get((impl, dtype))
            if left <= 0:
                print("budget spent: no further sessions", flush=True)
                return failures
            if estimate is not None and estimate > left:
                print(f"budget: too little left for another seed of {impl} at {dtype}")
                out_of_budget.add((impl, dtype))
                continue
            if (impl, dtype) not in properties:
                properties[(impl, dtype)] = collect_properties(
                    impl, dtype, args.profile, extra, env
                )
            stop = todo[0] + 1
            while stop in todo:  # the first contiguous run of seeds not done yet
                stop += 1
            run = range(todo[0], stop)
            started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            print(
                f"{impl} at {dtype}: seeds {run.start}..{run.stop - 1} ({args.profile})", flush=True
            )
            report, status, wall, log, stopped = run_session(
                impl, dtype, args.profile, run, args.workers, extra, deadline, log_dir, env
            )
            if report is None and stopped:
                print(f"  stopped before any result; log {log}", flush=True)
                if time.monotonic() < deadline:  # Ctrl-C, not the budget
                    raise KeyboardInterrupt
                continue
            if report is None:
                print(
                    f"  ERROR: pytest (exit status {status}) wrote no report, so {impl} at {dtype} "
                    f"is not run further; see {log}",
                    flush=True,
                )
                broken.add((impl, dtype))
                continue
            got = read_session(report, list(run), properties[(impl, dtype)])
            session = {
                "id": uuid.uuid4().hex,
                "impl": impl,
                "dtype": dtype,
                "profile": args.profile,
                "max_examples": got["max_examples"],
                "extra_args": extra,
                "seeds_requested": [run.start, run.stop],
                "seeds_completed": got["seeds_completed"],
                "properties": len(properties[(impl, dtype)]),
                "properties_run": got["properties_run"],
                "outcomes": got["outcomes"],
                "failures": got["failures"],
                "margins": got["margins"],
                "declared_deviations": got["declared_deviations"],
                "workers": args.workers,
                "wall_s": round(wall, 1),
                "stopped_by_budget": stopped,
                "exit_status": status,
                "started": started,
                "provenance": {**origin, "date": started},
            }
            data["sessions"].append(session)
            save_data(data, out)
            if got["seeds_completed"]:
                per_seed[(impl, dtype)] = wall / len(got["seeds_completed"])
            failures += len(got["failures"])
            print(
                f"  {len(got['seeds_completed'])} seeds complete, {len(got['failures'])} failures, "
                f"{wall:.0f} s{' (stopped)' if stopped else ''}; log {log}",
                flush=True,
            )
            for failure in got["failures"]:
                print(f"  FAIL seed {failure['seed']}: {failure['message'][:300]}", flush=True)
            if stopped and time.monotonic() < deadline:  # Ctrl-C, not the budget
                raise KeyboardInterrupt
    if broken:
        raise CampaignError(
            "no report from "
            + ", ".join(f"{i} at {d}" for i, d in sorted(broken))
            + "; the other results are saved"
        )
    return failures


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _failure_count(failures: Sequence[dict[str, Any]]) -> str:
    cleared = sum(f["cleared_by"] is not None for f in failures)
    still_open = len(failures) - cleared
    return f"{still_open} ({cleared} cleared)" if cleared else str(still_open)


def installed_property(nodeid: str) -> str:
    """A property's node id in a checkout (``conformance/test_x.py::name``) as ``--pyargs``
    selects it from an installed package, in any directory (``gpt2_conformance.test_x::name``)."""
    path, sep, name = nodeid.partition("::")
    module = Path(path).with_suffix("").name
    return f"gpt2_conformance.{module}{sep}{name}"


def reproduce_command(failure: dict[str, Any], row: dict[str, Any]) -> str:
    extra = " ".join(row["extra_args"])
    return (
        f"python -m pytest --pyargs '{installed_property(failure['property'])}' "
        f"--impl={row['impl']} --dtype={row['dtype']} "
        f"--conformance-profile={row['profile']} --hypothesis-seed={failure['seed']}"
        + (f" {extra}" if extra else "")
    )


#: An absolute path to a file of this project's packages, in a checkout or installed: the part
#: before the package's folder is the machine's, and is dropped from committed data.
_MACHINE_PATH = re.compile(
    r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s/\\:'\"]+[/\\])*?"
    r"(?=(?:conformance|spec|reference|zoo|evidence|benchmarks|gpt2_\w+)[/\\][\w/\\.-]+\.py\b)"
)


def strip_machine_paths(text: str) -> str:
    """``text`` with absolute paths to the project's files made relative to the repository
    (``/home/me/repo/conformance/test_x.py:12`` -> ``conformance/test_x.py:12``)."""
    return _MACHINE_PATH.sub("", text)


def software_lines(software: Sequence[dict[str, str]]) -> list[str]:
    """The sessions' software as Markdown: the versions all share on one line, then one line per
    combination of the rest (e.g. the commits)."""
    sets = sorted({json.dumps(s, sort_keys=True) for s in software})
    parsed = [json.loads(s) for s in sets]
    if not parsed:
        return []
    shared = {k: v for k, v in parsed[0].items() if all(p.get(k) == v for p in parsed)}
    lines = ["Software of every session: " + ", ".join(f"{k} {v}" for k, v in shared.items())]
    varying = [{k: v for k, v in p.items() if k not in shared} for p in parsed]
    if any(varying):
        lines[0] = (lines[0] + "; and, by session:") if shared else "Software, by session:"
        lines += [""] + [
            "- " + ", ".join(f"{k} {v}" for k, v in sorted(v.items())) for v in varying if v
        ]
    else:
        lines[0] += "."
    return [*lines, ""]


def _column(row: dict[str, Any]) -> str:
    weights = weights_of(row["extra_args"])
    return f"{row['impl']} {row['dtype']}" + (" trained" if weights == "trained" else "")


def _short(prop: str) -> str:
    """``conformance/test_forward.py::test_x[...]`` as ``test_forward::test_x[...]``."""
    path, _, name = prop.partition("::")
    return f"{Path(path).stem}::{name}" if name else prop


#: The margins tables' short column names for the built-in baselines.
_SHORT_IMPLS = {
    "reference": "ref",
    "numpy": "numpy",
    "transformers-eager": "eager",
    "transformers-sdpa": "sdpa",
}


def _short_column(column: str, dtype: str) -> str:
    """``transformers-sdpa float32 trained`` in the float32 table: ``sdpa+t``."""
    impl, _, rest = column.partition(f" {dtype}")
    return _SHORT_IMPLS.get(impl, impl) + ("+t" if rest.strip() == "trained" else "")


def margin_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The worst margin per property and campaign row: ``columns`` (one per row with margins),
    ``properties`` (worst first: name, requirements, the margin per column, the worst and where).
    """
    with_margins = [r for r in rows if r["margins"]]
    columns = [_column(r) for r in with_margins]
    sources = [commits_cell(r.get("margin_commits", {})) for r in with_margins]
    names = sorted({p for r in with_margins for p in r["margins"]})
    properties = []
    for name in names:
        cells = [r["margins"].get(name) for r in with_margins]
        present = [(c["margin"], i) for i, c in enumerate(cells) if c is not None]
        worst, at = max(present)
        properties.append(
            {
                "property": name,
                "requirements": next(c for c in cells if c is not None)["requirements"],
                "margins": [None if c is None else c["margin"] for c in cells],
                "worst": worst,
                "worst_column": columns[at],
                "worst_seed": cells[at]["seed"],
                "worst_commit": cells[at].get("commit"),
            }
        )
    properties.sort(key=lambda p: (-p["worst"], p["property"]))
    dtypes = [r["dtype"] for r in with_margins]
    return {"columns": columns, "dtypes": dtypes, "sources": sources, "properties": properties}


def _where(prop: dict[str, Any]) -> str:
    """Where a property's worst margin was seen: column, seed and (when known) commit."""
    commit = f", commit `{prop['worst_commit']}`" if prop.get("worst_commit") else ""
    return f"{prop['worst_column']}, seed {prop['worst_seed']}{commit}"


def margin_svg(table: dict[str, Any], *, top: int = 25) -> str:
    """A horizontal bar chart (inline SVG) of the ``top`` properties' worst margins, with the
    goal (:data:`MARGIN_GOAL`) and the bound (1.0) drawn as lines."""
    shown = table["properties"][:top]
    width, label_w, bar_w, row_h = 860, 430, 380, 16
    height = 30 + row_h * len(shown) + 24
    scale = bar_w / max(1.0, max((p["worst"] for p in shown), default=1.0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="12">',
        f"<title>Worst error as a fraction of its bound, the {len(shown)} closest properties"
        "</title>",
    ]
    for i, prop in enumerate(shown):
        y = 24 + i * row_h
        colour = "#c0392b" if prop["worst"] > MARGIN_GOAL else "#2e86c1"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">'
            f"{_escape(_short(prop['property']))[:62]}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{max(prop["worst"] * scale, 1):.1f}" '
            f'height="{row_h - 4}" fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{label_w + prop["worst"] * scale + 4:.1f}" y="{y + 12}">'
            f"{prop['worst']:.3f}</text>"
        )
    bottom = 24 + row_h * len(shown)
    for value, name in ((MARGIN_GOAL, "goal 0.5"), (1.0, "bound")):
        x = label_w + value * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{bottom}" stroke="#555" '
            'stroke-dasharray="4 3"/>'
        )
        parts.append(f'<text x="{x:.1f}" y="14" text-anchor="middle">{name}</text>')
    parts.append(
        f'<text x="{label_w}" y="{bottom + 18}">worst |error| / bound over the campaign '
        "(any implementation, dtype, weights)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_margins(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The margins section: summary, figure and the property x column table."""
    table = margin_table(rows)
    if not table["properties"]:
        return [
            "### Margins",
            "",
            "No session recorded margins yet (they are recorded from the suite's JSON report, "
            "which carries them since the campaign's schema gained them).",
            "",
        ]
    worst = table["properties"][0]
    over = [p for p in table["properties"] if p["worst"] > MARGIN_GOAL]
    lines = [
        "### Margins",
        "",
        f"Every numeric comparison notes its worst error as a fraction of its bound; per "
        f"property, the largest over every example of every seed. **Maximum: {worst['worst']:.3f}"
        f"** (`{_short(worst['property'])}`, {_where(worst)})."
        f" Properties above the goal of {MARGIN_GOAL}: "
        + (", ".join(f"`{_short(p['property'])}` ({p['worst']:.3f})" for p in over) or "none")
        + ".",
        "",
        margin_svg(table),
        "",
        "Where the ten closest met their worst example (replay it with the command under "
        '"Reproducing", at that seed):',
        "",
        *(
            f"- `{_short(p['property'])}`: {p['worst']:.3f}, {_where(p)}"
            for p in table["properties"][:10]
        ),
    ]
    # One table per dtype, so that each fits the page: its columns are that dtype's
    # implementations (random and trained weights) under short names, its rows the properties
    # with a margin there, closest to their bound first, each with its requirements below it.
    lines += [
        "",
        "Per dtype, each property with the requirements it checks below it; columns "
        + ", ".join(f"*{short}* = `{name}`" for name, short in _SHORT_IMPLS.items())
        + ", *+t* = with the trained checkpoint.",
    ]
    for dtype in dict.fromkeys(table["dtypes"]):
        at = [i for i, d in enumerate(table["dtypes"]) if d == dtype]
        at.sort(key=lambda i: (table["columns"][i].endswith(" trained"), table["columns"][i]))
        shown = [
            (max(m for i in at if (m := p["margins"][i]) is not None), p)
            for p in table["properties"]
            if any(p["margins"][i] is not None for i in at)
        ]
        shown.sort(key=lambda wp: (-wp[0], wp[1]["property"]))
        names = [_short_column(table["columns"][i], dtype) for i in at]
        lines += [
            "",
            f"#### {dtype}",
            "",
            "| property (requirements) | " + " | ".join(names) + " |",
            "| --- | " + " | ".join("---:" for _ in at) + " |",
        ]
        for _, prop in shown:
            cells = " | ".join("" if (m := prop["margins"][i]) is None else f"{m:.3f}" for i in at)
            lines.append(
                # property names are unique across the modules: the module is left out here
                f"| `{_short(prop['property']).partition('::')[2]}`<br>"
                + ", ".join(f"`{r}`" for r in prop["requirements"])
                + f" | {cells} |"
            )
    lines += [
        "",
        "A blank cell: no session of that column noted a margin for the property: it compares "
        "nothing under a positive bound (names, shapes, refusals, exact equality), its "
        "capability is not claimed, or the column's sessions predate the commit from which it "
        "notes one. *trained*: the session passed `--checkpoint=docs/data/trained` (the trained "
        "checkpoint), else random weights. The seeds each column's margins come from, by suite "
        "commit:",
        "",
        *(f"- {c}: {src}" for c, src in zip(table["columns"], table["sources"], strict=True)),
        "",
    ]
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    """The campaign's table, its findings and the commands to reproduce it, as Markdown."""
    rows = summarize(data)
    if not rows:
        return "_No campaign results recorded yet._\n"
    lines = [
        "| implementation | dtype | profile | seeds | examples | open failures | wall time "
        "| machine | suite commit: seeds |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        seeds = f"{len(row['seeds'])} ({seed_ranges(row['seeds'])})" if row["seeds"] else "0"
        lines.append(
            f"| `{row['impl']}` | {dtype_cell(row)} | {row['profile']} "
            f"({row['max_examples']} per property) | {seeds} | {row['examples']:,} | "
            f"{_failure_count(row['failures'])} | {_duration(row['wall_s'])} | "
            f"{'; '.join(row['machines'])} | {commits_cell(row['commits'])} |"
        )
    lines += [
        "",
        "*examples*: hypothesis' `max_examples` times the properties that ran (not those whose "
        "capability the adapter does not claim), summed over the completed seeds: the examples "
        "asked for (a property whose input space is exhausted sooner tries fewer). *wall time*: "
        "the pytest sessions' wall time, summed. *suite commit*: the commit of the suite's "
        "checkout each session ran on (`-dirty`: with uncommitted changes), and the seeds it "
        "completed there.",
        "",
    ]
    deviations = [r for r in rows if r["declared_deviations"]]
    if deviations:
        lines.append(
            "Declared deviations (reported `xfail`, not counted as failures): "
            + "; ".join(
                f"`{r['impl']}` at {dtype_cell(r)}: "
                + ", ".join(f"`{d}`" for d in r["declared_deviations"])
                for r in deviations
            )
            + "."
        )
        lines.append("")
    lines += software_lines([s for r in rows for s in r["software"]])
    lines.append("")
    lines += render_margins(rows)
    findings = [(r, f) for r in rows for f in r["failures"]]
    still_open = sum(f["cleared_by"] is None for _, f in findings)
    lines.append(
        f"### Failures recorded ({len(findings)}: {still_open} open, "
        f"{len(findings) - still_open} cleared by a rerun)"
    )
    lines.append("")
    if not findings:
        lines.append("No property failed on any seed.")
        lines.append("")
    for row, failure in findings:
        cleared = failure["cleared_by"]
        status = (
            "**Open.**"
            if cleared is None
            else f"**Cleared** {cleared['started'][:10]}: seed {failure['seed']} passes from "
            f"commit {cleared['commit']} on."
        )
        lines += [
            f"- `{row['impl']}` at {row['dtype']}, seed {failure['seed']}: "
            f"{', '.join(f'`{r}`' for r in failure['requirements'])} "
            f"({failure['outcome']}). {_first_line(failure['message'])}",
            "",
            f"  {status}",
            "",
            "  ```text",
            *(
                f"  {line}"
                for line in (failure["counterexample"] or "(no example)").splitlines()[:30]
            ),
            "  ```",
            "",
            f"  Reproduce, in a checkout of the suite at `{failure['commit']}` (later commits may "
            f"draw other examples): `{reproduce_command(failure, row)}`",
            "",
        ]
    lines += [
        "### Reproducing",
        "",
        "```console",
    ]
    for row in rows:
        if not row["seeds"]:
            continue
        extra = (" -- " + " ".join(row["extra_args"])) if row["extra_args"] else ""
        lines.append(
            "$ python -m gpt2_evidence.false_alarm_campaign "
            f"--impls {row['impl']} --dtypes {row['dtype']} --profile {row['profile']} "
            f"--seeds {min(row['seeds'])}:{max(row['seeds']) + 1} "
            f"-n $(nproc) --out rerun.json{extra}"
        )
    lines += ["```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name (comma-separated)")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run the conformance suite against conformant implementations over many "
        "seeds and record every failure (docs/evidence/false-alarms.md).",
    )
    parser.add_argument(
        "--impls",
        type=_names,
        default=list(DEFAULT_IMPLS),
        help="comma-separated --impl values: built-ins or package.module[:attribute] "
        f"(default: {','.join(DEFAULT_IMPLS)})",
    )
    parser.add_argument(
        "--dtypes",
        type=_names,
        default=list(DEFAULT_DTYPES),
        help="comma-separated dtypes; an implementation is run at those its adapter declares "
        f"(default: {','.join(DEFAULT_DTYPES)})",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        metavar="A:B",
        help=f"hypothesis seeds A..B-1 (default: {DEFAULT_SEEDS}; with --merge only: none)",
    )
    parser.add_argument("--profile", default="thorough", choices=PROFILES)
    parser.add_argument(
        "-n", "--workers", type=int, default=1, help="pytest-xdist workers per session (default 1)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        metavar="K",
        help="seeds per pytest session (default: 4 x workers); smaller is broader under a budget",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="stop the running session when this much time has passed, keeping completed seeds",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results file (read, extended)")
    parser.add_argument(
        "--merge", nargs="+", default=[], metavar="FILE", help="add the sessions of these files"
    )
    parser.add_argument(
        "--machine-label", default=None, help="how the docs name this machine (default: cores)"
    )
    parser.add_argument(
        "--suite-revision",
        default=None,
        help="the suite's source revision to record (default: git rev-parse of the checkout)",
    )
    parser.add_argument(
        "--log-dir",
        default=str(Path(tempfile.gettempdir()) / "false-alarm-campaign"),
        help="where each session's pytest output and JSON report go",
    )
    parser.add_argument(
        "--rerun-findings",
        action="store_true",
        help="run only the seeds (within --seeds) that hold a failure no later session has "
        "cleared: after a fix, this shows whether each finding is gone",
    )
    parser.add_argument("--markdown", action="store_true", help="print the rendered table")
    parser.add_argument(
        "pytest_args", nargs="*", help="after --: extra pytest arguments (e.g. --device=cuda)"
    )
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # stop the running session as Ctrl-C does, keeping completed seeds


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    out = Path(args.out)
    if out == DEFAULT_OUT:
        provenance.require_checkout()
    try:
        if args.workers < 1:
            raise CampaignError(f"-n {args.workers}: give 1 or more workers")
        if args.chunk is None:
            args.chunk = 4 * args.workers
        if args.chunk < 1:
            raise CampaignError(f"--chunk {args.chunk}: give 1 or more seeds per session")
        if args.budget_seconds is not None and args.budget_seconds <= 0:
            raise CampaignError("--budget-seconds: give a positive number of seconds")
        data = load_data(out)
        if args.merge:
            added = merge(data, [load_data(Path(p)) for p in args.merge])
            save_data(data, out)
            print(f"merged {added} sessions into {out}")
            if args.seeds is None:
                if args.markdown:
                    print(render_markdown(data))
                return 0
        args.seeds = args.seeds or DEFAULT_SEEDS
        parse_seeds(args.seeds)
        failures = 0
        try:
            failures = campaign(args, data, out)
        except KeyboardInterrupt:
            print("interrupted: completed seeds are saved; rerun the command to resume")
            return 130
    except CampaignError as error:
        print(f"false_alarm_campaign: error: {error}", file=sys.stderr)
        return 2
    print(f"results in {out}: {failures} failures in this run")
    if args.markdown:
        print(render_markdown(data))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
