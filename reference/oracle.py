"""The NumPy oracle: GPT-2's logits, loss and every parameter gradient, in float64.

This is the ground truth the conformance suite compares implementations against.

* The forward pass is *assembled* from the spec's executable definitions
  (``gpt2_spec.spec_definitions()``: ``gpt2_hidden``, ``lm_head``, ``causal_lm_loss``,
  ``shift_labels``, ...). No formula of the forward is written here a second time.
* The backward pass is written by hand. It recomputes the forward's intermediates with the spec's
  building blocks (``layer_norm``, ``conv1d``, ``gelu``, ``softmax``, ``allowed_keys``, ``embed``)
  and adds only the derivatives. The tests check it against central finite differences of the
  spec's loss and against transformers' autograd.
* Inputs are validated by the spec's chapter 8 definitions (``check_tokens``, ``check_labels``),
  looked up when called.

Shapes: B sequences, T positions, V vocabulary entries, d channels, H heads, L blocks.
This module does not import torch: the oracle is independent of the reference implementation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from gpt2_spec import GPT2Config, InvalidInputError, spec_definitions

__all__ = [
    "IGNORE_INDEX",
    "OracleGradients",
    "OracleOutput",
    "Params",
    "Reduction",
    "check_params",
    "forward",
    "gradients",
    "loss",
    "random_params",
]

Params = dict[str, np.ndarray]
"""GPT-2 parameters by canonical name (spec ``model.canonical-names``); float64 arrays in the
canonical layout (``model.canonical-layout``). There is no ``lm_head.weight``: the head is
``transformer.wte.weight``."""

Reduction = Literal["mean", "sum"]

IGNORE_INDEX: int = int(spec_definitions().IGNORE_INDEX)
"""The target value that removes a position's term (spec ``objective.ignore-index``): -100."""

_WTE = "transformer.wte.weight"
_WPE = "transformer.wpe.weight"


@dataclasses.dataclass(frozen=True)
class OracleOutput:
    """The forward pass of the oracle.

    Attributes:
        logits: [B, T, V], row i scores the token at position i+1.
        hidden: [B, T, d], final hidden states after ln_f, before the head.
    """

    logits: np.ndarray
    hidden: np.ndarray


@dataclasses.dataclass(frozen=True)
class OracleGradients:
    """The loss and the gradient of the loss with respect to every parameter.

    Attributes:
        loss: the loss (``nan`` for reduction "mean" with no counted target).
        logits: [B, T, V], the logits the loss was computed from.
        grads: d loss / d parameter for every canonical parameter, same shapes as the parameters.
            ``grads["transformer.wte.weight"]`` is the gradient of the one tied tensor, that is
            ``wte_from_lookup + wte_from_head`` (spec ``head.tied-gradient``).
        wte_from_lookup: [V, d], the embedding-lookup contribution: the rows of d loss / d x0 (x0
            the input of block 0) added up at the input token ids.
        wte_from_head: [V, d], the head contribution: (d loss / d logits)ᵀ · hidden, summed over
            batch and positions.
    """

    loss: float
    logits: np.ndarray
    grads: Params
    wte_from_lookup: np.ndarray
    wte_from_head: np.ndarray


# --------------------------------------------------------------------------------------------
# Parameters


def random_params(config: GPT2Config, *, seed: int, scale: float | None = None) -> Params:
    """Random GPT-2 parameters in canonical names and layout, float64, deterministic in ``seed``.

    Args:
        config: the model's shape.
        seed: seed of ``np.random.default_rng``; the same seed and config give the same arrays.
        scale: ``None`` gives GPT-2's initialisation as the spec defines it
            (``forward.initialisation``: ``init_mean`` and ``init_std`` of each parameter; a
            parameter whose std is 0 is the constant ``init_mean`` and takes no draw). A float
            gives every weight *and* bias N(0, scale²), LayerNorm gains 1 + N(0, scale²) and
            LayerNorm biases N(0, scale²), so that biases and LayerNorm parameters matter and
            large scales exercise GELU, softmax and LayerNorm across their range.

    Returns:
        ``Params`` with exactly the names and shapes of the spec's ``canonical_shapes``.
    """
    if scale is not None and not (
        isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0
    ):
        raise ValueError(f"scale must be None or a finite number >= 0, got {scale!r}")
    spec = spec_definitions()
    rng = np.random.default_rng(seed)
    shapes = _canonical_shapes(config)
    params: Params = {}
    for name, shape in shapes.items():  # canonical order, so the draws are reproducible
        if scale is not None:
            values = rng.normal(0.0, scale, size=shape)
            if ".ln_" in name and name.endswith(".weight"):
                values += 1.0
        else:
            mean, std = float(spec.init_mean(name)), float(spec.init_std(name, config.n_layer))
            values = np.full(shape, mean) if std == 0.0 else rng.normal(mean, std, size=shape)
        params[name] = values.astype(np.float64, copy=False)
    return params


