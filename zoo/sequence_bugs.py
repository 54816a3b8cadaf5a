"""GPT-2s with one realistic sequence bug each: the objective, causality and inference (spec
chapters 2 to 4).

Each adapter is the reference adapter with one change to the model or to the adapter, and names in
``must_fail`` the requirements the conformance suite must report as failed for it. The project's
test ``tests/test_mutant_zoo.py`` runs the suite against each one. A bug is
applied to the model instance that the adapter builds, never to the shared module, so importing
this file changes nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt2_conformance.adapter import Implementation, Params, Reduction, to_numpy
from gpt2_conformance.adapters.reference import ReferenceAdapter, ReferenceImplementation
from gpt2_reference.model import GPT2, CausalSelfAttention, GPT2Output
from gpt2_spec import GPT2Config
from gpt2_zoo.weight_bugs import attention_heads

IGNORE_INDEX = -100
# (SDPA mask or None, is_causal, new positions T, key positions P+T) -> the same, changed
MaskBug = Callable[[Tensor | None, bool, int, int], tuple[Tensor | None, bool]]
#: What a model fails when a row reads later positions (each of the causality properties).
_FUTURE_VISIBLE = (
    "causality.future-invisible",
    "causality.prefix-consistency",
    "causality.jacobian-lower-triangular",
)


class SequenceBug(ReferenceAdapter):
    """The reference adapter with one bug: ``patch`` changes the freshly built model in place,
    ``implementation`` is the class that wraps it."""

    must_fail: ClassVar[tuple[str, ...]] = ()
    implementation: ClassVar[type[ReferenceImplementation]] = ReferenceImplementation

    def patch(self, model: GPT2) -> None:
        """Introduce the bug into ``model`` (nothing by default)."""

    def build(
        self, config: GPT2Config, *, params: Params | None, seed: int, device: str, dtype: str
    ) -> Implementation:
        built = super().build(config, params=params, seed=seed, device=device, dtype=dtype)
        assert isinstance(built, ReferenceImplementation)
        self.patch(built.model)
        return self.implementation(built.model, device, dtype, adapter=self)


# --- Attention masks ---------------------------------------------------------------------------


def _attention_with(
    bug: MaskBug, *, cache_dtype: torch.dtype | None = None
) -> Callable[..., tuple[Tensor, tuple[Tensor, Tensor]]]:
    """CausalSelfAttention.forward with its mask passed through ``bug`` before the kernel; with
    ``cache_dtype``, the key/value cache it returns is stored in that dtype."""

    def forward(
        self: CausalSelfAttention,
        x: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        past: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, d = x.shape
        q, k, v = attention_heads(self, x, past)
        mask, is_causal = bug(mask, is_causal, T, k.shape[2])
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        if cache_dtype is not None:
            return self.c_proj(y.transpose(1, 2).reshape(B, T, d)), (
                k.to(cache_dtype),
                v.to(cache_dtype),
            )
        return self.c_proj(y.transpose(1, 2).reshape(B, T, d)), (k, v)

    return forward


def _patch_attention(model: GPT2, bug: MaskBug, *, cache_dtype: torch.dtype | None = None) -> None:
    for block in model.transformer.h:
        block.attn.forward = _attention_with(bug, cache_dtype=cache_dtype).__get__(block.attn)


class FullAttention(SequenceBug):
    """The causal mask is forgotten (``is_causal=False``): every position reads every key."""

    name = "broken-full-attention"
    must_fail = (*_FUTURE_VISIBLE, "inference.next-token-is-last-row")

    def patch(self, model: GPT2) -> None:
        _patch_attention(model, lambda mask, is_causal, T, S: (mask, False))


class TopLeftMaskWithCache(SequenceBug):
    """SDPA's ``is_causal=True`` whenever more than one token comes in, cache or not: after a
    cache of P positions the triangle sits in the top-left corner and new token t reads only keys
    0..t (spec inference.cache-positions)."""

    name = "broken-top-left-mask"
    must_fail = ("inference.cache-positions",)

    def patch(self, model: GPT2) -> None:
        def bug(mask: Tensor | None, is_causal: bool, T: int, S: int) -> tuple[Tensor | None, bool]:
            unpadded = mask is None or mask.shape[0] == 1  # the reference's own mask, no padding
            if S > T and unpadded:  # a cache: "causal" for several new tokens, none for one
                return None, T > 1
            return mask, is_causal

        _patch_attention(model, bug)


# --- Position mixing outside attention ----------------------------------------------------------


class CausalLeak(SequenceBug):
    """A "sequence context" feature: block 0's input gets 1e-3 times the mean over every
    position of the sequence, the future included. A leak this small moves earlier rows by about
    1e-3 of the logit scale."""

    name = "broken-causal-leak"
    must_fail = _FUTURE_VISIBLE
    scale = 1e-3

    def patch(self, model: GPT2) -> None:
        block = model.transformer.h[0]
        forward = block.forward

        def leaky(x: Tensor, *args: Any) -> Any:
            return forward(x + self.scale * x.mean(dim=1, keepdim=True), *args)

        block.forward = leaky


class BatchStatisticsNorm(SequenceBug):
    """The final LayerNorm takes its mean and variance over the batch and the channels, as a
    batch normalisation would: a sequence's rows depend on its companions."""

    name = "broken-batch-statistics"
    must_fail = ("causality.batch-independence",)

    def patch(self, model: GPT2) -> None:
        ln_f = model.transformer.ln_f

        def batch_norm(x: Tensor) -> Tensor:
            mean = x.mean(dim=(0, -1), keepdim=True)
            var = x.var(dim=(0, -1), unbiased=False, keepdim=True)
            return (x - mean) / torch.sqrt(var + ln_f.eps) * ln_f.weight + ln_f.bias

        ln_f.forward = batch_norm


