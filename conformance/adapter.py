"""The adapter protocol: how the suite talks to an implementation under test.

An *adapter* builds *implementations*. The suite hands it a configuration it drew (and, when the
adapter claims ``params``, canonical weights from the oracle); the adapter returns an
:class:`Implementation` whose methods take and return arrays. Arrays cross the boundary as NumPy
arrays; an implementation may return anything :func:`to_numpy` understands (NumPy arrays, objects
speaking DLPack such as torch or JAX arrays, nested sequences).

Only :meth:`Implementation.logits` is required. Everything else is a *capability* the adapter
claims in :attr:`Adapter.capabilities`; a requirement whose capability is not claimed is reported
``not-claimed``: never passed silently, never failed for it.

The protocol knows nothing about pytest or hypothesis: adapters stay small and testable.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gpt2_spec import GPT2Config

Params = dict[str, np.ndarray]
LabelConvention = Literal["inputs", "shifted"]
Reduction = Literal["mean", "sum"]

#: Every capability an adapter may claim, with what claiming it promises.
CAPABILITIES: Mapping[str, str] = {
    "loss": "loss(tokens, labels, reduction, ignore_index) in the adapter's label convention",
    "hidden-states": "hidden_states(tokens): the final hidden states after ln_f, before the head",
    "params": "build() accepts canonical float64 weights; get_params() returns them",
    "gradients": "gradients(tokens, labels, reduction): loss and canonical parameter gradients",
    "train-step": "sgd_step(tokens, labels, lr): one optimizer step on the loss, in place",
    "kv-cache": "prefill(tokens) and extend(cache, tokens): incremental decoding with a cache",
    "attention-mask": "logits(tokens, attention_mask=, position_ids=)",
    "last-position": "last_logits(tokens): only the last position's logits",
    "save-load": "save(directory) and load(directory) of the implementation's own checkpoint",
    "checkpoint": "load_checkpoint(path): a canonical GPT-2 safetensors checkpoint",
    "resize-vocab": "resize_vocab(new_vocab_size): grow the vocabulary, keeping old rows",
    "move": "moved(device, dtype): a copy on another device or dtype",
    "input-validation": "refuses invalid input with a ValueError before computing",
    "embedding-matrix": "input_embedding() and set_input_embedding(W): the token-embedding "
    "matrix [V, d] under the model's own names (no canonical weights needed)",
    "embedding-gradients": "embedding_gradients(tokens, labels, reduction): the loss and its "
    "gradients for the looked-up input embeddings, the embedding matrix and the head matrix",
}


class AdapterError(Exception):
    """The adapter itself is broken or misused (not a conformance failure of the model)."""


@dataclasses.dataclass
class Cache:
    """An opaque key/value cache handle plus the number of positions it holds."""

    length: int
    state: Any


class Implementation(abc.ABC):
    """One model instance under test. Token arrays are int64 ``[B, T]``."""

    @abc.abstractmethod
    def logits(
        self,
        tokens: np.ndarray,
        *,
        attention_mask: np.ndarray | None = None,
        position_ids: np.ndarray | None = None,
    ) -> Any:
        """``[B, T] -> [B, T, V]`` logits (masks only with the ``attention-mask`` capability)."""

    def loss(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
    ) -> Any:
        """Scalar loss; ``labels`` follow the adapter's :attr:`Adapter.label_convention`."""
        raise NotImplementedError

    def hidden_states(self, tokens: np.ndarray) -> Any:
        """``[B, T] -> [B, T, d]``, after ``ln_f`` and before the head."""
        raise NotImplementedError

    def get_params(self) -> Mapping[str, Any]:
        """The weights by canonical name (``lm_head.weight`` may be present, or omitted if tied)."""
        raise NotImplementedError

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Overwrite some canonical weights in place (a tied head changes with wte)."""
        raise NotImplementedError

    def head_weight(self) -> Any:
        """The matrix the head multiplies by (transposed), stored ``[V, d]``."""
        raise NotImplementedError

    def gradients(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
    ) -> tuple[Any, Mapping[str, Any]]:
        """``(loss, {canonical name: gradient})``; a tied head's gradient is in wte's entry."""
        raise NotImplementedError

    def sgd_step(self, tokens: np.ndarray, labels: np.ndarray, *, lr: float) -> None:
        """One plain SGD step on the mean loss, updating the weights in place."""
        raise NotImplementedError

    def input_embedding(self) -> Any:
        """The token-embedding matrix ``[V, d]`` the input lookup reads (``embedding-matrix``)."""
        raise NotImplementedError

    def set_input_embedding(self, weight: np.ndarray) -> None:
        """Overwrite the token-embedding matrix in place (a tied head changes with it)."""
        raise NotImplementedError

    def embedding_gradients(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
    ) -> tuple[Any, Mapping[str, Any]]:
        """``(loss, {"inputs": [B, T, d], "lookup": [V, d], "embedding": [V, d], "head": [V, d]})``:
        the gradients of the loss for the rows the input lookup returned; the share of the
        embedding matrix's gradient that comes through the lookup alone (those rows' gradients
        pulled back through it); and the whole gradients of the embedding matrix and of the head
        matrix (``embedding-gradients``). A tied head is one tensor: its two entries are equal,
        each the sum of the lookup's and the head's contributions."""
        raise NotImplementedError

    def prefill(self, tokens: np.ndarray) -> tuple[Any, Cache]:
        """Run ``tokens`` from an empty cache: ``(logits [B, T, V], cache)``."""
        raise NotImplementedError

    def extend(self, cache: Cache, tokens: np.ndarray) -> tuple[Any, Cache]:
        """Feed more tokens after ``cache``: ``(logits of the new tokens, longer cache)``."""
        raise NotImplementedError

    def last_logits(self, tokens: np.ndarray) -> Any:
        """``[B, T] -> [B, V]``: the next-token logits only."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    def load(self, directory: Path) -> Implementation:
        """A new implementation loaded from what :meth:`save` wrote."""
        raise NotImplementedError

    def load_checkpoint(self, path: Path) -> Implementation:
        """A new implementation from a canonical GPT-2 checkpoint."""
        raise NotImplementedError

    def resize_vocab(self, vocab_size: int) -> None:
        raise NotImplementedError

    def moved(self, device: str, dtype: str) -> Implementation:
        raise NotImplementedError


