"""GPT-2s with one realistic weight or validation bug each: names and layout, the embeddings,
the head and its tie, the forward, numerics and input validation (spec chapters 1 and 5 to 8).

Each adapter is the reference adapter with one change, and declares:

- ``must_fail``: the requirements the conformance suite must report as failed for it;
- ``diagnosis``: for some of them, words the failure message must contain (the suite must say
  *what* is wrong: "matches the exact-erf GELU", "declared untied head");
- ``must_pass``: requirements the suite must *not* blame on this bug (the forward properties
  attribute a mismatch that another requirement's known deviation explains).

A bug is applied to the model instance the adapter builds (and re-applied to models it loads),
never to the shared module, so importing this file changes nothing else. The project's test
``tests/test_mutant_zoo.py`` runs the suite against each one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt2_conformance.adapter import Implementation, Params
from gpt2_conformance.adapters.reference import ReferenceAdapter, ReferenceImplementation
from gpt2_reference.model import (
    GPT2,
    MLP,
    Block,
    CausalSelfAttention,
    GPT2Output,
    causal_lm_loss,
)
from gpt2_spec import GPT2Config

LOGP = "numerics.log-probs-match-oracle"


class WeightBug(ReferenceAdapter):
    """The reference adapter with one bug: ``patch`` changes every module the adapter makes or
    loads (in place, or by swapping a class: ``swap``), before any weights are written into it."""

    must_fail: ClassVar[tuple[str, ...]] = ()
    must_pass: ClassVar[tuple[str, ...]] = ()
    diagnosis: ClassVar[dict[str, str]] = {}
    #: The usual bug, a class swapped: (the path of a submodule, the class its module becomes);
    #: "" is the model itself, and "*" in "transformer.h.*.mlp" stands for every block.
    swap: ClassVar[tuple[str, type[nn.Module]] | None] = None

    def patch(self, model: GPT2) -> GPT2:
        if self.swap is not None:
            path, kind = self.swap
            blocks = range(len(model.transformer.h)) if "*" in path else [0]
            for index in blocks:
                model.get_submodule(path.replace("*", str(index))).__class__ = kind
        return model

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        model = super().make_module(config, seed)
        assert isinstance(model, GPT2)
        return self.patch(model)

    def load_module(self, directory: Path, config: GPT2Config, template: nn.Module) -> nn.Module:
        model = super().load_module(directory, config, template)
        assert isinstance(model, GPT2)
        return self.patch(model)

    def load_checkpoint_module(
        self, path: Path, config: GPT2Config
    ) -> tuple[nn.Module, GPT2Config]:
        model, config = super().load_checkpoint_module(path, config)
        assert isinstance(model, GPT2)
        return self.patch(model), config


# --- The head and its tie ---------------------------------------------------------------------

TIED_AFTER = (
    "head.tied-after-update",
    "head.tied-after-save-load",
    "head.tied-after-resize",
    "head.tied-after-move",
)


class _UntiedGPT2(GPT2):
    lm_head: nn.Linear

    @property
    def head_weight(self) -> Tensor:
        return self.lm_head.weight


class UntiedHeadCopy(WeightBug):
    """The head is an nn.Linear whose weight is a *copy* of wte made at build (and at load), as in
    minGPT or transformers 4.x with ``torchscript=True``; the adapter still declares a tied head.
    Forward values are right; any change of wte leaves the head behind."""

    must_fail = (
        "head.tied-to-embedding",
        "head.tied-gradient",
        *TIED_AFTER,
        "head.untied-is-declared",
        "numerics.gradients-match-oracle",
    )
    must_pass = (LOGP,)
    diagnosis: ClassVar[dict[str, str]] = {
        "head.tied-to-embedding": "untied",
        "head.tied-gradient": "lookup contribution alone",
        "head.untied-is-declared": "tied_head=True",
    }

    def patch(self, model: GPT2) -> GPT2:
        wte = model.transformer.wte.weight
        model.__class__ = _UntiedGPT2
        head = nn.Linear(wte.shape[1], wte.shape[0], bias=False).to(wte)
        with torch.no_grad():
            head.weight.copy_(wte)  # a copy of the values the module holds now
        model.lm_head = head
        return model

    def build(
        self, config: GPT2Config, *, params: Params | None, seed: int, device: str, dtype: str
    ) -> Implementation:
        built = super().build(config, params=params, seed=seed, device=device, dtype=dtype)
        assert isinstance(built, ReferenceImplementation)
        model = built.model
        assert isinstance(model, _UntiedGPT2)
        with torch.no_grad():  # "tie" the loaded weights the way a clone-on-load does
            model.lm_head.weight.copy_(model.transformer.wte.weight)
        return built


class DeclaredUntiedHead(UntiedHeadCopy):
    """The same untied copy, declared (``tied_head=False``): a documented deviation."""

    tied_head = False
    must_fail = ("head.tied-to-embedding", "head.tied-gradient", *TIED_AFTER)
    must_pass = ("head.untied-is-declared", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {rid: "declared untied head" for rid in must_fail}


class _DetachedHeadGPT2(GPT2):
    @property
    def head_weight(self) -> Tensor:
        return self.transformer.wte.weight.detach()


class DetachedHeadGradient(WeightBug):
    """The head reads ``wte.detach()``: one tensor, but its gradient lacks the head's part."""

    must_fail = (
        "head.tied-gradient",
        "head.tied-after-update",
        "head.untied-is-declared",
        "numerics.gradients-match-oracle",
    )
    must_pass = ("head.tied-to-embedding", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {
        "head.tied-gradient": "lookup contribution alone",
        "numerics.gradients-match-oracle": "head's part is missing",
        "head.tied-after-update": "lookup contribution alone",
    }
    swap = ("", _DetachedHeadGPT2)


class _AdjustedLogitsGPT2(GPT2):
    """The reference forward with the logits changed after the head (loss recomputed)."""

    def adjust(self, logits: Tensor) -> Tensor:
        return logits

    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor,
        *,
        labels: Tensor | None = None,
        targets: Tensor | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        **kwargs: Any,
    ) -> GPT2Output:
        out = super().forward(
            input_ids,
            labels=labels,
            targets=targets,
            reduction=reduction,
            ignore_index=ignore_index,
            **kwargs,
        )
        logits = self.adjust(out.logits)
        if labels is not None:
            targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)
        loss = None
        if targets is not None:
            loss = causal_lm_loss(logits, targets.long(), reduction, ignore_index)
        return GPT2Output(logits, loss, out.past_key_values, out.hidden_states)


