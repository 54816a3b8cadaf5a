"""The counts the prose states, derived from where each fact lives, and rewritten there.

Usage (from the repository root)::

    python -m gpt2_evidence.counts           # list every stale or unchecked count; exit 1 if any
    python -m gpt2_evidence.counts --write   # rewrite the stale counts in place, then list the rest

README.md, spec/README.md and the docs say "56 requirements", "73 hypothesis properties", "68
broken GPT-2s", "13 architectures" and so on. :func:`truth` derives each such number from its
source (the spec's chapters and profiles, the suite's properties, the mutant zoo, the built-in
adapters' table, the committed evidence JSON under ``docs/data/``); :data:`CLAIMS` says where the
prose states which of them. ``--write`` replaces the number of every stale claim and nothing else:
the rest of each file stays byte for byte as it was, and a number written as a word ("thirteen")
is written back as a word, a digit as digits.

Two things ``--write`` cannot do, and the check lists them: a "<number> requirements" (or
properties, mutants, ...) that no claim covers (:data:`SWEEP`; give it a claim, or list it in
:data:`NOT_COUNTS` when it counts no collection of the project), and a claim that matches no prose
any more (the prose was reworded: reword the claim).

The counts taken from the committed evidence (how many requirements a report passed, ...) are
those of the JSON as committed: refresh the evidence first (``python -m
gpt2_evidence.refresh_reports`` and the others), then run ``--write``. The spec's changelog is not
checked: its counts are history, true when written.

Importing this module runs nothing; :func:`truth` imports the property modules and the zoo (and
so torch and hypothesis).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_evidence.provenance import DATA, REPOSITORY

# fmt: off
WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]
# fmt: on
_NUMBER = r"(?P<n>\d+|" + "|".join(WORDS) + r")"


class CountsError(Exception):
    """A count cannot be derived (its sources disagree, or a committed record is missing)."""


def value(text: str) -> int:
    """The number a digit string or a number word ("Thirteen") writes."""
    return int(text) if text.isdigit() else WORDS.index(text.lower())


def spell(number: int, like: str) -> str:
    """``number`` written in the style of ``like``: digits for digits; a word for a word, with its
    capitals ("Two", "TWO"), or digits for a number beyond the words (above twenty)."""
    if like.isdigit() or not 0 <= number < len(WORDS):
        return str(number)
    word = WORDS[number]
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[0].isupper() else word


def prose(root: Path = REPOSITORY) -> list[Path]:
    """The pages whose counts are checked: the READMEs and the docs (not the committed data, not
    the changelog: its counts are history, true when written)."""
    data = root / "docs" / "data"
    return sorted(
        [root / "README.md", root / "spec" / "README.md"]
        + [p for p in (root / "docs").rglob("*.md") if data not in p.parents]
    )


# ---- the true counts, from their sources ---------------------------------------------------


def report(name: str) -> dict[str, Any]:
    """The committed report of a built-in (``docs/data/reports/NAME.json``)."""
    path = DATA / "reports" / f"{name}.json"
    if not path.is_file():
        raise CountsError(
            f"{path.relative_to(REPOSITORY)} is missing: "
            f"python -m gpt2_evidence.refresh_reports --impl {name}"
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def peers_matrix() -> dict[str, Any]:
    """The committed peers matrix (``docs/data/peers.json``)."""
    matrix: dict[str, Any] = json.loads((DATA / "peers.json").read_text(encoding="utf-8"))
    return matrix


def zoo() -> list[Any]:
    """The mutant zoo's mutants."""
    from gpt2_zoo import zoo as mutants

    return mutants()


def _same(values: dict[str, int]) -> int:
    """The one value several sources must share (e.g. both transformers reports)."""
    if len(set(values.values())) != 1:
        raise CountsError(f"sources that the prose counts as one disagree: {values}")
    return next(iter(values.values()))


