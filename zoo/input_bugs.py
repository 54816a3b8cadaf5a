"""GPT-2s that mishandle their input (spec chapter 1): most write into the arrays they are given
(``model.inputs-unchanged``); one answers input GPT-2 has no output for
(``model.no-result-for-invalid-input``).

Each adapter is the reference with one way of changing an input: a plain NumPy assignment, a write
through a tensor that shares the array's memory (NumPy's read-only flag does not stop it), a write
through the array's base made writeable again, a write into a kept reference at a later call, and
a write into the canonical weights given to ``build``. Each computes honestly on what it changed:
before the suite isolated its inputs, the oracle computed on the same corrupted arrays and every
one of them conformed. The last one does not claim ``input-validation`` and repairs what it
cannot compute (ids clamped, positions wrapped): before the suite gave invalid input to adapters
without that capability, it conformed too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from gpt2_conformance.adapter import Implementation, Params
from gpt2_conformance.adapters.reference import ReferenceAdapter, ReferenceImplementation
from gpt2_reference.model import GPT2, GPT2Output
from gpt2_spec import GPT2Config

RID = "model.inputs-unchanged"


class _Writes(ReferenceImplementation):
    """The reference, with ``corrupt`` applied to the tokens of every logits call first."""

    def corrupt(self, tokens: np.ndarray) -> None:
        raise NotImplementedError

    def logits(self, tokens: np.ndarray, **kwargs: Any) -> Any:
        self.corrupt(tokens)
        return super().logits(tokens, **kwargs)


class _NumpyWrite(_Writes):
    def corrupt(self, tokens: np.ndarray) -> None:
        tokens[:, 0] = 0  # the model never sees the first token


class _TensorWrite(_Writes):
    def corrupt(self, tokens: np.ndarray) -> None:
        torch.as_tensor(tokens)[:, 0] = 0  # shares the memory: NumPy's flag does not stop it


class _BaseWrite(_Writes):
    def corrupt(self, tokens: np.ndarray) -> None:
        owner = tokens if tokens.base is None else tokens.base
        owner.flags.writeable = True
        owner[:, 0] = 0


class _ScrambleLater(ReferenceImplementation):
    """Returns honest logits, keeps the tokens, and reverses the kept ones at the next call."""

    kept: np.ndarray | None = None

    def logits(self, tokens: np.ndarray, **kwargs: Any) -> Any:
        if self.kept is not None:
            kept = torch.as_tensor(self.kept)
            kept.copy_(kept.flip(-1))
        self.kept = tokens
        return super().logits(tokens, **kwargs)


class InputBug(ReferenceAdapter):
    """The reference adapter whose implementations are ``kind``."""

    must_fail: ClassVar[tuple[str, ...]] = (RID,)
    kind: ClassVar[type[ReferenceImplementation]] = ReferenceImplementation

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> ReferenceImplementation:
        return self.kind(module, device, dtype, adapter=self)  # type: ignore[arg-type]


class WritesFirstToken(InputBug):
    """Sets the first token of every sequence it is given to 0 before computing (a "BOS fix"
    written into the caller's array)."""

    name = "broken-writes-first-token"
    kind = _NumpyWrite


class WritesThroughTensor(InputBug):
    """Wraps its input with ``torch.as_tensor`` and writes through the tensor, which shares the
    memory and ignores NumPy's read-only flag."""

    name = "broken-writes-through-tensor"
    kind = _TensorWrite


class WritesThroughBase(InputBug):
    """Makes the array's base writeable again and writes the first token through it."""

    name = "broken-writes-through-base"
    kind = _BaseWrite


class ScramblesLater(InputBug):
    """Keeps a reference to its tokens and reverses them at the next call: its own answer was
    honest, the caller's array is not."""

    name = "broken-scrambles-later"
    kind = _ScrambleLater


class BuildWritesWeights(InputBug):
    """Zeroes the first position's embedding in the canonical weights it is given, then builds
    honestly from them."""

    name = "broken-build-writes-weights"

    def build(
        self, config: GPT2Config, *, params: Params | None, seed: int, device: str, dtype: str
    ) -> Implementation:
        if params is not None:
            torch.as_tensor(params["transformer.wpe.weight"])[0] = 0.0
        return super().build(config, params=params, seed=seed, device=device, dtype=dtype)


class _RepairingGPT2(GPT2):
    """Checks nothing; clamps ids into [0, V) and takes positions modulo n_positions."""

    def _validate(self, input_ids: torch.Tensor, labels: Any, targets: Any, mask: Any,
                  positions: Any, past: Any, *rest: Any) -> int:  # type: ignore[override]  # fmt: skip
        return 0 if past is None else int(past[0][0].shape[2])

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> GPT2Output:  # type: ignore[override]
        past = kwargs.get("past_key_values")
        P = 0 if past is None else int(past[0][0].shape[2])
        T = input_ids.shape[-1]
        if kwargs.get("position_ids") is None:  # wrap around: position n_ctx reads row 0
            positions = torch.arange(P, P + T, device=input_ids.device)
            kwargs["position_ids"] = positions % self.config.n_positions
        ids = input_ids.clamp(0, self.config.vocab_size - 1)  # an unknown id reads a known row
        return super().forward(ids, **kwargs)


class RepairsInvalidInput(ReferenceAdapter):
    """Claims no input validation and "repairs" what it cannot compute instead of raising: ids
    are clamped into [0, V - 1], positions past the context wrap around to row 0, and every call
    returns logits. Valid input is computed exactly as the reference does."""

    name = "broken-repairs-invalid-input"
    validates_input = False
    must_fail: ClassVar[tuple[str, ...]] = ("model.no-result-for-invalid-input",)
    diagnosis: ClassVar[dict[str, str]] = {
        "model.no-result-for-invalid-input": "returned a result of shape"
    }

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        model = super().make_module(config, seed)
        model.__class__ = _RepairingGPT2
        return model

    def load_module(self, directory: Any, config: GPT2Config, template: nn.Module) -> nn.Module:
        model = super().load_module(directory, config, template)
        model.__class__ = _RepairingGPT2
        return model

    def load_checkpoint_module(self, path: Any, config: GPT2Config) -> tuple[nn.Module, GPT2Config]:
        model, config = super().load_checkpoint_module(path, config)
        model.__class__ = _RepairingGPT2
        return model, config


#: Every bug of this module, in the order listings show them.
ALL: tuple[type[ReferenceAdapter], ...] = (
    WritesFirstToken,
    WritesThroughTensor,
    WritesThroughBase,
    ScramblesLater,
    BuildWritesWeights,
    RepairsInvalidInput,
)
