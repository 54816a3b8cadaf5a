"""gpt2_reference: ground truth and a reference implementation of the spec.

- :mod:`gpt2_reference.oracle` — the NumPy oracle, float64, assembled from the spec's executable
  definitions (ground truth; no torch).
- :mod:`gpt2_reference.model` — a minimal, readable, fast PyTorch GPT-2 (:class:`GPT2`).
- :mod:`gpt2_reference.checkpoint` — canonical checkpoint I/O (safetensors, transformers layout).

Submodules are imported lazily so that ``import gpt2_reference.oracle`` never pulls in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["GPT2", "GPT2Output", "checkpoint", "model", "oracle"]


def __getattr__(name: str) -> Any:
    if name in ("oracle", "model", "checkpoint"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("GPT2", "GPT2Output"):
        return getattr(importlib.import_module(f"{__name__}.model"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
