"""Other causal-LM architectures that transformers ships, built from tiny random configurations,
for the suite's ``causal-lm`` requirements profile (spec README, "Profiles").

Each peer maps the suite's drawn :class:`~gpt2_spec.GPT2Config` (vocabulary ``V``, context
``n_positions``, width ``d``, ``L`` layers, ``H`` heads) onto that family's own configuration and
runs the model through the generic :class:`~.hf.HFCausalLMAdapter`::

    pytest --pyargs gpt2_conformance --impl=hf:llama --conformance-requirements=causal-lm

(``hf:NAME`` is a built-in name; ``gpt2_conformance.adapters.peers:llama`` names the same
adapter). The family's conventions are kept where they are architecture, and pinned where they
are a tokenizer's or a checkpoint's choice:

* the head is tied or untied as the family's configuration sets it by default
  (``tie_word_embeddings``), and the adapter declares exactly that;
* the loss is the model's own (labels equal the inputs, shifted inside: "inputs");
* positions are the family's own (learned absolute, rotary, ALiBi), and position ids are passed
  where the model takes them;
* ``bos``/``eos`` ids are 1 and 2, inside every drawn vocabulary, and there is no padding id:
  the families that have one (OPT, Gemma) build ``nn.Embedding(padding_idx=...)``, which zeroes
  that row and leaves it out of the lookup's gradient, a tokenizer's choice rather than the
  architecture's (see docs/evidence/peers.md);
* intermediate width ``4 d``; grouped-query attention with ``max(1, H // 2)`` key/value heads
  where the family supports it; rotary over half of each head (families with partial rotary);
* eager attention, so that every family runs the same way on the CPU;
* weights: the family's own initialisation, then every parameter moved by N(0, 0.02^2), so that
  biases and norm weights are not the zeros and ones that would hide them.

transformers is imported when a model is built, never when this module is imported.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gpt2_spec import GPT2Config

from .hf import HFCausalLMAdapter

__all__ = ["PEERS", "Peer", "PeerAdapter", "peer_adapter"]

BOS, EOS = 1, 2
#: After the family's own initialisation, every parameter is moved by N(0, PERTURB_STD^2).
PERTURB_STD = 0.02


def _kv_heads(config: GPT2Config) -> int:
    return max(1, config.n_head // 2)


def _head_dim(config: GPT2Config) -> int:
    return config.n_embd // config.n_head


def _named(
    config: GPT2Config,
    *,
    width: str,
    layers: str,
    heads: str,
    positions: str | None = None,
    inner: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The suite's configuration under one family's keyword names (``positions``, ``inner``:
    None where the family has no such keyword), plus the family's ``extra`` keywords."""
    kwargs: dict[str, Any] = {
        "vocab_size": config.vocab_size,
        width: config.n_embd,
        layers: config.n_layer,
        heads: config.n_head,
    }
    if positions is not None:
        kwargs[positions] = config.n_positions
    if inner is not None:
        kwargs[inner] = 4 * config.n_embd
    return {**kwargs, **extra}


# The keyword names two groups of families share.
_HF_NAMES = {
    "width": "hidden_size",
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "positions": "max_position_embeddings",
}
_GPT2_NAMES = {
    "width": "n_embd",
    "layers": "n_layer",
    "heads": "n_head",
    "positions": "n_positions",
    "inner": "n_inner",
}


def _decoder(config: GPT2Config, **extra: Any) -> dict[str, Any]:
    """The Llama-style families."""
    return _named(config, **_HF_NAMES, inner="intermediate_size", **extra)


def _gqa(config: GPT2Config, **extra: Any) -> dict[str, Any]:
    return _decoder(
        config, num_key_value_heads=_kv_heads(config), head_dim=_head_dim(config), **extra
    )


def _gpt_neo(config: GPT2Config) -> dict[str, Any]:
    # Alternating global and local (windowed) attention, as GPT-Neo does, with a window shorter
    # than the contexts drawn so that the local layers really restrict what they read.
    pairs, single = divmod(config.n_layer, 2)
    return _named(
        config,
        width="hidden_size",
        layers="num_layers",
        heads="num_heads",
        positions="max_position_embeddings",
        inner="intermediate_size",
        attention_types=[[["global", "local"], pairs], [["global"], single]],
        window_size=8,
    )


