"""Read the normative requirements out of the spec's Markdown chapters.

A requirement is written in a chapter as (see spec/README.md, "How a requirement is written")::

    ### Title in plain words {#family.short-name}

    **Requirement `family.short-name`** · MUST

    Normative text with the RFC 2119 keyword, math, ...

    *Rationale.* Why.

    *Sources.* Where the fact comes from.

The heading's ``{#id}`` is the anchor the docs site, the tests and the reports link to.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent

LEVELS = ("MUST", "SHOULD", "MAY")

_ID = r"[a-z][a-z0-9]*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+"
_HEADING = re.compile(r"^### (?P<title>.+?) \{#(?P<id>" + _ID + r")\}\s*$")
_LEVEL_LINE = re.compile(
    r"^\*\*Requirement `(?P<id>" + _ID + r")`\*\* · (?P<level>MUST|SHOULD|MAY)\s*$"
)
_ANY_HEADING = re.compile(r"^#{1,3} ")
_FENCE = re.compile(r"^(```|~~~)")


class SpecFormatError(ValueError):
    """A chapter breaks the requirement format; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One normative requirement of the spec.

    Attributes:
        id: stable id that reads as words, e.g. ``objective.one-term-per-target``.
        title: the heading text.
        level: ``MUST``, ``SHOULD`` or ``MAY`` (RFC 2119).
        chapter: file name of the chapter, e.g. ``02-objective.md``.
        line: 1-based line of the heading in that file.
        text: the Markdown body, from the level line to the next heading.
        conformance_class: the conformance class the requirement belongs to, that of its chapter
            (spec README, "Conformance classes"): ``function`` or ``validated-input``; "" when
            the spec folder has no README (a folder of chapters alone, as in tests).
    """

    id: str
    title: str
    level: str
    chapter: str
    line: int
    text: str
    conformance_class: str = ""

    @property
    def family(self) -> str:
        """The part of the id before the first dot (``objective``, ``head``, ...)."""
        return self.id.split(".", 1)[0]

    @property
    def anchor(self) -> str:
        """Relative link to the requirement in the rendered spec, e.g. ``02-objective.md#id``."""
        return f"{self.chapter}#{self.id}"

    @property
    def has_rationale(self) -> bool:
        return "*Rationale.*" in self.text

    @property
    def has_sources(self) -> bool:
        return "*Sources.*" in self.text


def chapter_paths(spec_dir: Path = SPEC_DIR) -> list[Path]:
    """The numbered chapters (``NN-name.md``) in reading order."""
    return sorted(p for p in spec_dir.glob("[0-9][0-9]-*.md"))


def _iter_lines_outside_code(text: str) -> Iterator[tuple[int, str]]:
    in_code = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            yield number, line


