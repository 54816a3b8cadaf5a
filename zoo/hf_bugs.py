"""GPT-2s built on transformers' ``GPT2LMHeadModel`` with one realistic bug each.

Each adapter is the suite's own transformers adapter (:class:`TransformersSDPAAdapter`) with one
change: a config value copied from the wrong place, a custom attention kernel registered with
transformers' ``AttentionInterface``, or a mistake in the wrapper code that drives the model
(labels, loss counts, position ids, train mode, id handling). They exercise the suite's
transformers adapter path the way :mod:`.sequence_bugs` and :mod:`.weight_bugs` exercise the
reference adapter's. Every class names in ``must_fail`` the requirements the suite must report as
failed for it, and its docstring tells how the bug arises.

transformers is imported when a model is built, as in the adapter itself; kernels are registered
under their own names (``broken-...``) and never replace a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt2_conformance.adapter import Reduction
from gpt2_conformance.adapters.torch_module import TorchModuleImplementation
from gpt2_conformance.adapters.transformers_gpt2 import TransformersSDPAAdapter
from gpt2_spec import GPT2Config, InvalidInputError

LOGP = "numerics.log-probs-match-oracle"
# A kernel: (module, query, key, value [B, H, T or S, hd], additive mask [B, 1, T, S] or None,
# scaling) -> (output [B, T, H, hd], attention weights or None).
Kernel = Callable[..., tuple[Tensor, Tensor | None]]


class HFBug(TransformersSDPAAdapter):
    """transformers' GPT2LMHeadModel adapter with one bug.

    ``config_overrides`` change the transformers config; ``kernel`` (when set) is registered as a
    custom attention implementation and used instead of SDPA; ``patch`` changes every module the
    adapter builds or loads.
    """

    must_fail: ClassVar[tuple[str, ...]] = ()
    must_pass: ClassVar[tuple[str, ...]] = ()
    diagnosis: ClassVar[dict[str, str]] = {}
    config_overrides: ClassVar[dict[str, Any]] = {}
    kernel: ClassVar[Kernel | None] = None

    def __init__(self) -> None:
        kernel = type(self).kernel
        if kernel is not None:
            self.attn_implementation = f"broken-{type(self).__name__.lower()}"
        super().__init__()
        self.name = f"broken-hf-{type(self).__name__}"

    def hf_config(self, config: GPT2Config) -> Any:
        import transformers

        if type(self).kernel is not None:
            _register(self.attn_implementation, type(self).kernel)
        values: dict[str, Any] = {
            **config.to_hf_dict(),
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "attn_implementation": self.attn_implementation,
        }
        values.update(self.config_overrides)
        hf: Any = transformers.GPT2Config
        return hf(**values)

    def from_pretrained(self, directory: Path, config: GPT2Config | None = None) -> Any:
        if type(self).kernel is not None:
            _register(self.attn_implementation, type(self).kernel)
        return super().from_pretrained(directory, config)

    def patch(self, module: nn.Module) -> nn.Module:
        """Introduce the bug into a freshly built or loaded module (nothing by default)."""
        return module

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        return self.patch(super().make_module(config, seed))

    def load_module(self, directory: Path, config: GPT2Config, template: nn.Module) -> nn.Module:
        return self.patch(super().load_module(directory, config, template))

    def load_checkpoint_module(
        self, path: Path, config: GPT2Config
    ) -> tuple[nn.Module, GPT2Config]:
        module, config = super().load_checkpoint_module(path, config)
        return self.patch(module), config


def _register(name: str, kernel: Kernel) -> None:
    """Register ``kernel`` as transformers attention implementation ``name``, with the eager
    (additive, always materialised) mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, kernel)
    AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping["eager"])


# --- Config values copied from the wrong place --------------------------------------------------


