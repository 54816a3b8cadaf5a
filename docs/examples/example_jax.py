"""A GPT-2 compiled with JAX, run at a fixed small set of shapes.

``jax.jit`` compiles once per distinct input shape. Left alone, the suite's default run draws
hundreds of configurations and batch shapes: hundreds of compiles. This adapter keeps the compiles
few: ``supported_configs`` fixes the configurations, and every batch is padded to a few fixed
shapes (a power of two rows of the configuration's ``n_positions`` tokens) before the compiled
forward runs, and cut back after. Padding cannot change the real rows: extra rows are separate
sequences, and extra positions come after the real ones, which a causal model never reads.

Run the suite on it: ``pytest --pyargs gpt2_conformance --impl=example_jax:adapter``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from gpt2_conformance.adapter import Adapter, Implementation
from gpt2_reference import oracle
from gpt2_spec import GPT2Config

jax.config.update("jax_platforms", "cpu")  # this example runs on the CPU

CONFIGS = (
    GPT2Config(vocab_size=61, n_positions=16, n_embd=16, n_layer=2, n_head=2),
    GPT2Config(vocab_size=37, n_positions=12, n_embd=16, n_layer=1, n_head=4),
)


def layer_norm(x, gain, bias, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return gain * (x - mean) / jnp.sqrt(var + eps) + bias


def gelu(x):  # the tanh approximation GPT-2 uses
    return 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x**3)))


def gpt2(w, tokens, n_layer, n_head):  # canonical weights, [B, T] ids -> [B, T, V] logits
    B, T = tokens.shape
    x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][:T]
    future = ~jnp.tril(jnp.ones((T, T), dtype=bool))
    for layer in range(n_layer):
        p = f"transformer.h.{layer}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (a.reshape(B, T, n_head, -1).swapaxes(1, 2) for a in jnp.split(qkv, 3, -1))
        scores = q @ k.swapaxes(-1, -2) / jnp.sqrt(q.shape[-1])
        heads = jax.nn.softmax(jnp.where(future, -jnp.inf, scores), axis=-1) @ v
        merged = heads.swapaxes(1, 2).reshape(B, T, -1)
        x = x + merged @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
    return x @ w["transformer.wte.weight"].T  # the tied head


forward = jax.jit(gpt2, static_argnums=(2, 3))  # n_layer and n_head are static


class JaxGPT2(Implementation):
    def __init__(self, weights, config):
        self.weights, self.config = weights, config

    def logits(self, tokens, *, attention_mask=None, position_ids=None):
        B, T = tokens.shape
        if self.config.n_positions < T:
            raise ValueError(f"{T} tokens are more than n_positions {self.config.n_positions}")
        rows = 1 << (B - 1).bit_length()  # 1, 2, 4, 8, ...: a few shapes, a few compiles
        padded = np.zeros((rows, self.config.n_positions), dtype=np.int32)
        padded[:B, :T] = tokens
        out = forward(self.weights, jnp.asarray(padded), self.config.n_layer, self.config.n_head)
        return out[:B, :T]

    def get_params(self):
        return self.weights

    def set_params(self, params):
        self.weights = {
            **self.weights,
            **{k: jnp.asarray(v, jnp.float32) for k, v in params.items()},
        }

    def head_weight(self):
        return self.weights["transformer.wte.weight"]


class JaxGPT2Adapter(Adapter):
    name = "jax-fixed-shapes"
    capabilities = frozenset({"params"})
    supported_configs = CONFIGS  # the suite draws only these

    def build(self, config, *, params, seed, device, dtype):
        if params is None:
            params = oracle.random_params(config, seed=seed)
        weights = {name: jnp.asarray(a, dtype=jnp.float32) for name, a in params.items()}
        return JaxGPT2(weights, config)


adapter = JaxGPT2Adapter()
