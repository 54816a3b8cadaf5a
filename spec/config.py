"""The one configuration type of the project (spec chapter 1, "Notation and model").

Every component (the spec's NumPy definitions, the oracle, the reference model, checkpoint
I/O, the conformance suite) describes a GPT-2 by this dataclass and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

#: The largest LayerNorm epsilon a configuration may have. LayerNorm divides by
#: sqrt(variance + epsilon); an epsilon of this size already outweighs the variance of unit-scale
#: activations, and a larger one makes every LayerNorm a scaled copy of its bias.
MAX_LAYER_NORM_EPSILON = 1.0


class ConfigError(ValueError):
    """A GPT-2 configuration that cannot describe a GPT-2 (say, a width not divisible by heads)."""


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Hyper-parameters of a GPT-2 (spec chapter 1).

    Attributes:
        vocab_size: V, number of token ids; valid ids are 0..V-1.
        n_positions: n_ctx, the longest sequence (cache included) the model accepts.
        n_embd: d, the width of the residual stream.
        n_layer: L, the number of transformer blocks.
        n_head: H, attention heads per block; d must be divisible by H.
        layer_norm_epsilon: the epsilon inside every LayerNorm (GPT-2: 1e-5).
    """

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GPT2Config.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPT2Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head channels"
            )
        epsilon = self.layer_norm_epsilon
        if isinstance(epsilon, bool) or not isinstance(epsilon, float | int):
            raise ConfigError(
                f"GPT2Config.layer_norm_epsilon must be a number, got {type(epsilon).__name__} "
                f"{epsilon!r}"
            )
        if not (0 < epsilon <= MAX_LAYER_NORM_EPSILON and math.isfinite(epsilon)):
            raise ConfigError(
                f"GPT2Config.layer_norm_epsilon must be finite, positive and at most "
                f"{MAX_LAYER_NORM_EPSILON:g}, got {epsilon!r}: the epsilon only keeps LayerNorm's "
                "division away from zero (GPT-2: 1e-5); an infinite or NaN one makes every "
                "LayerNorm output its bias, whatever the input"
            )

    @property
    def head_dim(self) -> int:
        """Channels per attention head, d / H."""
        return self.n_embd // self.n_head

    @property
    def parameter_count(self) -> int:
        """The number of scalars a GPT-2 of this configuration has (the tied head counted once):
        wte and wpe, L blocks of 12d² + 13d, and ln_f."""
        d = self.n_embd
        return (
            (self.vocab_size + self.n_positions) * d + self.n_layer * (12 * d * d + 13 * d) + 2 * d
        )

    @classmethod
    def gpt2_small(cls) -> GPT2Config:
        """The 124M-parameter GPT-2 ("gpt2" on the Hugging Face hub)."""
        return cls(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)

    @classmethod
    def gpt2_medium(cls) -> GPT2Config:
        """The 355M-parameter GPT-2 ("gpt2-medium")."""
        return cls(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16)

    # transformers' GPT2Config (config.json) uses the same names for these fields.
    _HF_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon")

    @classmethod
    def from_hf_dict(cls, data: Mapping[str, Any]) -> GPT2Config:
        """Read the fields of a transformers ``config.json`` (other keys are ignored).

        Raises:
            ConfigError: a required field is missing, or the config is not a plain GPT-2
                (an architecture variant that changes the function this project specifies).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config.json body is a JSON object, got {type(data).__name__}")
        missing = [k for k in cls._HF_FIELDS[:-1] if k not in data]
        if missing:
            raise ConfigError(f"config.json lacks the GPT-2 field(s) {missing}")
        for key in cls._HF_FIELDS[:-1]:  # checked before any arithmetic on them
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
                raise ConfigError(
                    f"config.json sets {key}={shown} ({type(value).__name__}); it must be a "
                    "positive integer"
                )
        variants = {
            "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
            "scale_attn_weights": (True,),
            "scale_attn_by_inverse_layer_idx": (False,),
            "add_cross_attention": (False,),
        }
        for key, allowed in variants.items():
            if key in data and data[key] not in allowed:
                raise ConfigError(
                    f"config.json sets {key}={data[key]!r}; GPT-2 uses {allowed[0]!r}. "
                    "This project specifies GPT-2's function only."
                )
        if data.get("n_inner") not in (None, 4 * data["n_embd"]):
            raise ConfigError(
                f"config.json sets n_inner={data['n_inner']!r}; GPT-2's MLP width is 4*n_embd"
            )
        kwargs = {k: data[k] for k in cls._HF_FIELDS if k in data}
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """A transformers-compatible ``config.json`` body for ``GPT2LMHeadModel``."""
        body: dict[str, Any] = {k: getattr(self, k) for k in self._HF_FIELDS}
        body.update(
            architectures=["GPT2LMHeadModel"],
            model_type="gpt2",
            activation_function="gelu_new",
            tie_word_embeddings=True,
            n_inner=None,
            n_ctx=self.n_positions,
        )
        return body