class HFExactGeluConfig(HFBug):
    """A config written by hand with ``activation_function="gelu"`` (the name most code bases
    use) instead of GPT-2's ``"gelu_new"``: transformers then runs the exact erf GELU."""

    config_overrides: ClassVar[dict[str, Any]] = {"activation_function": "gelu"}
    must_fail = ("forward.gelu-tanh", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {"forward.gelu-tanh": "exact-erf GELU"}


class HFInverseLayerScale(HFBug):
    """A config copied from a Stanford CRFM (Mistral) GPT-2 run keeps
    ``scale_attn_by_inverse_layer_idx=True``: layer l's scores are also divided by l + 1."""

    config_overrides: ClassVar[dict[str, Any]] = {"scale_attn_by_inverse_layer_idx": True}
    must_fail = (LOGP,)


class HFUntiedConfig(HFBug):
    """A config converted from a Llama-style model keeps ``tie_word_embeddings=False``: the head
    is a separate, separately initialised matrix, while the adapter still declares it tied."""

    config_overrides: ClassVar[dict[str, Any]] = {"tie_word_embeddings": False}
    must_fail = ("head.tied-to-embedding", "head.untied-is-declared", LOGP)


class HFTrainModeDropout(HFBug):
    """Written against transformers 4, where a freshly built model is in training mode: the
    wrapper calls ``model.train()`` once "to be safe" and keeps GPT-2's 0.1 dropouts, so every
    evaluation is random."""

    config_overrides: ClassVar[dict[str, Any]] = {
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
    }
    must_fail = ("numerics.deterministic", LOGP)

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> TorchModuleImplementation:
        built = super().implementation(module, config, device, dtype)
        assert isinstance(built, TorchModuleImplementation)
        built.module.train()
        return built


# --- The head ----------------------------------------------------------------------------------


class HFLogitSoftcap(HFBug):
    """A port that shares code with a Gemma-2 implementation caps the logits with
    ``30 * tanh(logits / 30)``: invisible at GPT-2's init scale (logits near 0), wrong for
    logits of realistic size."""

    must_fail = ("head.linear-no-bias", LOGP)
    cap = 30.0

    def patch(self, module: nn.Module) -> nn.Module:
        head: Any = module.get_output_embeddings()
        head.register_forward_hook(lambda m, args, out: self.cap * torch.tanh(out / self.cap))
        return module


# --- Attention kernels -------------------------------------------------------------------------


def _causal_only(
    module: nn.Module, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    T, S = q.shape[-2], k.shape[-2]
    keys = torch.arange(S, device=q.device)
    allowed = keys <= torch.arange(S - T, S, device=q.device)[:, None]  # bottom-right causal
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling)
    return y.transpose(1, 2).contiguous(), None


class HFKernelDropsPaddingMask(HFBug):
    """A kernel author's fused causal kernel supports the causal triangle only: it takes the
    attention mask argument and never reads it, so real tokens attend to left padding."""

    kernel = _causal_only
    must_fail = ("inference.left-padding",)


def _softmax_over_queries(
    module: nn.Module, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    scores = q @ k.transpose(-1, -2) * (scaling or q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-2)  # normalised over the queries: the sequence axis
    return (weights @ v).transpose(1, 2).contiguous(), weights


class HFSoftmaxOverQueries(HFBug):
    """A hand-written eager kernel calls ``softmax(dim=-2)`` on the [B, H, T, S] scores: each
    key's weights are normalised over the queries, so a row's attention depends on the later
    rows (a leak through a normalisation over the sequence)."""

    kernel = _softmax_over_queries
    must_fail = (
        "causality.future-invisible",
        "causality.prefix-consistency",
        "causality.jacobian-lower-triangular",
    )


# --- The wrapper around the model ----------------------------------------------------------------


def _shift_left(labels: Tensor, ignore_index: int) -> Tensor:
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


class HFDoubleShift(HFBug):
    """A training script ported from nanoGPT shifts the labels itself (targets = ids[1:]) and
    hands them to GPT2LMHeadModel, which shifts again: row i is trained on token i + 2."""

    must_fail = (
        "objective.row-predicts-next-token",
        "objective.label-convention-declared",
        "objective.no-double-shift",
    )

    def forward_loss(
        self, module: nn.Module, input_ids: Tensor, labels: Tensor, reduction: Reduction,
        ignore_index: int,
    ) -> Tensor:  # fmt: skip
        shifted = _shift_left(labels, ignore_index)
        return super().forward_loss(module, input_ids, shifted, reduction, ignore_index)


class HFCountsUnshiftedLabels(HFBug):
    """Gradient-accumulation code passes ``num_items_in_batch = (labels != -100).sum()`` counted
    on the labels *before* the shift: the first label of each sequence, never a target, is
    counted, so the mean divides by too many."""

    must_fail = ("objective.mean-over-counted-targets",)

    def forward_loss(
        self, module: nn.Module, input_ids: Tensor, labels: Tensor, reduction: Reduction,
        ignore_index: int,
    ) -> Tensor:  # fmt: skip
        if reduction == "sum":
            return super().forward_loss(module, input_ids, labels, reduction, ignore_index)
        count = (labels != ignore_index).sum()
        out = module(
            input_ids=input_ids, labels=labels, ignore_index=ignore_index,
            num_items_in_batch=count,
        )  # fmt: skip
        loss: Tensor = out.loss
        return loss


class HFDropsPositionIds(HFBug):
    """A serving wrapper passes the attention mask of a left-padded batch but leaves position
    ids to the model, as ``generate()`` would have computed them: GPT2LMHeadModel then numbers
    every slot 0..T-1, padding included."""

    must_fail = ("inference.left-padding",)

    def forward_logits(
        self,
        module: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        return super().forward_logits(module, input_ids, attention_mask=attention_mask)


class HFChunkPositionsRestart(HFBug):
    """A chunked-prefill wrapper computes each chunk's position ids from the chunk alone
    (0..T-1), forgetting the P positions already in the cache."""

    must_fail = ("inference.kv-cache", "inference.cache-positions")

    def forward_cached(
        self, module: nn.Module, input_ids: Tensor, state: Any
    ) -> tuple[Tensor, Any]:
        import copy

        kwargs: dict[str, Any] = {"use_cache": True}
        if state is not None:
            kwargs["cache"] = copy.deepcopy(state)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        out = module(input_ids=input_ids, position_ids=positions, **kwargs)
        return out.logits, out.cache if getattr(out, "cache", None) is not None else None


class HFCacheGrowsInPlace(HFBug):
    """A decoding wrapper hands transformers' cache object back in on the next call without
    copying it: ``DynamicCache`` grows in place, so a cache that is extended twice (two
    continuations of one prompt, as in beam search or speculative decoding) already holds the
    first continuation's keys when the second one runs."""

    must_fail = ("inference.kv-cache",)

    def forward_cached(
        self, module: nn.Module, input_ids: Tensor, state: Any
    ) -> tuple[Tensor, Any]:
        kwargs: dict[str, Any] = {"use_cache": True}
        if state is not None:
            kwargs["cache"] = state  # the bug: the caller's cache object, extended in place
        out = module(input_ids=input_ids, **kwargs)
        cache = out.get("cache") if hasattr(out, "get") else None
        return out.logits, cache if cache is not None else out.past_key_values


class HFWrapsTokenIds(HFBug):
    """A wrapper that claims input validation checks dtype, shape, length and labels, then
    "normalises" ids with ``ids % vocab_size`` as a NumPy-minded port would: -1 becomes the
    last token and V becomes token 0, silently."""

    validates_input = True
    must_fail = ("input.token-range", "model.no-result-for-invalid-input")

    def _checked(self, module: nn.Module, ids: Tensor, past: int = 0) -> Tensor:
        config: Any = module.config
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise InvalidInputError(f"input ids must be integers, got {ids.dtype}")
        if ids.ndim != 2 or ids.numel() == 0:
            raise InvalidInputError(f"input ids must be a non-empty [B, T], got {tuple(ids.shape)}")
        if past + ids.shape[1] > config.n_positions:
            raise InvalidInputError(
                f"{past} cached + {ids.shape[1]} new positions exceed n_positions "
                f"{config.n_positions}"
            )
        return ids % config.vocab_size  # the bug: out-of-range ids wrap

    def _checked_labels(self, module: nn.Module, ids: Tensor, labels: Tensor, ii: int) -> None:
        config: Any = module.config
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise InvalidInputError(f"labels must be integers, got {labels.dtype}")
        if labels.shape != ids.shape:
            raise InvalidInputError(
                f"labels shape {tuple(labels.shape)} differs from input ids {tuple(ids.shape)}"
            )
        bad = ((labels < 0) | (labels >= config.vocab_size)) & (labels != ii)
        if bool(bad.any()):
            raise InvalidInputError(
                f"labels hold {int(labels[bad][0])}, outside [0, {config.vocab_size}) and not "
                f"ignore_index={ii}"
            )

    def forward_logits(
        self,
        module: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        ids = self._checked(module, input_ids)
        return super().forward_logits(
            module, ids, attention_mask=attention_mask, position_ids=position_ids
        )

    def forward_loss(
        self, module: nn.Module, input_ids: Tensor, labels: Tensor, reduction: Reduction,
        ignore_index: int,
    ) -> Tensor:  # fmt: skip
        ids = self._checked(module, input_ids)
        self._checked_labels(module, input_ids, labels, ignore_index)
        return super().forward_loss(module, ids, labels, reduction, ignore_index)

    def forward_hidden(self, module: nn.Module, input_ids: Tensor) -> Tensor:
        return super().forward_hidden(module, self._checked(module, input_ids))

    def forward_last(self, module: nn.Module, input_ids: Tensor) -> Tensor:
        return super().forward_last(module, self._checked(module, input_ids))

    def forward_cached(
        self, module: nn.Module, input_ids: Tensor, state: Any
    ) -> tuple[Tensor, Any]:
        past = 0 if state is None else int(state.get_seq_length())
        return super().forward_cached(module, self._checked(module, input_ids, past), state)


#: Every bug of this module, in the order listings show them.
ALL: tuple[type[HFBug], ...] = (
    HFExactGeluConfig,
    HFInverseLayerScale,
    HFUntiedConfig,
    HFTrainModeDropout,
    HFLogitSoftcap,
    HFKernelDropsPaddingMask,
    HFSoftmaxOverQueries,
    HFDoubleShift,
    HFCountsUnshiftedLabels,
    HFDropsPositionIds,
    HFChunkPositionsRestart,
    HFCacheGrowsInPlace,
    HFWrapsTokenIds,
)
