"""The kill matrix: the whole conformance suite against every mutant of the zoo, under several
hypothesis seeds.

    python -m gpt2_evidence.kill_matrix [--seeds N] [-n WORKERS] [--out docs/data/kill-matrix.json]

Each mutant of the zoo (``zoo/``, :mod:`gpt2_zoo`: a GPT-2 with one realistic bug, built on the
reference or on transformers' ``GPT2LMHeadModel``) and each unmodified implementation the zoo is
built on runs the full suite (every property, not only the ones its declared requirements tag) once
per seed:
the ``ci`` profile's example count, drawn from the seed instead of derandomized, without
hypothesis' shrink phase (the first failing example decides the outcome). The outcome of every
requirement is read from the suite's JSON report (``--conformance-report``), never from terminal
text. The result, with its provenance (:mod:`gpt2_evidence.provenance`), the settings and the wall
time, is written as JSON;
:func:`render_markdown` turns it into the docs page's tables (``<!-- generated: kill-matrix -->``
in ``docs/evidence/mutant-zoo.md``).

A mutant is *caught* when every requirement it declares (``must_fail``) is reported failed under
every seed. The derandomized meta-test (``tests/test_mutant_zoo.py``) checks the same thing on
one fixed set of examples; the seeds here show that a catch does not depend on lucky draws.

Runs are spread over ``-n`` worker processes, each importing torch once and running
``pytest.main`` once per job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpt2_evidence import provenance
from gpt2_evidence.provenance import DATA

DEFAULT_OUT = DATA / "kill-matrix.json"
PROFILE = "gpt2-conformance-kill-matrix"
FAILED = "fail"
#: A declared requirement is caught when it does not pass: it fails, or (for a mutant that
#: declares its deviation, or a consequence of one) it is reported as an expected failure.
CAUGHT = ("fail", "xfail")
#: Spec chapters in the order the matrix shows them.
FAMILIES = (
    "model",
    "objective",
    "causality",
    "inference",
    "embedding",
    "head",
    "forward",
    "numerics",
    "input",
)

# One worker: registers the profile, then runs pytest once per job of its batch. Each job's
# report is the suite's own JSON report; the worker adds one line per job with its wall time.
DRIVER = f"""
import json
import sys
import time

import pytest
from hypothesis import settings

from gpt2_conformance.options import PROFILES, campaign_settings

jobs_file, conformance, timings = sys.argv[1], sys.argv[2], sys.argv[3]
examples = int(sys.argv[4]) if len(sys.argv) > 4 else PROFILES["ci"]["max_examples"]
settings.register_profile("{PROFILE}", **campaign_settings(examples, derandomize=False))
for job in json.loads(open(jobs_file, encoding="utf-8").read()):
    print(f"===== {{job['impl']}} at {{job['dtype']}}, seed {{job['seed']}}", flush=True)
    start = time.monotonic()
    code = pytest.main(
        [
            *(job.get("node_ids") or [conformance]),
            f"--impl={{job['impl']}}",
            f"--dtype={{job['dtype']}}",
            "--hypothesis-profile={PROFILE}",
            f"--hypothesis-seed={{job['seed']}}",
            f"--conformance-report={{job['report']}}",
            "-p",
            "no:cacheprovider",
            "-q",
            "--no-header",
            "--tb=no",
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
        ]
    )
    with open(timings, "a", encoding="utf-8") as out:
        line = {{"report": job["report"], "wall_s": time.monotonic() - start, "exit": int(code)}}
        out.write(json.dumps(line) + "\\n")
