"""The zoo: broken GPT-2s, adapters with one realistic bug each, naming the requirements they must
fail.

A mutant class carries what the zoo reports of it: ``must_fail``, and optionally ``must_pass``,
``diagnosis`` and ``suite_dtype`` (the dtype the suite checks it at; float32 by default). Each
module lists its mutants in ``ALL``.

Each mutant is selected like any implementation, from any directory:
``pytest --pyargs gpt2_conformance --impl=gpt2_zoo.sequence_bugs:CausalLeak``. The modules import
torch and the project's packages; ``hf_bugs`` needs transformers (the ``transformers`` extra).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import gpt2_conformance
from gpt2_conformance.adapters import zoo_baselines
from gpt2_conformance.properties import by_requirement, discover

CONFORMANCE = Path(gpt2_conformance.__file__).parent


def properties_by_requirement(modules: tuple[str, ...]) -> dict[str, list[str]]:
    """Requirement id -> the pytest targets of the properties in ``modules`` tagged with it."""
    found = by_requirement(discover(modules))
    return {rid: [p.target for p in props] for rid, props in found.items()}


#: The modules of the zoo, and the implementation each module's mutants are built on.
MODULES = {
    "input_bugs": "reference",
    "sequence_bugs": "reference",
    "weight_bugs": "reference",
    "hf_bugs": "transformers",
}
#: The unmodified implementation of each origin, as a ``--impl`` value.
BASELINES = zoo_baselines()
#: The implementations the zoo's mutants are built on.
ORIGINS = tuple(BASELINES)


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One broken GPT-2 of the zoo, as the meta-test and the kill matrix see it."""

    name: str  # its class name
    module: str  # its module in this package
    origin: str  # "reference" or "transformers": the implementation it changes
    dtype: str  # the dtype the suite checks it at
    must_fail: tuple[str, ...]
    must_pass: tuple[str, ...]
    diagnosis: dict[str, str]
    story: str  # how the bug arises, in one line

    @property
    def impl(self) -> str:
        """The ``--impl`` value that selects it."""
        return f"{__name__}.{self.module}:{self.name}"

    @property
    def baseline(self) -> str:
        """The ``--impl`` value of the unmodified implementation it is built on."""
        return BASELINES[self.origin]


def story_of(kind: type) -> str:
    """The first sentence of a class's docstring, on one line."""
    text = " ".join((kind.__doc__ or "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def zoo() -> list[Mutant]:
    """Every mutant of the package, in module order (imports torch and the mutant modules)."""
    mutants = []
    for module_name, origin in MODULES.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        for kind in module.ALL:
            mutants.append(
                Mutant(
                    name=kind.__name__,
                    module=module_name,
                    origin=origin,
                    dtype=getattr(kind, "suite_dtype", "float32"),
                    must_fail=tuple(kind.must_fail),
                    must_pass=tuple(getattr(kind, "must_pass", ())),
                    diagnosis=dict(getattr(kind, "diagnosis", {})),
                    story=story_of(kind),
                )
            )
    return mutants


def controls() -> list[Mutant]:
    """Implementations that differ from the reference in a declared, correct way: they must pass
    every property."""
    from . import sequence_bugs

    return [
        Mutant(kind.__name__, "sequence_bugs", "reference", "float32", (), (), {}, story_of(kind))
        for kind in sequence_bugs.CONTROLS
    ]