class _BiasedHeadGPT2(_AdjustedLogitsGPT2):
    head_bias: Tensor

    def adjust(self, logits: Tensor) -> Tensor:
        return logits + self.head_bias


class HeadWithBias(WeightBug):
    """The head is ``nn.Linear(d, V)`` with its default ``bias=True`` (the weight tied to wte):
    a bias per vocabulary entry, at PyTorch's default init U(-1/sqrt(d), 1/sqrt(d))."""

    must_fail = ("head.linear-no-bias", LOGP, "numerics.loss-matches-oracle")
    must_pass = ("forward.pre-layernorm", "head.tied-to-embedding")
    diagnosis: ClassVar[dict[str, str]] = {"head.linear-no-bias": "the head has a bias"}

    def patch(self, model: GPT2) -> GPT2:
        V, d = model.transformer.wte.weight.shape
        bound = 1.0 / math.sqrt(d)
        generator = torch.Generator().manual_seed(0)
        bias = (torch.rand(V, generator=generator) * 2 - 1) * bound
        model.__class__ = _BiasedHeadGPT2
        model.register_buffer("head_bias", bias.to(model.transformer.wte.weight), persistent=False)
        return model


class _TrainableBiasGPT2(_AdjustedLogitsGPT2):
    head_bias: nn.Parameter

    def adjust(self, logits: Tensor) -> Tensor:
        return logits + self.head_bias