"""


def _jobs(
    mutants: list[Any],
    baselines: list[tuple[str, str]],
    seeds: list[int],
    folder: Path,
    declared_only: bool = False,
) -> list[dict[str, Any]]:
    properties: dict[str, list[str]] = {}
    if declared_only:
        import gpt2_conformance
        from gpt2_zoo import properties_by_requirement

        modules = sorted(p.stem for p in Path(gpt2_conformance.__file__).parent.glob("test_*.py"))
        properties = properties_by_requirement(tuple(modules))

    def nodes(requirements: set[str]) -> list[str]:
        return sorted({node for rid in requirements for node in properties[rid]})

    declared = {rid for mutant in mutants for rid in mutant.must_fail}
    jobs = []
    for seed in seeds:
        for impl, dtype in baselines:
            name = f"baseline-{impl}-{dtype}-{seed}"
            jobs.append(
                {
                    "impl": impl,
                    "dtype": dtype,
                    "seed": seed,
                    "report": str(folder / f"{name}.json"),
                    "cost": 2,
                    "node_ids": nodes(declared) if declared_only else None,
                }
            )
        for mutant in mutants:
            name = f"{mutant.name}-{seed}"
            jobs.append(
                {
                    "impl": mutant.impl,
                    "dtype": mutant.dtype,
                    "seed": seed,
                    "report": str(folder / f"{name}.json"),
                    "cost": 2 if mutant.origin == "transformers" else 1,
                    "node_ids": nodes(set(mutant.must_fail)) if declared_only else None,
                }
            )
    return jobs


def run(
    seeds: list[int],
    workers: int,
    only: list[str] | None = None,
    declared_only: bool = False,
    max_examples: int | None = None,
    baselines_too: bool = True,
) -> dict[str, Any]:
    """Run the suite on every mutant (or the named ones) and the baselines; the kill matrix.

    ``declared_only`` runs only the properties of the declared requirements (a quick robustness
    check while writing a mutant; the published matrix runs everything)."""
    from gpt2_conformance.options import PROFILES
    from gpt2_spec import load_requirements
    from gpt2_zoo import zoo

    mutants = [m for m in zoo() if not only or m.name in only]
    if only and len(mutants) != len(set(only)):
        unknown = sorted(set(only) - {m.name for m in mutants})
        raise SystemExit(f"unknown mutants {unknown}; see zoo/ (gpt2_zoo) for their class names")
    baselines = sorted({(m.baseline, m.dtype) for m in mutants}) if baselines_too else []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kill-matrix-") as tmp:
        folder = Path(tmp)
        jobs = _jobs(mutants, baselines, seeds, folder, declared_only)
        # Costly jobs first, dealt out in turn, so the workers finish together.
        jobs.sort(key=lambda job: -job["cost"])
        driver = folder / "driver.py"
        driver.write_text(DRIVER, encoding="utf-8")
        timings = folder / "timings.jsonl"
        env = dict(os.environ)
        env.pop("GPT2_CONFORMANCE_IMPL", None)
        import gpt2_conformance

        conformance = str(Path(gpt2_conformance.__file__).parent)
        processes = []
        for w in range(workers):
            batch = folder / f"jobs-{w}.json"
            batch.write_text(json.dumps(jobs[w::workers]), encoding="utf-8")
            log = (folder / f"worker-{w}.log").open("w", encoding="utf-8")
            command = [sys.executable, str(driver), str(batch), conformance, str(timings)]
            if max_examples is not None:
                command.append(str(max_examples))
            processes.append(
                (
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder
                    ),
                    log,
                )
            )
            print(f"worker {w}: {len(jobs[w::workers])} runs", flush=True)
        for process, log in processes:
            process.wait()
            log.close()
        wall = time.monotonic() - started
        walls = {}
        if timings.exists():
            for line in timings.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                walls[entry["report"]] = entry["wall_s"]
        reports = {}
        for job in jobs:
            path = Path(job["report"])
            reports[job["report"]] = (
                json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
            )
        tails = {
            w: (folder / f"worker-{w}.log").read_text(encoding="utf-8")[-3000:]
            for w in range(workers)
        }

    requirement_ids = [r.id for r in load_requirements()]

    triages: dict[str, list[dict[str, Any]]] = {}

    def outcomes(kind: str, dtype: str, impl: str) -> tuple[dict[str, list[str]], list[str], float]:
        per_rid: dict[str, list[str]] = {rid: [] for rid in requirement_ids}
        problems, total = [], 0.0
        triages[impl] = []
        for seed in seeds:
            job = next(
                j for j in jobs if j["impl"] == impl and j["dtype"] == dtype and j["seed"] == seed
            )
            total += walls.get(job["report"], 0.0)
            report = reports[job["report"]]
            if report is None:
                problems.append(f"seed {seed}: no report (see the worker log)")
                for rid in requirement_ids:
                    per_rid[rid].append("no-report")
                continue
            if report.get("collection_errors"):
                problems.append(f"seed {seed}: collection errors {report['collection_errors']}")
            statuses = {entry["id"]: entry["status"] for entry in report["requirements"]}
            for rid in requirement_ids:
                per_rid[rid].append(statuses.get(rid, "not-run"))
            triages[impl].append(dict(report.get("triage") or {}))
        return per_rid, problems, total

    rows = []
    for mutant in mutants:
        per_rid, problems, total = outcomes("mutant", mutant.dtype, mutant.impl)
        caught = {rid: sum(s in CAUGHT for s in per_rid[rid]) for rid in mutant.must_fail}
        also = {
            rid: sum(s == FAILED for s in statuses)
            for rid, statuses in per_rid.items()
            if rid not in mutant.must_fail and FAILED in statuses
        }
        rows.append(
            {
                "name": mutant.name,
                "module": mutant.module,
                "origin": mutant.origin,
                "dtype": mutant.dtype,
                "story": mutant.story,
                "declared": list(mutant.must_fail),
                "caught_seeds": caught,
                "caught_every_seed": all(n == len(seeds) for n in caught.values()),
                "also_fails": also,
                # The report's triage, per seed: what a user is told to start with.
                "primary": [t.get("primary", []) for t in triages[mutant.impl]],
                "declared_primary": [t.get("declared", []) for t in triages[mutant.impl]],
                "consequences": [len(t.get("consequence", [])) for t in triages[mutant.impl]],
                "outcomes": {rid: "/".join(s) for rid, s in per_rid.items()},
                "problems": problems,
                "wall_s": round(total, 1),
            }
        )
    baseline_rows = []
    for impl, dtype in baselines:
        per_rid, problems, total = outcomes("baseline", dtype, impl)
        failed = {
            rid: sum(s == FAILED for s in statuses)
            for rid, statuses in per_rid.items()
            if FAILED in statuses
        }
        baseline_rows.append(
            {
                "impl": impl,
                "dtype": dtype,
                "fails": failed,
                "statuses": {rid: sorted(set(s)) for rid, s in per_rid.items()},
                "outcomes": {rid: "/".join(s) for rid, s in per_rid.items()},
                "problems": problems,
                "wall_s": round(total, 1),
            }
        )
    caught_all = sum(row["caught_every_seed"] for row in rows)
    return {
        "generated_by": "gpt2_evidence.kill_matrix",
        "command": " ".join(["python", "-m", "gpt2_evidence.kill_matrix", *sys.argv[1:]]),
        "provenance": provenance.collect(),
        "profile": {
            "name": "ci",
            "max_examples": max_examples or PROFILES["ci"]["max_examples"],
            "ci_max_examples": PROFILES["ci"]["max_examples"],
            "derandomize": False,
            "shrink": False,
            "dtype": "per mutant",
            "properties": "declared requirements only" if declared_only else "all",
        },
        "seeds": seeds,
        "workers": workers,
        "wall_s": round(wall, 1),
        "requirements": requirement_ids,
        "families": list(FAMILIES),
        "baselines": baseline_rows,
        "mutants": rows,
        "summary": {
            "mutants": len(rows),
            "by_origin": {
                origin: sum(row["origin"] == origin for row in rows)
                for origin in ("reference", "transformers")
            },
            "caught_every_seed": caught_all,
            "kill_rate": round(caught_all / len(rows), 4) if rows else 0.0,
            "baselines_clean": all(not row["fails"] for row in baseline_rows),
            "triage": triage_summary(rows),
        },
        "worker_log_tails": tails if any(row["problems"] for row in rows + baseline_rows) else {},
    }


def triage_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the reports told each mutant's user to start with (the triage of issue 12), under
    the first seed: how many requirements failed (fail or declared xfail), how many of them were
    primary, and whether the primaries are the mutant's declared requirements."""
    import statistics

    failing, primaries, on_target, inside = [], [], 0, 0
    for row in rows:
        if not row.get("primary"):
            continue
        statuses = {rid: s.split("/")[0] for rid, s in row["outcomes"].items()}
        failing.append(sum(s in CAUGHT for s in statuses.values()))
        # The fresh primaries; a mutant that declares its deviation has declared ones only. (A
        # baseline's own declared deviation, such as transformers' initialisation, is not the
        # mutant's and is left out.)
        first = set(row["primary"][0]) or set(row["declared_primary"][0])
        primaries.append(len(first))
        on_target += bool(first & set(row["declared"]))
        inside += bool(first) and first <= set(row["declared"])
    if not failing:
        return {}
    return {
        "mutants": len(failing),
        "failing_median": statistics.median(failing),
        "failing_max": max(failing),
        "primary_median": statistics.median(primaries),
        "primary_max": max(primaries),
        "primary_at_most_3": sum(n <= 3 for n in primaries),
        "primary_names_a_declared": on_target,
        "primary_only_declared": inside,
    }


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _starts_with(row: dict[str, Any]) -> str:
    """The first seed's primary failures (declared ones marked), or a dash."""
    if not row.get("primary"):
        return "—"
    fresh = [_short(r) for r in row["primary"][0]]
    declared = [f"{_short(r)} (declared)" for r in row["declared_primary"][0]]
    return ", ".join(fresh + declared) or "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(rid: str) -> str:
    return f"`{rid}`"


