"""Traceability: every spec requirement is checked by at least one conformance property, every
property names only requirements and capabilities that exist, and the property modules pair one
to one with the spec's chapters."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from gpt2_conformance import properties
from gpt2_conformance.adapter import CAPABILITIES
from gpt2_spec import load_profiles, load_requirements
from gpt2_spec.registry import SPEC_DIR

REQUIREMENT_IDS = {r.id for r in load_requirements()}
PROPERTIES = properties.discover()
CHAPTERS = sorted(p.name for p in SPEC_DIR.glob("[0-9][0-9]-*.md"))

pytest_plugins = ["pytester"]


def test_the_suite_has_properties():
    assert len(PROPERTIES) >= len(REQUIREMENT_IDS)


@pytest.mark.parametrize("prop", PROPERTIES, ids=[p.qualname for p in PROPERTIES])
def test_every_property_names_known_requirements_and_capabilities(prop: properties.Property):
    assert prop.requirements, f"{prop.qualname} has no @pytest.mark.requirement(...)"
    assert len(prop.requirements) == 1, f"{prop.qualname} names several requirements"
    unknown = set(prop.requirements) - REQUIREMENT_IDS
    assert not unknown, f"{prop.qualname} names requirements that are not in the spec: {unknown}"
    unknown_caps = set(prop.capabilities) - set(CAPABILITIES)
    assert not unknown_caps, f"{prop.qualname} needs unknown capabilities: {unknown_caps}"


def test_every_requirement_has_a_property():
    covered = set(properties.by_requirement(PROPERTIES))
    missing = sorted(REQUIREMENT_IDS - covered)
    assert not missing, f"requirements without a conformance property: {missing}"


# ---- the requirement id is written once ---------------------------------------------------


@pytest.mark.parametrize("prop", PROPERTIES, ids=[p.qualname for p in PROPERTIES])
def test_a_property_reads_its_requirement_from_its_marker(prop: properties.Property):
    """The body names no requirement id: it takes the ``requirement`` fixture (the marker's id)
    and passes it on."""
    source = textwrap.dedent(inspect.getsource(prop.function))
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    assert "requirement" in [a.arg for a in function.args.args], (
        f"{prop.qualname} does not take the `requirement` fixture"
    )
    body = ast.Module(body=function.body, type_ignores=[])
    written = sorted(
        n.value
        for n in ast.walk(body)
        if isinstance(n, ast.Constant) and n.value in REQUIREMENT_IDS
    )
    assert not written, f"{prop.qualname} writes requirement ids in its body: {written}"


FIXTURE_USERS = """
import pytest

@pytest.mark.requirement("objective.sum-of-terms")
def test_marked(requirement):
    assert requirement == "objective.sum-of-terms"

def test_unmarked(requirement):
    pass

@pytest.mark.requirement("objective.sum-of-terms")
@pytest.mark.requirement("objective.ignore-index")
def test_marked_twice(requirement):
    pass
"""


def test_the_requirement_fixture_is_the_markers_id_and_refuses_anything_else(
    pytester: pytest.Pytester,
):
    pytester.makepyfile(test_fixture_users=FIXTURE_USERS)
    result = pytester.runpytest("--impl=numpy", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_unmarked asks for the `requirement` fixture but has no requirement marker*",
            "*test_marked_twice asks for the `requirement` fixture but has requirements "
            "objective.*, objective.*",
        ]
    )


# ---- modules and chapters ----------------------------------------------------------------------


def test_every_chapter_has_exactly_one_property_module():
    """The spec's chapters and the property modules pair one to one (``01-notation-and-model.md``
    with ``test_model``, ...): each module's docstring names its chapter, which the records carry;
    the causal-lm profile's module is the one module of a profile."""
    by_chapter: dict[str, set[str]] = {}
    for prop in PROPERTIES:
        if prop.chapter is not None:
            by_chapter.setdefault(prop.chapter, set()).add(prop.module)
    assert sorted(by_chapter) == CHAPTERS, "a chapter without a property module, or the reverse"
    for chapter, names in by_chapter.items():
        assert len(names) == 1, f"{chapter} is checked by several modules: {sorted(names)}"


def test_every_property_module_names_a_chapter_or_a_profile():
    profiles = set(load_profiles())
    for prop in PROPERTIES:
        assert (prop.chapter is None) != (prop.profile is None), prop.qualname
        if prop.profile is not None:
            assert prop.profile in profiles, f"{prop.module} names an unknown profile"
    assert {p.module for p in PROPERTIES} == set(properties.property_modules())


def test_a_property_module_without_a_chapter_or_profile_is_refused():
    import types

    module = types.ModuleType(
        "gpt2_conformance.test_nowhere", "Properties of nothing in particular."
    )
    with pytest.raises(ValueError, match=r"must start with 'Chapter N, \.\.\.'"):
        properties.module_heading(module)
    module.__doc__ = "Chapter 42, the answer."
    with pytest.raises(ValueError, match="names chapter 42, but the spec has 0 chapter files"):
        properties.module_heading(module)


def test_node_ids_are_the_reports_node_ids():
    """The records' node ids are those the suite's reports carry, run from the repository."""
    prop = next(p for p in PROPERTIES if p.name == "test_a_prefix_gives_the_same_rows")
    assert prop.nodeid == "conformance/test_causality.py::test_a_prefix_gives_the_same_rows"
    assert prop.chapter == "03-causality.md"
    assert prop.path.is_file()
    assert prop.summary == ""  # it has no docstring
    documented = next(p for p in PROPERTIES if p.function.__doc__)
    assert documented.summary
    assert "\n" not in documented.summary
