"""A GPT-2 written as one NumPy function, and the adapter that puts it under test.

Run the suite on it: ``pytest --pyargs gpt2_conformance --impl=example_numpy:adapter``.
The same pattern fits JAX: return the ``jax.Array`` as it is (the suite reads it through DLPack).
"""

import numpy as np

from gpt2_conformance.adapter import Adapter, Implementation
from gpt2_reference import oracle


def layer_norm(x, gain, bias, eps=1e-5):  # [..., d] -> [..., d]
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return gain * (x - mean) / np.sqrt(var + eps) + bias


def gelu(x):  # the tanh approximation GPT-2 uses
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):  # over the last axis
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gpt2(w, tokens, n_layer, n_head):  # canonical weights, [B, T] ids -> [B, T, V] logits
    B, T = tokens.shape
    x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][:T]  # [B, T, d]
    future = ~np.tril(np.ones((T, T), dtype=bool))
    for layer in range(n_layer):
        p = f"transformer.h.{layer}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # [B, T, 3d]
        q, k, v = (a.reshape(B, T, n_head, -1).swapaxes(1, 2) for a in np.split(qkv, 3, -1))
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])  # [B, H, T, T]
        heads = softmax(np.where(future, -np.inf, scores)) @ v  # [B, H, T, d/H]
        merged = heads.swapaxes(1, 2).reshape(B, T, -1)
        x = x + merged @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
    return x @ w["transformer.wte.weight"].T  # the tied head


class NumpyGPT2(Implementation):
    def __init__(self, weights, config):
        self.weights, self.config = weights, config

    def logits(self, tokens, *, attention_mask=None, position_ids=None):
        return gpt2(self.weights, tokens, self.config.n_layer, self.config.n_head)

    def get_params(self):
        return self.weights

    def set_params(self, params):
        self.weights.update({k: np.asarray(v, dtype=np.float32) for k, v in params.items()})

    def head_weight(self):
        return self.weights["transformer.wte.weight"]


class NumpyGPT2Adapter(Adapter):
    name = "numpy-function"
    capabilities = frozenset({"params"})  # build() takes canonical weights
    dtypes = ("float32",)

    def build(self, config, *, params, seed, device, dtype):
        if params is None:  # a bare function has no initialiser: take GPT-2's, from the oracle
            params = oracle.random_params(config, seed=seed)
        weights = {name: np.asarray(a, dtype=np.float32) for name, a in params.items()}
        return NumpyGPT2(weights, config)


adapter = NumpyGPT2Adapter()