def render_markdown(data: dict[str, Any]) -> str:
    """The kill matrix as Markdown: a summary, a table of mutants, a mutant x family matrix."""
    rows, seeds = data["mutants"], data["seeds"]
    n_seeds = len(seeds)
    summary = data["summary"]
    origin = provenance.read(data)
    machine, software = origin["machine"], origin["software"]
    rate = 100.0 * summary["kill_rate"]
    lines = [
        f"**{summary['mutants']} mutants** ({summary['by_origin'].get('reference', 0)} built on "
        f"the reference, {summary['by_origin'].get('transformers', 0)} on transformers' "
        f"`GPT2LMHeadModel`): **{summary['caught_every_seed']} of {summary['mutants']} caught "
        f"on every declared requirement under "
        f"{'its one seed' if n_seeds == 1 else f'all {n_seeds} seeds'} ({rate:.0f}%)**.",
        "",
        f"Generated by `{data['command']}` on {provenance.when(origin)}: "
        + (
            "the full suite"
            if data["profile"].get("properties", "all") == "all"
            else "the properties of the declared requirements only"
        )
        + " per mutant and seed, "
        f"profile `{data['profile']['name']}` with {data['profile']['max_examples']} examples per "
        f"property (the profile's own count is {data['profile'].get('ci_max_examples', 25)}), "
        f"drawn from hypothesis seeds {', '.join(map(str, seeds))}, no shrinking; "
        f"{data['workers']} workers, {data['wall_s'] / 60:.1f} min wall on {machine['cpu']} "
        f"({machine['cores']} cores; torch {software['torch']}, transformers "
        f"{software['transformers']}).",
        "",
    ]
    for base in data["baselines"]:
        passes = [
            sum(statuses.split("/")[k] == "pass" for statuses in base["outcomes"].values())
            for k in range(n_seeds)
        ]
        fails = base["fails"]
        verdict = (
            "no requirement failed under any seed"
            if not fails
            else "FAILED " + ", ".join(f"{_short(r)} ({n}/{n_seeds})" for r, n in fails.items())
        )
        unclaimed = sorted(r for r, s in base["statuses"].items() if s == ["not-claimed"])
        note = f", {len(unclaimed)} not claimed" if unclaimed else ""
        lines.append(
            f"- Unmodified `{base['impl']}` at {base['dtype']}: "
            + (f"{min(passes)}" if min(passes) == max(passes) else f"{min(passes)}-{max(passes)}")
            + f" requirements pass per seed{note}; {verdict}."
        )
    tri = summary.get("triage") or {}
    if tri:
        lines += [
            "",
            f"What the report tells the user to start with (its primary failures, first seed): "
            f"a mutant fails a median of {tri['failing_median']:g} requirements (at most "
            f"{tri['failing_max']}), of which a median of {tri['primary_median']:g} are primary "
            f"(at most {tri['primary_max']}; at most 3 for {tri['primary_at_most_3']} of "
            f"{tri['mutants']} mutants). The primaries name one of the mutant's declared "
            f"requirements for {tri['primary_names_a_declared']} of {tri['mutants']}, and only "
            f"declared ones for {tri['primary_only_declared']}.",
        ]
    lines += [
        "",
        "| mutant | origin | declared | caught (seeds) | the report starts with | also fails "
        "| how the bug arises |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        caught = min(row["caught_seeds"].values()) if row["caught_seeds"] else 0
        mark = "" if row["caught_every_seed"] else " **missed**"
        weakest = (
            ""
            if row["caught_every_seed"]
            else " ("
            + ", ".join(
                f"{_short(r)} {n}/{n_seeds}" for r, n in row["caught_seeds"].items() if n < n_seeds
            )
            + ")"
        )
        listed = [
            _short(r) + ("" if n == n_seeds else f" ({n}/{n_seeds})")
            for r, n in row["also_fails"].items()
        ]
        # A long list is in the per-chapter matrix below; the table keeps its rows short.
        also = ", ".join(listed[:4]) + (f", ... {len(listed) - 4} more" if len(listed) > 4 else "")
        lines.append(
            f"| `{row['name']}` | {row['origin']} | "
            f"{', '.join(map(_short, row['declared']))} | {caught}/{n_seeds}{mark}{weakest} | "
            f"{_starts_with(row)} | {also or '—'} | {_cell(row['story'])} |"
        )
    families = data["families"]
    lines += [
        "",
        "Requirements failed per spec chapter (under any seed); **bold**: the chapter holds a "
        "declared requirement.",
        "",
        "| mutant | " + " | ".join(families) + " |",
        "| --- | " + " | ".join("---:" for _ in families) + " |",
    ]
    for row in rows:
        failed = set(row["also_fails"]) | {r for r, n in row["caught_seeds"].items() if n}
        declared_families = {r.split(".")[0] for r in row["declared"]}
        cells = []
        for family in families:
            count = sum(r.split(".")[0] == family for r in failed)
            text = str(count) if count else "·"
            cells.append(f"**{text}**" if family in declared_families else text)
        lines.append(f"| `{row['name']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, default=5, help="hypothesis seeds per mutant (default 5)"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("-n", "--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON to write")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the Markdown")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="MUTANT", help="these mutants only"
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        metavar="N",
        help="examples per property instead of the ci profile's (a cheaper run on a busy machine)",
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the unmodified implementations (the meta-test checks them)",
    )
    parser.add_argument(
        "--declared-only",
        action="store_true",
        help="run only the properties of the declared requirements (a quick check, not the matrix)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers take a positive count")
    if args.out == DEFAULT_OUT:
        provenance.require_checkout()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    data = run(
        seeds,
        args.workers,
        args.only,
        args.declared_only,
        args.max_examples,
        baselines_too=not args.no_baselines,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    markdown = render_markdown(data)
    if args.markdown:
        args.markdown.write_text(markdown, encoding="utf-8")
    print(markdown.split("\n\n")[0])
    print(f"written {args.out} ({data['wall_s']:.0f} s)")
    summary = data["summary"]
    return (
        0
        if summary["caught_every_seed"] == summary["mutants"] and summary["baselines_clean"]
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