def _gpt_j(config: GPT2Config) -> dict[str, Any]:
    return _named(config, **_GPT2_NAMES, rotary_dim=_head_dim(config) // 2)


def _gpt_neox(config: GPT2Config) -> dict[str, Any]:
    return _decoder(config, rotary_pct=0.5, partial_rotary_factor=0.5)


def _opt(config: GPT2Config) -> dict[str, Any]:
    return _named(config, **_HF_NAMES, inner="ffn_dim", word_embed_proj_dim=config.n_embd)


def _bloom(config: GPT2Config) -> dict[str, Any]:
    return _named(config, width="hidden_size", layers="n_layer", heads="n_head")


def _falcon(config: GPT2Config) -> dict[str, Any]:
    return _named(config, **_HF_NAMES)


def _gpt_bigcode(config: GPT2Config) -> dict[str, Any]:
    return _named(config, **_GPT2_NAMES)


@dataclasses.dataclass(frozen=True)
class Peer:
    """One architecture: its transformers classes and how a suite configuration maps onto it.

    Attributes:
        name: the short name (``--impl=hf:NAME``).
        config_class, model_class: names in the ``transformers`` namespace.
        options: suite configuration -> keyword arguments of ``config_class``.
        positions: how the family encodes positions (shown in the docs).
        note: what else is particular about it (shown in the docs).
    """

    name: str
    config_class: str
    model_class: str
    options: Callable[[GPT2Config], dict[str, Any]]
    positions: str
    note: str = ""

    def transformers_config(self, config: GPT2Config) -> Any:
        import transformers

        kwargs = self.options(config)
        kwargs.update(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None)
        built = getattr(transformers, self.config_class)(**kwargs)
        built._attn_implementation = "eager"
        return built

    def make(self, config: GPT2Config) -> nn.Module:
        import transformers

        module: Any = getattr(transformers, self.model_class)(self.transformers_config(config))
        module.loss_type = "ForCausalLM"  # named: no warning about guessing it
        return module

    @functools.cached_property
    def tied_by_default(self) -> bool:
        """Does the family's default configuration tie the head to the token embedding?"""
        import transformers

        default = getattr(transformers, self.config_class)()
        return bool(getattr(default, "tie_word_embeddings", True))


#: The peers, by the name ``--impl=hf:NAME`` takes.
PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            "gpt-neo",
            "GPTNeoConfig",
            "GPTNeoForCausalLM",
            _gpt_neo,
            "learned absolute",
            "alternating global and local attention (window 8 here); no 1/sqrt(d) scale",
        ),
        Peer(
            "gpt-j",
            "GPTJConfig",
            "GPTJForCausalLM",
            _gpt_j,
            "rotary (first half of each head)",
            "parallel attention and MLP; the head is an nn.Linear with a bias",
        ),
        Peer(
            "gpt-neox",
            "GPTNeoXConfig",
            "GPTNeoXForCausalLM",
            _gpt_neox,
            "rotary (first half of each head)",
            "parallel residual",
        ),
        Peer(
            "opt",
            "OPTConfig",
            "OPTForCausalLM",
            _opt,
            "learned absolute, offset by 2, derived from the attention mask",
            "ReLU MLP",
        ),
        Peer("llama", "LlamaConfig", "LlamaForCausalLM", _gqa, "rotary", "RMSNorm, SwiGLU, GQA"),
        Peer(
            "qwen2",
            "Qwen2Config",
            "Qwen2ForCausalLM",
            _gqa,
            "rotary",
            "bias on q, k, v; RMSNorm, SwiGLU, GQA",
        ),
        Peer(
            "qwen3",
            "Qwen3Config",
            "Qwen3ForCausalLM",
            _gqa,
            "rotary",
            "RMSNorm on queries and keys; SwiGLU, GQA",
        ),
        Peer(
            "mistral",
            "MistralConfig",
            "MistralForCausalLM",
            functools.partial(_gqa, sliding_window=None),
            "rotary",
            "RMSNorm, SwiGLU, GQA",
        ),
        Peer(
            "phi",
            "PhiConfig",
            "PhiForCausalLM",
            functools.partial(_decoder, partial_rotary_factor=0.5),
            "rotary (first half of each head)",
            "parallel attention and MLP; the head is an nn.Linear with a bias",
        ),
        Peer(
            "gemma",
            "GemmaConfig",
            "GemmaForCausalLM",
            _gqa,
            "rotary",
            "token embeddings scaled by sqrt(d); RMSNorm with (1 + weight); GeGLU",
        ),
        Peer(
            "bloom",
            "BloomConfig",
            "BloomForCausalLM",
            _bloom,
            "ALiBi (from the attention mask)",
            "LayerNorm after the token embedding",
        ),
        Peer(
            "falcon",
            "FalconConfig",
            "FalconForCausalLM",
            _falcon,
            "rotary",
            "multi-query attention, parallel attention and MLP",
        ),
        Peer(
            "gpt-bigcode",
            "GPTBigCodeConfig",
            "GPTBigCodeForCausalLM",
            _gpt_bigcode,
            "learned absolute",
            "multi-query attention",
        ),
    )
}


class PeerAdapter(HFCausalLMAdapter):
    """One :class:`Peer` through the generic transformers adapter; the head's tying is declared
    as the family's default configuration sets it."""

    def __init__(self, peer: Peer, *, tied: bool | None = None) -> None:
        self.peer = peer
        super().__init__(
            name=f"transformers-{peer.name}",
            tied=peer.tied_by_default if tied is None else tied,
        )

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        module = self.peer.make(config)
        # The family's initialisation sets biases to zero and norm weights to one, which hides
        # what a bias or a norm does; move every parameter by N(0, PERTURB_STD^2), as training
        # would, from the seeded global RNG (a tied matrix is one parameter: moved once).
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter) * PERTURB_STD)
        return module


def peer_adapter(name: str) -> PeerAdapter:
    """The adapter of the peer called ``name`` (a key of :data:`PEERS`)."""
    try:
        peer = PEERS[name]
    except KeyError:
        raise ValueError(
            f"unknown peer architecture {name!r}; choose one of {', '.join(PEERS)}"
        ) from None
    return PeerAdapter(peer)


def _factory(name: str) -> Callable[[], PeerAdapter]:
    def make() -> PeerAdapter:
        return peer_adapter(name)

    make.__name__ = make.__qualname__ = name.replace("-", "_")
    make.__doc__ = f"The {name} peer adapter (``--impl=hf:{name}``)."
    return make


# One zero-argument factory per peer, so that --impl=gpt2_conformance.adapters.peers:llama works.
for _name in PEERS:
    globals()[_name.replace("-", "_")] = _factory(_name)
del _name