def check_params(params: Mapping[str, Any], config: GPT2Config) -> None:
    """Check that ``params`` has exactly the canonical names, shapes and a real floating dtype.

    Raises:
        ValueError: a name is missing or unexpected, or an array has the wrong shape or dtype;
            the message names the parameter, what was found and what is expected.
    """
    if not isinstance(params, Mapping):
        raise ValueError(
            f"params must be a mapping from canonical names to arrays, got {type(params).__name__}"
        )
    expected = _canonical_shapes(config)
    missing = [name for name in expected if name not in params]
    unexpected = [name for name in params if name not in expected]
    if "lm_head.weight" in unexpected:
        raise ValueError(
            "params has 'lm_head.weight', which is not a separate parameter: GPT-2's head is "
            f"'{_WTE}' (tied). Drop 'lm_head.weight' (a transformers state dict lists both keys)."
        )
    if missing or unexpected:
        raise ValueError(
            f"params do not match the canonical names for {config}: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}. "
            "Use the transformers GPT2LMHeadModel state-dict names (spec model.canonical-names)."
        )
    for name, shape in expected.items():
        array = np.asarray(params[name])
        if array.shape != shape:
            hint = ""
            if array.ndim == 2 and array.shape == shape[::-1]:
                hint = (
                    " It looks transposed: Conv1D weights are stored [in, out] "
                    "(nn.Linear stores [out, in]); transpose it."
                )
            raise ValueError(
                f"parameter '{name}' has shape {array.shape}, expected {shape} for {config} "
                f"(spec model.canonical-layout).{hint}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"parameter '{name}' has dtype {array.dtype}; parameters must be floating point"
            )


# --------------------------------------------------------------------------------------------
# Forward and loss (assembled from the spec's definitions)


def forward(
    params: Mapping[str, Any],
    config: GPT2Config,
    tokens: Any,
    *,
    attention_mask: Any = None,
    position_ids: Any = None,
) -> OracleOutput:
    """Logits and final hidden states of ``tokens`` under ``params``.

    Args:
        params: canonical parameters (any floating dtype; computed in float64).
        config: the model's shape.
        tokens: [B, T] integer token ids, checked by the spec's ``check_tokens``.
        attention_mask: optional [B, T] of 0/1 (1 = a real token); default all ones.
        position_ids: optional [B, T] positions; default 0..T-1 for every sequence (the spec's
            default; left padding needs ``position_ids_from_mask(attention_mask)``).

    Returns:
        ``OracleOutput`` with logits [B, T, V] and hidden [B, T, d], float64.
    """
    spec = spec_definitions()
    tokens = _checked_tokens(tokens, config)
    mask, positions = _checked_mask_and_positions(attention_mask, position_ids, tokens, config)
    p = _float64_params(params, config)
    hidden = spec.gpt2_hidden(
        p, tokens, config.n_head, positions, mask, eps=config.layer_norm_epsilon
    )
    return OracleOutput(logits=spec.lm_head(hidden, p), hidden=hidden)


def loss(
    params: Mapping[str, Any],
    config: GPT2Config,
    tokens: Any,
    *,
    labels: Any = None,
    targets: Any = None,
    reduction: Reduction = "mean",
    ignore_index: int = IGNORE_INDEX,
    attention_mask: Any = None,
    position_ids: Any = None,
) -> float:
    """The causal LM loss of ``tokens`` (spec chapter 2).

    Args:
        tokens: [B, T] integer token ids.
        labels: [B, T], the "inputs" convention (usually ``labels = tokens``); shifted here with
            the spec's ``shift_labels``, so row i is scored against label i+1.
        targets: [B, T], the "shifted" convention: row i is scored against ``targets[:, i]``
            as given. Pass exactly one of ``labels`` and ``targets``.
        reduction: "sum" of the counted terms, or their "mean" over the whole batch.
        ignore_index: a target equal to it has no term.
        attention_mask, position_ids: as in :func:`forward`.

    Returns:
        The loss as a Python float (``nan`` for "mean" with no counted target).
    """
    spec = spec_definitions()
    tokens = _checked_tokens(tokens, config)
    scored = _targets(tokens, labels, targets, reduction, ignore_index, config)
    logits = forward(
        params, config, tokens, attention_mask=attention_mask, position_ids=position_ids
    ).logits
    return float(spec.causal_lm_loss(logits, scored, reduction, ignore_index))


