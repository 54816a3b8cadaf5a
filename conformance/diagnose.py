"""Diagnosis of a forward that disagrees with the oracle: which known deviation does it compute?

When an implementation's log-probabilities differ from the oracle's, "they differ by 3e-3" says
little. This module evaluates *variants* of the spec's forward, each the spec with one realistic
mistake (the exact-erf GELU, LayerNorm epsilon 1e-12, no attention scaling, post-LN blocks, no
final LayerNorm, 1-based positions, a transposed square Conv1D weight, ...), and reports which of
them the implementation matches. Each variant is tied to the requirement it breaks, so that a
property can say "matches the exact-erf GELU instead of the tanh approximation" and, for a
different requirement, recognise that the mismatch is explained by someone else's detail.

Variants are built from the spec's own definitions: each evaluates a *fresh* execution of the
spec's code blocks (``gpt2_spec.definitions.execute``) in which one function is substituted, so
the shared namespace of ``gpt2_spec.spec_definitions()`` is never modified. Everything here is
float64 NumPy; nothing is called on the implementation.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import numpy as np

from gpt2_spec import GPT2Config, spec_definitions
from gpt2_spec.definitions import execute

from . import checks
from .adapter import Params
from .timing import oracle

S = spec_definitions()

Logits = Callable[[Params, GPT2Config, np.ndarray], "np.ndarray | None"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """The spec's forward with one known mistake.

    Attributes:
        name: what the mistake is, worded to follow "matches ...".
        requirement: the spec requirement the mistake breaks.
        logits: ``(params, config, tokens [B, T]) -> [B, T, V]`` float64 logits, or None where
            the variant is undefined for this input (1-based positions at T = n_ctx).
    """

    name: str
    requirement: str
    logits: Logits


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Which variants agree with an implementation's log-probabilities.

    Attributes:
        matches: the variants whose log-probabilities agree under the tolerance, best first.
        closest: the variant with the smallest excess over the bound, and that excess as a
            fraction of the spec forward's excess (None if no variant was evaluated).
    """

    matches: tuple[Variant, ...]
    closest: tuple[Variant, float] | None

    def named(self) -> tuple[str, ...]:
        """The requirements :meth:`describe` names (a hint the report withdraws when one of them
        passes in the same run)."""
        if self.matches:
            return tuple(dict.fromkeys(v.requirement for v in self.matches[:3]))
        if self.closest is not None and self.closest[1] < 0.25:
            return (self.closest[0].requirement,)
        return ()

    def describe(self) -> str:
        """A sentence for a failure message ("" when nothing is known)."""
        if self.matches:
            names = "; ".join(f"{v.name} ({v.requirement})" for v in self.matches[:3])
            return f"they match a known deviation: {names}"
        if self.closest is not None and self.closest[1] < 0.25:
            variant, ratio = self.closest
            return (
                f"no known deviation matches; the closest is {variant.name} "
                f"({variant.requirement}), whose excess over the bound is {ratio:.0%} of the "
                "spec forward's"
            )
        return "no known deviation explains the difference"


# ------------------------------------------------------------------------------------------
# Fresh spec namespaces with one substitution


@functools.cache
def _namespace(substitution: str) -> dict[str, Any]:
    """The globals of a fresh execution of the spec with ``substitution`` applied."""
    ns: dict[str, Any] = execute().gpt2_logits.__globals__
    _SUBSTITUTIONS[substitution](ns)
    return ns


def _spec_logits(
    substitution: str | None, params: Params, config: GPT2Config, tokens: np.ndarray, **kw: Any
) -> np.ndarray:
    function = S.gpt2_logits if substitution is None else _namespace(substitution)["gpt2_logits"]
    eps = kw.pop("eps", config.layer_norm_epsilon)
    result: np.ndarray = function(params, tokens, config.n_head, eps=eps, **kw)
    return result


def _exact_gelu(ns: dict[str, Any]) -> None:
    ns["gelu"] = ns["gelu_exact"]


def _unbiased_variance(ns: dict[str, Any]) -> None:
    def layer_norm(x, g, b, eps=1e-5):  # type: ignore[no-untyped-def]
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True, ddof=1)
        return g * (x - mean) / np.sqrt(var + eps) + b

    ns["layer_norm"] = layer_norm


def _eps_outside_root(ns: dict[str, Any]) -> None:
    def layer_norm(x, g, b, eps=1e-5):  # type: ignore[no-untyped-def]
        mean = x.mean(axis=-1, keepdims=True)
        return g * (x - mean) / (np.sqrt(x.var(axis=-1, keepdims=True)) + eps) + b

    ns["layer_norm"] = layer_norm