# --- Positions ----------------------------------------------------------------------------------


class _CacheRestartsPositions(GPT2):
    def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:
        if kwargs.get("past_key_values") is not None and kwargs.get("position_ids") is None:
            kwargs["position_ids"] = torch.arange(input_ids.shape[1], device=input_ids.device)
        return super().forward(input_ids, **kwargs)


class CacheRestartsPositions(SequenceBug):
    """Positions of tokens fed after a cache start again at 0 instead of continuing at P."""

    name = "broken-cache-positions"
    must_fail = ("inference.kv-cache", "inference.cache-positions")

    def patch(self, model: GPT2) -> None:
        model.__class__ = _CacheRestartsPositions


class _IgnoresPositionIds(GPT2):
    def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:
        kwargs.pop("position_ids", None)  # always the default positions 0..T-1
        return super().forward(input_ids, **kwargs)


class LeftPaddingIgnoresPositionIds(SequenceBug):
    """The attention mask is honoured but the position ids are dropped: a left-padded sequence's
    first real token gets the position of its slot instead of 0."""

    name = "broken-left-padding"
    must_fail = ("inference.left-padding",)

    def patch(self, model: GPT2) -> None:
        model.__class__ = _IgnoresPositionIds


class _LastRowBeforeFinalNorm(ReferenceImplementation):
    @torch.no_grad()
    def last_logits(self, tokens: np.ndarray) -> Tensor:
        trunk = self.model.transformer
        ln_f = trunk.ln_f
        trunk.ln_f = nn.Identity()  # the head applied to the last block's output
        try:
            return super().last_logits(tokens)
        finally:
            trunk.ln_f = ln_f


class LastRowBeforeFinalNorm(SequenceBug):
    """The last-position shortcut applies the head before the final LayerNorm."""

    name = "broken-last-position"
    must_fail = ("inference.last-position-only",)
    implementation = _LastRowBeforeFinalNorm


# --- The loss -----------------------------------------------------------------------------------

LossFunction = Callable[[Tensor, Tensor, str, int], Tensor]