@functools.cache
def truth() -> dict[str, int]:
    """Every count the prose may state, by key, from its source."""
    from gpt2_conformance.adapters import PEER_NAMES, baselines
    from gpt2_conformance.properties import by_requirement, discover
    from gpt2_spec import chapter_paths, load_profiles, load_requirements

    requirements = load_requirements()
    causal = load_profiles()["causal-lm"]
    properties = [p for p in discover() if p.requirements]
    tagged = by_requirement(properties)
    mutants = zoo()
    peers = [a for a in peers_matrix()["architectures"] if a["impl"].startswith("hf:")]
    transformers = {n: report(n)["summary"] for n in ("transformers-eager", "transformers-sdpa")}
    llama = next(a for a in peers if a["impl"] == "hf:llama")["summary"]
    # the capabilities of the causal-lm profile's generic path: needed by no other module
    generic = {c for p in properties if p.module == "test_causal_lm" for c in p.capabilities}
    other = {c for p in properties if p.module != "test_causal_lm" for c in p.capabilities}
    example = re.compile(r"<!-- example: docs/examples/\w+\.py -->")
    adapter_guide = (REPOSITORY / "docs" / "writing-an-adapter.md").read_text(encoding="utf-8")
    return {
        "chapters": len(chapter_paths()),
        "requirements": len(requirements),
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
            any(set(p.capabilities) <= {"params"} for p in props) for props in tagged.values()
        ),
        "properties": len({p.qualname for p in properties}),
        "mutants": len(mutants),
        "mutants on the reference": sum(m.origin == "reference" for m in mutants),
        "mutants on transformers": sum(m.origin == "transformers" for m in mutants),
        "peer architectures": len(PEER_NAMES),
        "conforming peers": sum(bool(a["conforms"]) for a in peers),
        "llama pass": llama["pass"],
        "llama not-claimed": llama["not-claimed"],
        "baselines": len(baselines()),
        "reference pass": report("reference")["summary"]["pass"],
        "numpy pass": report("numpy")["summary"]["pass"],
        "numpy not-claimed": report("numpy")["summary"]["not-claimed"],
        "transformers pass": _same({n: s["pass"] for n, s in transformers.items()}),
        "transformers not-claimed": _same({n: s["not-claimed"] for n, s in transformers.items()}),
        "transformers xfail": _same({n: s["xfail"] for n, s in transformers.items()}),
        "generic-path capabilities": len(generic - other),
        "example adapters": len(example.findall(adapter_guide)),
    }


def stale_evidence() -> list[str]:
    """The committed records whose requirements are not the spec's of today (the counts taken from
    them are theirs: refresh them before ``--write``)."""
    from gpt2_conformance.adapters import baselines
    from gpt2_spec import load_requirements

    ids = [r.id for r in load_requirements()]
    stale = [
        f"docs/data/reports/{name}.json: python -m gpt2_evidence.refresh_reports --impl {name}"
        for name in baselines()
        if (DATA / "reports" / f"{name}.json").is_file()
        and [e["id"] for e in report(name)["requirements"]] != ids
    ]
    kill = DATA / "kill-matrix.json"
    if kill.is_file() and json.loads(kill.read_text(encoding="utf-8"))["requirements"] != ids:
        stale.append("docs/data/kill-matrix.json: python -m gpt2_evidence.kill_matrix")
    return stale


# ---- the claims the prose makes ------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    key: str  # the count of truth() it states
    pattern: str  # a regex with one {N}; a space matches any run of whitespace (line breaks too)

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern.replace(" ", r"\s+").format(N=_NUMBER), re.IGNORECASE)