class Adapter(abc.ABC):
    """Builds implementations of one GPT-2 for the suite.

    Subclasses set the class attributes and implement :meth:`build`.
    """

    #: Shown in the run's header and the report.
    name: str = "unnamed"
    version: str = "unknown"
    #: Claimed capabilities, a subset of :data:`CAPABILITIES`.
    capabilities: frozenset[str] = frozenset()
    #: "inputs": labels equal the input ids and the shift is inside (transformers);
    #: "shifted": targets are already shifted by the caller (nanoGPT).
    label_convention: LabelConvention = "inputs"
    #: Declared: is the head the token-embedding tensor? An untied head is a declared deviation.
    tied_head: bool = True
    #: Requirements the implementation knowingly deviates from, id -> why. Their properties are
    #: expected to fail (reported xfail with this reason); a MUST deviation still means the
    #: implementation does not conform. E.g. {"forward.initialisation": "wpe drawn with 0.02"}.
    declared_deviations: Mapping[str, str] = {}
    #: Fixed configurations the implementation supports; None means any drawn configuration.
    supported_configs: Sequence[GPT2Config] | None = None
    #: How the suite gets another model of a configuration and weights it built before:
    #: "rebuild" calls :meth:`build` again; "copy" (for models slow to build and cheap to copy)
    #: builds once, keeps that model unused, and hands out ``copy.deepcopy`` copies of it, which
    #: must share no state with it (the suite checks the original's weights before each copy).
    reuse: Literal["rebuild", "copy"] = "rebuild"
    #: Devices and dtypes the adapter can run (the suite's --device/--dtype must be among them).
    devices: Sequence[str] = ("cpu",)
    dtypes: Sequence[str] = ("float32",)

    @abc.abstractmethod
    def build(
        self,
        config: GPT2Config,
        *,
        params: Params | None,
        seed: int,
        device: str,
        dtype: str,
    ) -> Implementation:
        """A fresh implementation of ``config``.

        ``params`` (canonical names, float64) is given only when ``params`` is claimed; otherwise
        the implementation initialises itself deterministically from ``seed``.
        """

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "capabilities": sorted(self.capabilities),
            "label_convention": self.label_convention,
            "tied_head": self.tied_head,
            "declared_deviations": dict(self.declared_deviations),
        }


def to_numpy(value: Any) -> np.ndarray:
    """Bring an implementation's output into NumPy (float64 for floats; ints kept).

    Accepts NumPy arrays, DLPack-capable objects (torch, JAX, CuPy, ...), and Python scalars or
    sequences. A torch tensor in bfloat16, which NumPy cannot represent, is upcast first
    (losslessly) to float32.
    """
    array = native_numpy(value)
    if array.dtype.kind == "f":
        return array.astype(np.float64, copy=False)
    return array


def native_numpy(value: Any) -> np.ndarray:
    """:func:`to_numpy` without the float64 conversion: the value in its own dtype (bfloat16,
    which NumPy cannot represent, as float32)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        if type(value).__module__.startswith("torch"):
            value = value.detach()
            if value.dtype.is_floating_point and value.dtype.itemsize < 4:
                value = value.float()
            array: np.ndarray = value.cpu().numpy()
            return array
        return np.from_dlpack(value)
    return np.asarray(value)