def parse_chapter(path: Path) -> list[Requirement]:
    """Parse one chapter; raise :class:`SpecFormatError` on a malformed requirement."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[Requirement] = []
    headings = [(n, line) for n, line in _iter_lines_outside_code(text) if _ANY_HEADING.match(line)]
    for index, (number, line) in enumerate(headings):
        match = _HEADING.match(line)
        if not match:
            if line.startswith("### ") and "{#" in line:
                raise SpecFormatError(
                    f"{path.name}:{number}: malformed requirement heading {line!r}"
                )
            continue
        end = headings[index + 1][0] - 1 if index + 1 < len(headings) else len(lines)
        body = "\n".join(lines[number:end]).strip()
        first = body.splitlines()[0] if body else ""
        level = _LEVEL_LINE.match(first)
        if not level or level["id"] != match["id"]:
            raise SpecFormatError(
                f"{path.name}:{number}: requirement {match['id']} must be followed by the line "
                f"'**Requirement `{match['id']}`** · MUST|SHOULD|MAY', got {first!r}"
            )
        found.append(
            Requirement(
                id=match["id"],
                title=match["title"].strip(),
                level=level["level"],
                chapter=path.name,
                line=number,
                text=body,
            )
        )
    return found


def load_requirements(spec_dir: Path = SPEC_DIR) -> list[Requirement]:
    """Every requirement of the spec, in reading order; ids are checked to be unique.

    Each requirement carries the conformance class of its chapter (:func:`load_classes`) when the
    folder has a README.
    """
    requirements: list[Requirement] = []
    seen: dict[str, Requirement] = {}
    paths = chapter_paths(spec_dir)
    class_of: dict[str, str] = {}
    if (spec_dir / "README.md").is_file():
        class_of = {
            chapter: spec_class.name
            for spec_class in load_classes(spec_dir, chapters=[p.name for p in paths])
            for chapter in spec_class.chapters
        }
    for path in paths:
        for requirement in parse_chapter(path):
            if class_of:
                requirement = dataclasses.replace(
                    requirement, conformance_class=class_of[path.name]
                )
            if requirement.id in seen:
                first = seen[requirement.id]
                raise SpecFormatError(
                    f"{requirement.chapter}:{requirement.line}: requirement id {requirement.id} "
                    f"already used at {first.chapter}:{first.line}"
                )
            seen[requirement.id] = requirement
            requirements.append(requirement)
    return requirements


# --------------------------------------------------------------------------------------------
# Profiles (spec/README.md, section "Profiles")

_PROFILES_HEADING = re.compile(r"^## Profiles\s*$")
_PROFILE_HEADING = re.compile(r"^### Profile `(?P<name>[a-z][a-z0-9-]*)`\s*$")
_PROFILE_ITEM = re.compile(r"^- `(?P<id>" + _ID + r")`(?P<rest>.*)$")
_TIED_ONLY = "declared tied only"
# A fence line holds nothing but the fence and an info string (README's prose mentions fences).
_FENCE_LINE = re.compile(r"^(`{3,}|~{3,})[\w-]*\s*$")
#: The profile in which every requirement is judged (the default).
FULL_PROFILE = "gpt2"


@dataclasses.dataclass(frozen=True)
class Profile:
    """A named set of requirements a conformance run judges (spec README, "Profiles").

    Attributes:
        name: ``gpt2`` (every requirement) or ``causal-lm``.
        requirements: the ids in the profile, in the spec's reading order.
        tied_only: the ids that apply only to a model declaring a tied head.
    """

    name: str
    requirements: tuple[str, ...]
    tied_only: frozenset[str] = frozenset()

    def __contains__(self, requirement_id: object) -> bool:
        return requirement_id in self.requirements


def _section_entries(
    readme: Path,
    section: re.Pattern[str],
    heading: re.Pattern[str],
    item: re.Pattern[str],
    kind: str,
) -> Iterator[tuple[int, str, re.Match[str] | None]]:
    """The headed entries of one ``## `` section of the README, outside code fences, in order.

    Yields ``(line number, entry name, None)`` for each ``heading`` line (whose ``name`` group
    names the entry) and ``(line number, entry name, match)`` for each line that ``item``
    matches under a heading. Raises :class:`SpecFormatError` for a name headed twice, on
    reaching the second heading (lines are read lazily, so earlier errors come first).
    """
    seen: set[str] = set()
    inside = False
    current: str | None = None
    in_code = False
    for number, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE_LINE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("## "):
            inside = bool(section.match(line))
            current = None
            continue
        if not inside:
            continue
        headed = heading.match(line)
        if headed:
            current = headed["name"]
            if current in seen:
                raise SpecFormatError(f"README.md:{number}: {kind} {current} defined twice")
            seen.add(current)
            yield number, current, None
            continue
        found = item.match(line)
        if current is None or not found:
            continue
        yield number, current, found


def load_profiles(spec_dir: Path = SPEC_DIR) -> dict[str, Profile]:
    """The spec's profiles by name; ids are checked against the chapters.

    The ``gpt2`` profile holds every requirement; a profile that lists ids holds those. Raises
    :class:`SpecFormatError` for an id the chapters do not define, a duplicate, or a missing
    ``gpt2`` profile.
    """
    readme = spec_dir / "README.md"
    known = [r.id for r in load_requirements(spec_dir)]
    listed: dict[str, list[str]] = {}
    tied: dict[str, set[str]] = {}
    lines: dict[str, int] = {}
    entries = _section_entries(
        readme, _PROFILES_HEADING, _PROFILE_HEADING, _PROFILE_ITEM, "profile"
    )
    for number, current, item in entries:
        if item is None:
            listed[current], tied[current], lines[current] = [], set(), number
            continue
        rid = item["id"]
        if rid not in known:
            raise SpecFormatError(
                f"README.md:{number}: profile {current} names {rid}, which no chapter defines"
            )
        if rid in listed[current]:
            raise SpecFormatError(f"README.md:{number}: profile {current} lists {rid} twice")
        listed[current].append(rid)
        if _TIED_ONLY in item["rest"]:
            tied[current].add(rid)
    if FULL_PROFILE not in listed:
        raise SpecFormatError(f"README.md: no '### Profile `{FULL_PROFILE}`' under '## Profiles'")
    profiles = {}
    for name, ids in listed.items():
        if name == FULL_PROFILE:
            if ids:
                raise SpecFormatError(
                    f"README.md:{lines[name]}: the {FULL_PROFILE} profile holds every requirement "
                    "and lists none"
                )
            ids = list(known)
        elif not ids:
            raise SpecFormatError(f"README.md:{lines[name]}: profile {name} lists no requirement")
        order = {rid: k for k, rid in enumerate(known)}
        profiles[name] = Profile(
            name, tuple(sorted(ids, key=order.__getitem__)), frozenset(tied[name])
        )
    return profiles


# --------------------------------------------------------------------------------------------
# Conformance classes (spec/README.md, section "Conformance classes")

_CLASSES_HEADING = re.compile(r"^## Conformance classes\s*$")
_CLASS_HEADING = re.compile(r"^### Class `(?P<name>[a-z][a-z0-9-]*)`\s*$")
_CLASS_ITEM = re.compile(r"^- \[[^\]]+\]\((?P<chapter>[0-9][0-9]-[a-z0-9-]+\.md)\)")
#: The conformance classes of this version of the spec, in the order a verdict names them.
FUNCTION_CLASS = "function"
VALIDATED_INPUT_CLASS = "validated-input"


@dataclasses.dataclass(frozen=True)
class ConformanceClass:
    """A conformance class: a set of chapters whose requirements are claimed together.

    An implementation conforms (or not) to each class on its own; a verdict names each class.

    Attributes:
        name: ``function`` (what GPT-2 computes) or ``validated-input`` (refusing bad input).
        chapters: the chapter files of the class, in reading order.
    """

    name: str
    chapters: tuple[str, ...]

    @property
    def title(self) -> str:
        """The name as words, for a verdict line: ``validated input``."""
        return self.name.replace("-", " ")


def load_classes(
    spec_dir: Path = SPEC_DIR, *, chapters: Sequence[str] | None = None
) -> tuple[ConformanceClass, ...]:
    """The spec's conformance classes, in the README's order.

    Within ``## Conformance classes``, each ``### Class `name``` heading starts a class and each
    list item that starts with a Markdown link to a chapter file (``- [6. The rest of the
    forward](06-forward.md)``) puts that chapter in it. Raises :class:`SpecFormatError` when a
    chapter is in no class or in two, a listed chapter does not exist, or there is no class.
    """
    readme = spec_dir / "README.md"
    known = list(chapters) if chapters is not None else [p.name for p in chapter_paths(spec_dir)]
    listed: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for number, current, item in _section_entries(
        readme, _CLASSES_HEADING, _CLASS_HEADING, _CLASS_ITEM, "class"
    ):
        if item is None:
            listed[current] = []
            continue
        chapter = item["chapter"]
        if chapter not in known:
            raise SpecFormatError(
                f"README.md:{number}: class {current} names the chapter {chapter}, which does "
                "not exist"
            )
        if chapter in owner:
            raise SpecFormatError(
                f"README.md:{number}: the chapter {chapter} is in class {owner[chapter]} already; "
                "a chapter belongs to exactly one class"
            )
        owner[chapter] = current
        listed[current].append(chapter)
    if not listed:
        raise SpecFormatError("README.md: no '### Class `name`' under '## Conformance classes'")
    missing = [c for c in known if c not in owner]
    if missing:
        raise SpecFormatError(
            f"README.md: the chapters {', '.join(missing)} are in no conformance class; list "
            "each under one '### Class `name`' heading"
        )
    empty = [name for name, listed_chapters in listed.items() if not listed_chapters]
    if empty:
        raise SpecFormatError(f"README.md: the classes {', '.join(empty)} list no chapter")
    return tuple(ConformanceClass(name, tuple(chs)) for name, chs in listed.items())


# --------------------------------------------------------------------------------------------
# Presuppositions (spec/diagnosis.md, section "Presuppositions")

DIAGNOSIS = "diagnosis.md"
_CODE = re.compile(r"`([^`]+)`")


def _expand(pattern: str, ids: Sequence[str], where: str) -> list[str]:
    """The ids a cell's pattern names (``objective.*``, ``model.canonical-*`` or one id)."""
    import fnmatch

    named = [rid for rid in ids if fnmatch.fnmatchcase(rid, pattern)]
    if not named:
        raise SpecFormatError(f"{where}: {pattern!r} names no requirement of the spec")
    return named


