"""Shared settings and fixtures for the project's own tests (not the conformance suite)."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
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


def _run_installed_suite(
    *options: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest --pyargs gpt2_conformance OPTIONS`` started in ``cwd`` (the installed
    suite, as a user runs it from any directory), with its output captured; never raises on the
    exit status (the tests read it)."""
    command = [sys.executable, "-m", "pytest", "--pyargs", "gpt2_conformance", *options]
    return subprocess.run(
        command, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True
    )


@pytest.fixture
def installed_suite() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the installed suite in a subprocess: ``installed_suite(*options, cwd=...)``."""
    return _run_installed_suite