def _with_loss(loss: LossFunction) -> type[GPT2]:
    """A GPT2 whose loss, from the same logits and targets, is ``loss`` instead of the spec's."""

    class WithLoss(GPT2):
        def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:
            out = super().forward(input_ids, **kwargs)
            if out.loss is None:
                return out
            ignore_index = kwargs.get("ignore_index", IGNORE_INDEX)
            labels, targets = kwargs.get("labels"), kwargs.get("targets")
            if labels is not None:
                targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)
            assert targets is not None
            reduction = kwargs.get("reduction", "mean")
            out.loss = loss(out.logits, targets.long(), reduction, ignore_index)
            return out

    return WithLoss


def _terms(logits: Tensor, targets: Tensor, ignore_index: int) -> Tensor:  # [B, T], 0 if ignored
    return F.cross_entropy(
        logits.float().transpose(1, 2), targets, ignore_index=ignore_index, reduction="none"
    )


def _mean_of_sequence_means(logits: Tensor, targets: Tensor, reduction: str, ii: int) -> Tensor:
    terms = _terms(logits, targets, ii)
    if reduction == "sum":
        return terms.sum()
    return (terms.sum(dim=1) / (targets != ii).sum(dim=1)).mean()


def _mean_over_all_rows(logits: Tensor, targets: Tensor, reduction: str, ii: int) -> Tensor:
    terms = _terms(logits, targets, ii)
    return terms.sum() if reduction == "sum" else terms.mean()  # ignored rows in the count


def _ignored_as_token_0(logits: Tensor, targets: Tensor, reduction: str, ii: int) -> Tensor:
    total = _terms(logits, targets.clamp(min=0), ii).sum()  # -100 clamped to a real token id
    return total if reduction == "sum" else total / (targets != ii).sum()


def _empty_mean_is_zero(logits: Tensor, targets: Tensor, reduction: str, ii: int) -> Tensor:
    total = _terms(logits, targets, ii).sum()
    return total if reduction == "sum" else total / (targets != ii).sum().clamp(min=1)


def _loss_in_low_precision(logits: Tensor, targets: Tensor, reduction: str, ii: int) -> Tensor:
    terms = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=ii, reduction="none")
    total = terms.sum()  # in the logits' own dtype
    return total if reduction == "sum" else total / (targets != ii).sum().to(total.dtype)


class MeanOfSequenceMeans(SequenceBug):
    """The mean loss averages each sequence's own mean: short sequences weigh more."""

    name = "broken-mean-of-means"
    must_fail = ("objective.mean-over-counted-targets", "objective.microbatch-additivity")

    def patch(self, model: GPT2) -> None:
        model.__class__ = _with_loss(_mean_of_sequence_means)


class CountsIgnoredTargets(SequenceBug):
    """``cross_entropy(..., reduction="none").mean()``: ignored rows contribute 0 to the sum but
    still count in the mean's denominator."""

    name = "broken-counts-ignored"
    must_fail = (
        "objective.one-term-per-target",
        "objective.mean-over-counted-targets",
        "objective.ignore-index",
    )
    # The head is tied: its gradient holds both contributions, at the loss's own scale.
    must_pass = ("head.tied-gradient", "head.tied-after-update")

    def patch(self, model: GPT2) -> None:
        model.__class__ = _with_loss(_mean_over_all_rows)


class IgnoredScoredAsToken0(SequenceBug):
    """Ignored targets are clamped to token 0 and scored: they add terms and send gradient."""

    name = "broken-ignored-as-token-0"
    must_fail = ("objective.ignore-index", "objective.sum-of-terms", "objective.logits-gradient")

    def patch(self, model: GPT2) -> None:
        model.__class__ = _with_loss(_ignored_as_token_0)


class EmptyMeanIsZero(SequenceBug):
    """The mean divides by ``max(N, 1)``: with nothing counted it reports a perfect 0."""

    name = "broken-empty-mean"
    must_fail = ("objective.no-counted-targets",)

    def patch(self, model: GPT2) -> None:
        model.__class__ = _with_loss(_empty_mean_is_zero)


