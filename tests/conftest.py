"""Shared settings for the project's own tests (not the conformance suite)."""

import os

from hypothesis import HealthCheck, settings

# The project's tests are derandomised by default so CI is reproducible; set
# HYPOTHESIS_PROFILE=dev for a quick local loop or =thorough to search harder.
_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


try:
    import torch
except ImportError:  # the spec and oracle tests need no torch
    torch = None

if torch is not None:
    # The project's tests use tiny matrices, which gain nothing from threads; on a 2-core machine
    # that is busy (or runs pytest -n 2) OpenMP's spinning makes them 10-100x slower.
    torch.set_num_threads(1)