class TrainableZeroHeadBias(WeightBug):
    """The head is ``nn.Linear(d, V)`` with its default ``bias=True`` (the weight tied to wte),
    and the initialisation zeroes every bias, the head's included: built or loaded, the logits
    are exactly h Wᵀ; the first optimiser step moves the bias. The adapter maps GPT-2's names
    only, and the converter writes them only, so the bias never shows in the weights."""

    must_fail = ("head.no-bias-after-training",)
    must_pass = ("head.linear-no-bias", "head.tied-to-embedding", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {"head.no-bias-after-training": "the head has a bias"}

    def patch(self, model: GPT2) -> GPT2:
        weight = model.transformer.wte.weight
        model.__class__ = _TrainableBiasGPT2
        model.head_bias = nn.Parameter(torch.zeros(weight.shape[0]).to(weight))
        return model

    def canonical_name(self, name: str) -> str | None:
        return None if name == "head_bias" else name

    def resize_module_vocab(self, module: nn.Module, vocab_size: int) -> None:
        super().resize_module_vocab(module, vocab_size)
        assert isinstance(module, _TrainableBiasGPT2)
        old = module.head_bias.detach()
        keep = min(old.shape[0], vocab_size)
        bias = torch.zeros(vocab_size).to(old)
        bias[:keep] = old[:keep]  # kept entries keep their values, new ones start at zero
        module.head_bias = nn.Parameter(bias)

    def save_module(self, module: nn.Module, config: GPT2Config, directory: Path) -> None:
        from gpt2_reference.checkpoint import save_checkpoint

        state = {k: v for k, v in module.state_dict().items() if k != "head_bias"}
        save_checkpoint(directory, config, state)


class _ScaledLogitsGPT2(_AdjustedLogitsGPT2):
    def adjust(self, logits: Tensor) -> Tensor:
        return logits / math.sqrt(self.config.n_embd)


class ScaledLogits(WeightBug):
    """The logits are divided by sqrt(d), a scale borrowed from attention."""

    must_fail = ("head.linear-no-bias", LOGP)
    must_pass = ("forward.gelu-tanh",)
    diagnosis: ClassVar[dict[str, str]] = {
        "head.linear-no-bias": "scale factor",
        LOGP: "logits divided by sqrt(d)",
    }
    swap = ("", _ScaledLogitsGPT2)


class MovedCopyKeepsOriginalMLP(WeightBug):
    """Each block calls its MLP through a lambda made in ``__init__`` that closes over the
    block's ``mlp``. ``copy.deepcopy`` copies a function by reference, so a deep copy (what a
    device or dtype move starts from) still calls the original's MLP with the original's weights:
    forward values are right until the two models' weights differ."""

    must_fail = ("head.tied-after-move",)
    must_pass = ("head.tied-to-embedding", "head.tied-after-save-load", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {
        "head.tied-after-move": "is not independent of the original"
    }

    def patch(self, model: GPT2) -> GPT2:
        for block in model.transformer.h:
            mlp = block.mlp  # its forward runs this mlp for good, in every copy too
            mlp.forward = lambda x, mlp=mlp: MLP.forward(mlp, x)  # type: ignore[method-assign]
        return model


# --- The forward ------------------------------------------------------------------------------


class _ExactGeluMLP(MLP):
    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # approximate="none": the erf form


class ExactGelu(WeightBug):
    """nanoGPT's ``nn.GELU()``: the exact erf GELU instead of GPT-2's tanh approximation."""

    must_fail = ("forward.gelu-tanh", LOGP)
    must_pass = ("forward.pre-layernorm", "forward.final-layernorm")
    diagnosis: ClassVar[dict[str, str]] = {"forward.gelu-tanh": "exact-erf GELU"}
    swap = ("transformer.h.*.mlp", _ExactGeluMLP)


class LayerNormEpsilon1e12(WeightBug):
    """Every LayerNorm with epsilon 1e-12 (BERT's value) instead of GPT-2's 1e-5."""

    must_fail = ("forward.layernorm-epsilon", LOGP)
    must_pass = ("forward.gelu-tanh",)
    diagnosis: ClassVar[dict[str, str]] = {"forward.layernorm-epsilon": "1e-12"}

    def patch(self, model: GPT2) -> GPT2:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = 1e-12
        return model


def attention_heads(
    attention: CausalSelfAttention, x: Tensor, past: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The reference attention's first steps, for the mutants that rewrite the rest: ``q, k, v``
    as ``[B, heads, T, head_dim]``, with the cached keys and values (read at the dtype of this
    step's, a no-op when they already have it) in front of ``k`` and ``v``."""
    B, T, d = x.shape
    q, k, v = attention.c_attn(x).split(d, dim=2)
    q, k, v = (
        t.view(B, T, attention.n_head, d // attention.n_head).transpose(1, 2) for t in (q, k, v)
    )
    if past is not None:
        k = torch.cat((past[0].to(k.dtype), k), dim=2)
        v = torch.cat((past[1].to(v.dtype), v), dim=2)
    return q, k, v


class _UnscaledAttention(CausalSelfAttention):
    def forward(
        self, x: Tensor, mask: Tensor | None, is_causal: bool, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, d = x.shape
        q, k, v = attention_heads(self, x, past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=1.0)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, d)), (k, v)


class NoAttentionScale(WeightBug):
    """Attention scores q·k without the 1/sqrt(head_dim) factor."""

    must_fail = ("forward.attention-scale", LOGP)
    must_pass = ("forward.final-layernorm",)
    diagnosis: ClassVar[dict[str, str]] = {
        "forward.attention-scale": "without the 1/sqrt(head_dim)"
    }
    swap = ("transformer.h.*.attn", _UnscaledAttention)


class _PostLNBlock(Block):
    def forward(
        self, x: Tensor, mask: Tensor | None, is_causal: bool, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, present = self.attn(x, mask, is_causal, past)
        x = self.ln_1(x + a)
        return self.ln_2(x + self.mlp(x)), present


class PostLayerNorm(WeightBug):
    """The original Transformer's post-LN blocks: LayerNorm after each residual addition."""

    must_fail = ("forward.pre-layernorm", LOGP)
    must_pass = ("forward.gelu-tanh",)
    diagnosis: ClassVar[dict[str, str]] = {"forward.pre-layernorm": "post-LN"}
    swap = ("transformer.h.*", _PostLNBlock)


class _HalfWidthMLP(MLP):
    def forward(self, x: Tensor) -> Tensor:
        width = self.c_fc.weight.shape[1] // 2  # built with n_inner = 2d
        h = F.gelu(x @ self.c_fc.weight[:, :width] + self.c_fc.bias[:width], approximate="tanh")
        return h @ self.c_proj.weight[:width] + self.c_proj.bias


class HalfWidthMLP(WeightBug):
    """An MLP built with ``n_inner = 2d``, whose loader copies the part of each checkpoint tensor
    that fits (the first 2d hidden units) instead of refusing the mismatch."""

    must_fail = ("forward.mlp-width", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {"forward.mlp-width": "the MLP of width 4d"}
    swap = ("transformer.h.*.mlp", _HalfWidthMLP)

    def canonical_state_dict(self, module: nn.Module) -> Mapping[str, Tensor]:
        views = dict(super().canonical_state_dict(module))
        for name, view in views.items():
            if name.endswith("mlp.c_fc.weight"):
                views[name] = view[:, : view.shape[1] // 2]
            elif name.endswith("mlp.c_fc.bias") or name.endswith("mlp.c_proj.weight"):
                views[name] = view[: view.shape[0] // 2]
        return views

    def load_canonical(self, module: nn.Module, params: Mapping[str, Tensor]) -> None:
        views = self.canonical_state_dict(module)
        fitted = {
            name: value[tuple(slice(0, n) for n in views[name].shape)] if name in views else value
            for name, value in params.items()
        }
        super().load_canonical(module, fitted)


class _SkippedLayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:  # the parameters exist, the call was forgotten
        return x


class NoFinalLayerNorm(WeightBug):
    """ln_f is loaded but never applied: the head reads the residual stream."""

    must_fail = ("forward.final-layernorm", LOGP)
    must_pass = ("forward.attention-scale",)
    diagnosis: ClassVar[dict[str, str]] = {"forward.final-layernorm": "without the final LayerNorm"}
    swap = ("transformer.ln_f", _SkippedLayerNorm)


class _OneBasedGPT2(GPT2):
    def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:  # type: ignore[override]
        if kwargs.get("position_ids") is None and input_ids.ndim == 2:
            past = kwargs.get("past_key_values")
            P = 0 if past is None else past[0][0].shape[2]
            T = input_ids.shape[1]
            kwargs["position_ids"] = torch.arange(P + 1, P + T + 1, device=input_ids.device)
        return super().forward(input_ids, **kwargs)


class OneBasedPositions(WeightBug):
    """Positions counted from 1 ("tokens 1..i" read as indices): token i gets wpe row i + 1."""

    must_fail = ("embedding.input-sum", LOGP)  # (at T = n_ctx it has no wpe row and raises)
    diagnosis: ClassVar[dict[str, str]] = {"embedding.input-sum": "positions counted from 1"}
    swap = ("", _OneBasedGPT2)


class TransposedSquareConv1D(WeightBug):
    """An nn.Linear-style converter that transposes a Conv1D weight only when its shape does not
    fit: c_attn, c_fc and mlp.c_proj are handled, the square attn.c_proj [d, d] is taken as it
    is. Its get_params() converts back the same way, so a round trip looks right."""

    must_fail = ("model.canonical-layout", LOGP)
    must_pass = ("forward.pre-layernorm", "forward.attention-scale")
    diagnosis: ClassVar[dict[str, str]] = {
        "model.canonical-layout": "attn.c_proj.weight applied transposed"
    }

    def canonical_state_dict(self, module: nn.Module) -> Mapping[str, Tensor]:
        views = dict(super().canonical_state_dict(module))
        for name in views:
            if name.endswith(".attn.c_proj.weight"):
                views[name] = views[name].t()  # a view: loading writes the transpose
        return views


class DropoutLeftOn(WeightBug):
    """Embedding dropout written as ``F.dropout(x, 0.1)``, whose ``training`` defaults to True:
    evaluation is random even after ``model.eval()``."""

    must_fail = ("numerics.deterministic", LOGP, "numerics.tolerance-table")
    diagnosis: ClassVar[dict[str, str]] = {"numerics.deterministic": "dropout"}

    def patch(self, model: GPT2) -> GPT2:
        model.transformer.wte.register_forward_hook(lambda module, args, out: F.dropout(out, 0.1))
        return model


class _MaskedLastIdGPT2(_AdjustedLogitsGPT2):
    def adjust(self, logits: Tensor) -> Tensor:
        mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        mask[-1] = True
        return logits.masked_fill(mask, float("-inf"))


class MaskedPaddedVocab(WeightBug):
    """The last vocabulary entry is taken for an unused padding row (as in a vocabulary rounded
    up for speed) and masked with -inf in the logits: a non-finite output, and a wrong softmax
    (the spec keeps every one of the V entries in it)."""

    must_fail = ("numerics.finite", LOGP)
    diagnosis: ClassVar[dict[str, str]] = {"numerics.finite": "must be finite"}
    swap = ("", _MaskedLastIdGPT2)


# --- Names, layouts and initialisation as the adapter presents them ---------------------------


class _PrefixlessImplementation(ReferenceImplementation):
    def get_params(self) -> Mapping[str, Any]:
        return {k.removeprefix("transformer."): v for k, v in super().get_params().items()}


class PrefixlessNames(WeightBug):
    """get_params() reports the base model's names (``h.0.attn.c_attn.weight``, as in the hub's
    ``gpt2`` files) instead of the canonical ``transformer.``-prefixed ones."""

    must_fail = ("model.canonical-names",)
    diagnosis: ClassVar[dict[str, str]] = {"model.canonical-names": "lacks"}

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> ReferenceImplementation:
        assert isinstance(module, GPT2)
        return _PrefixlessImplementation(module, device, dtype, adapter=self)


class _TransposedWteImplementation(ReferenceImplementation):
    def get_params(self) -> Mapping[str, Any]:
        params = dict(super().get_params())
        params["transformer.wte.weight"] = params["transformer.wte.weight"].T
        return params


class TransposedEmbeddingExport(WeightBug):
    """get_params() gives wte as [d, V], the layout of an unembedding matrix (TransformerLens'
    W_U), instead of one row per token id."""

    must_fail = ("embedding.shapes", "model.canonical-layout")
    diagnosis: ClassVar[dict[str, str]] = {"embedding.shapes": "one row per token id"}

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> ReferenceImplementation:
        assert isinstance(module, GPT2)
        return _TransposedWteImplementation(module, device, dtype, adapter=self)


class TransformersStyleInit(WeightBug):
    """Initialises wpe with N(0, 0.02²) like transformers and nanoGPT, not OpenAI's 0.01, without
    saying so (the spec permits the variant only when declared)."""

    must_fail = ("forward.initialisation",)
    diagnosis: ClassVar[dict[str, str]] = {
        "forward.initialisation": "transformers' and nanoGPT's 0.02"
    }

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        model = super().make_module(config, seed)
        assert isinstance(model, GPT2)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            wpe = model.transformer.wpe.weight
            wpe.copy_(torch.empty(wpe.shape).normal_(0.0, 0.02, generator=generator))
        return model


# --- Input validation -------------------------------------------------------------------------


class _ClampingImplementation(ReferenceImplementation):
    """Clamps token ids into [0, V) before the model sees them: a defensive "repair"."""

    def _clamp(self, tokens: Any) -> Any:
        array = np.asarray(tokens)
        if array.dtype.kind in "iu":
            return np.clip(array, 0, self.model.config.vocab_size - 1)
        return tokens

    def logits(self, tokens, **kwargs):  # type: ignore[no-untyped-def]
        return super().logits(self._clamp(tokens), **kwargs)

    def hidden_states(self, tokens):  # type: ignore[no-untyped-def]
        return super().hidden_states(self._clamp(tokens))

    def last_logits(self, tokens):  # type: ignore[no-untyped-def]
        return super().last_logits(self._clamp(tokens))

    def prefill(self, tokens):  # type: ignore[no-untyped-def]
        return super().prefill(self._clamp(tokens))

    def extend(self, cache, tokens):  # type: ignore[no-untyped-def]
        return super().extend(cache, self._clamp(tokens))

    def loss(self, tokens, labels, **kwargs):  # type: ignore[no-untyped-def]
        return super().loss(self._clamp(tokens), labels, **kwargs)

    def gradients(self, tokens, labels, **kwargs):  # type: ignore[no-untyped-def]
        return super().gradients(self._clamp(tokens), labels, **kwargs)


class ClampedTokenIds(WeightBug):
    """Out-of-range ids are clamped to [0, V - 1] silently instead of refused."""

    must_fail = ("input.token-range", "input.clear-error", "model.no-result-for-invalid-input")
    diagnosis: ClassVar[dict[str, str]] = {"input.token-range": "never wrapped or clamped"}

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> ReferenceImplementation:
        assert isinstance(module, GPT2)
        return _ClampingImplementation(module, device, dtype, adapter=self)


class _LateIndexErrorGPT2(GPT2):
    def _validate(self, input_ids: Tensor, *rest: Any) -> int:  # type: ignore[override]
        integer = isinstance(input_ids, Tensor) and not (
            input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool
        )
        if integer:  # the range check never fires: the real ids go on to nn.Embedding
            input_ids = input_ids.clamp(0, self.config.vocab_size - 1)
        return super()._validate(input_ids, *rest)


class IndexErrorForBadIds(WeightBug):
    """No range check of its own: an id of V or -1 reaches nn.Embedding, which raises
    ``IndexError: index out of range in self`` from deep inside the forward."""

    must_fail = ("input.token-range", "input.clear-error")
    diagnosis: ClassVar[dict[str, str]] = {"input.token-range": "raised IndexError"}
    swap = ("", _LateIndexErrorGPT2)


class _UnvalidatedGPT2(GPT2):
    def _validate(self, input_ids: Tensor, labels: Any, targets: Any, mask: Any, positions: Any,
                  past: Any, *rest: Any) -> int:  # type: ignore[override]  # fmt: skip
        return 0 if past is None else int(past[0][0].shape[2])


class NoInputValidation(WeightBug):
    """No validation at all: ids are cast with ``.long()``, lookups fail (or not) wherever they
    happen, labels are sliced to fit."""

    must_fail = (
        "input.integer-tokens",
        "input.token-range",
        "input.context-length",
        "input.empty",
        "input.label-shape",
        "input.label-values",
        "input.clear-error",
    )
    swap = ("", _UnvalidatedGPT2)


# --- More head, numerics and validation bugs ----------------------------------------------------


class _ReshapedHeadGPT2(GPT2):
    @property
    def head_weight(self) -> Tensor:
        wte = self.transformer.wte.weight  # [V, d]
        return wte.reshape(wte.shape[1], wte.shape[0]).t()  # F.linear(h, this) = h @ wte.view(d, V)


class HeadReshapedNotTransposed(WeightBug):
    """A port to a framework without ``F.linear`` writes the tied head as
    ``h @ wte.reshape(d, V)``: a reshape where a transpose was meant, with the right shape and
    the wrong layout. The adapter reports wte as the head matrix, as the author believes."""

    must_fail = ("head.linear-no-bias", LOGP)
    swap = ("", _ReshapedHeadGPT2)

    def head_weight(self, module: nn.Module) -> Tensor:
        assert isinstance(module, GPT2)
        return module.transformer.wte.weight


class _LowPrecisionScoresAttention(CausalSelfAttention):
    def forward(
        self, x: Tensor, mask: Tensor | None, is_causal: bool, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, d = x.shape
        hd = d // self.n_head
        q, k, v = attention_heads(self, x, past)
        S = k.shape[2]
        # The "fast path": q kᵀ in bfloat16, everything else in float32.
        scores = (q.bfloat16() @ k.bfloat16().transpose(-1, -2)).to(q.dtype) / math.sqrt(hd)
        if is_causal:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, d)), (k, v)


class AttentionScoresInBFloat16(WeightBug):
    """A kernel author's attention computes the q·kᵀ scores in bfloat16 for speed and the rest in
    float32: at GPT-2's init scale the scores are tiny and the error hides; at realistic weight
    scales it moves the log-probabilities far beyond float32's tolerance."""

    must_fail = (LOGP,)
    swap = ("transformer.h.*.attn", _LowPrecisionScoresAttention)


class _QuickGeluMLP(MLP):
    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))  # the sigmoid approximation


class QuickGelu(WeightBug):
    """A fused MLP kernel uses the cheaper sigmoid approximation x·σ(1.702x) (CLIP's
    "quick GELU") for GPT-2's tanh GELU: the two agree near 0, so it shows only when the MLP's
    pre-activations reach realistic sizes."""

    must_fail = ("forward.gelu-tanh", LOGP)
    swap = ("transformer.h.*.mlp", _QuickGeluMLP)


class _WrapsNegativeIdsGPT2(GPT2):
    def forward(self, input_ids: Tensor, **kwargs: Any) -> GPT2Output:  # type: ignore[override]
        integer = isinstance(input_ids, Tensor) and not (
            input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool
        )
        if integer:  # Python-style indexing: -1 is the last row
            input_ids = torch.where(input_ids < 0, input_ids % self.config.vocab_size, input_ids)
        return super().forward(input_ids, **kwargs)


class NegativeIdsWrap(WeightBug):
    """Validation checks ``ids < vocab_size`` but not ``ids >= 0``, and the lookup indexes the
    way NumPy does: -1 silently reads the last row, -100 (an ignore label passed as an input) row
    V - 100."""

    must_fail = ("input.token-range", "model.no-result-for-invalid-input")
    diagnosis: ClassVar[dict[str, str]] = {"input.token-range": "< 0"}
    swap = ("", _WrapsNegativeIdsGPT2)


#: Every bug of this module, in the order listings show them.
ALL: tuple[type[WeightBug], ...] = (
    UntiedHeadCopy,
    DeclaredUntiedHead,
    DetachedHeadGradient,
    MovedCopyKeepsOriginalMLP,
    HeadWithBias,
    TrainableZeroHeadBias,
    ScaledLogits,
    ExactGelu,
    LayerNormEpsilon1e12,
    NoAttentionScale,
    PostLayerNorm,
    NoFinalLayerNorm,
    HalfWidthMLP,
    OneBasedPositions,
    TransposedSquareConv1D,
    DropoutLeftOn,
    MaskedPaddedVocab,
    PrefixlessNames,
    TransposedEmbeddingExport,
    TransformersStyleInit,
    ClampedTokenIds,
    IndexErrorForBadIds,
    NoInputValidation,
    HeadReshapedNotTransposed,
    AttentionScoresInBFloat16,
    QuickGelu,
    NegativeIdsWrap,
)
