"""The peers matrix: the suite's causal-lm requirements profile against GPT-2 and other causal-LM
architectures that transformers ships, each built from a tiny random configuration.

    python -m gpt2_evidence.peers_matrix [--only NAME ...] [--jobs N] [--out docs/data/peers.json]

Each architecture runs ``pytest --pyargs gpt2_conformance --impl=IMPL
--conformance-requirements=causal-lm`` in its own process (the ``ci`` hypothesis profile:
derandomized, 25 examples per property), and its outcome per requirement is read from the
suite's JSON report (``--conformance-report``), never from terminal text. The result (machine,
date, versions, per architecture: verdict, outcome per requirement, wall time, and the
explanation of every requirement that did not pass) is written as JSON; :func:`render_markdown`
turns it into the docs page's matrix (``<!-- generated: peers -->`` in
``docs/evidence/peers.md``).

A requirement that fails on an architecture must be explained in :data:`EXPLANATIONS` by what the
architecture is; the script reports any failure without one, and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gpt2_benchmarks.suite_speed import suite_command
from gpt2_evidence import provenance
from gpt2_evidence.provenance import DATA

DEFAULT_OUT = DATA / "peers.json"
PROFILE = "causal-lm"

#: name -> (--impl, what it is). GPT-2 first (the reference and transformers' GPT2LMHeadModel),
#: then the peers of gpt2_conformance.adapters.peers.
GPT2_IMPLS = {
    "gpt2 (reference)": "reference",
    "gpt2 (transformers)": "transformers",
}

#: (architecture, requirement id) -> why it fails: a property of the architecture, in words.
EXPLANATIONS: dict[tuple[str, str], str] = {
    ("gpt-j", "head.linear-no-bias"): (
        "GPT-J's output head is `nn.Linear(n_embd, vocab_size)` with its default bias: the logits "
        "are h Wᵀ + b, and the suite finds the same vector added to every row. transformers "
        "initialises that bias to zero, so an untrained model passes; the peer moves every "
        "weight off its initial value (as training does), and the bias shows."
    ),
    ("phi", "head.linear-no-bias"): (
        "Phi's output head is `nn.Linear(hidden_size, vocab_size, bias=True)`: the logits are "
        "h Wᵀ + b (a bias per vocabulary entry). It is zero at initialisation, so only the "
        "perturbed weights reveal it."
    ),
}


def _peer_names() -> list[str]:
    from gpt2_conformance.adapters import PEER_NAMES

    return list(PEER_NAMES)


def architectures() -> dict[str, str]:
    """Every architecture of the matrix: display name -> ``--impl``."""
    return {**GPT2_IMPLS, **{name: f"hf:{name}" for name in _peer_names()}}


def run_one(name: str, impl: str, workdir: Path) -> dict[str, Any]:
    """Run the causal-lm profile on ``impl``; returns the suite's report and the wall time."""
    report = workdir / f"{impl.replace(':', '-')}.json"
    options = (f"--conformance-requirements={PROFILE}", "--conformance-profile=ci", "-W", "ignore")
    command = suite_command(impl, report, options)
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if not report.is_file():
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"{name}: the suite wrote no report (exit {done.returncode}):\n{tail}")
    data = json.loads(report.read_text(encoding="utf-8"))
    print(f"{name}: {data['verdict']} ({wall:.0f} s)", flush=True)
    return {"report": data, "wall_s": wall}