def _attention_scaled(factor: Callable[[int, int], float]) -> Callable[[dict[str, Any]], None]:
    """An attention whose scores are multiplied by ``factor(d, head_dim)``."""

    def substitute(ns: dict[str, Any]) -> None:
        conv1d, softmax = ns["conv1d"], ns["softmax"]

        def attention(x, params, p, n_head, allowed):  # type: ignore[no-untyped-def]
            B, T, d = x.shape
            hd = d // n_head
            qkv = conv1d(x, params[p + "c_attn.weight"], params[p + "c_attn.bias"])
            q, k, v = (
                a.reshape(B, T, n_head, hd).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, -1)
            )
            scores = q @ k.transpose(0, 1, 3, 2) * factor(d, hd)
            weights = softmax(np.where(allowed, scores, -np.inf))
            out = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
            return conv1d(out, params[p + "c_proj.weight"], params[p + "c_proj.bias"])

        ns["attention"] = attention

    return substitute


def _post_ln(ns: dict[str, Any]) -> None:
    attention, mlp, layer_norm = ns["attention"], ns["mlp"], ns["layer_norm"]

    def block(x, params, layer, n_head, allowed, eps=1e-5):  # type: ignore[no-untyped-def]
        p = f"transformer.h.{layer}."
        x = layer_norm(
            x + attention(x, params, p + "attn.", n_head, allowed),
            params[p + "ln_1.weight"],
            params[p + "ln_1.bias"],
            eps,
        )
        return layer_norm(
            x + mlp(x, params, p + "mlp."), params[p + "ln_2.weight"], params[p + "ln_2.bias"], eps
        )

    ns["block"] = block


