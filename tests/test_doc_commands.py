"""The properties the documentation names exist: every ``-k EXPR`` of a command in README.md and
docs/ selects at least one conformance property, and every property node id written there
(``conformance/test_x.py::name``, ``gpt2_conformance.test_x::name``) names one.

``-k`` is evaluated with pytest's own expression parser, matching an identifier as pytest does:
case-insensitively, as a substring of the names of the property's nodes (its function, its
module's file, the package) or of its markers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from gpt2_conformance.properties import Property, discover

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

#: ``-k EXPR`` in a command: quoted, or one word.
_K = re.compile(
    r"""(?<![\w-])-k[ =](?:'(?P<single>[^']+)'|"(?P<double>[^"]+)"|(?P<word>[^\s`'"]+))"""
)
#: A property named by node id, as a checkout or an installed package writes it.
_NODEID = re.compile(
    r"(?:conformance/(?P<file>test_\w+)\.py|gpt2_conformance\.(?P<module>test_\w+))::(?P<name>\w+)"
)
#: Placeholders a reader replaces (``-k NAME``).
_PLACEHOLDER = re.compile(r"^[A-Z_]+$")


def _k_expressions() -> list[tuple[str, int, str]]:
    """``(page, line number, expression)`` of every ``-k`` in a command of the docs that runs
    the conformance suite (not the project's own ``tests/``)."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            # a command continued from the line above (``\\``) runs what that line runs
            command = " ".join(lines[max(0, number - 3) : number])
            for match in _K.finditer(line):
                expression = match.group("single") or match.group("double") or match.group("word")
                if _PLACEHOLDER.match(expression) or "tests/" in command:
                    continue
                found.append((str(page.relative_to(ROOT)), number, expression))
    return found


def _names(prop: Property) -> list[str]:
    markers = {m.name for m in getattr(prop.function, "pytestmark", [])}
    return [prop.name, f"{prop.module}.py", "conformance", "gpt2_conformance", *markers]


def _selects(expression: str, prop: Property) -> bool:
    names = [n.lower() for n in _names(prop)]

    def matcher(identifier: str, /, **kwargs: object) -> bool:
        return not kwargs and any(identifier.lower() in n for n in names)

    return Expression.compile(expression).evaluate(matcher)


PROPERTIES = discover()
EXPRESSIONS = _k_expressions()


def test_the_docs_give_k_expressions_to_check() -> None:
    pages = {page for page, _, _ in EXPRESSIONS}
    assert "docs/guides/reading-a-failure.md" in pages
    assert "docs/running-the-suite.md" in pages


@pytest.mark.parametrize(("page", "line", "expression"), EXPRESSIONS)
def test_k_selects_a_property(page: str, line: int, expression: str) -> None:
    selected = [p.name for p in PROPERTIES if _selects(expression, p)]
    assert selected, (
        f"{page}:{line}: -k {expression!r} selects no conformance property; the property "
        "names are those of gpt2_conformance.properties.discover()"
    )


def test_k_matching_is_pytests() -> None:
    """The matcher above can fail: a name that is no property selects nothing, and a
    negation selects the rest."""
    [prop] = [p for p in PROPERTIES if p.name == "test_cached_decoding_equals_the_full_forward"]
    assert _selects("cached_decoding", prop)
    assert not _selects("test_cache_equals_full_forward", prop)
    assert not _selects("not cached_decoding", prop)


def test_property_node_ids_in_the_docs_exist() -> None:
    known = {(p.module, p.name) for p in PROPERTIES}
    named = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for match in _NODEID.finditer(line):
                module = match.group("file") or match.group("module")
                named.append((f"{page.relative_to(ROOT)}:{number}", module, match.group("name")))
    assert named
    unknown = [f"{where}: {m}::{n}" for where, m, n in named if (m, n) not in known]
    assert not unknown, f"node ids of no conformance property: {unknown}"
