"""A stand-in for a compiled engine's Python bindings, so that example_engine.py runs.

A real engine (C, C++, Rust) would expose a similar handful of calls through pybind11,
nanobind, PyO3, ctypes or cffi: create from a JSON config, copy weights in by name from a
contiguous buffer, run a batch of int32 ids and hand back a float32 buffer.
"""

import json

import numpy as np
from example_numpy import gpt2


class Engine:
    def __init__(self, config_json: str) -> None:
        self.config = json.loads(config_json)
        self.weights: dict[str, np.ndarray] = {}

    def set_weight(self, name: str, data: np.ndarray) -> None:
        self.weights[name] = np.array(data, dtype=np.float32)  # the engine keeps its own copy

    def weight(self, name: str) -> memoryview:
        return memoryview(self.weights[name]).cast("B")

    def forward(self, ids: np.ndarray) -> bytes:
        logits = gpt2(self.weights, ids, self.config["n_layer"], self.config["n_head"])
        return logits.astype(np.float32).tobytes()