def load_presuppositions(
    spec_dir: Path = SPEC_DIR, requirements: Sequence[Requirement] | None = None
) -> dict[str, frozenset[str]]:
    """What each requirement presupposes, transitively closed (spec/diagnosis.md).

    Every requirement of the spec has an entry (empty when it presupposes nothing). A pattern that
    names no requirement, a row without both cells, and a cycle are :class:`SpecFormatError`.
    """
    ids = [
        r.id for r in (requirements if requirements is not None else load_requirements(spec_dir))
    ]
    direct: dict[str, set[str]] = {rid: set() for rid in ids}
    path = spec_dir / DIAGNOSIS
    if not path.is_file():
        return {rid: frozenset() for rid in ids}
    in_section = False
    for number, line in _iter_lines_outside_code(path.read_text(encoding="utf-8")):
        if line.startswith("## "):
            in_section = line.startswith("## Presuppositions")
            continue
        if not in_section or not line.startswith("|") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Requirement":
            continue
        where = f"{DIAGNOSIS}:{number}"
        if len(cells) < 2 or not _CODE.findall(cells[0]) or not _CODE.findall(cells[1]):
            raise SpecFormatError(f"{where}: a row needs `ids` in its first two cells")
        subjects = [rid for p in _CODE.findall(cells[0]) for rid in _expand(p, ids, where)]
        objects = [rid for p in _CODE.findall(cells[1]) for rid in _expand(p, ids, where)]
        for subject in subjects:
            direct[subject].update(o for o in objects if o != subject)
    closed: dict[str, frozenset[str]] = {}
    for rid in ids:
        seen = _reach(direct, rid)
        if rid in seen:
            cycle = sorted(x for x in seen if rid in _reach(direct, x))
            raise SpecFormatError(
                f"{DIAGNOSIS}: {rid} presupposes itself through {', '.join(cycle)}; "
                "presuppositions must have no cycle"
            )
        closed[rid] = frozenset(seen)
    return closed


def _reach(direct: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(direct[start])
    while stack:
        x = stack.pop()
        if x not in seen:
            seen.add(x)
            stack.extend(direct[x])
    return seen
