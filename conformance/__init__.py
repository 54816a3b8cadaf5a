"""gpt2_conformance: the conformance suite that checks any GPT-2 implementation against the spec.

The suite (``pytest conformance --impl=...``) is being built; see the project's issue tracker.
"""

SUITE_VERSION = "0.1.0"
