"""Broken GPT-2s: adapters with one realistic bug each, naming the requirements they must fail."""

from __future__ import annotations

import importlib
from collections import defaultdict
from pathlib import Path

import gpt2_conformance

CONFORMANCE = Path(gpt2_conformance.__file__).parent


def properties_by_requirement(modules: tuple[str, ...]) -> dict[str, list[str]]:
    """Requirement id -> node ids of the properties in ``modules`` tagged with it."""
    found: dict[str, list[str]] = defaultdict(list)
    for name in modules:
        module = importlib.import_module(f"gpt2_conformance.{name}")
        for attribute, function in vars(module).items():
            if not attribute.startswith("test_"):
                continue
            for mark in getattr(function, "pytestmark", []):
                if mark.name == "requirement":
                    for rid in mark.args:
                        found[rid].append(f"{CONFORMANCE / name}.py::{attribute}")
    return dict(found)
