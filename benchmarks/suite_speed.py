"""How long the conformance suite takes: failing runs against passing ones, and builds per run.

Two benchmarks (docs/benchmarks.md, "The suite's own speed"), each printing its figures; neither is
a timed test:

* ``failing``: per mutant of the zoo (a chosen few by default, ``--all`` for every one), the
  default ``ci`` run against the mutant next to a run against the unmodified implementation it
  is built on, side by side in one session (alternating, so a burst of load hits both); prints
  both wall times and the ratio failing / passing, then the median and maximum ratio::

      python -m gpt2_benchmarks.suite_speed failing [--mutants CausalLeak,WritesFirstToken] [--all]

* ``builds``: one ``ci`` run per implementation (reference, numpy, transformers and
  ``speed_adapters.SlowBuild``, the reference with every build sleeping 0.3 s), with the
  wall time, the share of the time inside the implementation and in the suite, and the models
  built, their configurations and shapes, read from each run's JSON report::

      python -m gpt2_benchmarks.suite_speed builds [--impls reference,numpy,transformers,slow]

Runs go through ``python -m pytest --pyargs gpt2_conformance`` in a subprocess, one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: The mutants ``failing`` runs by default: a subtle numeric bug, an input-isolation bug and a
#: model that raises on every call.
DEFAULT_MUTANTS = ("CausalLeak", "WritesFirstToken", "AlwaysRaises")
#: ``--impl`` values of the implementations ``builds`` can run (all by default; the ``-copy``
#: ones declare ``reuse = "copy"``).
BUILD_IMPLS = {
    "reference": "reference",
    "numpy": "numpy",
    "transformers": "transformers",
    "slow": "speed_adapters:SlowBuild",
    "slow-copy": "speed_adapters:SlowBuildCopies",
    "slow-fixed": "speed_adapters:SlowBuildFixed",
    "reference-copy": "speed_adapters:ReferenceCopies",
}
#: The folder of ``speed_adapters`` (the slow-to-build and the always-raising implementations),
#: put on every run's ``PYTHONPATH``: another checkout's interpreter (``--compare``) imports it too.
ADAPTERS = Path(__file__).resolve().parent

# ---- running the suite -------------------------------------------------------------------------


def suite_command(impl: str, report: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command line of one default ``ci`` run against ``impl``, writing its JSON report."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "gpt2_conformance",
        f"--impl={impl}",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--conformance-report={report}",
        *extra,
    ]


def run_suite(impl: str, extra: Sequence[str] = (), python: str | None = None) -> dict[str, Any]:
    """One run with ``python`` (default: this interpreter): ``{"impl", "wall_s", "exit",
    "timing", "summary"}`` (the last two from the report; empty when the run wrote none)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ADAPTERS), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "report.json"
        command = suite_command(impl, report_path, extra)
        command[0] = python or sys.executable
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env)
        wall_s = time.perf_counter() - started
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {
        "impl": impl,
        "wall_s": wall_s,
        "exit": proc.returncode,
        "timing": report.get("timing", {}),
        "summary": report.get("summary", {}),
        "error": "" if report else (proc.stdout + proc.stderr)[-2000:],  # why no report
    }


def ratio_summary(ratios: Sequence[float]) -> dict[str, float]:
    """Median and maximum of the ratios."""
    if not ratios:
        raise ValueError("ratio_summary needs at least one ratio")
    return {"median": statistics.median(ratios), "max": max(ratios)}


