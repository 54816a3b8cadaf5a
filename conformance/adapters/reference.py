"""The adapter for the project's own PyTorch reference model (gpt2_reference.GPT2).

It claims every capability: the reference model validates its input (spec chapter 8), its
parameter names are the canonical ones, and its checkpoints are canonical directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2_reference.model import GPT2
from gpt2_spec import GPT2Config

from ..adapter import Reduction
from .torch_module import (
    DTYPES,
    TorchModuleAdapter,
    TorchModuleImplementation,
    rebuild_unless_declared,
)

__all__ = ["DTYPES", "ReferenceAdapter", "ReferenceImplementation"]


class ReferenceAdapter(TorchModuleAdapter):
    """gpt2_reference.GPT2: claims every capability; labels follow the "inputs" convention."""

    name = "reference"
    label_convention = "inputs"
    tied_head = True
    validates_input = True
    #: A copy (:func:`~.torch_module.deepcopy_module`) takes about half the time of a build;
    #: subclasses rebuild unless they declare ``reuse`` (see
    #: :func:`~.torch_module.rebuild_unless_declared`).
    reuse = "copy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        rebuild_unless_declared(cls, __name__)

    def __init__(self) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            self.version = version("gpt2-conformance")
        except PackageNotFoundError:
            self.version = "unknown"

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        return GPT2(config, seed=seed)

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> ReferenceImplementation:
        assert isinstance(module, GPT2)
        return ReferenceImplementation(module, device, dtype, adapter=self)

    def canonical_name(self, name: str) -> str:
        return name  # GPT2's parameter names are the canonical ones

    def forward_logits(
        self,
        module: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return module(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

    def forward_loss(
        self,
        module: nn.Module,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        reduction: Reduction,
        ignore_index: int,
    ) -> torch.Tensor:
        return module(input_ids, labels=labels, reduction=reduction, ignore_index=ignore_index).loss

    def forward_hidden(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        return module(input_ids).hidden_states

    def forward_last(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        return module(input_ids, last_only=True).logits[:, -1]

    def input_embedding_module(self, module: nn.Module) -> nn.Module:
        # The lookup wte; the causal-lm profile's generic properties read and set its matrix.
        assert isinstance(module, GPT2)
        return module.transformer.wte

    def forward_cached(
        self, module: nn.Module, input_ids: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        # The cache is a tuple of tensors that is never changed in place: reusing it is safe.
        out = module(input_ids, past_key_values=state, use_cache=True)
        return out.logits, out.past_key_values

    def head_weight(self, module: nn.Module) -> torch.Tensor:
        return module.head_weight  # type: ignore[return-value]

    def resize_module_vocab(self, module: nn.Module, vocab_size: int) -> None:
        module.resize_token_embeddings(vocab_size, seed=0)  # type: ignore[operator]

    def save_module(self, module: nn.Module, config: GPT2Config, directory: Path) -> None:
        module.save_pretrained(directory)  # type: ignore[operator]

    def load_module(self, directory: Path, config: GPT2Config, template: nn.Module) -> nn.Module:
        return GPT2.from_pretrained(directory)

    def load_checkpoint_module(
        self, path: Path, config: GPT2Config
    ) -> tuple[nn.Module, GPT2Config]:
        model = GPT2.from_pretrained(path, None if Path(path).is_dir() else config)
        return model, model.config


class ReferenceImplementation(TorchModuleImplementation):
    """A :class:`~gpt2_reference.model.GPT2` under test (``.model`` is the module)."""

    def __init__(
        self, model: GPT2, device: str, dtype: str, adapter: ReferenceAdapter | None = None
    ) -> None:
        super().__init__(adapter or ReferenceAdapter(), model, model.config, device, dtype)

    @property
    def model(self) -> GPT2:
        assert isinstance(self.module, GPT2)
        return self.module

    def _derive(self, module: nn.Module, config: GPT2Config, device: str, dtype: str) -> Any:
        assert isinstance(self.adapter, ReferenceAdapter)
        return type(self)(module, device, dtype, adapter=self.adapter)