def _parallel(ns: dict[str, Any]) -> None:
    attention, mlp, layer_norm = ns["attention"], ns["mlp"], ns["layer_norm"]

    def block(x, params, layer, n_head, allowed, eps=1e-5):  # type: ignore[no-untyped-def]
        p = f"transformer.h.{layer}."
        a = attention(
            layer_norm(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"], eps),
            params,
            p + "attn.",
            n_head,
            allowed,
        )
        m = mlp(
            layer_norm(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"], eps),
            params,
            p + "mlp.",
        )
        return x + a + m

    ns["block"] = block


def _no_ln_f(ns: dict[str, Any]) -> None:
    embed, allowed_keys, block = ns["embed"], ns["allowed_keys"], ns["block"]

    def gpt2_hidden(params, tokens, n_head, positions=None, attention_mask=None, eps=1e-5):  # type: ignore[no-untyped-def]
        B, T = tokens.shape
        mask = np.ones((B, T), dtype=np.int64) if attention_mask is None else attention_mask
        if positions is None:
            positions = np.broadcast_to(np.arange(T), (B, T))
        x = embed(params, tokens, positions)
        allowed = allowed_keys(mask)
        n_layer = sum(1 for name in params if name.endswith(".ln_1.weight"))
        for layer in range(n_layer):
            x = block(x, params, layer, n_head, allowed, eps)
        return x  # the final LayerNorm is missing

    ns["gpt2_hidden"] = gpt2_hidden


def _scaled_embedding(ns: dict[str, Any]) -> None:
    def embed(params, tokens, positions):  # type: ignore[no-untyped-def]
        wte = params["transformer.wte.weight"]
        return np.sqrt(wte.shape[1]) * wte[tokens] + params["transformer.wpe.weight"][positions]

    ns["embed"] = embed


_SUBSTITUTIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "exact-gelu": _exact_gelu,
    "unbiased-variance": _unbiased_variance,
    "eps-outside-root": _eps_outside_root,
    "no-attention-scale": _attention_scaled(lambda d, hd: 1.0),
    "scale-by-d": _attention_scaled(lambda d, hd: 1.0 / np.sqrt(d)),
    "scale-by-hd": _attention_scaled(lambda d, hd: 1.0 / hd),
    "post-ln": _post_ln,
    "parallel": _parallel,
    "no-ln-f": _no_ln_f,
    "scaled-embedding": _scaled_embedding,
}


def hidden_before_ln_f(
    params: Mapping[str, np.ndarray], config: GPT2Config, tokens: np.ndarray
) -> np.ndarray:
    """The residual stream after the last block, *before* ln_f: ``[B, T, d]`` float64."""
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    hidden: np.ndarray = _namespace("no-ln-f")["gpt2_hidden"](
        p, tokens, config.n_head, eps=config.layer_norm_epsilon
    )
    return hidden


def _spec_hidden(
    substitution: str | None,
    params: Mapping[str, np.ndarray],
    config: GPT2Config,
    tokens: np.ndarray,
    eps: float | None = None,
) -> np.ndarray:
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    function = S.gpt2_hidden if substitution is None else _namespace(substitution)["gpt2_hidden"]
    eps = config.layer_norm_epsilon if eps is None else eps
    hidden: np.ndarray = function(p, tokens, config.n_head, eps=eps)
    return hidden


#: (deviation, requirement, substitution, epsilon): final hidden states of the spec's forward
#: with one mistake that shows even when every block's c_proj is zero (blocks then add nothing
#: in the spec, but not in a post-LN block).
_HIDDEN_VARIANTS: tuple[tuple[str, str, str | None, float | None], ...] = (
    ("LayerNorm with epsilon 1e-6 instead of 1e-5", "forward.layernorm-epsilon", None, 1e-6),
    ("LayerNorm with epsilon 1e-12 instead of 1e-5", "forward.layernorm-epsilon", None, 1e-12),
    ("LayerNorm without epsilon", "forward.layernorm-epsilon", None, 0.0),
    (
        "LayerNorm with the unbiased variance",
        "forward.layernorm-epsilon",
        "unbiased-variance",
        None,
    ),
    (
        "LayerNorm with epsilon outside the root",
        "forward.layernorm-epsilon",
        "eps-outside-root",
        None,
    ),
    ("post-LN blocks", "forward.pre-layernorm", "post-ln", None),
    ("no final LayerNorm ln_f", "forward.final-layernorm", "no-ln-f", None),
)


def identify_hidden(
    params: Mapping[str, np.ndarray],
    config: GPT2Config,
    tokens: np.ndarray,
    actual_hidden: np.ndarray,
    tol: Any,
) -> list[tuple[str, str]]:
    """The (deviation, requirement) pairs whose final hidden states agree with ``actual_hidden``
    (``[B, T, d]``): the forward-level mistakes that hidden states show directly."""
    found = []
    for name, requirement, substitution, eps in _HIDDEN_VARIANTS:
        hidden = _spec_hidden(substitution, params, config, tokens, eps)
        if checks.matches(actual_hidden, hidden, tol):
            found.append((name, requirement))
    return found


def _substituted(substitution: str, **kw: Any) -> Logits:
    def logits(params: Params, config: GPT2Config, tokens: np.ndarray) -> np.ndarray:
        return _spec_logits(substitution, params, config, tokens, **kw)

    return logits


# ------------------------------------------------------------------------------------------
# Variants that change the inputs or the parameters of the spec's forward


def _with_eps(eps: float) -> Logits:
    def logits(params: Params, config: GPT2Config, tokens: np.ndarray) -> np.ndarray:
        return _spec_logits(None, params, config, tokens, eps=eps)

    return logits


def _one_based_positions(params: Params, config: GPT2Config, tokens: np.ndarray) -> Any:
    B, T = tokens.shape
    if config.n_positions <= T:
        return None
    positions = np.broadcast_to(np.arange(1, T + 1), (B, T))
    return _spec_logits(None, params, config, tokens, positions=positions)


def _scaled_logits(params: Params, config: GPT2Config, tokens: np.ndarray) -> np.ndarray:
    return _spec_logits(None, params, config, tokens) / np.sqrt(config.n_embd)


def _with_params(change: Callable[[Params, GPT2Config], Params]) -> Logits:
    def logits(params: Params, config: GPT2Config, tokens: np.ndarray) -> np.ndarray:
        return _spec_logits(None, change(dict(params), config), config, tokens)

    return logits


def _transpose_attn_c_proj(params: Params, config: GPT2Config) -> Params:
    for layer in range(config.n_layer):
        name = f"transformer.h.{layer}.attn.c_proj.weight"
        params[name] = params[name].T
    return params


def _c_attn_columns(order: tuple[int, int, int], interleaved: bool = False) -> Callable:
    """Canonical params under which the spec computes what an implementation reading c_attn in
    another layout computes: q, k, v blocks in ``order``, or per-head interleaved q|k|v."""

    def change(params: Params, config: GPT2Config) -> Params:
        d, H = config.n_embd, config.n_head
        hd = d // H
        source = np.empty(3 * d, dtype=np.int64)  # canonical column -> column the impl reads
        for part, head, j in itertools.product(range(3), range(H), range(hd)):
            canonical = part * d + head * hd + j
            if interleaved:
                source[canonical] = head * 3 * hd + part * hd + j
            else:
                source[canonical] = order[part] * d + head * hd + j
        for layer in range(config.n_layer):
            p = f"transformer.h.{layer}.attn.c_attn."
            params[p + "weight"] = params[p + "weight"][:, source]
            params[p + "bias"] = params[p + "bias"][source]
        return params

    return change


_QKV = "qkv"
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "the exact-erf GELU instead of the tanh approximation",
        "forward.gelu-tanh",
        _substituted("exact-gelu"),
    ),
    Variant(
        "LayerNorm with epsilon 1e-6 instead of 1e-5", "forward.layernorm-epsilon", _with_eps(1e-6)
    ),
    Variant(
        "LayerNorm with epsilon 1e-12 instead of 1e-5",
        "forward.layernorm-epsilon",
        _with_eps(1e-12),
    ),
    Variant("LayerNorm without epsilon", "forward.layernorm-epsilon", _with_eps(0.0)),
    Variant(
        "LayerNorm with the unbiased variance (divided by d - 1)",
        "forward.layernorm-epsilon",
        _substituted("unbiased-variance"),
    ),
    Variant(
        "LayerNorm with epsilon added outside the square root",
        "forward.layernorm-epsilon",
        _substituted("eps-outside-root"),
    ),
    Variant(
        "attention scores without the 1/sqrt(head_dim) scaling",
        "forward.attention-scale",
        _substituted("no-attention-scale"),
    ),
    Variant(
        "attention scores scaled by 1/sqrt(d) instead of 1/sqrt(head_dim)",
        "forward.attention-scale",
        _substituted("scale-by-d"),
    ),
    Variant(
        "attention scores scaled by 1/head_dim instead of 1/sqrt(head_dim)",
        "forward.attention-scale",
        _substituted("scale-by-hd"),
    ),
    Variant(
        "post-LN blocks (LayerNorm after the residual addition)",
        "forward.pre-layernorm",
        _substituted("post-ln"),
    ),
    Variant(
        "parallel blocks (attention and MLP on the same input)",
        "forward.pre-layernorm",
        _substituted("parallel"),
    ),
    Variant(
        "a forward without the final LayerNorm ln_f",
        "forward.final-layernorm",
        _substituted("no-ln-f"),
    ),
    Variant("positions counted from 1 instead of 0", "embedding.input-sum", _one_based_positions),
    Variant(
        "a token embedding multiplied by sqrt(d)",
        "embedding.input-sum",
        _substituted("scaled-embedding"),
    ),
    Variant("logits divided by sqrt(d)", "head.linear-no-bias", _scaled_logits),
    Variant(
        "attn.c_proj.weight applied transposed (nn.Linear layout, the square Conv1D weight)",
        "model.canonical-layout",
        _with_params(_transpose_attn_c_proj),
    ),
    *(
        Variant(
            f"c_attn's columns read as {''.join(_QKV[i] for i in order)} instead of q, k, v",
            "model.canonical-layout",
            _with_params(_c_attn_columns((order[0], order[1], order[2]))),
        )
        for order in itertools.permutations(range(3))
        if order != (0, 1, 2)
    ),
    Variant(
        "c_attn's columns read per head interleaved (q, k, v of head 0, then head 1, ...)",
        "model.canonical-layout",
        _with_params(_c_attn_columns((0, 1, 2), interleaved=True)),
    ),
)

