"""The suite's properties as data: where they are, what they check, and the ``requirement`` fixture.

A property is a ``test_*`` function of a module ``gpt2_conformance.test_*`` carrying
``@pytest.mark.requirement(...)``. Its requirement id is written once, in that marker; the body
reads it through the :func:`requirement` fixture, so the two cannot disagree. The suite's own
properties declare themselves with :func:`checks_requirement`, one line that gives the marker,
the capabilities it needs and hypothesis' ``data`` draw.

:func:`discover` is the one place that finds the properties: whatever lists them (the project's
traceability test, the docs' traceability page, the peers test) reads its records. Each property
module names, in the first words of its docstring, the spec chapter it checks ("Chapter 3,
causality: ...") or the requirements profile it serves ("The causal-lm profile's ..."); the
record carries the chapter's file name (``03-causality.md``), and the project's traceability
test checks that chapters and modules pair one to one.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

PACKAGE = "gpt2_conformance"
#: The folder of the property modules (``conformance/`` in the repository).
FOLDER = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Property:
    """One conformance property, as the code declares it."""

    #: ``test_causality`` (the module's name in the package)
    module: str
    #: ``test_a_prefix_gives_the_same_rows``
    name: str
    #: the ids of its ``@pytest.mark.requirement`` markers, in order
    requirements: tuple[str, ...]
    #: the ids of its ``@pytest.mark.capability`` markers, in order
    capabilities: tuple[str, ...]
    #: the spec chapter its module checks (``03-causality.md``); None for a profile's module
    chapter: str | None
    #: the requirements profile its module serves (``causal-lm``); None for a chapter's module
    profile: str | None
    #: the first paragraph of its docstring, on one line ("" without one)
    summary: str
    #: the test function itself
    function: Callable[..., Any] = dataclasses.field(repr=False, compare=False)

    @property
    def nodeid(self) -> str:
        """The node id pytest gives it run from the repository (``conformance/test_x.py::name``),
        as the reports, xfails files and committed evidence write it."""
        return f"{FOLDER.name}/{self.module}.py::{self.name}"

    @property
    def path(self) -> Path:
        """The module's file."""
        return FOLDER / f"{self.module}.py"

    @property
    def target(self) -> str:
        """An argument that selects it on a pytest command line from any folder."""
        return f"{self.path}::{self.name}"

    @property
    def qualname(self) -> str:
        """``test_causality.test_a_prefix_gives_the_same_rows``."""
        return f"{self.module}.{self.name}"


def property_modules() -> list[str]:
    """The names of the property modules, sorted (``test_causal_lm``, ``test_causality``, ...)."""
    package = importlib.import_module(PACKAGE)
    return sorted(
        i.name for i in pkgutil.iter_modules(package.__path__) if i.name.startswith("test_")
    )


#: A property module's docstring opens with its chapter ("Chapter 3, ...") or its profile.
_CHAPTER = re.compile(r"^Chapter (?P<number>\d+),")
_PROFILE = re.compile(r"^The (?P<profile>[\w-]+) profile's ")


def module_heading(module: ModuleType) -> tuple[str | None, str | None]:
    """``(chapter, profile)`` named by a property module's docstring; exactly one is not None.

    Raises ValueError when the docstring names neither."""
    from gpt2_spec.registry import SPEC_DIR

    doc = inspect.getdoc(module) or ""
    found = _CHAPTER.match(doc)
    if found is not None:
        number = int(found.group("number"))
        files = sorted(p.name for p in SPEC_DIR.glob(f"{number:02d}-*.md"))
        if len(files) != 1:
            raise ValueError(
                f"{module.__name__}: its docstring names chapter {number}, but the spec has "
                f"{len(files)} chapter files numbered {number:02d} ({files})"
            )
        return files[0], None
    found = _PROFILE.match(doc)
    if found is not None:
        return None, found.group("profile")
    raise ValueError(
        f"{module.__name__}: a property module's docstring must start with 'Chapter N, ...' "
        '(the spec chapter it checks) or "The NAME profile\'s ..." (the profile it serves)'
    )


def marker_args(function: Any, name: str) -> tuple[str, ...]:
    """The arguments of a function's ``@pytest.mark.NAME`` markers, in order."""
    return tuple(a for m in getattr(function, "pytestmark", []) if m.name == name for a in m.args)


def summary_of(function: Any) -> str:
    """The first paragraph of a docstring, on one line."""
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n")[0].split())


def discover(modules: tuple[str, ...] | None = None) -> list[Property]:
    """Every conformance property, module by module (sorted), in source order within a module.

    ``modules`` limits it to those module names (``("test_objective",)``). A ``test_*`` function
    of a property module without a requirement marker is still listed (with no requirements),
    so that checks on the records can name it."""
    found = []
    for name in property_modules() if modules is None else modules:
        module = importlib.import_module(f"{PACKAGE}.{name}")
        chapter, profile = module_heading(module)
        functions = [
            f
            for n, f in vars(module).items()
            if n.startswith("test_") and inspect.isfunction(f) and f.__module__ == module.__name__
        ]
        for function in functions:
            found.append(
                Property(
                    module=name,
                    name=function.__name__,
                    requirements=marker_args(function, "requirement"),
                    capabilities=marker_args(function, "capability"),
                    chapter=chapter,
                    profile=profile,
                    summary=summary_of(function),
                    function=function,
                )
            )
    return found


def by_requirement(properties: list[Property]) -> dict[str, list[Property]]:
    """Requirement id -> the properties tagged with it (in discovery order)."""
    found: dict[str, list[Property]] = {}
    for prop in properties:
        for rid in prop.requirements:
            found.setdefault(rid, []).append(prop)
    return found


# ---- declaring a property ---------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def checks_requirement(requirement_id: str, *, needs: Sequence[str] = ()) -> Callable[[F], F]:
    """Declare a property: ``@pytest.mark.requirement(requirement_id)``, ``@pytest.mark.capability
    (*needs)`` when it needs capabilities, and ``@given(data=st.data())`` (every property draws
    its examples from ``data``). Its body reads the id from the :func:`requirement` fixture."""

    def declare(function: F) -> F:
        wrapped = given(data=st.data())(function)
        if needs:
            wrapped = pytest.mark.capability(*needs)(wrapped)
        marked: F = pytest.mark.requirement(requirement_id)(wrapped)
        return marked

    return declare


# ---- the requirement fixture ------------------------------------------------------------------


def requirement_of(node: pytest.Item) -> str:
    """The one requirement id of a test's ``@pytest.mark.requirement`` marker(s)."""
    ids = tuple(dict.fromkeys(a for m in node.iter_markers("requirement") for a in m.args))
    if len(ids) != 1:
        has = "no requirement marker" if not ids else f"requirements {', '.join(ids)}"
        raise ValueError(
            f"{node.nodeid} asks for the `requirement` fixture but has {has}: the fixture gives "
            "the one id of @pytest.mark.requirement(ID); a property checking several "
            "requirements names each where it fails"
        )
    return ids[0]


@pytest.fixture
def requirement(request: pytest.FixtureRequest) -> str:
    """The requirement id of this property, read from its ``@pytest.mark.requirement`` marker."""
    try:
        return requirement_of(request.node)
    except ValueError as error:
        pytest.fail(str(error), pytrace=False)