class LossInLowPrecision(SequenceBug):
    """The log-softmax and the sum run in the logits' dtype (bfloat16 or float16)."""

    name = "broken-low-precision-loss"
    must_fail = ("objective.loss-in-float32",)
    suite_dtype = "bfloat16"  # the bug shows only below float32

    def patch(self, model: GPT2) -> None:
        model.__class__ = _with_loss(_loss_in_low_precision)


# --- Label conventions --------------------------------------------------------------------------


def _shifted(labels: np.ndarray, options: dict[str, Any]) -> np.ndarray:
    """The labels shifted by one position, as the adapter's data path does (``options``: the
    loss call's keywords, for its ``ignore_index``)."""
    out = np.full_like(labels, options.get("ignore_index", IGNORE_INDEX))
    out[:, :-1] = labels[:, 1:]
    return out


class _DoubleShift(ReferenceImplementation):
    """The adapter's data path shifts the labels, and the model shifts them again."""

    def loss(self, tokens: np.ndarray, labels: np.ndarray, **options: Any) -> Any:
        return super().loss(tokens, _shifted(labels, options), **options)

    def gradients(self, tokens: np.ndarray, labels: np.ndarray, **options: Any) -> Any:
        return super().gradients(tokens, _shifted(labels, options), **options)


class DoubleShift(SequenceBug):
    """Declares "inputs" but shifts the labels twice: row i is scored against x_(i+2)."""

    name = "broken-double-shift"
    must_fail = (
        "objective.row-predicts-next-token",
        "objective.label-convention-declared",
        "objective.no-double-shift",
    )
    implementation = _DoubleShift


class _TargetsAsGiven(ReferenceImplementation):
    """nanoGPT's convention: the labels are the targets of the rows, used as given."""

    @torch.no_grad()
    def loss(
        self, tokens: np.ndarray, labels: np.ndarray, *, reduction: Reduction = "mean",
        ignore_index: int = IGNORE_INDEX,
    ) -> Any:  # fmt: skip
        out = self.model(
            self._ids(tokens), targets=self._ids(labels), reduction=reduction,
            ignore_index=ignore_index,
        )  # fmt: skip
        return out.loss

    def gradients(
        self, tokens: np.ndarray, labels: np.ndarray, *, reduction: Reduction = "mean",
        ignore_index: int = IGNORE_INDEX,
    ) -> Any:  # fmt: skip
        self.model.zero_grad(set_to_none=True)
        out = self.model(
            self._ids(tokens), targets=self._ids(labels), reduction=reduction,
            ignore_index=ignore_index,
        )  # fmt: skip
        assert out.loss is not None
        out.loss.backward()
        grads = {
            name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            for name, p in self.model.named_parameters()
        }
        self.model.zero_grad(set_to_none=True)
        return out.loss.detach(), grads


class _TargetsAsGivenAdapter(SequenceBug):
    """The module-level loss (used for the embedding gradients of the generic properties) in the
    same convention as ``_TargetsAsGiven``."""

    implementation = _TargetsAsGiven

    def forward_loss(
        self, module: nn.Module, input_ids: Tensor, labels: Tensor, reduction: Reduction,
        ignore_index: int,
    ) -> Tensor:  # fmt: skip
        out = module(input_ids, targets=labels, reduction=reduction, ignore_index=ignore_index)
        loss: Tensor = out.loss
        return loss


class ShiftedConvention(_TargetsAsGivenAdapter):
    """Not a bug: a correct implementation of the "shifted" convention, declared as such. The
    suite must pass it, which shows that its loss properties follow the declared convention."""

    name = "shifted-convention"
    label_convention = "shifted"


class WrongConventionDeclared(_TargetsAsGivenAdapter):
    """The "shifted" implementation above, declaring the "inputs" convention: with labels =
    input ids, row i is scored against x_i (a copier)."""

    name = "broken-wrong-convention"
    must_fail = (
        "objective.row-predicts-next-token",
        "objective.label-convention-declared",
        "objective.no-double-shift",
    )


