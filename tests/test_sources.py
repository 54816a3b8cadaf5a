"""Every issue or pull request a spec chapter cites is listed, verified, in spec/sources.md.

A chapter cites a thread as ``#NNNN`` (after words such as "issue", "PR", or in a list) or by a
``github.com/<owner>/<repo>/(issues|pull)/NNNN`` URL. Code (fenced blocks and inline spans) is not
prose: an error message such as "argument #1" is not a citation. The repository of a ``#NNNN`` is
the one named last before it in the same paragraph (by its short name, e.g. "safetensors" or
"vllm"), and huggingface/transformers when none is named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from gpt2_spec.registry import SPEC_DIR, chapter_paths

SOURCES = SPEC_DIR / "sources.md"
DEFAULT_REPO = "huggingface/transformers"
STATUSES = ("verified", "indirect", "unverified")

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`]*`")
_URL = re.compile(r"https?://github\.com/([\w.-]+/[\w.-]+)/(?:issues|pull)/(\d+)")
_NUMBER = re.compile(r"(?<![\w&/])#(\d+)\b")
_ROW = re.compile(r"^\|\s*\[([\w.-]+/[\w.-]+)#(\d+)\]\((\S+)\)\s*\|(.*)\|\s*$")


@dataclass(frozen=True)
class Citation:
    repo: str
    number: int
    chapter: str
    line: int


@dataclass(frozen=True)
class Source:
    repo: str
    number: int
    url: str
    says: str
    status: str


def _alias(repo: str) -> str:
    """The short name by which prose names a repository: its name without the owner."""
    return repo.split("/", 1)[1]


def prose(text: str) -> str:
    """``text`` with code blocks and inline code blanked out, line numbers kept."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group(0))

    return _CODE_SPAN.sub(blank, _FENCE.sub(blank, text))


def citations(text: str, chapter: str, repos: set[str]) -> list[Citation]:
    """The issue and pull-request citations in one chapter's text."""
    text = prose(text)
    found: list[Citation] = []
    for match in _URL.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Citation(match[1], int(match[2]), chapter, line))
    without_urls = _URL.sub(lambda m: " " * len(m.group(0)), text)
    aliases = sorted(((_alias(r).lower(), r) for r in repos), key=lambda a: -len(a[0]))
    for match in _NUMBER.finditer(without_urls):
        paragraph_start = without_urls.rfind("\n\n", 0, match.start()) + 1
        before = without_urls[paragraph_start : match.start()].lower()
        best, repo = -1, DEFAULT_REPO
        for alias, name in aliases:
            at = before.rfind(alias)
            if at > best:
                best, repo = at, name
        line = without_urls.count("\n", 0, match.start()) + 1
        found.append(Citation(repo, int(match[1]), chapter, line))
    return found


def sources(text: str) -> dict[tuple[str, int], Source]:
    """The rows of the issues-and-pull-requests table of sources.md, by (repo, number)."""
    rows: dict[tuple[str, int], Source] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _ROW.match(line)
        if match is None:
            continue
        cells = [c.strip() for c in match[4].split("|")]
        assert len(cells) == 3, f"sources.md:{number}: expected 4 cells, got {len(cells) + 1}"
        says, _, status = cells
        key = (match[1], int(match[2]))
        assert key not in rows, f"sources.md:{number}: {key} listed twice"
        rows[key] = Source(match[1], int(match[2]), match[3], says, status.split(" ", 1)[0])
    return rows


def missing(cited: list[Citation], table: dict[tuple[str, int], Source]) -> list[Citation]:
    """Citations whose thread the table does not list."""
    return [c for c in cited if (c.repo, c.number) not in table]


def unverified(cited: list[Citation], table: dict[tuple[str, int], Source]) -> list[Citation]:
    """Citations of a thread the table marks unverified."""
    return [
        c for c in cited if (row := table.get((c.repo, c.number))) and row.status == "unverified"
    ]


def _where(found: list[Citation]) -> str:
    return ", ".join(f"{c.chapter}:{c.line} {c.repo}#{c.number}" for c in found)


