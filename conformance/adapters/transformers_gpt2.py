"""transformers' ``GPT2LMHeadModel``, with eager or SDPA attention (built-ins ``transformers``,
``transformers-eager``, ``transformers-sdpa``).

On top of the generic :mod:`.hf` adapter it claims ``params`` (GPT2LMHeadModel's state-dict
names *are* the canonical names; ``lm_head.weight`` is the tied ``transformer.wte.weight``),
``checkpoint`` (``from_pretrained`` of a canonical directory) and ``hidden-states``.

It does not claim ``input-validation``: ``GPT2LMHeadModel`` does not check its input. An id
outside ``[0, vocab_size)`` fails deep inside the embedding lookup (``IndexError: index out of
range in self`` on the CPU; a device-side assertion on CUDA), a negative id is refused the same
way, and a sequence longer than ``n_positions`` fails in the position lookup: errors raised late,
not the refusal at the entry that spec chapter 8 requires. The report shows those requirements
as not claimed.

transformers is imported when a model is built, not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2_spec import GPT2Config

from .hf import HFCausalLMAdapter
from .torch_module import rebuild_unless_declared

__all__ = ["TransformersEagerAdapter", "TransformersGPT2Adapter", "TransformersSDPAAdapter"]

HEAD = "lm_head.weight"
WTE = "transformer.wte.weight"


class TransformersGPT2Adapter(HFCausalLMAdapter):
    """``transformers.GPT2LMHeadModel`` in eval mode (dropout off), tied head."""

    attn_implementation = "sdpa"
    #: A GPT2LMHeadModel of the suite's sizes takes about four times as long to build (its
    #: ``__init__``, config and weight initialisation) as to copy
    #: (:func:`~.torch_module.deepcopy_module`); subclasses rebuild unless they declare ``reuse``
    #: (see :func:`~.torch_module.rebuild_unless_declared`).
    reuse = "copy"
    #: Set while :meth:`build` is given every weight (see :meth:`make_module`).
    _weights_given = False
    declared_deviations: Mapping[str, str] = {
        "forward.initialisation": "transformers draws wpe from N(0, initializer_range^2) with "
        "initializer_range = 0.02, where the spec follows OpenAI's 0.01 (a variant the spec "
        "allows when declared)",
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        rebuild_unless_declared(cls, __name__)

    def __init__(self, attn_implementation: str | None = None) -> None:
        if attn_implementation is not None:
            self.attn_implementation = attn_implementation
        super().__init__(name=f"transformers-{self.attn_implementation}", tied=True)

    def hf_config(self, config: GPT2Config) -> Any:
        """The transformers ``GPT2Config`` of ``config``."""
        import transformers

        hf: Any = transformers.GPT2Config
        return hf(
            **config.to_hf_dict(),
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            # GPT-2's <|endoftext|> (50256) is outside a small vocabulary; transformers warns.
            bos_token_id=0,
            eos_token_id=0,
            attn_implementation=self.attn_implementation,
        )

    def build(self, config: GPT2Config, *, params: Any, seed: int, device: str, dtype: str) -> Any:
        """The base's build. Given weights, the model is first made without drawing weights of
        its own, as ``from_pretrained`` makes it (see :meth:`make_module`); when the given
        weights did not cover all of its weights (a head that is not tied, a weight under a name
        of its own), what was not overwritten would hold stray memory, so it is made again,
        initialised as usual."""
        if params is not None:
            self._weights_given = True
            try:
                built = super().build(config, params=params, seed=seed, device=device, dtype=dtype)
            finally:
                self._weights_given = False
            module = getattr(built, "module", None)
            if module is not None and set(self.canonical_state_dict(module)) <= set(params):
                return built
        return super().build(config, params=params, seed=seed, device=device, dtype=dtype)

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        import transformers

        hf_config = self.hf_config(config)
        skip = _no_init_weights() if self._weights_given else None
        if skip is None:
            module: Any = transformers.GPT2LMHeadModel(hf_config)
        else:
            # transformers' own way of making a model whose weights are loaded next (its
            # from_pretrained does the same): no initialiser runs, so the weights hold whatever
            # memory they got, and the head, which transformers ties at the end of its
            # initialisation, is tied here as the config says.
            with skip:
                module = transformers.GPT2LMHeadModel(hf_config)
            module.tie_weights()
        module.loss_type = "ForCausalLM"  # its default, named: no warning about guessing it
        return module

    def canonical_name(self, name: str) -> str:
        return name  # named_parameters lists the tied head once, as transformer.wte.weight

    def load_canonical(self, module: nn.Module, params: Any) -> None:
        if set(params) >= set(self.canonical_state_dict(module)):
            # A full set: transformers' own loader, the head given as wte (they are one tensor).
            state = dict(params)
            if WTE in state:
                state.setdefault(HEAD, state[WTE])
            module.load_state_dict(state, strict=True)
        else:
            super().load_canonical(module, params)

    def from_pretrained(self, directory: Path, config: GPT2Config | None = None) -> Any:
        """``GPT2LMHeadModel.from_pretrained`` with this adapter's attention; with ``config``,
        the transformers config is built from it (not read from the directory)."""
        import transformers

        kwargs: dict[str, Any] = {"attn_implementation": self.attn_implementation}
        if config is not None:
            kwargs["config"] = self.hf_config(config)
        module = transformers.GPT2LMHeadModel.from_pretrained(directory, **kwargs)
        module.loss_type = "ForCausalLM"
        return module

    def load_module(self, directory: Path, config: GPT2Config, template: nn.Module) -> nn.Module:
        module: nn.Module = self.from_pretrained(directory)
        return module

    def load_checkpoint_module(
        self, path: Path, config: GPT2Config
    ) -> tuple[nn.Module, GPT2Config]:
        """``from_pretrained`` of a canonical directory; a bare weights file is loaded into a
        model of the implementation's ``config`` (the file carries none)."""
        from safetensors.torch import load_file

        from gpt2_reference.checkpoint import read_config

        if path.is_dir():
            # The transformers config is rebuilt from the GPT-2 fields: a canonical config.json
            # carries no token ids, and GPT-2's (50256) lie outside a small vocabulary.
            config = read_config(path)
            return self.from_pretrained(path, config), config
        module = self._new_module(config, 0)
        state = load_file(str(path))
        with torch.no_grad():
            self.load_canonical(module, state)
        return module, config


def _no_init_weights() -> Any:
    """transformers' context in which a model is made without initialising its weights (5.0 and
    later), or None (older versions: the model is initialised as usual)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        return None
    return no_init_weights()


class TransformersSDPAAdapter(TransformersGPT2Adapter):
    """GPT2LMHeadModel with ``attn_implementation="sdpa"`` (``--impl=transformers``)."""

    attn_implementation = "sdpa"
    reuse = "copy"


class TransformersEagerAdapter(TransformersGPT2Adapter):
    """GPT2LMHeadModel with ``attn_implementation="eager"``."""

    attn_implementation = "eager"
    reuse = "copy"