#: Where the prose states each count of :func:`truth`: its key, and the phrases stating it.
_STATED: dict[str, tuple[str, ...]] = {
    "chapters": (r"\b{N} chapters\b",),
    "requirements": (
        r"\b{N} requirements with stable ids",
        r"\ball {N} requirements\b",
        r"the spec's {N} requirements",
        r"\b\d+ of the {N} requirements",
        r"causal-lm profile \(\d+ of {N};",
        r"reference, spec [\w.-]+: function CONFORMS; validated input CONFORMS"
        r" \({N} pass\)",
    ),
    "causal-lm requirements": (
        r"selects the {N} requirements",
        r"the {N} that any decoder-only",
        r"\b{N} of them, the ones any decoder-only",
        r"causal-lm profile \({N} of \d+;",
    ),
    "requirements outside causal-lm": (
        r"the other {N} requirements",
        r"\b{N} not-in-profile\b",
    ),
    "tied-only requirements": (r"\b{N} `head\.tied-\*`",),
    "input-validation requirements": (r"the {N} of input validation",),
    "function-class MUST requirements": (
        r"function CONFORMS ON WHAT IT CLAIMS \(\d+ of {N}"
        r" MUST requirements",
    ),
    "requirements checked with params alone": (r"checks {N} of the \d+ requirements",),
    "properties": (r"\b{N} hypothesis properties",),
    "mutants": (r"\b{N} broken GPT-2s",),
    "mutants on the reference": (r"\({N} built on the reference",),
    "mutants on transformers": (r"built on the reference, {N} on transformers",),
    "peer architectures": (
        r"\bOf {N} transformers architectures",
        r"run on {N} architectures",
        r"\b{N} architectures are built in",
        r"\bon the {N} peers\b",
    ),
    "conforming peers": (r"transformers architectures, {N} conform",),
    "llama pass": (
        r"transformers-llama, spec \S+ causal-lm profile: function CONFORMS;"
        r" validated input not claimed \({N} pass",
    ),
    "llama not-claimed": (
        r"\(\d+ pass, {N} not-claimed, \d+ not-in-profile\)",
        r"\(the {N}: Llama's head",
    ),
    "baselines": (
        r"\ball {N}; --impl NAME for one",
        r"\| the {N} above \|",
    ),
    "reference pass": (
        r"\| `reference` \| function CONFORMS; validated input CONFORMS \({N}"
        r" pass\)",
    ),
    "numpy pass": (
        r"\| `numpy` \| function CONFORMS ON WHAT IT CLAIMS; validated input"
        r" CONFORMS \({N} pass",
    ),
    "numpy not-claimed": (r"\| `numpy` \| [A-Za-z ;]+ \(\d+ pass, {N} not-claimed",),
    "transformers pass": (
        r"`transformers-eager` \| function CONFORMS; validated input not"
        r" claimed \({N} pass",
    ),
    "transformers not-claimed": (r"`transformers-eager` \| [A-Za-z ;]+ \(\d+ pass, {N} not-",),
    "transformers xfail": (r"not validate input ids, {N} declared deviation",),
    "example adapters": (r"shows {N} complete adapters",),
    "generic-path capabilities": (r"through {N} capabilities any torch model",),
}
CLAIMS = [Claim(key, pattern) for key, patterns in _STATED.items() for pattern in patterns]

#: "<number> <counted noun>": every such phrase in the prose must be one a claim checks.
#: ("one" is left out: "one property", "one requirement" speak of a single thing, not a count.)
SWEEP = re.compile(
    r"(?<![\w.-])(?P<n>\d+|" + "|".join(w for w in WORDS if w != "one") + r")\s+"
    r"(?:(?:hypothesis|broken|conformance|built-in|MUST|SHOULD|MAY|transformers)\s+)?"
    r"(?:requirements|properties|mutants|GPT-2s|architectures|chapters|adapters|capabilities"
    r"|built-ins|profiles|peers)\b",
    re.IGNORECASE,
)

#: Phrases the sweep finds that count no collection of the project (a regex over the prose, as a
#: claim's pattern without {N}), and why.
NOT_COUNTS = {
    r"\btwo properties\b": "false-alarms.md: the two properties of the causality story it tells",
    r"DOES NOT CONFORM \(\d+ MUST requirements fail;": (
        "reading-a-failure.md: the verdict of one example run, which tests/test_triage.py checks "
        "against that run's committed report"
    ),
}


def _not_count_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace(" ", r"\s+"), re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    """A claim's (or the sweep's) match: where it is, and the number it writes."""

    path: Path
    line: int
    start: int  # the match's span in the file's text
    end: int
    number_start: int  # the number's span
    number_end: int
    number: str  # as written: "56", "thirteen"
    text: str  # the match, on one line

    @property
    def value(self) -> int:
        return value(self.number)

    def where(self, root: Path = REPOSITORY) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def _read(path: Path) -> str:
    # newline="" keeps the file's line endings as they are, so a rewrite changes only a number
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


def occurrences(regex: re.Pattern[str], path: Path) -> Iterator[Found]:
    """Every match of ``regex`` (with a group ``n``, the number) in the file."""
    text = _read(path)
    for match in regex.finditer(text):
        yield Found(
            path,
            text.count("\n", 0, match.start()) + 1,
            match.start(),
            match.end(),
            match.start("n"),
            match.end("n"),
            match["n"],
            " ".join(match.group(0).split()),
        )


