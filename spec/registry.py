"""Read the normative requirements out of the spec's Markdown chapters.

A requirement is written in a chapter as (see spec/README.md, "How a requirement is written")::

    ### Title in plain words {#family.short-name}

    **Requirement `family.short-name`** · MUST · profile `causal-lm`

    Normative text with the RFC 2119 keyword, math, ...

    *Rationale.* Why.

    *Sources.* Where the fact comes from.

The heading's ``{#id}`` is the anchor the docs site, the tests and the reports link to. The level
line names, after the level, every profile besides ``gpt2`` that holds the requirement (none, one,
or more, each as `` · profile `name` ``, with `` (declared tied only)`` for a requirement that
applies only to a model declaring a tied head): the profiles are read from there.
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
_PROFILE_NAME = r"[a-z][a-z0-9-]*"
#: The profile in which every requirement is judged (the default); no level line names it.
FULL_PROFILE = "gpt2"
_TIED_ONLY = "declared tied only"
#: One profile on a level line: `` · profile `causal-lm` `` or `` · profile `causal-lm` (declared
#: tied only)``.
_PROFILE_MARK = re.compile(
    r" · profile `(?P<name>" + _PROFILE_NAME + r")`(?P<tied> \(" + _TIED_ONLY + r"\))?"
)
_LEVEL_LINE = re.compile(
    r"^\*\*Requirement `(?P<id>" + _ID + r")`\*\* · (?P<level>MUST|SHOULD|MAY)"
    r"(?P<profiles>(?:" + _PROFILE_MARK.pattern + r")*)\s*$"
)
#: The start of a level line, up to its level (to tell a wrong profile mark from a wrong line).
_LEVEL_START = re.compile(r"^\*\*Requirement `(?P<id>" + _ID + r")`\*\* · (?:MUST|SHOULD|MAY)\b")
#: The level line's shape, as the parser's messages show it.
LEVEL_LINE_SHAPE = (
    "'**Requirement `{id}`** · MUST|SHOULD|MAY', then ' · profile `name`' for each profile "
    "besides gpt2 that holds it (' · profile `name` (declared tied only)' where it applies to "
    "a declared tied head only)"
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
        profiles: the profiles besides ``gpt2`` that hold it, as its level line names them, in
            that order (``gpt2`` holds every requirement and is never named).
        tied_only_in: those of ``profiles`` in which it applies only to a model that declares
            a tied head (the level line's ``(declared tied only)``).
    """

    id: str
    title: str
    level: str
    chapter: str
    line: int
    text: str
    conformance_class: str = ""
    profiles: tuple[str, ...] = ()
    tied_only_in: frozenset[str] = frozenset()

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
            shape = LEVEL_LINE_SHAPE.format(id=match["id"])
            start = _LEVEL_START.match(first)
            if start and start["id"] == match["id"]:
                # the id and level are right: name what follows them
                raise SpecFormatError(
                    f"{path.name}:{number}: requirement {match['id']}: after the level, only "
                    "' · profile `name`' marks may follow (a name of lowercase letters, digits "
                    "and '-', in backticks; ' (declared tied only)' after it where that applies); "
                    f"got {first[start.end() :]!r} in {first!r}"
                )
            raise SpecFormatError(
                f"{path.name}:{number}: requirement {match['id']} must be followed by the line "
                f"{shape}; got {first!r}"
            )
        profiles, tied_only_in = _level_line_profiles(
            level["profiles"], f"{path.name}:{number}", match["id"]
        )
        found.append(
            Requirement(
                id=match["id"],
                title=match["title"].strip(),
                level=level["level"],
                chapter=path.name,
                line=number,
                text=body,
                profiles=profiles,
                tied_only_in=tied_only_in,
            )
        )
    return found