@pytest.fixture(scope="module")
def table() -> dict[tuple[str, int], Source]:
    return sources(SOURCES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cited(table: dict[tuple[str, int], Source]) -> list[Citation]:
    repos = {repo for repo, _ in table} | {DEFAULT_REPO}
    found: list[Citation] = []
    for path in chapter_paths(SPEC_DIR):
        found += citations(path.read_text(encoding="utf-8"), path.name, repos)
    return found


def test_the_table_is_well_formed(table: dict[tuple[str, int], Source]) -> None:
    assert len(table) >= 20, "the sources table lost its rows (or its format changed)"
    for (repo, number), row in table.items():
        kind = "pull" if "/pull/" in row.url else "issues"
        assert row.url == f"https://github.com/{repo}/{kind}/{number}", row
        assert row.status in STATUSES, f"{repo}#{number}: status {row.status!r}"
        assert len(row.says) > 20, f"{repo}#{number}: say what the source says"


def test_every_cited_thread_is_in_the_table(
    cited: list[Citation], table: dict[tuple[str, int], Source]
) -> None:
    assert len(cited) >= 20, "the chapters' citations were not found (parser or chapters broken)"
    absent = missing(cited, table)
    assert not absent, "cited but not in spec/sources.md: " + _where(absent)


def test_no_chapter_cites_an_unverified_source(
    cited: list[Citation], table: dict[tuple[str, int], Source]
) -> None:
    bad = unverified(cited, table)
    assert not bad, "cited although unverified: " + _where(bad)


def test_every_table_row_is_cited_or_marked_unverified(
    cited: list[Citation], table: dict[tuple[str, int], Source]
) -> None:
    used = {(c.repo, c.number) for c in cited}
    stale = [key for key, row in table.items() if key not in used and row.status != "unverified"]
    assert not stale, f"listed as a source but cited by no chapter: {stale}"


# ---- the parser itself -------------------------------------------------------------------------

REPOS = {"huggingface/transformers", "safetensors/safetensors", "vllm-project/vllm"}


def test_parser_finds_numbers_repos_and_urls() -> None:
    text = (
        "See transformers issues #12 and #34; safetensors issue #5, then PR #6.\n\n"
        "A new paragraph: PR #7 (vllm-project/vllm PR #8). "
        "Also https://github.com/safetensors/safetensors/pull/9.\n"
    )
    got = {(c.repo, c.number, c.line) for c in citations(text, "01-x.md", REPOS)}
    assert got == {
        ("huggingface/transformers", 12, 1),
        ("huggingface/transformers", 34, 1),
        ("safetensors/safetensors", 5, 1),
        ("safetensors/safetensors", 6, 1),
        ("huggingface/transformers", 7, 3),
        ("vllm-project/vllm", 8, 3),
        ("safetensors/safetensors", 9, 3),
    }


def test_parser_ignores_code_and_anchors() -> None:
    text = (
        "### A heading {#objective.shift}\n\n"
        "It raises `RuntimeError: argument #1 'indices'\nmust be Long` here.\n\n"
        "```python\nx = 1  # see #99\n```\n"
        "[link](02-objective.md#objective.ignore-index) and &#8212;\n"
    )
    assert citations(text, "01-x.md", REPOS) == []


def test_a_missing_or_unverified_citation_is_caught() -> None:
    table = sources(
        "| Source | What it says | Cited in | Status |\n| --- | --- | --- | --- |\n"
        "| [huggingface/transformers#1](https://github.com/huggingface/transformers/issues/1) |"
        " a thread that says something specific | 1 | verified |\n"
        "| [huggingface/transformers#2](https://github.com/huggingface/transformers/issues/2) |"
        " a thread nobody could find anywhere | none | unverified |\n"
    )
    cited = citations("transformers issues #1, #2 and #3.\n", "01-x.md", REPOS)
    assert [c.number for c in missing(cited, table)] == [3]
    assert [c.number for c in unverified(cited, table)] == [2]
