"""Every count the prose states is the count of the thing it counts.

README.md, spec/README.md and the docs say "53 requirements", "70 hypothesis properties", "59
broken GPT-2s", "13 architectures" and so on. Each such number is derived here from where the
fact lives (the spec's chapters and profiles, the suite's properties, the mutant zoo, the
built-in adapters' table, the committed evidence JSON) and every occurrence in the prose is
checked against it; a stale one fails with its file and line. A sweep also finds any
"<number> requirements/properties/mutants/..." that no claim below checks, so a new hand-typed
count cannot slip in unchecked: give it a claim (or write it without the number).

The committed evidence (docs/data/) is checked for staleness the same way: its reports, kill
matrix and peers matrix must cover exactly the spec's requirements, the zoo's mutants and the
built-in peers of today.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import gpt2_conformance
from gpt2_conformance.adapters import PEER_NAMES, baselines
from gpt2_spec import chapter_paths, load_profiles, load_requirements

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"

#: The prose whose counts are checked (the changelog is history: its counts were true then).
PROSE = sorted(
    [ROOT / "README.md", ROOT / "spec" / "README.md"]
    + [p for p in (ROOT / "docs").rglob("*.md") if DATA not in p.parents]
)

# fmt: off
_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]
# fmt: on
_NUMBER = r"(?P<n>\d+|" + "|".join(_WORDS) + r")"


def _value(text: str) -> int:
    return int(text) if text.isdigit() else _WORDS.index(text.lower())


# ---- the true counts, from their sources ---------------------------------------------------


def _properties() -> dict[str, list[tuple[str, set[str]]]]:
    """Requirement id -> (property, the capabilities it needs) for every property of the suite:
    a ``test_*`` function of a ``gpt2_conformance.test_*`` module with a requirement marker."""
    found: dict[str, list[tuple[str, set[str]]]] = {}
    for info in pkgutil.iter_modules(gpt2_conformance.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"gpt2_conformance.{info.name}")
        for attribute, function in vars(module).items():
            marks = getattr(function, "pytestmark", []) if attribute.startswith("test_") else []
            needs = {c for m in marks if m.name == "capability" for c in m.args}
            for rid in (r for m in marks if m.name == "requirement" for r in m.args):
                found.setdefault(rid, []).append((f"{info.name}.{attribute}", needs))
    return found


def _zoo() -> list[Any]:
    from gpt2_zoo import zoo

    return zoo()


def _report(name: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((DATA / "reports" / f"{name}.json").read_text())
    return report


def _peers_matrix() -> dict[str, Any]:
    matrix: dict[str, Any] = json.loads((DATA / "peers.json").read_text())
    return matrix


def _same(values: dict[str, int]) -> int:
    """The one value several sources must share (e.g. both transformers reports)."""
    if len(set(values.values())) != 1:
        raise AssertionError(f"sources that the prose counts as one disagree: {values}")
    return next(iter(values.values()))


@functools.cache
def truth() -> dict[str, int]:
    """Every count the prose may state, by key, from its source."""
    requirements = load_requirements()
    causal = load_profiles()["causal-lm"]
    properties = _properties()
    mutants = _zoo()
    peers = [a for a in _peers_matrix()["architectures"] if a["impl"].startswith("hf:")]
    transformers = {n: _report(n)["summary"] for n in ("transformers-eager", "transformers-sdpa")}
    llama = next(a for a in peers if a["impl"] == "hf:llama")["summary"]
    by_module: dict[str, set[str]] = {}
    for props in properties.values():
        for name, needs in props:
            by_module.setdefault(name.split(".")[0], set()).update(needs)
    example = re.compile(r"<!-- example: docs/examples/\w+\.py -->")
    return {
        "chapters": len(chapter_paths()),
        "requirements": len(requirements),
        "requirements but one": len(requirements) - 1,
        "causal-lm requirements": len(causal.requirements),
        "requirements outside causal-lm": len(requirements) - len(causal.requirements),
        "tied-only requirements": len(causal.tied_only),
        "input-validation requirements": sum(
            r.chapter == "08-input-validation.md" for r in requirements
        ),
        "function-class MUST requirements": sum(
            r.conformance_class == "function" and r.level == "MUST" for r in requirements
        ),
        # a requirement is checked with params alone when one of its properties needs no more
        "requirements checked with params alone": sum(
            any(needs <= {"params"} for _, needs in props) for props in properties.values()
        ),
        "properties": len({name for props in properties.values() for name, _ in props}),
        "mutants": len(mutants),
        "mutants on the reference": sum(m.origin == "reference" for m in mutants),
        "mutants on transformers": sum(m.origin == "transformers" for m in mutants),
        "peer architectures": len(PEER_NAMES),
        "conforming peers": sum(bool(a["conforms"]) for a in peers),
        "llama pass": llama["pass"],
        "llama not-claimed": llama["not-claimed"],
        "baselines": len(baselines()),
        "reference pass": _report("reference")["summary"]["pass"],
        "numpy pass": _report("numpy")["summary"]["pass"],
        "numpy not-claimed": _report("numpy")["summary"]["not-claimed"],
        "transformers pass": _same({n: s["pass"] for n, s in transformers.items()}),
        "transformers not-claimed": _same({n: s["not-claimed"] for n, s in transformers.items()}),
        "transformers xfail": _same({n: s["xfail"] for n, s in transformers.items()}),
        # the capabilities of the causal-lm profile's generic path: needed by no other module
        "generic-path capabilities": len(
            set().union(*(needs for n, needs in by_module.items() if n == "test_causal_lm"))
            - set().union(*(needs for n, needs in by_module.items() if n != "test_causal_lm"))
        ),
        "example adapters": len(
            example.findall((ROOT / "docs" / "writing-an-adapter.md").read_text())
        ),
    }


# ---- the claims the prose makes ------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    key: str  # the count of truth() it states
    pattern: str  # a regex with one {N}; a space matches any run of whitespace (line breaks too)

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern.replace(" ", r"\s+").format(N=_NUMBER), re.IGNORECASE)


CLAIMS = [
    Claim("chapters", r"\b{N} chapters\b"),
    Claim("requirements", r"\b{N} requirements with stable ids"),
    Claim("requirements", r"\ball {N} requirements\b"),
    Claim("requirements", r"the spec's {N} requirements"),
    Claim("requirements", r"\b\d+ of the {N} requirements"),
    Claim("requirements", r"causal-lm profile \(\d+ of {N};"),
    Claim("requirements", r"reference, spec [\w.-]+: function CONFORMS; validated input CONFORMS"
                          r" \({N} pass\)"),
    Claim("requirements but one", r"\(1 fail, {N} not-run\)"),
    Claim("requirements but one", r"\({N} requirements are `not-run`"),
    Claim("causal-lm requirements", r"selects the {N} requirements"),
    Claim("causal-lm requirements", r"the {N} that any decoder-only"),
    Claim("causal-lm requirements", r"\b{N} of them, the ones any decoder-only"),
    Claim("causal-lm requirements", r"causal-lm profile \({N} of \d+;"),
    Claim("requirements outside causal-lm", r"the other {N} requirements"),
    Claim("requirements outside causal-lm", r"\b{N} not-in-profile\b"),
    Claim("tied-only requirements", r"\b{N} `head\.tied-\*`"),
    Claim("input-validation requirements", r"the {N} of input validation"),
    Claim("input-validation requirements", r"validated input INCOMPLETE \({N} requirements not"
                                           r" checked"),
    Claim("function-class MUST requirements", r"function CONFORMS ON WHAT IT CLAIMS \(\d+ of {N}"
                                              r" MUST requirements"),
    Claim("requirements checked with params alone", r"checks {N} of the \d+ requirements"),
    Claim("properties", r"\b{N} hypothesis properties"),
    Claim("mutants", r"\b{N} broken GPT-2s"),
    Claim("mutants on the reference", r"\({N} built on the reference"),
    Claim("mutants on transformers", r"built on the reference, {N} on transformers"),
    Claim("peer architectures", r"\bOf {N} transformers architectures"),
    Claim("peer architectures", r"run on {N} architectures"),
    Claim("peer architectures", r"\b{N} architectures are built in"),
    Claim("peer architectures", r"\bon the {N} peers\b"),
    Claim("conforming peers", r"transformers architectures, {N} conform"),
    Claim("llama pass", r"transformers-llama, spec \S+ causal-lm profile: function CONFORMS;"
                        r" validated input not claimed \({N} pass"),
    Claim("llama not-claimed", r"\(\d+ pass, {N} not-claimed, \d+ not-in-profile\)"),
    Claim("llama not-claimed", r"\(the {N}: Llama's head"),
    Claim("baselines", r"\ball {N}; --impl NAME for one"),
    Claim("baselines", r"\| the {N} above \|"),
    Claim("reference pass", r"\| `reference` \| function CONFORMS; validated input CONFORMS \({N}"
                            r" pass\)"),
    Claim("numpy pass", r"\| `numpy` \| function CONFORMS ON WHAT IT CLAIMS; validated input"
                        r" CONFORMS \({N} pass"),
    Claim("numpy not-claimed", r"\| `numpy` \| [A-Za-z ;]+ \(\d+ pass, {N} not-claimed"),
    Claim("transformers pass", r"`transformers-eager` \| function CONFORMS; validated input not"
                               r" claimed \({N} pass"),
    Claim("transformers not-claimed", r"`transformers-eager` \| [A-Za-z ;]+ \(\d+ pass, {N} not-"),
    Claim("transformers xfail", r"not validate input ids, {N} declared deviation"),
    Claim("example adapters", r"shows {N} complete adapters"),
    Claim("generic-path capabilities", r"through {N} capabilities any torch model"),
]  # fmt: skip

#: "<number> <counted noun>": every such phrase in the prose must be one a claim checks.
#: ("one" is left out: "one property", "one requirement" speak of a single thing, not a count.)
SWEEP = re.compile(
    r"(?<![\w.-])(?P<n>\d+|" + "|".join(w for w in _WORDS if w != "one") + r")\s+"
    r"(?:(?:hypothesis|broken|conformance|built-in|MUST|SHOULD|MAY|transformers)\s+)?"
    r"(?:requirements|properties|mutants|GPT-2s|architectures|chapters|adapters|capabilities"
    r"|built-ins|profiles|peers)\b",
    re.IGNORECASE,
)


#: Phrases the sweep finds that count no collection of the project, and why.
NOT_COUNTS = {
    "two properties": "false-alarms.md: 'the two properties' of the causality story just told",
}


@dataclass(frozen=True)
class Found:
    path: Path
    line: int
    start: int
    end: int
    value: int
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _occurrences(regex: re.Pattern[str], path: Path) -> Iterator[Found]:
    text = _read(path)
    for match in regex.finditer(text):
        yield Found(
            path,
            text.count("\n", 0, match.start()) + 1,
            match.start(),
            match.end(),
            _value(match["n"]),
            " ".join(match.group(0).split()),
        )


def _claimed() -> list[tuple[Claim, Found]]:
    return [(c, f) for c in CLAIMS for p in PROSE for f in _occurrences(c.regex(), p)]


def test_every_count_in_the_prose_is_true() -> None:
    counts = truth()
    stale = [
        f"{found.where()}: {found.text!r} says {found.value}, the {claim.key} count is "
        f"{counts[claim.key]}"
        for claim, found in _claimed()
        if found.value != counts[claim.key]
    ]
    assert not stale, "stale counts in the prose:\n" + "\n".join(stale)


def test_every_claim_is_found_in_the_prose() -> None:
    """A claim that matches nothing checks nothing: the prose was reworded, so is the claim."""
    matched = {claim for claim, _ in _claimed()}
    unused = [f"{c.key}: {c.pattern}" for c in CLAIMS if c not in matched]
    assert not unused, "claims that match no prose (update or remove them):\n" + "\n".join(unused)


def test_no_count_escapes_the_claims() -> None:
    covered = {(f.path, s) for _, f in _claimed() for s in range(f.start, f.end)}
    loose = [
        f"{f.where()}: {f.text!r}"
        for p in PROSE
        for f in _occurrences(SWEEP, p)
        if not all((p, s) in covered for s in range(f.start, f.end))
        and f.text.lower() not in NOT_COUNTS
    ]
    assert not loose, (
        "hand-typed counts no claim checks (add a Claim in tests/test_counts.py):\n"
        + "\n".join(loose)
    )


def test_a_stale_count_is_reported_with_its_place(tmp_path: Path) -> None:
    """The checker itself: a wrong number is found, with file and line, and a word counts."""
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n\nThe spec has eight\nchapters and 700 hypothesis properties.\n"
        "The GPT-2 built-ins are not '2 built-ins'; version 1.2 adapters neither.\n"
    )
    (chapters,) = _occurrences(Claim("chapters", r"\b{N} chapters\b").regex(), page)
    assert (chapters.line, chapters.value) == (3, 8)
    (props,) = _occurrences(Claim("properties", r"\b{N} hypothesis properties").regex(), page)
    assert (props.line, props.value) == (4, 700)
    assert props.value != truth()["properties"]
    assert [f.value for f in _occurrences(SWEEP, page)] == [8, 700, 2]  # the quoted one only


# ---- the committed evidence covers today's spec, zoo and peers -----------------------------


@pytest.mark.parametrize("name", baselines())
def test_each_report_covers_the_spec(name: str) -> None:
    """A built-in's committed report judges exactly the spec's requirements, in spec order:
    after a requirement is added, removed or renamed, rerun
    `python -m gpt2_evidence.refresh_reports`."""
    ids = [r.id for r in load_requirements()]
    assert [e["id"] for e in _report(name)["requirements"]] == ids, (
        f"docs/data/reports/{name}.json is stale: "
        f"python -m gpt2_evidence.refresh_reports --impl {name}"
    )


def test_the_kill_matrix_covers_the_spec_and_the_zoo() -> None:
    matrix = json.loads((DATA / "kill-matrix.json").read_text())
    assert matrix["requirements"] == [r.id for r in load_requirements()], (
        "docs/data/kill-matrix.json is stale (requirements): "
        "rerun `python -m gpt2_evidence.kill_matrix`"
    )
    assert sorted(m["name"] for m in matrix["mutants"]) == sorted(m.name for m in _zoo()), (
        "docs/data/kill-matrix.json is stale (mutants): rerun `python -m gpt2_evidence.kill_matrix`"
    )


def test_the_peers_matrix_covers_the_profile_and_the_peers() -> None:
    matrix = _peers_matrix()
    causal = load_profiles()["causal-lm"]
    assert set(matrix["requirements"]) == set(causal.requirements), (
        "docs/data/peers.json is stale (causal-lm profile): "
        "rerun `python -m gpt2_evidence.peers_matrix`"
    )
    peers = [a["impl"] for a in matrix["architectures"] if a["impl"].startswith("hf:")]
    assert peers == [f"hf:{n}" for n in PEER_NAMES], (
        "docs/data/peers.json is stale (peers): rerun `python -m gpt2_evidence.peers_matrix`"
    )


# --- the README's table of suite runs, against the committed reports ------------------------------

_RUN_ROW = re.compile(
    r"^\| `(?P<impls>[\w-]+)`(?: / `(?P<second>[\w-]+)`)? \| .*"
    r"\| (?P<times>\d[^|]*) \| (?P<shares>\d[^|]*%) \|$"
)


def test_the_readme_run_table_is_the_reports() -> None:
    """Each row's wall time and implementation share are the committed report's, rounded."""
    rows = [
        m for line in (ROOT / "README.md").read_text().splitlines() if (m := _RUN_ROW.match(line))
    ]
    checked = 0
    for row in rows:
        impls = [row["impls"], *([row["second"]] if row["second"] else [])]
        if not all((DATA / "reports" / f"{n}.json").is_file() for n in impls):
            continue
        times = [t.strip() for t in row["times"].split("/")]
        shares = [s.strip() for s in row["shares"].split("/")]
        for impl, time_text, share_text in zip(impls, times, shares, strict=True):
            timing = _report(impl)
            expected_time = f"{round(timing['duration_s'])} s"
            expected_share = f"{round(100 * timing['timing']['implementation_share'])}%"
            assert (time_text, share_text) == (expected_time, expected_share), (
                f"README.md, `{impl}`: says {time_text}, {share_text}; its report says "
                f"{expected_time}, {expected_share} (rerun python -m gpt2_evidence.refresh_reports "
                "or fix the table)"
            )
            checked += 1
    assert checked >= 4, "the README's table of suite runs was not found"
