"""Tests of the NumPy oracle (gpt2_reference.oracle).

The forward is the spec's composition, so it is checked for being exactly that. The backward is
written by hand, so it is checked three independent ways: central finite differences of the spec's
loss along random directions over all parameters jointly, the tied-gradient split checked on an
untied copy of the model, and transformers' GPT2LMHeadModel autograd in float64.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_conformance.adapters.transformers_gpt2 import TransformersEagerAdapter
from gpt2_reference import oracle
from gpt2_spec import GPT2Config, InvalidInputError, spec_definitions

S = spec_definitions()
WTE = "transformer.wte.weight"
WPE = "transformer.wpe.weight"

SMALL = GPT2Config(vocab_size=53, n_positions=16, n_embd=24, n_layer=2, n_head=3)

# Relative error allowed between the finite-difference and the analytic directional derivative.
# Measured (Richardson-extrapolated central differences at eps=2e-4, float64): in the six cases of
# the test below, worst of 4 directions 3.6e-10 at init scale and 2.5e-9 at scale 0.5; over 36 more
# directions per scale, 2.8e-9 (init), 6e-10 (0.5), 1.5e-9 (1.0). The plain central difference at
# eps=1e-5 measured up to 3.2e-8. Wrong derivatives tried (GELU, LayerNorm, softmax, attention
# scale, residual, wpe positions) gave relative errors from 2.6e-4 to 17.
FD_EPS = 2e-4
FD_RTOL = 1e-7


def _tokens(config: GPT2Config, batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length))


def _flat(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([params[name].ravel() for name in sorted(params)])


def _unit_direction(params: dict[str, np.ndarray], rng: np.random.Generator) -> oracle.Params:
    """A random direction over all parameters jointly, of unit norm."""
    v = {name: rng.standard_normal(a.shape) for name, a in params.items()}
    norm = np.linalg.norm(_flat(v))
    return {name: a / norm for name, a in v.items()}


def _directional_fd(loss_at, eps: float = FD_EPS) -> float:
    """d/dt loss_at(t) at t=0 by central differences at eps and 2 eps, Richardson-extrapolated.

    (4 D(eps) - D(2 eps)) / 3 cancels the eps² term of the central difference D, so a larger eps
    (less cancellation in float64) can be used: error O(eps⁴) + O(1e-16 / eps).
    """
    d1 = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    d2 = (loss_at(2 * eps) - loss_at(-2 * eps)) / (4 * eps)
    return (4 * d1 - d2) / 3


def _shifted_targets_with_ignores(tokens: np.ndarray) -> np.ndarray:
    targets = S.shift_labels(tokens)
    targets[0, 1] = oracle.IGNORE_INDEX
    targets[-1, tokens.shape[1] // 2] = oracle.IGNORE_INDEX
    return targets


# ---------------------------------------------------------------------------------------------
# Forward


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([None, 0.3, 1.0]),
    batch=st.integers(1, 3),
    length=st.integers(1, 16),
    n_layer=st.integers(1, 3),
)
def test_forward_is_the_spec_composition(seed, scale, batch, length, n_layer):
    config = GPT2Config(vocab_size=41, n_positions=16, n_embd=16, n_layer=n_layer, n_head=2)
    params = oracle.random_params(config, seed=seed, scale=scale)
    tokens = _tokens(config, batch, length, seed)
    out = oracle.forward(params, config, tokens)
    assert out.logits.shape == (batch, length, config.vocab_size)
    assert out.hidden.shape == (batch, length, config.n_embd)
    assert out.logits.dtype == out.hidden.dtype == np.float64
    np.testing.assert_array_equal(out.logits, S.gpt2_logits(params, tokens, config.n_head))
    np.testing.assert_array_equal(out.hidden, S.gpt2_hidden(params, tokens, config.n_head))
    # head.linear-no-bias with head.tied-to-embedding: logits = hidden · wteᵀ.
    np.testing.assert_array_equal(out.logits, out.hidden @ params[WTE].T)


def test_forward_passes_mask_and_positions_to_the_spec():
    params = oracle.random_params(SMALL, seed=1, scale=0.5)
    tokens = _tokens(SMALL, 3, 9, seed=2)
    mask = np.ones_like(tokens)
    mask[1, :3] = 0
    mask[2, :6] = 0
    positions = S.position_ids_from_mask(mask)
    out = oracle.forward(params, SMALL, tokens, attention_mask=mask, position_ids=positions)
    expected = S.gpt2_logits(params, tokens, SMALL.n_head, positions, mask)
    np.testing.assert_array_equal(out.logits, expected)
    default = oracle.forward(params, SMALL, tokens).logits
    assert not np.allclose(out.logits, default)
    # [T] positions broadcast over the batch, like the default 0..T-1.
    same = oracle.forward(params, SMALL, tokens, position_ids=np.arange(tokens.shape[1])).logits
    np.testing.assert_array_equal(same, default)


def test_forward_computes_in_float64_from_float32_params():
    params = oracle.random_params(SMALL, seed=0, scale=0.5)
    tokens = _tokens(SMALL, 2, 5, seed=0)
    as_float32 = {name: a.astype(np.float32) for name, a in params.items()}
    out = oracle.forward(as_float32, SMALL, tokens)
    assert out.logits.dtype == np.float64
    widened = {name: a.astype(np.float64) for name, a in as_float32.items()}
    np.testing.assert_array_equal(out.logits, S.gpt2_logits(widened, tokens, SMALL.n_head))


def test_layer_norm_epsilon_of_the_config_is_used():
    config = dataclasses.replace(SMALL, layer_norm_epsilon=1e-1)
    params = oracle.random_params(config, seed=0, scale=0.5)
    tokens = _tokens(config, 2, 5, seed=0)
    logits = oracle.forward(params, config, tokens).logits
    np.testing.assert_array_equal(logits, S.gpt2_logits(params, tokens, 3, eps=1e-1))
    assert not np.allclose(logits, S.gpt2_logits(params, tokens, 3))


# ---------------------------------------------------------------------------------------------
# Loss


def test_loss_label_conventions_agree_with_the_spec():
    params = oracle.random_params(SMALL, seed=4, scale=0.5)
    tokens = _tokens(SMALL, 3, 10, seed=4)
    logits = S.gpt2_logits(params, tokens, SMALL.n_head)
    targets = _shifted_targets_with_ignores(tokens)
    for reduction in ("mean", "sum"):
        from_labels = oracle.loss(params, SMALL, tokens, labels=tokens, reduction=reduction)
        expected = S.causal_lm_loss(logits, S.shift_labels(tokens), reduction)
        assert from_labels == expected
        from_targets = oracle.loss(params, SMALL, tokens, targets=targets, reduction=reduction)
        assert from_targets == S.causal_lm_loss(logits, targets, reduction)
    # objective.no-double-shift: labels=tokens is not targets=tokens.
    shifted_twice = oracle.loss(params, SMALL, tokens, targets=tokens)
    assert shifted_twice != oracle.loss(params, SMALL, tokens, labels=tokens)


def test_ignore_index_argument_is_honoured():
    params = oracle.random_params(SMALL, seed=5, scale=0.5)
    tokens = _tokens(SMALL, 2, 8, seed=5)
    targets = S.shift_labels(tokens, ignore_index=-1)
    targets[0, 0] = -1
    value = oracle.loss(params, SMALL, tokens, targets=targets, ignore_index=-1)
    logits = S.gpt2_logits(params, tokens, SMALL.n_head)
    assert value == S.causal_lm_loss(logits, targets, "mean", -1)
    assert oracle.IGNORE_INDEX == S.IGNORE_INDEX == -100


def test_mean_without_counted_targets_is_nan():
    params = oracle.random_params(SMALL, seed=0)
    tokens = _tokens(SMALL, 2, 4, seed=0)
    none_counted = np.full_like(tokens, oracle.IGNORE_INDEX)
    assert math.isnan(oracle.loss(params, SMALL, tokens, targets=none_counted))
    assert oracle.loss(params, SMALL, tokens, targets=none_counted, reduction="sum") == 0.0
    result = oracle.gradients(params, SMALL, tokens, targets=none_counted, reduction="sum")
    assert all(not g.any() for g in result.grads.values())


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"labels": np.zeros((2, 4), int), "targets": np.zeros((2, 4), int)}],
    ids=["neither", "both"],
)
def test_exactly_one_of_labels_and_targets(kwargs):
    params = oracle.random_params(SMALL, seed=0)
    tokens = _tokens(SMALL, 2, 4, seed=0)
    for function in (oracle.loss, oracle.gradients):
        with pytest.raises(ValueError, match="exactly one of labels"):
            function(params, SMALL, tokens, **kwargs)


def test_unknown_reduction_is_refused():
    params = oracle.random_params(SMALL, seed=0)
    tokens = _tokens(SMALL, 2, 4, seed=0)
    with pytest.raises(ValueError, match="reduction"):
        oracle.loss(params, SMALL, tokens, labels=tokens, reduction="avg")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Gradients


def test_gradients_recompute_exactly_the_spec_forward():
    params = oracle.random_params(SMALL, seed=6, scale=1.0)
    tokens = _tokens(SMALL, 3, 12, seed=6)
    mask = np.ones_like(tokens)
    mask[0, :4] = 0
    positions = S.position_ids_from_mask(mask)
    for extra in (
        {},
        {"attention_mask": mask},
        {"attention_mask": mask, "position_ids": positions},
    ):
        result = oracle.gradients(params, SMALL, tokens, labels=tokens, **extra)
        np.testing.assert_array_equal(
            result.logits, oracle.forward(params, SMALL, tokens, **extra).logits
        )
        assert result.loss == oracle.loss(params, SMALL, tokens, labels=tokens, **extra)
        assert list(result.grads) == list(params)
        for name, grad in result.grads.items():
            assert grad.shape == params[name].shape, name
            assert grad.dtype == np.float64, name


FD_CASES = {
    "init-mean-ignored": (None, "mean", "targets"),
    "init-sum-ignored": (None, "sum", "targets"),
    "large-mean-ignored": (0.5, "mean", "targets"),
    "large-sum-ignored": (0.5, "sum", "targets"),
    "large-mean-labels": (0.5, "mean", "labels"),
    "large-sum-left-padded": (0.5, "sum", "padded"),
}


@pytest.mark.parametrize(("scale", "reduction", "inputs"), FD_CASES.values(), ids=FD_CASES.keys())
def test_gradient_matches_finite_differences_along_random_directions(scale, reduction, inputs):
    params = oracle.random_params(SMALL, seed=11, scale=scale)
    tokens = _tokens(SMALL, 3, 11, seed=12)
    kwargs: dict = {"reduction": reduction}
    if inputs == "labels":
        kwargs["labels"] = tokens
    else:
        kwargs["targets"] = _shifted_targets_with_ignores(tokens)
    if inputs == "padded":  # left padding: mask-derived positions, padding rows not scored
        mask = np.ones_like(tokens)
        mask[1, :3] = 0
        mask[2, :7] = 0
        kwargs["attention_mask"] = mask
        kwargs["position_ids"] = S.position_ids_from_mask(mask)
        kwargs["targets"] = np.where(mask == 1, kwargs["targets"], oracle.IGNORE_INDEX)
    grad = oracle.gradients(params, SMALL, tokens, **kwargs).grads
    rng = np.random.default_rng(13)
    errors = []
    for _ in range(4):
        v = _unit_direction(params, rng)
        analytic = float(_flat(grad) @ _flat(v))
        numeric = _directional_fd(
            lambda t, v=v: oracle.loss(
                {name: params[name] + t * v[name] for name in params}, SMALL, tokens, **kwargs
            )
        )
        errors.append(abs(numeric - analytic) / abs(analytic))
    assert max(errors) < FD_RTOL, errors


def test_single_coordinates_of_wte_and_wpe_match_finite_differences():
    params = oracle.random_params(SMALL, seed=21, scale=0.5)
    tokens = _tokens(SMALL, 2, 9, seed=22)
    absent = int(np.setdiff1d(np.arange(SMALL.vocab_size), tokens)[0])
    targets = _shifted_targets_with_ignores(tokens)
    grads = oracle.gradients(params, SMALL, tokens, targets=targets, reduction="sum").grads

    def fd(name: str, index: tuple[int, int]) -> float:
        def loss_at(t: float) -> float:
            moved = dict(params)
            moved[name] = params[name].copy()
            moved[name][index] += t
            return oracle.loss(moved, SMALL, tokens, targets=targets, reduction="sum")

        return _directional_fd(loss_at)

    # A token read by the lookup (both contributions), a token only scored by the head, a used
    # position; the channel index varies.
    for name, index in [(WTE, (int(tokens[0, 3]), 5)), (WTE, (absent, 0)), (WPE, (4, 17))]:
        analytic = grads[name][index]
        assert abs(fd(name, index) - analytic) < FD_RTOL * abs(analytic), (name, index)
    # A position past T is never read: its gradient is exactly zero, and so is the loss change.
    unused = (tokens.shape[1] + 2, 3)
    assert not grads[WPE][tokens.shape[1] :].any()
    assert fd(WPE, unused) == 0.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([None, 0.5]), length=st.integers(2, 12))
def test_tied_gradient_is_lookup_plus_head(seed, scale, length):
    params = oracle.random_params(SMALL, seed=seed, scale=scale)
    tokens = _tokens(SMALL, 2, length, seed)
    targets = _shifted_targets_with_ignores(tokens)
    result = oracle.gradients(params, SMALL, tokens, targets=targets)
    np.testing.assert_array_equal(result.grads[WTE], result.wte_from_lookup + result.wte_from_head)
    hidden = oracle.forward(params, SMALL, tokens).hidden
    d_logits = S.logits_gradient(result.logits, targets)
    np.testing.assert_allclose(
        result.wte_from_head, np.einsum("btv,btd->vd", d_logits, hidden), rtol=1e-12, atol=1e-15
    )
    # Rows of tokens never read by the lookup get nothing from it.
    unread = np.setdiff1d(np.arange(SMALL.vocab_size), tokens)
    assert not result.wte_from_lookup[unread].any()


def test_tied_gradient_split_matches_an_untied_copy():
    """Each contribution is the gradient of its own copy when lookup and head are untied."""
    params = oracle.random_params(SMALL, seed=31, scale=0.5)
    tokens = _tokens(SMALL, 2, 10, seed=32)
    targets = _shifted_targets_with_ignores(tokens)
    result = oracle.gradients(params, SMALL, tokens, targets=targets, reduction="sum")

    def untied_loss(lookup: np.ndarray, head: np.ndarray) -> float:
        hidden = S.gpt2_hidden({**params, WTE: lookup}, tokens, SMALL.n_head)
        return float(S.causal_lm_loss(S.lm_head(hidden, {WTE: head}), targets, "sum"))

    rng = np.random.default_rng(33)
    wte = params[WTE]
    for part, which in ((result.wte_from_lookup, "lookup"), (result.wte_from_head, "head")):
        v = rng.standard_normal(wte.shape)
        v /= np.linalg.norm(v)
        numeric = _directional_fd(
            lambda t, v=v, which=which: untied_loss(
                wte + t * v if which == "lookup" else wte, wte + t * v if which == "head" else wte
            )
        )
        analytic = float(np.sum(part * v))
        assert abs(numeric - analytic) < FD_RTOL * abs(analytic), which


# ---------------------------------------------------------------------------------------------
# random_params


def test_random_params_is_deterministic_and_canonical():
    for scale in (None, 0.5):
        first = oracle.random_params(SMALL, seed=7, scale=scale)
        again = oracle.random_params(SMALL, seed=7, scale=scale)
        other = oracle.random_params(SMALL, seed=8, scale=scale)
        expected = S.canonical_shapes(
            SMALL.vocab_size, SMALL.n_positions, SMALL.n_embd, SMALL.n_layer
        )
        assert list(first) == list(expected)
        assert {name: a.shape for name, a in first.items()} == expected
        assert all(a.dtype == np.float64 for a in first.values())
        oracle.check_params(first, SMALL)
        for name in first:
            np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[WTE], other[WTE])


def _assert_normal(values: np.ndarray, mean: float, std: float, what: str) -> None:
    """Sample mean and std of n draws agree with N(mean, std²) within 6 standard errors.

    For n normal draws the sample mean has standard error std/sqrt(n) and the sample std has
    relative standard error about 1/sqrt(2n); 6 of them is exceeded with probability ~2e-9 for a
    correct sampler, while a wrong std (say 0.02 vs 0.01, or 0.02 vs 0.0125) is off by > 25%.
    """
    n = values.size
    assert abs(values.mean() - mean) < 6 * std / math.sqrt(n), what
    assert abs(values.std() / std - 1) < 6 / math.sqrt(2 * n), what


def test_random_params_follows_gpt2_initialisation():
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=4, n_head=4)
    params = oracle.random_params(config, seed=0)

    def pooled(suffix: str) -> np.ndarray:
        return np.concatenate([a.ravel() for name, a in params.items() if name.endswith(suffix)])

    _assert_normal(params[WTE], 0.0, 0.02, "wte")
    _assert_normal(params[WPE], 0.0, 0.01, "wpe (OpenAI)")
    _assert_normal(pooled("attn.c_attn.weight"), 0.0, 0.02, "c_attn")
    _assert_normal(pooled("mlp.c_fc.weight"), 0.0, 0.02, "c_fc")
    residual = 0.02 / math.sqrt(2 * config.n_layer)
    _assert_normal(pooled("attn.c_proj.weight"), 0.0, residual, "attn.c_proj")
    _assert_normal(pooled("mlp.c_proj.weight"), 0.0, residual, "mlp.c_proj")
    for name, a in params.items():
        if ".ln_" in name and name.endswith(".weight"):
            assert (a == 1).all(), name
        elif name.endswith(".bias"):
            assert not a.any(), name


def test_random_params_scale_sets_every_spread():
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=4, n_head=4)
    for scale in (0.05, 0.5, 2.0):
        params = oracle.random_params(config, seed=1, scale=scale)
        gains = [a for name, a in params.items() if ".ln_" in name and name.endswith("weight")]
        others = [a for name, a in params.items() if not (".ln_" in name and "weight" in name)]
        _assert_normal(np.concatenate([a.ravel() for a in gains]), 1.0, scale, "LN gains")
        _assert_normal(np.concatenate([a.ravel() for a in others]), 0.0, scale, "the rest")
        for name, a in params.items():  # biases too: none is left at its init value
            assert a.std() > scale / 4, name


#: (config, seed, scale) -> sha256 of the arrays random_params returns (kept in PINS). Derived
#: once, on 2026-12-03, from the oracle as it was before random_params read the spec's
#: init_mean/init_std (commit 3fe1a43, which wrote 0.02, 0.01 and 0.02/sqrt(2L) out itself),
#: with _params_digest below: the move to the spec's definitions changed no bit of any array, and
#: any later change of the draws (order, distribution, constants) shows here.
PINS = Path(__file__).parent / "data" / "pinned-random-params.json"
PINNED_PARAMS = {
    (tuple(row["config"]), row["seed"], row["scale"]): row["sha256"]
    for row in json.loads(PINS.read_text(encoding="utf-8"))["pinned"]
}


def _params_digest(params: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes, in the order returned."""
    digest = hashlib.sha256()
    for name, a in params.items():
        digest.update(name.encode())
        digest.update(str(a.dtype).encode())
        digest.update(repr(a.shape).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize(("key", "expected"), PINNED_PARAMS.items(), ids=str)
def test_random_params_are_bit_identical_to_the_pinned_ones(
    key: tuple[tuple[int, ...], int, float | None], expected: str
) -> None:
    (vocab, positions, embd, layers, heads), seed, scale = key
    config = GPT2Config(
        vocab_size=vocab, n_positions=positions, n_embd=embd, n_layer=layers, n_head=heads
    )
    assert _params_digest(oracle.random_params(config, seed=seed, scale=scale)) == expected


def test_random_params_take_the_init_scheme_from_the_spec() -> None:
    """Every parameter's sample mean and std is the spec's init_mean/init_std (a std of 0: the
    constant mean exactly), so the oracle cannot drift from chapter 6's definitions."""
    config = GPT2Config(vocab_size=211, n_positions=128, n_embd=32, n_layer=3, n_head=4)
    params = oracle.random_params(config, seed=2)
    for name, a in params.items():
        mean, std = S.init_mean(name), S.init_std(name, config.n_layer)
        if std == 0:
            assert (a == mean).all(), name
        elif a.size >= 1000:  # enough draws for _assert_normal's 6 standard errors to be tight
            _assert_normal(a, mean, std, name)


def test_random_params_refuses_a_bad_scale():
    for scale in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            oracle.random_params(SMALL, seed=0, scale=scale)


# ---------------------------------------------------------------------------------------------
# Refusals


BAD_TOKENS = {
    "float-dtype": np.zeros((2, 4), dtype=np.float64),
    "negative": np.array([[0, 1, -1, 2]]),
    "id-equal-to-V": np.array([[0, 1, SMALL.vocab_size, 2]]),
    "longer-than-context": np.zeros((1, SMALL.n_positions + 1), dtype=np.int64),
    "empty-batch": np.zeros((0, 4), dtype=np.int64),
    "empty-sequence": np.zeros((2, 0), dtype=np.int64),
}


@pytest.mark.parametrize("tokens", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_are_refused(tokens):
    params = oracle.random_params(SMALL, seed=0)
    with pytest.raises(InvalidInputError):
        oracle.forward(params, SMALL, tokens)
    with pytest.raises(InvalidInputError):
        oracle.gradients(params, SMALL, tokens, targets=np.zeros(tokens.shape, dtype=np.int64))


def test_ragged_tokens_and_labels_are_refused():
    params = oracle.random_params(SMALL, seed=0)
    with pytest.raises(InvalidInputError):
        oracle.forward(params, SMALL, [[1, 2, 3], [4, 5]])
    with pytest.raises(InvalidInputError):
        oracle.loss(params, SMALL, [[1, 2], [4, 5]], labels=[[1, 2], [4]])


BAD_LABELS = {
    "wrong-shape": np.zeros((2, 5), dtype=np.int64),
    "id-equal-to-V": np.full((2, 4), SMALL.vocab_size),
    "negative-not-ignore": np.full((2, 4), -1),
}


@pytest.mark.parametrize("labels", BAD_LABELS.values(), ids=BAD_LABELS.keys())
def test_bad_labels_are_refused(labels):
    params = oracle.random_params(SMALL, seed=0)
    tokens = _tokens(SMALL, 2, 4, seed=0)
    for key in ("labels", "targets"):
        with pytest.raises(InvalidInputError):
            oracle.loss(params, SMALL, tokens, **{key: labels})
        with pytest.raises(InvalidInputError):
            oracle.gradients(params, SMALL, tokens, **{key: labels})


def test_bad_mask_and_positions_are_refused():
    params = oracle.random_params(SMALL, seed=0)
    tokens = _tokens(SMALL, 2, 4, seed=0)
    bad = [
        {"attention_mask": np.ones((2, 5), dtype=np.int64)},
        {"attention_mask": np.full((2, 4), 2)},
        {"position_ids": np.full((2, 4), SMALL.n_positions)},
        {"position_ids": np.full((2, 4), -1)},
        {"position_ids": np.zeros((2, 4))},
        {"position_ids": np.zeros((3, 4), dtype=np.int64)},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidInputError):
            oracle.forward(params, SMALL, tokens, **kwargs)


def test_bad_params_are_refused_naming_the_key():
    good = oracle.random_params(SMALL, seed=0)
    name = "transformer.h.1.mlp.c_fc.weight"
    missing = {k: a for k, a in good.items() if k != name}
    wrong_shape = {**good, name: good[name][:, :-1]}
    transposed = {**good, name: good[name].T}
    integer = {**good, name: good[name].astype(np.int64)}
    with_head = {**good, "lm_head.weight": good[WTE]}
    extra = {**good, "transformer.h.2.ln_1.weight": np.ones(SMALL.n_embd)}
    cases = [
        (missing, name),
        (wrong_shape, name),
        (transposed, "transposed"),
        (integer, name),
        (with_head, "lm_head.weight"),
        (extra, "transformer.h.2.ln_1.weight"),
    ]
    for params, expected in cases:
        with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
            oracle.check_params(params, SMALL)
        with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
            oracle.forward(params, SMALL, _tokens(SMALL, 1, 3, seed=0))
    oracle.check_params(good, SMALL)


# ---------------------------------------------------------------------------------------------
# Agreement with transformers' GPT2LMHeadModel (float64 autograd)


def _transformers_gradients(params, config, tokens, labels, reduction, mask=None, positions=None):
    """Loss and per-parameter gradients of a float64 GPT2LMHeadModel holding ``params``.

    The loss is formed here in float64 from the model's logits: transformers' own loss upcasts
    logits with ``.float()``, which would round a float64 model's logits to float32.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # The adapter's own transformers config: no dropout, eager attention.
    hf_config = TransformersEagerAdapter().hf_config(config)
    model = transformers.GPT2LMHeadModel(hf_config).double().eval()
    state = {name: torch.from_numpy(a.copy()) for name, a in params.items()}
    state["lm_head.weight"] = state[WTE]
    model.load_state_dict(state, strict=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    kwargs = {}
    if mask is not None:
        kwargs = {
            "attention_mask": torch.from_numpy(mask),
            "position_ids": torch.from_numpy(positions),
        }
    logits = model(torch.from_numpy(tokens), **kwargs).logits
    shifted = torch.from_numpy(S.shift_labels(labels))
    value = torch.nn.functional.cross_entropy(
        logits.reshape(-1, config.vocab_size), shifted.reshape(-1), reduction=reduction
    )
    value.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    return value.item(), grads


HF_CASES = {
    "init-mean": (None, "mean", False),
    "large-mean": (0.5, "mean", False),
    "large-sum-left-padded": (0.5, "sum", True),
}


@pytest.mark.parametrize(("scale", "reduction", "padded"), HF_CASES.values(), ids=HF_CASES.keys())
def test_gradients_agree_with_transformers(scale, reduction, padded):
    config = GPT2Config(vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    params = oracle.random_params(config, seed=41, scale=scale)
    tokens = _tokens(config, 3, 12, seed=42)
    labels = tokens.copy()
    labels[0, 5] = oracle.IGNORE_INDEX
    mask = positions = None
    if padded:
        mask = np.ones_like(tokens)
        mask[1, :4] = 0
        positions = S.position_ids_from_mask(mask)
        # Score real rows only: row i is scored against label i+1, so a label whose previous
        # position is padding is ignored (padding rows are the spec's business, not transformers').
        labels[1, : 4 + 1] = oracle.IGNORE_INDEX
    hf_loss, hf_grads = _transformers_gradients(
        params, config, tokens, labels, reduction, mask, positions
    )
    result = oracle.gradients(
        params,
        config,
        tokens,
        labels=labels,
        reduction=reduction,
        attention_mask=mask,
        position_ids=positions,
    )
    assert set(hf_grads) == set(result.grads)  # lm_head.weight is wte: one parameter
    assert abs(result.loss - hf_loss) <= 1e-12 * abs(hf_loss)
    # Both sides are float64. Measured max |difference| / max |gradient| over the parameters:
    # 1.1e-15 (init-mean), 1.2e-14 (large-mean), 1.3e-14 (large-sum-left-padded).
    for name, grad in result.grads.items():
        scale_of = max(np.abs(grad).max(), 1e-300)
        assert np.abs(grad - hf_grads[name]).max() <= 1e-12 * scale_of, name