def claimed(root: Path = REPOSITORY) -> list[tuple[Claim, Found]]:
    """Every occurrence of every claim in the prose."""
    pages = prose(root)
    return [(c, f) for c in CLAIMS for p in pages for f in occurrences(c.regex(), p)]


@dataclass(frozen=True)
class Stale:
    claim: Claim
    found: Found
    true: int

    def message(self, root: Path = REPOSITORY) -> str:
        return (
            f"{self.found.where(root)}: {self.found.text!r} says {self.found.value}, "
            f"the {self.claim.key} count is {self.true}"
        )


def stale(root: Path = REPOSITORY) -> list[Stale]:
    """The claimed counts of the prose that are not the true ones."""
    counts = truth()
    return [
        Stale(claim, found, counts[claim.key])
        for claim, found in claimed(root)
        if found.value != counts[claim.key]
    ]


def unused_claims(root: Path = REPOSITORY) -> list[Claim]:
    """The claims that match no prose (a claim that matches nothing checks nothing)."""
    matched = {claim for claim, _ in claimed(root)}
    return [c for c in CLAIMS if c not in matched]


def unused_not_counts(root: Path = REPOSITORY) -> list[str]:
    """The entries of :data:`NOT_COUNTS` that match no prose."""
    pages = prose(root)
    return [
        pattern
        for pattern in NOT_COUNTS
        if not any(_not_count_regex(pattern).search(_read(p)) for p in pages)
    ]


def unclaimed(root: Path = REPOSITORY) -> list[Found]:
    """The sweep's "<number> requirements" (properties, mutants, ...) that no claim checks and
    :data:`NOT_COUNTS` does not excuse."""
    covered = {(f.path, s) for _, f in claimed(root) for s in range(f.start, f.end)}
    pages = prose(root)
    for page in pages:
        text = _read(page)
        for pattern in NOT_COUNTS:
            for match in _not_count_regex(pattern).finditer(text):
                covered.update((page, s) for s in range(match.start(), match.end()))
    return [
        f
        for p in pages
        for f in occurrences(SWEEP, p)
        if not all((p, s) in covered for s in range(f.start, f.end))
    ]


def rewrite(root: Path = REPOSITORY) -> list[Stale]:
    """Write the true number in place of every stale claimed count; returns what it changed.

    Only the number's characters change. Raises :class:`CountsError`, writing nothing, when two
    claims state different counts with the same number."""
    fixes = stale(root)
    wanted: dict[tuple[Path, int, int], int] = {}
    for claim, found in claimed(root):
        place = (found.path, found.number_start, found.number_end)
        true = truth()[claim.key]
        if wanted.setdefault(place, true) != true:
            raise CountsError(
                f"{found.where(root)}: {found.number!r} is claimed as two counts that differ "
                f"({wanted[place]} and {true}); make the claims' patterns tell them apart"
            )
    by_page: dict[Path, list[Stale]] = {}
    for fix in fixes:
        by_page.setdefault(fix.found.path, []).append(fix)
    for page, page_fixes in by_page.items():
        text = _read(page)
        done: set[int] = set()
        for fix in sorted(page_fixes, key=lambda s: s.found.number_start, reverse=True):
            if fix.found.number_start in done:  # claimed twice, the same count
                continue
            done.add(fix.found.number_start)
            new = spell(fix.true, fix.found.number)
            text = text[: fix.found.number_start] + new + text[fix.found.number_end :]
        with page.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return fixes


# ---- the profiles' lists in the spec's README ------------------------------------------------


def profile_lists(root: Path = REPOSITORY, *, write: bool = False) -> list[str]:
    """Whether the spec README's generated profile lists are the chapters' level lines.

    Each profile besides ``gpt2`` is listed in ``spec/README.md`` between two comment lines
    (``gpt2_spec.registry.with_profile_lists``); the list is the profile as
    ``gpt2_spec.load_profiles()`` reads it from this package's chapters. Returns what is stale
    (nothing when the lists are true); with ``write``, rewrites what it returns. Raises
    :class:`CountsError` when the README has no such list for a profile."""
    from gpt2_spec import SpecFormatError, load_profiles
    from gpt2_spec.registry import with_profile_lists

    readme = root / "spec" / "README.md"
    if not readme.is_file():
        return []
    text = _read(readme)
    try:
        true = with_profile_lists(text, load_profiles())
    except SpecFormatError as error:
        raise CountsError(f"spec/{error}") from error
    if true == text:
        return []
    if write:
        with readme.open("w", encoding="utf-8", newline="") as handle:
            handle.write(true)
    return [
        f"{readme.relative_to(root)}: a profile's list is not the chapters' level lines "
        "(python -m gpt2_evidence.counts --write rewrites it)"
    ]


