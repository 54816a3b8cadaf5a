"""A generic adapter for torch causal LMs that follow the transformers calling convention.

Any model whose ``forward`` takes ``input_ids``, ``attention_mask``, ``position_ids``,
``labels`` (shifted inside: the "inputs" convention), ``use_cache`` and a cache
(``cache=`` in transformers 5, ``past_key_values=`` before), and returns an output with
``.logits``, ``.loss``, ``.hidden_states`` and the cache, can be checked with one line::

    adapter = hf_causal_lm(lambda config, seed: MyModel(my_config(config)), name="mymodel")

The factory receives the suite's :class:`~gpt2_spec.GPT2Config` and a seed (the global torch RNG
is already seeded with it) and returns the model. The adapter claims ``loss``,
``hidden-states``, ``train-step``, ``kv-cache``, ``attention-mask``, ``last-position``,
``save-load``, ``resize-vocab``, ``move``, ``embedding-matrix`` and ``embedding-gradients`` (the
model's own token-embedding matrix, from ``get_input_embeddings()``). It does not claim
``params``, ``checkpoint`` or ``gradients`` (the protocol's gradients are keyed by canonical
name): the model's parameter names are its own. Pass ``param_names`` (own name -> canonical
GPT-2 name) to claim all three.

Whether the head is tied is declared (``tied=``), never assumed: :meth:`head_weight` returns
whatever ``get_output_embeddings()`` holds, and the suite checks the declaration against it.

transformers itself is not imported by this module: the model brings what it needs.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2_spec import GPT2Config

from ..adapter import LabelConvention, Reduction
from .torch_module import IGNORE_INDEX, TorchModuleAdapter, derive_capabilities

__all__ = ["HFCausalLMAdapter", "hf_causal_lm"]

ModelFactory = Callable[[GPT2Config, int], nn.Module]


def _installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return "unknown"


def accepts(module: nn.Module, keyword: str, *, var_keyword: bool = False) -> bool:
    """Does ``module.forward`` take ``keyword`` (or, with ``var_keyword``, any ``**kwargs``)?"""
    kind: Any = type(module)
    return _accepts(kind, keyword, var_keyword)


@functools.cache
def _accepts(kind: Any, keyword: str, var_keyword: bool) -> bool:  # kind: a module class
    parameters = inspect.signature(kind.forward).parameters
    if keyword in parameters:
        return True
    return var_keyword and any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class HFCausalLMAdapter(TorchModuleAdapter):
    """A transformers-style causal LM built by ``factory(config, seed)``; see the module doc.

    Subclass and override :meth:`make_module` instead of passing a factory when that reads
    better.
    """

    name = "hf-causal-lm"
    label_convention: LabelConvention = "inputs"

    def __init__(
        self,
        factory: ModelFactory | None = None,
        *,
        name: str | None = None,
        tied: bool = True,
        version: str | None = None,
        param_names: Mapping[str, str] | Callable[[str], str | None] | None = None,
        supported_configs: Sequence[GPT2Config] | None = None,
        devices: Sequence[str] | None = None,
        dtypes: Sequence[str] | None = None,
    ) -> None:
        """The adapter of the models that ``factory`` builds.

        Args:
            factory: builds the model for a suite configuration (float32, CPU; the suite moves
                it); None when a subclass overrides :meth:`make_module`.
            name: shown in the run's header and report.
            tied: declared: is the output head the token-embedding matrix?
            version: shown in the report (default: the installed transformers version).
            param_names: own parameter name -> canonical GPT-2 name, a Mapping or a function
                (``lambda name: name`` when the names are already canonical); claims ``params``
                and ``checkpoint``.
            supported_configs: fixed configurations, when the model cannot take any.
            devices, dtypes: override the defaults (cpu/cuda; float32/bfloat16/float16).
        """
        self.factory = factory
        if name is not None:
            self.name = name
        self.tied_head = tied
        self.version = version or _installed_version("transformers")
        if param_names is not None:
            self.param_names = param_names
        if supported_configs is not None:
            self.supported_configs = supported_configs
        if devices is not None:
            self.devices = tuple(devices)
        if dtypes is not None:
            self.dtypes = tuple(dtypes)
        if not self._capabilities_declared:  # param_names may add params and checkpoint
            self.capabilities = derive_capabilities(self)

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        if self.factory is None:
            raise NotImplementedError(f"{type(self).__name__}: pass a factory or override")
        return self.factory(config, seed)

    def forward_logits(
        self,
        module: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        return module(input_ids=input_ids, **kwargs).logits

    def forward_loss(
        self,
        module: nn.Module,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        reduction: Reduction,
        ignore_index: int,
    ) -> torch.Tensor:
        # The model's own loss. transformers' causal-LM loss takes ignore_index, and sums when
        # given num_items_in_batch (dividing by it): num_items_in_batch=1 is the sum.
        if accepts(module, "ignore_index", var_keyword=True):
            kwargs: dict[str, Any] = {"ignore_index": ignore_index}
            if reduction == "sum":
                kwargs["num_items_in_batch"] = 1
            return module(input_ids=input_ids, labels=labels, **kwargs).loss
        # A model whose forward takes no loss options: its mean over targets != -100.
        counted = labels[:, 1:] != ignore_index
        labels = torch.where(labels == ignore_index, IGNORE_INDEX, labels)
        loss = module(input_ids=input_ids, labels=labels).loss
        if reduction == "sum":
            count = counted.sum()
            loss = torch.where(count > 0, loss * count, torch.zeros_like(loss))
        return loss

    def forward_hidden(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        # transformers' last hidden-states entry is after the final norm.
        return module(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]

    def forward_last(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        if accepts(module, "logits_to_keep"):  # computes the head on the last position only
            return module(input_ids=input_ids, logits_to_keep=1).logits[:, -1]
        return self.forward_logits(module, input_ids)[:, -1]

    def forward_cached(
        self, module: nn.Module, input_ids: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        kwargs: dict[str, Any] = {"use_cache": True}
        if state is not None:
            # transformers' caches grow in place; the cache handed in must stay as it was.
            keyword = "cache" if accepts(module, "cache") else "past_key_values"
            kwargs[keyword] = copy.deepcopy(state)
        out = module(input_ids=input_ids, **kwargs)
        cache = out.get("cache") if hasattr(out, "get") else None
        if cache is None:
            cache = out.past_key_values
        return out.logits, cache

    def input_embedding_module(self, module: nn.Module) -> nn.Module:
        get: Any = module.get_input_embeddings
        embeddings: nn.Module = get()
        return embeddings

    def resize_module_vocab(self, module: nn.Module, vocab_size: int) -> None:
        resize: Any = module.resize_token_embeddings
        if "mean_resizing" in inspect.signature(resize).parameters:
            # New rows from the model's initialiser (mean resizing needs many rows to be stable).
            resize(vocab_size, mean_resizing=False)
        else:
            resize(vocab_size)

    def save_module(self, module: nn.Module, config: GPT2Config, directory: Path) -> None:
        save = getattr(module, "save_pretrained", None)
        if callable(save):
            save(directory)
        else:
            super().save_module(module, config, directory)

    def load_module(self, directory: Path, config: GPT2Config, template: nn.Module) -> nn.Module:
        load = getattr(type(template), "from_pretrained", None)
        if load is None:
            return super().load_module(directory, config, template)
        module: nn.Module = load(directory, **self.from_pretrained_kwargs())
        return module

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``from_pretrained`` (none by default)."""
        return {}


def hf_causal_lm(factory: ModelFactory, *, name: str, **options: Any) -> HFCausalLMAdapter:
    """An adapter for the transformers-style causal LM that ``factory(config, seed)`` builds.

    ``name`` is required here (it is shown in the run's header and report); ``options`` are the
    other keyword arguments of :class:`HFCausalLMAdapter`.
    """
    return HFCausalLMAdapter(factory, name=name, **options)