def summarise(name: str, impl: str, result: dict[str, Any]) -> dict[str, Any]:
    report = result["report"]
    in_profile = [r for r in report["requirements"] if r["status"] != "not-in-profile"]
    failures = {
        r["id"]: r["message"] for r in in_profile if r["status"] not in ("pass", "not-claimed")
    }
    info = report["implementation"]
    entry: dict[str, Any] = {
        "name": name,
        "impl": impl,
        "adapter": info.get("name"),
        "tied_head": info.get("tied_head"),
        "capabilities": info.get("capabilities", []),
        "verdict": report["verdict"],
        "conforms": report["conforms"],
        "summary": report["summary"],
        "wall_s": round(result["wall_s"], 1),
        "outcomes": {r["id"]: r["status"] for r in in_profile},
        "not_claimed": {r["id"]: r["message"] for r in in_profile if r["status"] == "not-claimed"},
        "failures": failures,
        "explanations": {
            rid: EXPLANATIONS[(name, rid)] for rid in failures if (name, rid) in EXPLANATIONS
        },
    }
    if impl.startswith("hf:"):
        from gpt2_conformance.adapters.peers import PEERS

        peer = PEERS[impl.removeprefix("hf:")]
        entry["positions"] = peer.positions
        entry["note"] = peer.note
        entry["model_class"] = peer.model_class
    else:
        entry["positions"] = "learned absolute"
        entry["note"] = "the spec's own architecture"
        entry["model_class"] = "GPT2" if impl == "reference" else "GPT2LMHeadModel"
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="run only these architectures (display names)")
    parser.add_argument("--jobs", type=int, default=1, help="architectures run side by side")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    parser.add_argument(
        "--machine-note",
        default="",
        help="what else to say about the machine (e.g. that other jobs shared it)",
    )
    args = parser.parse_args(argv)
    if args.out == DEFAULT_OUT:
        provenance.require_checkout()
    chosen = architectures()
    if args.only:
        unknown = sorted(set(args.only) - set(chosen))
        if unknown:
            parser.error(f"unknown architectures {unknown}; choose from {sorted(chosen)}")
        chosen = {name: chosen[name] for name in args.only}
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")

    from gpt2_spec import load_profiles

    profile = load_profiles()[PROFILE]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            name: pool.submit(run_one, name, impl, Path(tmp)) for name, impl in chosen.items()
        }
        rows = [summarise(name, chosen[name], futures[name].result()) for name in chosen]
    wall = time.monotonic() - started
    unexplained = [
        (r["name"], rid) for r in rows for rid in r["failures"] if rid not in r["explanations"]
    ]
    data = {
        "generated_by": "gpt2_evidence.peers_matrix",
        "command": "python -m gpt2_evidence.peers_matrix"
        + (f" --jobs {args.jobs}" if args.jobs > 1 else ""),
        "provenance": provenance.collect(note=args.machine_note),
        "requirements_profile": PROFILE,
        "hypothesis_profile": "ci",
        "requirements": list(profile.requirements),
        "tied_only": sorted(profile.tied_only),
        "wall_s": round(wall, 1),
        "jobs": args.jobs,
        "architectures": rows,
        "unexplained": [f"{name}: {rid}" for name, rid in unexplained],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({wall:.0f} s)")
    for name, rid in unexplained:
        print(f"UNEXPLAINED: {name} fails {rid}: add the reason to EXPLANATIONS", file=sys.stderr)
    return 1 if unexplained else 0


# --------------------------------------------------------------------------------------------
# Rendering (imported by the docs hook: no torch, no side effects)

_SYMBOL = {
    "pass": "✅",
    "fail": "❌",
    "xfail": "⚠️",
    "not-claimed": "➖",
    "skipped": "⏭️",
    "not-run": "⬜",
}


def _verdict_word(row: dict[str, Any]) -> str:
    return {True: "CONFORMS", False: "DOES NOT CONFORM", None: "INCOMPLETE"}[row["conforms"]]


def render_markdown(data: dict[str, Any]) -> str:
    """The peers matrix as Markdown: a summary per architecture, the requirement x architecture
    matrix, and the explanation of every requirement that did not pass."""
    rows = data["architectures"]
    origin = provenance.read(data)
    versions, machine = origin["software"], origin["machine"]
    peers = [r for r in rows if r["impl"].startswith("hf:")]
    passing = [r for r in peers if r["conforms"]]
    lines = [
        f"**{len(passing)} of {len(peers)} other architectures conform to the "
        f"`{data['requirements_profile']}` profile**, as do "
        f"{sum(bool(r['conforms']) for r in rows if not r['impl'].startswith('hf:'))} of "
        f"{len(rows) - len(peers)} GPT-2 implementations.",
        "",
        f"Generated by `{data['command']}` on {origin['date'][:10]}: the "
        f"`{data['requirements_profile']}` requirements ({len(data['requirements'])} of the "
        f"spec's), hypothesis profile `{data['hypothesis_profile']}`, "
        f"{data['wall_s'] / 60:.1f} min wall for all, {data.get('jobs', 1)} at a time, on "
        f"{machine['cpu']} ({machine['cores']} cores"
        + (f", {machine['note']}" if machine.get("note") else "")
        + f"; torch {versions['torch']}, transformers {versions['transformers']}, spec "
        f"{versions['spec']}).",
        "",
        "| Architecture | Model class | Positions | Head | Verdict | pass / not-claimed / fail "
        "| Wall time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r["summary"]
        lines.append(
            f"| {r['name']} | `{r['model_class']}` | {r['positions']} "
            f"| {'tied' if r['tied_head'] else 'untied'} | {_verdict_word(r)} "
            f"| {s.get('pass', 0)} / {s.get('not-claimed', 0)} / {s.get('fail', 0)} "
            f"| {r['wall_s']:.0f} s |"
        )
    lines += [
        "",
        "✅ pass · ❌ fail · ➖ not claimed (the adapter does not offer the capability, or a "
        "`head.tied-*` requirement of a head declared untied)",
        "",
        "| Requirement | " + " | ".join(r["name"] for r in rows) + " |",
        "| --- | " + " | ".join(":-:" for _ in rows) + " |",
    ]
    for rid in data["requirements"]:
        cells = [_SYMBOL.get(r["outcomes"].get(rid, "not-run"), "?") for r in rows]
        tied = " (tied only)" if rid in data.get("tied_only", []) else ""
        lines.append(f"| `{rid}`{tied} | " + " | ".join(cells) + " |")
    failures = [(r, rid, msg) for r in rows for rid, msg in r["failures"].items()]
    if failures:
        lines += ["", "### Why each failure is the architecture's", ""]
        for r, rid, message in failures:
            why = r["explanations"].get(rid, "**not explained yet**")
            first = message.strip().splitlines()[0] if message.strip() else ""
            if len(first) > 300:
                first = first[:299] + "…"
            lines.append(f"- **{r['name']}**, `{rid}`: {why} The suite's message: “{first}”")
    if data.get("unexplained"):
        lines += ["", f"Unexplained failures: {', '.join(data['unexplained'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
