"""Run the conformance suite against each built-in adapter and keep its JSON report for the docs.

Usage (from the repository root)::

    python -m gpt2_evidence.refresh_reports               # all built-ins, the default ci profile
    python -m gpt2_evidence.refresh_reports --impl numpy  # one of them

Each report is saved as ``docs/data/reports/<impl>.json``, the suite's own JSON report with one
added field, ``provenance`` (machine, versions, commit: :mod:`gpt2_evidence.provenance`; reports
written before it have ``environment`` instead), so that the docs can say where the numbers come
from. The docs site renders the reports as the
conformance matrix of the built-in adapters: ``render_markdown`` below is called by the docs
hook (``docs/hooks/generated.py``) for the line ``<!-- generated: adapters -->``.

Importing this module runs nothing and does not import torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpt2_conformance import report as reports_module
from gpt2_conformance.adapters import baselines
from gpt2_evidence import provenance
from gpt2_evidence.provenance import DATA, REPOSITORY

REPORTS = DATA / "reports"

#: The built-in adapters whose reports the docs show, in the order of the matrix's columns.
IMPLS = baselines()

# Plain words (no emoji: a browser without an emoji font would show empty boxes).
_STATUS_CELL = {
    "pass": "pass",
    "fail": "**FAIL**",
    "xfail": "xfail",
    "not-claimed": "not-claimed",
    "skipped": "skipped",
    "not-run": "not-run",
}


def run_one(impl: str, out_dir: Path, extra: Sequence[str] = ()) -> Path:
    """Run the suite against ``impl`` and save its report as ``out_dir/<impl>.json``.

    A run whose properties fail still writes its report (pytest exits 1): that is data too.
    Any other exit status (usage error, interrupted run) is an error that names the command.
    """
    target = out_dir / f"{impl}.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(REPOSITORY / "conformance"),
        f"--impl={impl}",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--conformance-report={target}",
        *extra,
    ]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=REPOSITORY, check=False)
    if done.returncode not in (0, 1) or not target.exists():
        raise SystemExit(
            f"the suite run for {impl!r} ended with exit status {done.returncode} and "
            f"{'no' if not target.exists() else 'a partial'} report; run the command above by "
            "hand to see why"
        )
    report = json.loads(target.read_text(encoding="utf-8"))
    report["provenance"] = provenance.collect()
    target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return target


def load_reports(directory: Path = REPORTS) -> dict[str, Any]:
    """The data the renderer takes: ``{"reports": {impl: report}}`` for every saved report."""
    reports = {}
    for impl in IMPLS:
        path = directory / f"{impl}.json"
        if path.exists():
            reports[impl] = json.loads(path.read_text(encoding="utf-8"))
    return {"reports": reports}


def _summary_cell(summary: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in summary.items() if n)


def render_markdown(data: Mapping[str, Any]) -> str:
    """The conformance matrix: one summary row per adapter, then every requirement's status.

    ``data`` is :func:`load_reports`' result. Links are relative to the docs folder.
    """
    reports: Mapping[str, Any] = data.get("reports", {})
    if not reports:
        raise ValueError(
            "no conformance report to show: run `python -m gpt2_evidence.refresh_reports` to "
            "create docs/data/reports/<impl>.json"
        )
    impls = list(reports)
    lines = [
        "| `--impl` | implementation | verdict | requirements | device, dtype | examples "
        "per property | suite run | produced |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for impl in impls:
        r = reports[impl]
        i, h = r["implementation"], r["hypothesis"]
        origin = provenance.read(r)
        machine, software = origin["machine"], origin["software"]
        verdict = reports_module.class_headline(r)
        where = (
            f"{r['created'][:10]}, {machine['cores'] or '?'}-CPU {machine['arch'] or ''}, "
            f"torch {software.get('torch')}"
        )
        if impl.startswith("transformers"):
            where += f", transformers {software.get('transformers')}"
        lines.append(
            f"| `{impl}` | {i['name']} {i.get('version', '')} | {verdict} | "
            f"{_summary_cell(r['summary'])} | {i['device']}, {i['dtype']} | "
            f"{h['max_examples']} ({h['profile']}) | {r['duration_s']:.0f} s | {where} |"
        )
    lines += ["", "| requirement | level | " + " | ".join(f"`{x}`" for x in impls) + " |"]
    lines.append("| --- | --- | " + " | ".join("---" for _ in impls) + " |")
    first = reports[impls[0]]["requirements"]
    by_impl = {x: {e["id"]: e for e in reports[x]["requirements"]} for x in impls}
    for entry in first:
        rid = entry["id"]
        cells = []
        for x in impls:
            found = by_impl[x].get(rid)
            cells.append(_STATUS_CELL.get(found["status"], found["status"]) if found else "—")
        lines.append(
            f"| [`{rid}`]({entry['anchor']}) | {entry['level']} | " + " | ".join(cells) + " |"
        )
    notes = [
        (x, e["id"], e["message"])
        for x in impls
        for e in reports[x]["requirements"]
        if e["status"] not in ("pass", "not-run") and e.get("message")
    ]
    if notes:
        lines += ["", "Why a requirement did not pass:", ""]
        lines += [f"- `{x}`, `{rid}`: {message.splitlines()[0]}" for x, rid, message in notes]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--impl",
        action="append",
        choices=IMPLS,
        help="a built-in adapter to run (repeatable; default: all of them)",
    )
    parser.add_argument("--out", type=Path, default=REPORTS, help="folder for the reports")
    parser.add_argument(
        "pytest_args", nargs="*", help="further pytest options, after --, e.g. -- -n 2"
    )
    args = parser.parse_args(argv)
    provenance.require_checkout()
    args.out.mkdir(parents=True, exist_ok=True)
    for impl in args.impl or IMPLS:
        print("wrote", run_one(impl, args.out, args.pytest_args).relative_to(REPOSITORY))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
