"""Traceability: every spec requirement is checked by at least one conformance property, and
every property names only requirements and capabilities that exist."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import gpt2_conformance
from gpt2_conformance.adapter import CAPABILITIES
from gpt2_spec import load_requirements

REQUIREMENT_IDS = {r.id for r in load_requirements()}


def _properties() -> list[tuple[str, object]]:
    found = []
    for info in pkgutil.iter_modules(gpt2_conformance.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"gpt2_conformance.{info.name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_") and function.__module__ == module.__name__:
                found.append((f"{info.name}.{name}", function))
    return found


def _marks(function: object, mark: str) -> list[str]:
    return [a for m in getattr(function, "pytestmark", []) if m.name == mark for a in m.args]


PROPERTIES = _properties()


def test_the_suite_has_properties():
    assert len(PROPERTIES) >= len(REQUIREMENT_IDS)


@pytest.mark.parametrize(("name", "function"), PROPERTIES, ids=[n for n, _ in PROPERTIES])
def test_every_property_names_known_requirements_and_capabilities(name, function):
    ids = _marks(function, "requirement")
    assert ids, f"{name} has no @pytest.mark.requirement(...)"
    unknown = set(ids) - REQUIREMENT_IDS
    assert not unknown, f"{name} names requirements that are not in the spec: {unknown}"
    unknown_caps = set(_marks(function, "capability")) - set(CAPABILITIES)
    assert not unknown_caps, f"{name} needs unknown capabilities: {unknown_caps}"


def test_every_requirement_has_a_property():
    covered = {rid for _, function in PROPERTIES for rid in _marks(function, "requirement")}
    missing = sorted(REQUIREMENT_IDS - covered)
    assert not missing, f"requirements without a conformance property: {missing}"