#: The requirement of the estimated "bias added to the logits" deviation (see :func:`identify`).
HEAD_BIAS = Variant(
    "a bias vector added to the logits (fitted from the rows)",
    "head.linear-no-bias",
    lambda params, config, tokens: None,
)


def _excess(actual: np.ndarray, expected: np.ndarray, tol: Any) -> float:
    return float(S.row_excess(actual, expected, tol).max())


def _bias_fit(actual_logp: np.ndarray, expected_logp: np.ndarray) -> np.ndarray | None:
    """If actual = log_softmax(z + c) for one vector c, the log-probabilities under that c."""
    V = actual_logp.shape[-1]
    diff = (actual_logp - expected_logp).reshape(-1, V)
    if diff.shape[0] < 2:  # one row: any change is "a bias"
        return None
    centred = diff - diff.mean(axis=-1, keepdims=True)
    c = centred.mean(axis=0)
    return S.log_softmax(expected_logp + c)


def identify(
    params: Mapping[str, np.ndarray],
    config: GPT2Config,
    tokens: np.ndarray,
    actual_logp: np.ndarray,
    tol: Any,
    *,
    requirement: str | None = None,
    first_other: bool = False,
) -> Diagnosis:
    """Compare an implementation's log-probabilities ``[B, T, V]`` with the known variants.

    ``params`` are the canonical float64 weights the implementation was given. Also tests whether
    the difference is a bias vector added to every row's logits (fitted from the rows). The
    variants of ``requirement`` are tried first; with ``first_other``, when none of them matches,
    the search stops at the first match of another requirement (enough to attribute the mismatch,
    and cheaper than trying every variant).
    """
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    expected = S.log_softmax(S.gpt2_logits(p, tokens, config.n_head, eps=config.layer_norm_epsilon))
    base = max(_excess(actual_logp, expected, tol), 1e-300)
    own = [v for v in VARIANTS if v.requirement == requirement]
    others = [v for v in VARIANTS if v.requirement != requirement]
    scored: list[tuple[float, Variant]] = []

    def evaluate(variants: list[Variant]) -> bool:  # True once a variant matched
        matched = False
        for variant in variants:
            try:
                logits = variant.logits(p, config, tokens)
            except (IndexError, ValueError):  # a variant undefined for this input
                continue
            if logits is None:
                continue
            scored.append((_excess(actual_logp, S.log_softmax(logits), tol), variant))
            matched = matched or scored[-1][0] <= 0
            if matched and first_other and variant.requirement != requirement:
                return True
        return matched

    if not evaluate(own):
        fitted = _bias_fit(actual_logp, expected)
        if fitted is not None:
            scored.append((_excess(actual_logp, fitted, tol), HEAD_BIAS))
        if not (first_other and scored and scored[-1][0] <= 0):
            evaluate(others)
    scored.sort(key=lambda item: item[0])
    matches = tuple(variant for excess, variant in scored if excess <= 0)
    closest = (scored[0][1], scored[0][0] / base) if scored else None
    return Diagnosis(matches, closest)