# ---- the README's table of suite runs ----------------------------------------------------

RUN_ROW = re.compile(
    r"^(?P<head>\| `(?P<impls>[\w-]+)`(?: / `(?P<second>[\w-]+)`)? \| .*\| )"
    r"(?P<times>\d[^|]*) \| (?P<shares>\d[^|]*%) \|\s*$"
)
"""A row of the README's table of suite runs: one built-in, or two joined by `` / ``, then the
verdict, the wall times and the shares spent inside the implementation (``/``-separated)."""


def run_row(impls: Sequence[str]) -> tuple[str, str]:
    """The wall-time and share cells of a run-table row, from the built-ins' committed reports."""
    reports = [report(name) for name in impls]
    times = " / ".join(f"{round(r['duration_s'])} s" for r in reports)
    shares = " / ".join(f"{round(100 * r['timing']['implementation_share'])}%" for r in reports)
    return times, shares


def run_table(root: Path = REPOSITORY, *, write: bool = False) -> list[str]:
    """Whether the README's table of suite runs states the committed reports' timings.

    Returns the stale rows, as ``README.md:LINE``; with ``write``, puts the reports' wall time
    and share in their place (nothing else on the line changes). Raises :class:`CountsError`,
    naming the command that writes it, when a row's built-in has no committed report."""
    readme = root / "README.md"
    lines = _read(readme).splitlines(keepends=True)
    found: list[str] = []
    rows = 0
    for number, line in enumerate(lines, start=1):
        match = RUN_ROW.match(line.rstrip("\n"))
        if match is None:
            continue
        impls = [match["impls"], *([match["second"]] if match["second"] else [])]
        rows += 1
        times, shares = run_row(impls)
        if (match["times"], match["shares"]) == (times, shares):
            continue
        found.append(
            f"README.md:{number}: the run table says {match['times']}, {match['shares']} for "
            f"{' / '.join(impls)}; the reports say {times}, {shares} "
            "(python -m gpt2_evidence.counts --write rewrites it)"
        )
        lines[number - 1] = f"{match['head']}{times} | {shares} |\n"
    if rows == 0:
        raise CountsError("README.md has no table of suite runs (rows like | `reference` | ...)")
    if write and found:
        with readme.open("w", encoding="utf-8", newline="") as handle:
            handle.write("".join(lines))
    return found


def problems(root: Path = REPOSITORY) -> list[str]:
    """Everything the check lists: stale counts, unchecked counts, claims that match nothing."""
    return (
        [s.message(root) for s in stale(root)]
        + [
            f"{f.where(root)}: {f.text!r} is a count no claim checks "
            "(add a Claim to gpt2_evidence.counts, or write it without the number)"
            for f in unclaimed(root)
        ]
        + [f"claim matches no prose: {c.key}: {c.pattern}" for c in unused_claims(root)]
        + [f"NOT_COUNTS entry matches no prose: {p}" for p in unused_not_counts(root)]
        + profile_lists(root)
        + run_table(root)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpt2_evidence.counts",
        description="Check (or, with --write, rewrite) every count the README and the docs state "
        "against its source.",
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite the stale counts in place, then check"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=REPOSITORY,
        help="the checkout whose prose to check (default: this package's); the true counts "
        "always come from this package's sources",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "README.md").is_file():
        parser.error(f"{root} has no README.md: --root names a checkout of this repository")
    try:
        for record in stale_evidence():
            print(f"note: committed evidence older than the spec, its counts are its own: {record}")
        if args.write:
            for fixed in profile_lists(root, write=True) + run_table(root, write=True):
                print(f"rewrote {fixed}")
            for fix in rewrite(root):
                print(f"rewrote {fix.message(root)}")
        found = problems(root)
    except CountsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in found:
        print(line)
    if found:
        return 1
    print(f"every count of {len(prose(root))} pages is true ({len(claimed(root))} checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