# --------------------------------------------------------------------------------------------
# Gradients (the backward is written here; the forward intermediates come from the spec)


def gradients(
    params: Mapping[str, Any],
    config: GPT2Config,
    tokens: Any,
    *,
    labels: Any = None,
    targets: Any = None,
    reduction: Reduction = "mean",
    ignore_index: int = IGNORE_INDEX,
    attention_mask: Any = None,
    position_ids: Any = None,
) -> OracleGradients:
    """The loss of :func:`loss` and its gradient with respect to every parameter, in float64.

    Arguments are those of :func:`loss`. The gradient of the tied ``transformer.wte.weight`` is
    returned in total and split into its two contributions (lookup and head). With no counted
    target, the loss of "mean" is ``nan`` and the gradients are 0, as the spec's
    ``logits_gradient`` defines them.
    """
    spec = spec_definitions()
    tokens = _checked_tokens(tokens, config)
    scored = _targets(tokens, labels, targets, reduction, ignore_index, config)
    mask, positions = _checked_mask_and_positions(attention_mask, position_ids, tokens, config)
    p = _float64_params(params, config)
    B, T = tokens.shape
    if mask is None:  # the defaults of the spec's gpt2_hidden
        mask = np.ones((B, T), dtype=np.int64)
    if positions is None:
        positions = np.broadcast_to(np.arange(T), (B, T))
    eps = config.layer_norm_epsilon

    # Forward, keeping what the backward needs.
    x = spec.embed(p, tokens, positions)
    allowed = spec.allowed_keys(mask)
    caches = []
    for layer in range(config.n_layer):
        x, cache = _block_forward(x, p, layer, config.n_head, allowed, eps)
        caches.append(cache)
    final = _LayerNormCache.run(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    hidden = final.y
    logits = spec.lm_head(hidden, p)
    value = float(spec.causal_lm_loss(logits, scored, reduction, ignore_index))

    # Backward.
    grads: Params = {}
    d_logits = spec.logits_gradient(logits, scored, reduction, ignore_index)  # [B, T, V]
    wte = p[_WTE]
    V, d = wte.shape
    wte_from_head = d_logits.reshape(-1, V).T @ hidden.reshape(-1, d)  # [V, d]
    dx, grads["transformer.ln_f.weight"], grads["transformer.ln_f.bias"] = final.backward(
        d_logits @ wte
    )
    for layer in reversed(range(config.n_layer)):
        dx = _block_backward(dx, caches[layer], p, layer, grads)
    # x0 = wte[tokens] + wpe[positions]: each row's gradient goes back to the row it was read from.
    wte_from_lookup = np.zeros_like(wte)
    np.add.at(wte_from_lookup, tokens.reshape(-1), dx.reshape(-1, d))
    d_wpe = np.zeros_like(p[_WPE])
    np.add.at(d_wpe, positions.reshape(-1), dx.reshape(-1, d))
    grads[_WTE] = wte_from_lookup + wte_from_head
    grads[_WPE] = d_wpe
    ordered = {name: grads[name] for name in p}  # canonical order
    return OracleGradients(
        loss=value,
        logits=logits,
        grads=ordered,
        wte_from_lookup=wte_from_lookup,
        wte_from_head=wte_from_head,
    )


@dataclasses.dataclass
class _LayerNormCache:
    """A LayerNorm's input, normalised input and output, for its backward."""

    x: np.ndarray  # [..., d]
    x_hat: np.ndarray  # [..., d], (x - mean) / sqrt(var + eps)
    g: np.ndarray  # [d]
    eps: float
    y: np.ndarray  # [..., d]

    @classmethod
    def run(cls, x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> _LayerNormCache:
        spec = spec_definitions()
        # The spec's LayerNorm with unit gain and zero bias is its normalisation alone.
        x_hat = spec.layer_norm(x, np.ones_like(g), np.zeros_like(b), eps)
        return cls(x=x, x_hat=x_hat, g=g, eps=eps, y=spec.layer_norm(x, g, b, eps))

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """d loss / d (x, g, b) from d loss / d y; the variance is the biased one, as forward."""
        d = dy.shape[-1]
        d_g = (dy * self.x_hat).reshape(-1, d).sum(axis=0)
        d_b = dy.reshape(-1, d).sum(axis=0)
        d_xhat = dy * self.g
        inv_std = 1.0 / np.sqrt(self.x.var(axis=-1, keepdims=True) + self.eps)
        dx = inv_std * (
            d_xhat
            - d_xhat.mean(axis=-1, keepdims=True)
            - self.x_hat * (d_xhat * self.x_hat).mean(axis=-1, keepdims=True)
        )
        return dx, d_g, d_b


def _conv1d_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For y = x @ w + b with x [..., d_in], w [d_in, d_out]: d loss / d (x, w, b)."""
    d_in, d_out = w.shape
    d_w = x.reshape(-1, d_in).T @ dy.reshape(-1, d_out)
    d_b = dy.reshape(-1, d_out).sum(axis=0)
    return dy @ w.T, d_w, d_b


def _gelu_derivative(x: np.ndarray) -> np.ndarray:
    """d gelu(x) / dx for the tanh approximation of the spec's ``gelu``."""
    c, a = math.sqrt(2.0 / math.pi), 0.044715
    t = np.tanh(c * (x + a * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * a * x * x)


def _split_heads(a: np.ndarray, n_head: int) -> np.ndarray:  # [B, T, d] -> [B, H, T, d/H]
    B, T, d = a.shape
    return a.reshape(B, T, n_head, d // n_head).transpose(0, 2, 1, 3)


def _merge_heads(a: np.ndarray) -> np.ndarray:  # [B, H, T, d/H] -> [B, T, d]
    B, H, T, hd = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, H * hd)


def _block_forward(
    x: np.ndarray, p: Params, layer: int, n_head: int, allowed: np.ndarray, eps: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """The spec's ``block`` step by step ([B, T, d] -> [B, T, d]), keeping the intermediates."""
    spec = spec_definitions()
    pre = f"transformer.h.{layer}."
    ln_1 = _LayerNormCache.run(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
    qkv = spec.conv1d(ln_1.y, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"])
    q, k, v = (_split_heads(a, n_head) for a in np.split(qkv, 3, axis=-1))  # [B, H, T, hd]
    scale = np.sqrt(q.shape[-1])
    scores = q @ k.transpose(0, 1, 3, 2) / scale  # [B, H, T, T]
    weights = spec.softmax(np.where(allowed, scores, -np.inf))
    heads = _merge_heads(weights @ v)  # [B, T, d]
    x = x + spec.conv1d(heads, p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"])
    ln_2 = _LayerNormCache.run(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
    fc = spec.conv1d(ln_2.y, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"])  # [B, T, 4d]
    act = spec.gelu(fc)
    x = x + spec.conv1d(act, p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])
    cache = {
        "ln_1": ln_1,
        "q": q,
        "k": k,
        "v": v,
        "scale": scale,
        "weights": weights,
        "heads": heads,
        "ln_2": ln_2,
        "fc": fc,
        "act": act,
    }
    return x, cache


def _block_backward(
    dx: np.ndarray, cache: dict[str, Any], p: Params, layer: int, grads: Params
) -> np.ndarray:
    """d loss / d (block input) from d loss / d (block output); fills ``grads`` for the block."""
    pre = f"transformer.h.{layer}."
    # x_out = x_mid + mlp(ln_2(x_mid)): the residual passes dx through unchanged.
    d_act, grads[pre + "mlp.c_proj.weight"], grads[pre + "mlp.c_proj.bias"] = _conv1d_backward(
        cache["act"], p[pre + "mlp.c_proj.weight"], dx
    )
    d_fc = d_act * _gelu_derivative(cache["fc"])
    d_ln2, grads[pre + "mlp.c_fc.weight"], grads[pre + "mlp.c_fc.bias"] = _conv1d_backward(
        cache["ln_2"].y, p[pre + "mlp.c_fc.weight"], d_fc
    )
    d_mid, grads[pre + "ln_2.weight"], grads[pre + "ln_2.bias"] = cache["ln_2"].backward(d_ln2)
    dx = dx + d_mid
    # x_mid = x_in + attn(ln_1(x_in)).
    d_heads, grads[pre + "attn.c_proj.weight"], grads[pre + "attn.c_proj.bias"] = _conv1d_backward(
        cache["heads"], p[pre + "attn.c_proj.weight"], dx
    )
    n_head = cache["q"].shape[1]
    d_out = _split_heads(d_heads, n_head)  # [B, H, T, hd]
    weights, q, k, v = cache["weights"], cache["q"], cache["k"], cache["v"]
    d_weights = d_out @ v.transpose(0, 1, 3, 2)  # [B, H, T, T]
    d_v = weights.transpose(0, 1, 3, 2) @ d_out
    # Softmax backward; masked keys have weight 0, so they get no gradient.
    d_scores = weights * (d_weights - (d_weights * weights).sum(axis=-1, keepdims=True))
    d_scores = d_scores / cache["scale"]
    d_q = d_scores @ k
    d_k = d_scores.transpose(0, 1, 3, 2) @ q
    d_qkv = np.concatenate([_merge_heads(a) for a in (d_q, d_k, d_v)], axis=-1)  # [B, T, 3d]
    d_ln1, grads[pre + "attn.c_attn.weight"], grads[pre + "attn.c_attn.bias"] = _conv1d_backward(
        cache["ln_1"].y, p[pre + "attn.c_attn.weight"], d_qkv
    )
    d_in, grads[pre + "ln_1.weight"], grads[pre + "ln_1.bias"] = cache["ln_1"].backward(d_ln1)
    return dx + d_in


# --------------------------------------------------------------------------------------------
# Input handling


def _canonical_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = spec_definitions().canonical_shapes(
        config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    )
    return shapes


def _float64_params(params: Mapping[str, Any], config: GPT2Config) -> Params:
    check_params(params, config)
    return {name: np.asarray(params[name], dtype=np.float64) for name in _canonical_shapes(config)}


def _checked_tokens(tokens: Any, config: GPT2Config) -> np.ndarray:
    spec_definitions().check_tokens(tokens, config.vocab_size, config.n_positions)
    return np.asarray(tokens)


def _targets(
    tokens: np.ndarray,
    labels: Any,
    targets: Any,
    reduction: str,
    ignore_index: int,
    config: GPT2Config,
) -> np.ndarray:
    """The [B, T] targets row i is scored against, from either label convention."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if (labels is None) == (targets is None):
        raise ValueError(
            "pass exactly one of labels= (the 'inputs' convention: labels are the input ids and "
            "are shifted inside) and targets= (the 'shifted' convention: already shifted)"
        )
    spec = spec_definitions()
    given = labels if labels is not None else targets
    spec.check_labels(given, tokens.shape, config.vocab_size, ignore_index)
    given = np.asarray(given)
    if labels is not None:
        shifted: np.ndarray = spec.shift_labels(given, ignore_index)
        return shifted
    return given


def _checked_mask_and_positions(
    attention_mask: Any, position_ids: Any, tokens: np.ndarray, config: GPT2Config
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Refuse a mask or positions that do not fit ``tokens`` (InvalidInputError)."""
    mask = None
    if attention_mask is not None:
        mask = np.asarray(attention_mask)
        if mask.shape != tokens.shape:
            raise InvalidInputError(
                f"attention_mask has shape {mask.shape} but tokens have shape {tokens.shape}; "
                "pass one 0/1 entry per token"
            )
        if not np.isin(mask, (0, 1)).all():
            raise InvalidInputError(
                f"attention_mask must hold only 0 and 1, found {np.unique(mask)[:10]}; "
                "use 1 for real tokens and 0 for padding"
            )
    positions = None
    if position_ids is not None:
        positions = np.asarray(position_ids)
        if not np.issubdtype(positions.dtype, np.integer):
            raise InvalidInputError(
                f"position_ids must be integers, got dtype {positions.dtype}; cast them to int64"
            )
        try:
            positions = np.broadcast_to(positions, tokens.shape)
        except ValueError:
            raise InvalidInputError(
                f"position_ids of shape {positions.shape} do not fit tokens of shape "
                f"{tokens.shape}; pass [B, T] (or [T]) positions"
            ) from None
        if positions.size and (positions.min() < 0 or positions.max() >= config.n_positions):
            raise InvalidInputError(
                f"position_ids range over [{positions.min()}, {positions.max()}], outside "
                f"[0, {config.n_positions}) = [0, n_positions); use positions the model has"
            )
    return mask, positions