def mutant_impls(names: Sequence[str] | None) -> list[tuple[str, str, str]]:
    """``(name, failing impl, passing impl)`` per mutant: the zoo's (all when ``names`` is None)
    and :data:`DEFAULT_MUTANTS`' ``AlwaysRaises`` (built on the reference)."""
    from gpt2_zoo import zoo

    known = {m.name: (m.impl, m.baseline) for m in zoo()}
    known["AlwaysRaises"] = ("speed_adapters:AlwaysRaises", "reference")
    chosen = list(known) if names is None else list(names)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutants: {', '.join(unknown)} (the zoo's class names)")
    return [(n, *known[n]) for n in chosen]


def _checkouts(compare: str | None) -> dict[str, str | None]:
    """The interpreters to run: this one ("this"), and ``compare`` ("other") when given."""
    return {"this": None, **({"other": compare} if compare else {})}


def failing(
    names: Sequence[str] | None,
    extra: Sequence[str] = (),
    out: Callable[[str], None] = print,
    compare: str | None = None,
) -> list[dict[str, Any]]:
    """Per mutant, a failing run and a passing run of its baseline, one right after the other
    (with ``compare``, the same two with that interpreter too); prints and returns them."""
    rows = []
    pythons = _checkouts(compare)
    for name, impl, baseline in mutant_impls(names):
        row: dict[str, Any] = {"mutant": name}
        for label, python in pythons.items():
            bad = run_suite(impl, extra, python)
            good = run_suite(baseline, extra, python)
            ratio = bad["wall_s"] / good["wall_s"]
            failed = bad["summary"].get("fail", 0)
            out(
                f"{name:26s} {label:5s} failing {bad['wall_s']:6.1f} s ({failed:2d} fail)  "
                f"passing {good['wall_s']:6.1f} s  ratio {ratio:4.2f}"
            )
            row[label] = {"failing": bad, "passing": good, "ratio": ratio}
        rows.append(row)
    for label in pythons:
        summary = ratio_summary([r[label]["ratio"] for r in rows])
        out(
            f"{label}: failing / passing over {len(rows)} mutants: median "
            f"{summary['median']:.2f}, max {summary['max']:.2f}"
        )
    return rows


def builds_line(name: str, run: dict[str, Any]) -> str:
    """One implementation's figures: wall time, where the tests' time went, the builds."""
    t = run["timing"]
    if not t:
        return f"{name:18s} {run['wall_s']:6.1f} s wall (no report: exit {run['exit']})"
    return (
        f"{name:18s} {run['wall_s']:6.1f} s wall, {t['tests_s']:6.1f} s in tests: "
        f"implementation {t['implementation_share']:4.0%}, suite {t['suite_share']:4.0%} "
        f"(oracle {t['oracle_share']:3.0%}); {t.get('builds', '?')} builds in "
        f"{t.get('build_s', 0.0):.1f} s, {t.get('configs', '?')} configurations, "
        f"{t.get('shapes', '?')} shapes"
    )


def builds(
    names: Sequence[str],
    extra: Sequence[str] = (),
    out: Callable[[str], None] = print,
    compare: str | None = None,
) -> dict[str, dict[str, Any]]:
    """One run per implementation (with ``compare``, each followed by the same run with that
    interpreter); prints a line each, then the wall-time ratios."""
    unknown = [n for n in names if n not in BUILD_IMPLS]
    if unknown:
        known = ", ".join(BUILD_IMPLS)
        raise SystemExit(f"unknown implementations: {', '.join(unknown)} (known: {known})")
    runs: dict[str, dict[str, Any]] = {}
    pythons = _checkouts(compare)
    for name in names:
        for label, python in pythons.items():
            runs[f"{name} {label}"] = run = run_suite(BUILD_IMPLS[name], extra, python)
            out(builds_line(f"{name} ({label})", run))
    for label in pythons:
        if f"reference {label}" in runs:
            base = runs[f"reference {label}"]["wall_s"]
            others = [n for n in names if n != "reference"]
            out(f"{label}: wall time / the reference's: " + ", ".join(
                f"{n} {runs[f'{n} {label}']['wall_s'] / base:.2f}" for n in others
            ))  # fmt: skip
    if compare:
        out("this / other wall time: " + ", ".join(
            f"{n} {runs[f'{n} this']['wall_s'] / runs[f'{n} other']['wall_s']:.2f}" for n in names
        ))  # fmt: skip
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpt2_benchmarks.suite_speed", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    fail = sub.add_parser("failing", help="failing runs of mutants against passing baselines")
    fail.add_argument("--mutants", default=",".join(DEFAULT_MUTANTS), help="class names, commas")
    fail.add_argument("--all", action="store_true", help="every mutant of the zoo")
    build = sub.add_parser("builds", help="wall time and builds per implementation")
    build.add_argument("--impls", default=",".join(BUILD_IMPLS), help="names, commas")
    for p in (fail, build):
        p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
        p.add_argument(
            "--compare",
            default=None,
            metavar="PYTHON",
            help="also run everything with this interpreter (another checkout's virtual "
            "environment, e.g. before a change), alternating with this one",
        )
        p.add_argument(
            "pytest_args", nargs="*", help="more options for every run (after --), e.g. -- -x"
        )
    args = parser.parse_args(argv)
    result: Any
    if args.what == "failing":
        names = None if args.all else [n for n in args.mutants.split(",") if n]
        result = failing(names, args.pytest_args, compare=args.compare)
    else:
        impls = [n for n in args.impls.split(",") if n]
        result = builds(impls, args.pytest_args, compare=args.compare)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