def judge_log_probs(
    requirement: str,
    params: Mapping[str, np.ndarray],
    config: GPT2Config,
    tokens: np.ndarray,
    logits: np.ndarray,
    tol: Any,
    *,
    attribute: bool = True,
    what: str = "the log-probabilities",
) -> None:
    """An implementation's logits ``[B, T, V]`` agree with the oracle's at the distribution level.

    On a mismatch the failure names the known deviation the implementation matches. With
    ``attribute``, a mismatch that a deviation of *another* requirement explains completely
    passes: the implementation then computes the spec's forward except for that other detail,
    so this requirement's detail is verified (the other requirement's property reports it).
    """
    expected = checks.log_probs(oracle.forward(params, config, tokens).logits)
    actual = checks.log_probs(logits)
    if actual.shape != expected.shape:
        checks.fail(requirement, f"{what} have shape {actual.shape}, expected {expected.shape}")
    where = checks.row_disagreement(
        actual,
        expected,
        tol,
        lambda i, e, t: f"row {list(i)} differs from the oracle's by {e:.2e} (tolerance {t:.1e})",
    )
    if where is None:
        return
    diagnosis = identify(
        params, config, tokens, actual, tol, requirement=requirement, first_other=attribute
    )
    own = [v.name for v in diagnosis.matches if v.requirement == requirement]
    if own:
        names = " or ".join(own[:3])
        checks.fail(requirement, f"{what} match {names}, not the spec's forward: {where}")
    if attribute and diagnosis.matches:
        return
    unexplained(requirement, f"{what} disagree with the oracle: {where}", diagnosis)


#: The requirement a disagreement with the oracle violates when nothing more specific explains it.
LOG_PROBS = "numerics.log-probs-match-oracle"


def unexplained(requirement: str, message: str, diagnosis: Diagnosis) -> NoReturn:
    """Fail on log-probabilities that disagree with the oracle where no known deviation of
    ``requirement`` explains them: what was observed is a violation of
    ``numerics.log-probs-match-oracle`` (spec/diagnosis.md), seen while checking ``requirement``;
    the diagnosis' sentence is a hint the report withdraws if it names a requirement that
    passes."""
    if requirement != LOG_PROBS:
        message = f"{message} (seen while checking {requirement})"
    checks.fail(
        LOG_PROBS,
        message,
        hint=diagnosis.describe(),
        hint_requirements=diagnosis.named(),
        hint_matched=bool(diagnosis.matches),
    )
