"""gpt2_conformance: the conformance suite that checks any GPT-2 implementation against the spec.

Run it with ``pytest conformance --impl=NAME`` from the repository, or
``pytest --pyargs gpt2_conformance --impl=package.module[:attribute]`` after installing it.
Data flows one way: the spec (``gpt2_spec``) and the oracle (``gpt2_reference.oracle``) give the
expected values; an :class:`Adapter` builds the :class:`Implementation` under test; the
properties (``test_*.py``) judge it through :mod:`gpt2_conformance.checks`; the plugin reports
per requirement.
"""

from .adapter import CAPABILITIES, Adapter, AdapterError, Cache, Implementation, to_numpy
from .checks import ConformanceFailure

SUITE_VERSION = "0.1.0"

__all__ = [
    "CAPABILITIES",
    "SUITE_VERSION",
    "Adapter",
    "AdapterError",
    "Cache",
    "ConformanceFailure",
    "Implementation",
    "to_numpy",
]
