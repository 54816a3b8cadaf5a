"""Sketch: a GPT-2 engine written in C, C++ or Rust, tested through its Python bindings.

Run the suite on it: ``pytest --pyargs gpt2_conformance --impl=example_engine:adapter``.
"""

import json

import numpy as np

# Your engine's bindings instead, e.g. `from my_engine import Engine`:
from example_engine_stub import Engine

from gpt2_conformance.adapter import Adapter, Implementation
from gpt2_reference import oracle
from gpt2_spec import spec_definitions


class EngineImplementation(Implementation):
    def __init__(self, engine, config):
        self.engine, self.config = engine, config

    def logits(self, tokens, *, attention_mask=None, position_ids=None):
        B, T = tokens.shape
        out = self.engine.forward(np.ascontiguousarray(tokens, dtype=np.int32))
        return np.frombuffer(out, dtype=np.float32).reshape(B, T, self.config.vocab_size)

    def set_params(self, params):  # canonical names and layout, float32 buffers
        for name, array in params.items():
            self.engine.set_weight(name, np.ascontiguousarray(array, dtype=np.float32))

    def head_weight(self):  # this engine's head is its token embedding
        return self.get_params()["transformer.wte.weight"]

    def get_params(self):
        c = self.config
        shapes = spec_definitions().canonical_shapes(
            c.vocab_size, c.n_positions, c.n_embd, c.n_layer
        )
        return {
            name: np.frombuffer(self.engine.weight(name), dtype=np.float32).reshape(shape)
            for name, shape in shapes.items()
        }


class EngineAdapter(Adapter):
    name = "my-engine"
    capabilities = frozenset({"params"})
    dtypes = ("float32",)

    def build(self, config, *, params, seed, device, dtype):
        implementation = EngineImplementation(Engine(json.dumps(config.to_hf_dict())), config)
        if params is None:  # this engine has no initialiser: take GPT-2's, from the oracle
            params = oracle.random_params(config, seed=seed)
        implementation.set_params(params)
        return implementation


adapter = EngineAdapter()