# --- More leaks, loss and cache bugs -------------------------------------------------------------


def _patch_block0_input(model: GPT2, mix: Callable[[Tensor], Tensor]) -> None:
    """Block 0 reads ``mix(x)`` instead of the embedding sum ``x``."""
    block = model.transformer.h[0]
    forward = block.forward

    def mixed(x: Tensor, *args: Any) -> Any:
        return forward(mix(x), *args)

    block.forward = mixed


class TokenShiftWrongWay(SequenceBug):
    """An RWKV-style "token shift" added to block 0 mixes each position with its neighbour,
    written ``torch.roll(x, -1, dims=1)``: the *next* token, where ``roll(x, 1)`` (and a zero
    for position 0) was meant."""

    name = "broken-token-shift"
    must_fail = (*_FUTURE_VISIBLE, "inference.next-token-is-last-row")

    def patch(self, model: GPT2) -> None:
        _patch_block0_input(model, lambda x: torch.lerp(x, torch.roll(x, -1, dims=1), 0.5))


class RunningMeanOverLength(SequenceBug):
    """A running-mean context feature computes ``x.cumsum(1) / T`` instead of dividing position i
    by i + 1: no future token's content leaks, but the sequence's length does."""

    name = "broken-running-mean"
    must_fail = ("causality.prefix-consistency", "inference.next-token-is-last-row")

    def patch(self, model: GPT2) -> None:
        _patch_block0_input(model, lambda x: x + 0.1 * x.cumsum(dim=1) / x.shape[1])


class SequenceStatisticsNorm(SequenceBug):
    """The final LayerNorm is built as ``nn.LayerNorm([T, d])`` style statistics, over the
    positions and the channels together: every row is normalised with the future's mean and
    variance (a leak through a normalisation over the sequence)."""

    name = "broken-sequence-norm"
    must_fail = _FUTURE_VISIBLE

    def patch(self, model: GPT2) -> None:
        ln_f = model.transformer.ln_f

        def sequence_norm(x: Tensor) -> Tensor:
            mean = x.mean(dim=(1, 2), keepdim=True)
            var = x.var(dim=(1, 2), unbiased=False, keepdim=True)
            return (x - mean) / torch.sqrt(var + ln_f.eps) * ln_f.weight + ln_f.bias

        ln_f.forward = sequence_norm


class _RemembersPadding(GPT2):
    padding: Tensor | None = None

    def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:
        self.padding = kwargs.get("attention_mask")
        return super().forward(input_ids, **kwargs)


class PaddingMaskOnQueries(SequenceBug):
    """The padding mask is broadcast as ``mask[:, None, :, None]`` (over the queries) instead of
    ``mask[:, None, None, :]`` (over the keys): padded rows are blanked, and real tokens still
    attend to the padding before them."""

    name = "broken-padding-axis"
    must_fail = ("inference.left-padding",)

    def patch(self, model: GPT2) -> None:
        model.__class__ = _RemembersPadding

        def bug(mask: Tensor | None, is_causal: bool, T: int, S: int) -> tuple[Tensor | None, bool]:
            padding = getattr(model, "padding", None)
            if padding is None or mask is None:
                return mask, is_causal
            device = padding.device
            queries = torch.arange(S - T, S, device=device)[:, None]
            keys = torch.arange(S, device=device)
            rows = padding.bool()[:, None, -T:, None]  # [B, 1, T, 1]: the queries, not the keys
            return ((keys <= queries) & rows) | (keys == queries), False

        _patch_attention(model, bug)


class _PadsTargetsWithZero(GPT2):
    def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:
        labels = kwargs.pop("labels", None)
        if labels is not None:  # F.pad's default value is 0, a real token id
            kwargs["targets"] = F.pad(labels[:, 1:], (0, 1))
        return super().forward(input_ids, **kwargs)