def _level_line_profiles(
    marks: str, where: str, rid: str
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The profiles a level line names after its level, and those marked declared tied only."""
    names: list[str] = []
    tied: set[str] = set()
    for mark in _PROFILE_MARK.finditer(marks):
        name = mark["name"]
        if name == FULL_PROFILE:
            raise SpecFormatError(
                f"{where}: requirement {rid} names the profile {FULL_PROFILE}, which holds every "
                "requirement; a level line names only the other profiles that hold it"
            )
        if name in names:
            raise SpecFormatError(f"{where}: requirement {rid} names the profile {name} twice")
        names.append(name)
        if mark["tied"]:
            tied.add(name)
    return tuple(names), frozenset(tied)


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
_PROFILE_HEADING = re.compile(r"^### Profile `(?P<name>" + _PROFILE_NAME + r")`\s*$")
_PROFILE_ITEM = re.compile(r"^- `(?P<id>" + _ID + r")`(?P<rest>.*)$")
# A fence line holds nothing but the fence and an info string (README's prose mentions fences).
_FENCE_LINE = re.compile(r"^(`{3,}|~{3,})[\w-]*\s*$")


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
    """The spec's profiles by name, in the README's order.

    The README's ``## Profiles`` section defines them, a ``### Profile `name``` heading each with
    what the profile means; the chapters say which requirements each holds, on the requirements'
    level lines (`` · profile `causal-lm` ``). The ``gpt2`` profile holds every requirement.
    Raises :class:`SpecFormatError` for a level line that names a profile the README does not
    define, a profile that no level line names, or a missing ``gpt2`` profile.
    """
    requirements = load_requirements(spec_dir)
    entries = _section_entries(
        spec_dir / "README.md", _PROFILES_HEADING, _PROFILE_HEADING, _PROFILE_ITEM, "profile"
    )
    defined = {name: number for number, name, item in entries if item is None}
    if FULL_PROFILE not in defined:
        raise SpecFormatError(f"README.md: no '### Profile `{FULL_PROFILE}`' under '## Profiles'")
    for requirement in requirements:
        for name in requirement.profiles:
            if name not in defined:
                raise SpecFormatError(
                    f"{requirement.chapter}:{requirement.line}: requirement {requirement.id} "
                    f"names the profile {name}, which the spec's README does not define (no "
                    f"'### Profile `{name}`' under '## Profiles')"
                )
    profiles = {}
    for name, number in defined.items():
        if name == FULL_PROFILE:
            profiles[name] = Profile(name, tuple(r.id for r in requirements))
            continue
        held = [r for r in requirements if name in r.profiles]
        if not held:
            raise SpecFormatError(
                f"README.md:{number}: profile {name} holds no requirement: no chapter's level "
                f"line names it (add ' · profile `{name}`' to the level line of each requirement "
                "it holds)"
            )
        tied_only = frozenset(r.id for r in held if name in r.tied_only_in)
        profiles[name] = Profile(name, tuple(r.id for r in held), tied_only)
    return profiles


# The README shows each profile's requirements (besides gpt2's, which are all of them) as a list
# generated from the level lines, between these two lines; nothing reads the list back.
_LIST_START = re.compile(r"^<!-- profile (?P<name>" + _PROFILE_NAME + r"): generated\b.*-->\s*$")
LIST_START = (
    "<!-- profile {name}: generated from the chapters' level lines by "
    "`python -m gpt2_evidence.counts --write`; edit the level lines, not this list -->"
)
LIST_END = "<!-- end of the generated list -->"


def profile_list(profile: Profile) -> list[str]:
    """The Markdown list of a profile's requirements, as the spec's README shows it."""
    return [
        f"- `{rid}`" + (f" ({_TIED_ONLY})" if rid in profile.tied_only else "")
        for rid in profile.requirements
    ]


def with_profile_lists(readme: str, profiles: dict[str, Profile]) -> str:
    """The README's text with each profile's generated list made the profile's requirements.

    Every profile besides ``gpt2`` has one generated list in the README: a line
    :data:`LIST_START` names the profile, a line :data:`LIST_END` ends the list. Everything else
    is kept byte for byte. Raises :class:`SpecFormatError` for a list of an unknown profile, a
    profile with no list or two, and a list that does not end.
    """
    lines = readme.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    out: list[str] = []
    seen: set[str] = set()
    number = 0
    while number < len(lines):
        line = lines[number]
        out.append(line)
        number += 1
        start = _LIST_START.match(line.rstrip("\r\n"))
        if not start:
            continue
        name = start["name"]
        where = f"README.md:{number}"
        if name not in profiles or name == FULL_PROFILE:
            raise SpecFormatError(f"{where}: a generated list of {name}, which is no profile")
        if name in seen:
            raise SpecFormatError(f"{where}: a second generated list of profile {name}")
        seen.add(name)
        end = next(
            (k for k in range(number, len(lines)) if lines[k].rstrip("\r\n") == LIST_END), None
        )
        if end is None:
            raise SpecFormatError(f"{where}: the generated list of {name} has no {LIST_END!r}")
        # blank lines around the list, so that no Markdown reads a comment into a list item
        out.extend(item + newline for item in ["", *profile_list(profiles[name]), ""])
        number = end
    missing = [n for n in profiles if n != FULL_PROFILE and n not in seen]
    if missing:
        raise SpecFormatError(
            f"README.md: no generated list of the profiles {', '.join(missing)}; put the lines "
            f"{LIST_START.format(name=missing[0])!r} and {LIST_END!r} in the profile's section"
        )
    return "".join(out)


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
