"""gpt2_spec: the normative GPT-2 specification, readable by people (the Markdown chapters in this
folder) and by machines (requirements, executable NumPy definitions, the configuration type).

- :func:`load_requirements` lists the requirements with their stable ids; :func:`load_profiles`
  the named subsets a conformance run may judge; :func:`load_classes` the conformance classes
  (``function``, ``validated-input``), each claimed on its own.
- :func:`spec_definitions` executes the chapters' NumPy code and returns its functions.
- :class:`GPT2Config` is the one configuration type of the project.
"""

from .config import ConfigError, GPT2Config
from .definitions import code_blocks, spec_definitions
from .errors import InvalidInputError
from .registry import (
    ConformanceClass,
    Profile,
    Requirement,
    SpecFormatError,
    chapter_paths,
    load_classes,
    load_presuppositions,
    load_profiles,
    load_requirements,
)

SPEC_VERSION = "1.0.0-draft"

__all__ = [
    "SPEC_VERSION",
    "ConfigError",
    "ConformanceClass",
    "GPT2Config",
    "InvalidInputError",
    "Profile",
    "Requirement",
    "SpecFormatError",
    "chapter_paths",
    "code_blocks",
    "load_classes",
    "load_presuppositions",
    "load_profiles",
    "load_requirements",
    "spec_definitions",
]