class LastRowScoredAsToken0(SequenceBug):
    """The shift is written ``F.pad(labels[:, 1:], (0, 1))`` without ``value=ignore_index``:
    the last row, which has no next token, is scored against token 0."""

    name = "broken-pad-with-zero"
    must_fail = ("objective.one-term-per-target", "objective.sum-of-terms")

    def patch(self, model: GPT2) -> None:
        model.__class__ = _PadsTargetsWithZero


def _always_mean(logits: Tensor, targets: Tensor, reduction: str, ii: int) -> Tensor:
    total = _terms(logits, targets, ii).sum()
    return total / (targets != ii).sum()  # the reduction argument is accepted and never read


class SumReturnsMean(SequenceBug):
    """The loss takes a ``reduction`` argument and never reads it: "sum" returns the mean, so
    gradient accumulation that sums micro-batch losses is off by the token count."""

    name = "broken-sum-is-mean"
    must_fail = ("objective.sum-of-terms",)

    def patch(self, model: GPT2) -> None:
        model.__class__ = _with_loss(_always_mean)


class CacheInBFloat16(SequenceBug):
    """An inference engine stores the key/value cache in bfloat16 to halve its memory while the
    model computes in float32: cached decoding drifts from the full forward."""

    name = "broken-bf16-cache"
    must_fail = ("inference.kv-cache", "inference.cache-positions")

    def patch(self, model: GPT2) -> None:
        # The mask as given; the cache stored in bfloat16 to halve its memory.
        _patch_attention(
            model, lambda mask, is_causal, T, S: (mask, is_causal), cache_dtype=torch.bfloat16
        )


# --- State across calls --------------------------------------------------------------------------


class _MemoisedLogits(ReferenceImplementation):
    """Logits memoised in a dict on the class, keyed on the token ids alone."""

    memo: ClassVar[dict[tuple[tuple[int, ...], bytes], np.ndarray]] = {}

    def logits(self, tokens: np.ndarray, **kwargs: Any) -> Any:
        if any(value is not None for value in kwargs.values()):
            return super().logits(tokens, **kwargs)
        key = (tokens.shape, np.ascontiguousarray(tokens).tobytes())
        if key not in self.memo:
            self.memo[key] = to_numpy(super().logits(tokens)).copy()
        return self.memo[key]


class LogitsMemoisedOnTokens(SequenceBug):
    """A serving wrapper memoises the logits of repeated prompts in a dict on its class, keyed on
    the token ids alone: another model (other weights, or the same one a training step later)
    asked for a prompt seen before gets the first model's answer. Its adapter lets the suite copy
    built models instead of rebuilding them (``reuse = "copy"``): hidden state that outlives a
    model must be caught with copies too."""

    name = "broken-logits-memoised-on-tokens"
    must_fail = ("numerics.log-probs-match-oracle",)
    reuse = "copy"
    implementation = _MemoisedLogits


#: Every broken adapter of this module, in the order listings show them.
ALL: tuple[type[SequenceBug], ...] = (
    FullAttention,
    TopLeftMaskWithCache,
    CausalLeak,
    BatchStatisticsNorm,
    CacheRestartsPositions,
    LeftPaddingIgnoresPositionIds,
    LastRowBeforeFinalNorm,
    MeanOfSequenceMeans,
    CountsIgnoredTargets,
    IgnoredScoredAsToken0,
    EmptyMeanIsZero,
    LossInLowPrecision,
    DoubleShift,
    WrongConventionDeclared,
    TokenShiftWrongWay,
    RunningMeanOverLength,
    SequenceStatisticsNorm,
    PaddingMaskOnQueries,
    LastRowScoredAsToken0,
    SumReturnsMean,
    CacheInBFloat16,
    LogitsMemoisedOnTokens,
)

#: Correct implementations that differ from the reference in a declared way: they must pass.
CONTROLS: tuple[type[SequenceBug], ...] = (ShiftedConvention,)
