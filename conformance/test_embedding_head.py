"""Chapter 5, the embedding and head matrices: shapes, the input of block 0, the head as a
matrix product without bias, and weight tying judged by behaviour.

Tying is never judged from equal values (spec head.untied-is-declared): every tie property
changes wte (set_params, an optimiser step, a save and load, a resize, a move) and checks that the
head changed with it, in the logits, against the oracle. When the head did not follow, the
failure says so ("the logits match a head still holding the previous wte: a copy, untied").
Each family is judged through its own observable: a gradient of wte is compared at the
implementation's own loss scale (a loss normalised differently is the objective's failure, not
the tie's), and a moved copy must first own its weights (a copy that still computes with the
original's modules is named as such). head.no-bias-after-training reads the raw logits again
after one SGD step, where a bias that started at zero has moved.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from gpt2_conformance import checks, diagnose, strategies, tied
from gpt2_conformance.adapter import Implementation, Params, to_numpy
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_conformance.timing import oracle
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
WTE = "transformer.wte.weight"
WPE = "transformer.wpe.weight"
HEAD = "lm_head.weight"


# ------------------------------------------------------------------------------------------
# Helpers


def _canonical(named: Mapping[str, Any], config: GPT2Config, rid: str) -> Params:
    """get_params() as float64 canonical params (lm_head.weight dropped), shapes checked."""
    shapes = S.canonical_shapes(
        config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    )
    out: Params = {}
    for name, shape in shapes.items():
        if name not in named:
            checks.fail(rid, f"get_params() has no {name}")
        out[name] = checks.array(rid, named[name], what=name, shape=tuple(shape))
    return out


def _tied_model(
    suite: Suite, data: st.DataObject, rid: str, *, gradients: bool = False
) -> tuple[strategies.Draw, Implementation, Params | None]:
    """A head.tied-* property's model: the adapter must declare a tied head; then a model is
    drawn (among those gradients are promised on, with ``gradients``) and built. Returns the
    draw, the implementation and the canonical weights it was built from."""
    tied.declared_tied(suite, rid)
    models = strategies.gradient_models(suite) if gradients else strategies.models(suite)
    draw = data.draw(models, label="model")
    impl, params = strategies.build(suite, draw, rid)
    return draw, impl, params


def _read_params(impl: Implementation, config: GPT2Config, rid: str) -> Params:
    return _canonical(checks.call(rid, "reading get_params()", impl.get_params), config, rid)


def _new_wte(config: GPT2Config, scale: float | None, seed: int) -> np.ndarray:
    """A fresh token embedding at the draw's weight scale (GPT-2's 0.02 at init scale)."""
    std = 0.02 if scale is None else scale
    rng = np.random.default_rng([seed, 5])
    return rng.normal(0.0, std, (config.vocab_size, config.n_embd))


def _logp(logits: np.ndarray) -> np.ndarray:
    return checks.log_probs(logits)


def _follows_wte(
    rid: str,
    impl: Implementation,
    config: GPT2Config,
    tokens: np.ndarray,
    params: Params,
    previous_wte: np.ndarray | None,
    tol: Any,
    *,
    after: str,
) -> None:
    """The logits are those of ``params`` with the head = ``params[wte]`` (the one tensor).

    ``previous_wte`` is wte's value before the change under test; a head that kept it is named
    in the failure as an untied copy.
    """
    logits = checks.logits_of(rid, impl, tokens, vocab_size=config.vocab_size)
    actual = _logp(logits)
    out = oracle.forward(params, config, tokens)
    expected = _logp(out.logits)
    where = checks.row_disagreement(
        actual,
        expected,
        tol,
        lambda i, e, t: (
            f"row {list(i)} of the log-probabilities differs from the oracle's (head = the "
            f"current wte) by {e:.2e} (tolerance {t:.1e})"
        ),
    )
    if where is None:
        return
    if previous_wte is not None and previous_wte.shape == params[WTE].shape:
        stale_head = _logp(out.hidden @ previous_wte.T)
        if checks.matches(actual, stale_head, tol):
            checks.fail(
                rid,
                f"{after}, the head did not follow wte: the logits match a head that still holds "
                f"the previous wte, so the head is a copy of the embedding, not the embedding "
                f"itself (untied); {where}",
            )
        stale_lookup = dict(params)
        stale_lookup[WTE] = previous_wte
        mixed = oracle.forward(stale_lookup, config, tokens).hidden @ params[WTE].T
        if checks.matches(actual, _logp(mixed), tol):
            checks.fail(
                rid,
                f"{after}, the head uses the new wte but the input lookup still reads the "
                f"previous one: two tensors (untied); {where}",
            )
    diagnosis = diagnose.identify(params, config, tokens, actual, tol, first_other=True)
    if any(not v.requirement.startswith("head.tied") for v in diagnosis.matches):
        return  # the spec's forward with the new wte, but for a deviation judged elsewhere
    if diagnosis.matches:  # a known deviation of the head's tying
        checks.fail(rid, f"{after}, {where}; {diagnosis.describe()}")
    diagnose.unexplained(rid, f"{after}, {where}", diagnosis)


def _set_wte_and_follow(
    rid: str,
    impl: Implementation,
    config: GPT2Config,
    tokens: np.ndarray,
    params: Params,
    new: np.ndarray,
    tol: Any,
    *,
    setting: str,
    after: str,
) -> None:
    """Set wte to ``new`` with set_params() (``setting`` names the call); the logits then follow
    it: they are those of ``params`` with wte = ``new`` (:func:`_follows_wte`, which names a head
    still holding ``params``' wte)."""
    checks.call(rid, setting, impl.set_params, {WTE: new})
    _follows_wte(rid, impl, config, tokens, {**params, WTE: new}, params[WTE], tol, after=after)


def _head_is_wte(
    rid: str, impl: Implementation, config: GPT2Config, wte: np.ndarray, tol: Any, *, after: str
) -> None:
    """head_weight() (or get_params' lm_head.weight) holds the values of wte."""
    head = checks.head_matrix(rid, impl, shape=(config.vocab_size, config.n_embd), from_params=True)
    checks.rows_agree(
        rid,
        head,
        wte,
        tol,
        describe=lambda i, e, t: (
            f"{after}, the head's weight differs from wte in row {list(i)} by {e:.2e} "
            f"(tolerance {t:.1e}): the head is not the embedding tensor"
        ),
    )


def _targets(convention: str, labels: np.ndarray) -> np.ndarray:
    """The [B, T] targets row i is scored against, in either label convention."""
    shifted: np.ndarray = S.shift_labels(labels) if convention == "inputs" else labels
    return shifted


def _gradient_batch(
    suite: Suite, data: st.DataObject, config: GPT2Config
) -> tuple[str, np.ndarray, np.ndarray]:
    """``(convention, tokens, labels)``: a labelled batch in the adapter's convention with at
    least one counted target, its ids mapped into [0, V - 1) so that wte's last row gets the
    head's contribution alone."""
    convention = checks.label_convention(suite.adapter)
    tokens, labels = data.draw(
        strategies.labelled_batches(config, convention, min_length=4, p_ignore_max=0.3),
        label="tokens and labels",
    )
    keep = config.vocab_size - 1
    labels = np.where(labels == S.IGNORE_INDEX, labels, labels % keep)
    assume(checks.counted_targets(convention, labels) > 0)
    return convention, tokens % keep, labels


class _OwnOutputs:
    """The implementation's own logits and hidden states for a batch (before a change), from
    which the head's contribution to wte's gradient follows without the oracle."""

    def __init__(
        self,
        rid: str,
        suite: Suite,
        impl: Implementation,
        config: GPT2Config,
        tokens: np.ndarray,
        wte: np.ndarray,
    ) -> None:
        self.logits = checks.logits_of(rid, impl, tokens, vocab_size=config.vocab_size)
        self.wte = wte
        self.tol = suite.tolerance("self")
        self.hidden = None
        if suite.claims("hidden-states"):
            self.hidden = checks.hidden_states_of(rid, impl, tokens, n_embd=config.n_embd)

    def head_part(self, targets: np.ndarray, reduction: str = "mean") -> np.ndarray | None:
        """Gᵀ Ĥ [V, d] from the implementation's own outputs; None without hidden states, or
        when the logits are not Ĥ wteᵀ up to a constant per row and a bias per vocabulary entry
        (a scaled head, say: then Gᵀ Ĥ is not the head's contribution, and head.linear-no-bias
        reports the head)."""
        if self.hidden is None:
            return None
        V, d = self.logits.shape[-1], self.hidden.shape[-1]
        rest = (self.logits - self.hidden @ self.wte.T).reshape(-1, V)
        rest = rest - rest.mean(axis=-1, keepdims=True) - rest.mean(axis=0) + rest.mean()
        if np.abs(rest).max() > checks.bound(self.logits, self.tol):
            return None
        G = S.logits_gradient(self.logits, targets, reduction, S.IGNORE_INDEX)
        head: np.ndarray = G.reshape(-1, V).T @ self.hidden.reshape(-1, d)
        return head

    def loss_ratio(self, rid: str, own_loss: Any, targets: np.ndarray) -> float | None:
        """The implementation's own mean loss over the spec's mean loss of its own logits
        (:func:`tied.loss_ratio`)."""
        own = checks.scalar(rid, own_loss, what="the mean loss")
        spec = float(S.causal_lm_loss(self.logits, targets, "mean", S.IGNORE_INDEX))
        return tied.loss_ratio(own, spec)


def _own_mean_loss(
    rid: str, suite: Suite, impl: Implementation, tokens: np.ndarray, labels: np.ndarray
) -> Any:
    """The implementation's mean loss of a batch (None without ``loss`` or ``gradients``)."""
    if suite.claims("loss"):
        return checks.call(rid, "computing the mean loss", impl.loss, tokens, labels)
    if suite.claims("gradients"):
        return checks.call(rid, "computing the mean loss", impl.gradients, tokens, labels)[0]
    return None


def _judge_wte_gradient(
    rid: str,
    actual: np.ndarray,
    expected: Any,
    own: _OwnOutputs,
    targets: np.ndarray,
    tokens: np.ndarray,
    tol: Any,
    *,
    what: str,
    head_entry: np.ndarray | None = None,
    ratio: float | None = None,
) -> None:
    """``actual`` [V, d] is the total of both contributions (``expected``: the oracle's
    gradients, with ``wte_from_lookup`` and ``wte_from_head``).

    Against the oracle first, naming a missing half. The tie is judged by what the gradient is
    made of, not by the loss's denominator: ``ratio`` is the implementation's own loss over the
    spec's (:func:`tied.loss_ratio`), and a total at that scale is both contributions of a loss
    normalised differently (the objective's requirements judge that). When the total differs
    from the oracle's in no recognisable way, the forward itself may deviate (other requirements
    judge that); then the tie is judged where no oracle is needed: a row of wte whose token id is
    absent from the batch receives the head's contribution alone, which follows from the
    implementation's own logits and hidden states. ``head_entry`` is a gradient reported under
    lm_head.weight.
    """
    total = expected.grads[WTE]
    scale, agrees = tied.at_loss_scale(actual, lambda s: s * total, tol, ratio)
    if agrees:
        return
    lookup, head = scale * expected.wte_from_lookup, scale * expected.wte_from_head
    note = ""
    if tied.matches_tensor(actual, lookup, tol):
        note = (
            ": it equals the lookup contribution alone; the head's contribution Gᵀ Ĥ is missing "
            "(a head that reads a detached or separate copy of wte)"
        )
        if head_entry is not None and tied.matches_tensor(head_entry, head, tol):
            note += "; the head's part was reported under lm_head.weight: two tensors (untied)"
    elif tied.matches_tensor(actual, head, tol):
        note = (
            ": it equals the head contribution alone; the lookup's scatter-add at the token ids "
            "is missing"
        )
    elif tied.matches_tensor(actual, 2 * scale * total, tol):
        note = ": it is twice the expected total (the shared tensor counted twice)"
    note += tied.scale_note(scale)
    if note or own.hidden is None:
        checks.tensors_agree(rid, actual, scale * total, tol, what=f"{what} (lookup + head){note};")
    head_part = own.head_part(targets)
    if head_part is None:
        return  # not a plain linear head: head.linear-no-bias judges it, and the forward too
    absent = np.setdiff1d(np.arange(actual.shape[0]), tokens)
    checks.tensors_agree(
        rid,
        actual[absent],
        scale * head_part[absent],
        tol,
        what=f"{what} differs from the oracle's total and, in the rows of the {len(absent)} "
        f"token id(s) absent from the batch (e.g. {int(absent[-1])}), which receive the head's "
        "contribution alone (Gᵀ Ĥ from the implementation's own logits and hidden states), it",
    )
    # The head's part is there: the rest of the difference comes from the forward, which
    # numerics.log-probs-match-oracle and numerics.gradients-match-oracle judge.


# ------------------------------------------------------------------------------------------
# The embeddings


@checks_requirement("embedding.shapes", needs=("params",))
def test_embeddings_have_one_row_per_token_and_per_position(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    impl, _ = strategies.build(suite, draw, requirement)
    named = checks.call(requirement, "reading get_params()", impl.get_params)
    for name, shape, rows in (
        (WTE, (config.vocab_size, config.n_embd), "one row per token id, V = vocab_size"),
        (WPE, (config.n_positions, config.n_embd), "one row per position, n_ctx = n_positions"),
    ):
        if name not in named:
            checks.fail(requirement, f"get_params() has no {name}")
        actual = tuple(to_numpy(named[name]).shape)
        if actual != shape:
            checks.fail(requirement, f"{name} has shape {actual}, expected {shape} ({rows})")


@checks_requirement("embedding.input-sum", needs=("params", "hidden-states"))
def test_block_zero_reads_token_row_plus_position_row(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """With every c_proj weight and bias zero each block adds nothing to the residual stream, so
    the final hidden state is ln_f(wte[x_i] + wpe[i]): the input of block 0, made visible."""
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    base = draw.params or oracle.random_params(config, seed=draw.seed, scale=draw.scale)
    params = {name: np.array(value, dtype=np.float64) for name, value in base.items()}
    for name in params:
        if ".attn.c_proj." in name or ".mlp.c_proj." in name:
            params[name] = np.zeros_like(params[name])
    impl, params_used = suite.build(config, requirement=requirement, params=params, seed=draw.seed)
    assert params_used is not None
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    T = tokens.shape[1]
    hidden = checks.hidden_states_of(requirement, impl, tokens, n_embd=config.n_embd)
    tol = suite.tolerance("oracle")
    expected = oracle.forward(params, config, tokens).hidden
    if checks.agree(hidden, expected, tol):
        return
    wte, wpe = params[WTE], params[WPE]
    g, b = params["transformer.ln_f.weight"], params["transformer.ln_f.bias"]
    eps = config.layer_norm_epsilon
    positions = np.arange(T)
    candidates = {
        "positions counted from 1 (the first token got wpe row 1)": (
            wte[tokens] + wpe[np.minimum(positions + 1, config.n_positions - 1)]
            if config.n_positions > T
            else None
        ),
        "a token embedding multiplied by sqrt(d)": np.sqrt(config.n_embd) * wte[tokens]
        + wpe[positions],
        "no position embedding": wte[tokens],
        "the position rows in reverse order": wte[tokens] + wpe[positions[::-1]],
    }
    note = ""
    for label, x0 in candidates.items():
        if x0 is not None and checks.matches(hidden, S.layer_norm(x0, g, b, eps), tol):
            note = f": the hidden states match an input of block 0 with {label}"
            break
    else:
        if diagnose.identify_hidden(params, config, tokens, hidden, tol):
            return  # block 0's input is right; a LayerNorm or block deviation is judged elsewhere
    checks.rows_agree(
        requirement,
        hidden,
        expected,
        tol,
        describe=lambda i, e, t: (
            f"with every block's c_proj zeroed (blocks add nothing), hidden state {list(i)} "
            f"differs from ln_f(wte[x_i] + wpe[i]) by {e:.2e} (tolerance {t:.1e}){note}"
        ),
    )


# ------------------------------------------------------------------------------------------
# The head


def _logits_are_the_head_product(
    rid: str,
    suite: Suite,
    impl: Implementation,
    config: GPT2Config,
    tokens: np.ndarray,
    *,
    after: str = "",
) -> None:
    """Raw logits (not log-probabilities: a bias or a scale must show) equal h Wᵀ computed in
    float64 from the implementation's own hidden states and head matrix; ``after`` names what
    happened to the model before (", after one SGD step")."""
    logits = checks.logits_of(rid, impl, tokens, vocab_size=config.vocab_size)
    hidden = checks.hidden_states_of(rid, impl, tokens, n_embd=config.n_embd)
    W = checks.head_matrix(
        rid, impl, shape=(config.vocab_size, config.n_embd), from_params=suite.claims("params")
    )
    expected = hidden @ W.T
    tol = suite.tolerance("self")
    if checks.agree(logits, expected, tol):
        return
    rows = (logits - expected).reshape(-1, config.vocab_size)
    note = ""
    if rows.shape[0] >= 2 and np.allclose(rows, rows[:1], atol=checks.bound(expected, tol)):
        note = "; the same vector is added to every row: the head has a bias"
    elif np.allclose(rows, rows.mean(axis=-1, keepdims=True), atol=checks.bound(expected, tol)):
        note = "; each row is shifted by a constant"
    else:
        scale = float((logits * expected).sum() / max((expected * expected).sum(), 1e-300))
        if checks.matches(logits, scale * expected, tol):
            note = (
                f"; the logits are h Wᵀ times {scale:.4g} "
                f"(1/sqrt(d) = {1 / np.sqrt(config.n_embd):.4g}): a scale factor"
            )
    checks.rows_agree(
        rid,
        logits,
        expected,
        tol,
        describe=lambda i, e, t: (
            f"raw logits {list(i)}{after} differ from hidden_states @ head_weightᵀ by {e:.2e} "
            f"(tolerance {t:.1e}){note}"
        ),
    )


@checks_requirement("head.linear-no-bias", needs=("hidden-states",))
def test_logits_are_hidden_states_times_the_head_matrix(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Raw logits (not log-probabilities: a bias or a scale must show) equal h Wᵀ computed in
    float64 from the implementation's own hidden states and head matrix."""
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    impl, _ = strategies.build(suite, draw, requirement)
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    _logits_are_the_head_product(requirement, suite, impl, config, tokens)


@checks_requirement("head.no-bias-after-training", needs=("hidden-states", "train-step"))
def test_logits_stay_the_head_product_after_an_sgd_step(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """One plain SGD step, then the raw logits are still h Wᵀ with the stepped head matrix and
    nothing else: a bias that starts at zero (invisible to head.linear-no-bias on a fresh model)
    has moved by -lr times the column sums of the logits' gradient."""
    draw = data.draw(strategies.gradient_models(suite), label="model")
    config = draw.config
    impl, _ = strategies.build(suite, draw, requirement)
    convention = checks.label_convention(suite.adapter)
    tokens, labels = data.draw(
        strategies.labelled_batches(config, convention, min_length=2, p_ignore_max=0.3),
        label="tokens and labels",
    )
    assume(checks.counted_targets(convention, labels) > 0)
    lr = data.draw(st.sampled_from([0.5, 1.0, 2.0]), label="lr")
    checks.call(requirement, f"taking one SGD step (lr={lr})", impl.sgd_step, tokens, labels, lr=lr)
    _logits_are_the_head_product(
        requirement, suite, impl, config, tokens, after=f", after one SGD step with lr={lr},"
    )


@checks_requirement("head.tied-to-embedding", needs=("params",))
def test_changing_wte_changes_the_head(suite: Suite, data: st.DataObject, requirement: str) -> None:
    """set_params() of wte alone: the head's weight and the logits follow at once."""
    draw, impl, params = _tied_model(suite, data, requirement)
    config = draw.config
    assert params is not None
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    tol = suite.tolerance("oracle")
    new = _new_wte(config, draw.scale, draw.seed)
    _set_wte_and_follow(
        requirement,
        impl,
        config,
        tokens,
        params,
        new,
        tol,
        setting="setting transformer.wte.weight with set_params()",
        after="after set_params() of wte",
    )
    _head_is_wte(requirement, impl, config, new, tol, after="after set_params() of wte")


@checks_requirement("head.tied-gradient", needs=("params", "gradients"))
def test_wte_gradient_is_lookup_plus_head_contribution(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    draw, impl, params = _tied_model(suite, data, requirement, gradients=True)
    config = draw.config
    assert params is not None
    convention, tokens, labels = _gradient_batch(suite, data, config)
    loss, grads = checks.call(
        requirement, "computing gradients", impl.gradients, tokens, labels, reduction="mean"
    )
    shape = (config.vocab_size, config.n_embd)
    actual = checks.gradient_of(requirement, grads, WTE, shape=shape)
    expected = oracle.gradients(params, config, tokens, **checks.oracle_labels(convention, labels))
    tol = suite.tolerance("gradient")
    head_entry = None
    if HEAD in grads:
        head_entry = checks.array(
            requirement, grads[HEAD], what="the gradient of lm_head.weight", shape=shape
        )
    own = _OwnOutputs(requirement, suite, impl, config, tokens, params[WTE])
    targets = _targets(convention, labels)
    _judge_wte_gradient(
        requirement,
        actual,
        expected,
        own,
        targets,
        tokens,
        tol,
        what=f"the gradient of {WTE}",
        head_entry=head_entry,
        ratio=own.loss_ratio(requirement, loss, targets),
    )
    if head_entry is not None:
        checks.tensors_agree(
            requirement,
            head_entry,
            actual,
            tol,
            what="the gradient listed under lm_head.weight (the same tensor as wte, so the same "
            "total as wte's)",
        )


@checks_requirement("head.tied-after-update", needs=("params", "train-step"))
def test_still_tied_after_an_sgd_step(suite: Suite, data: st.DataObject, requirement: str) -> None:
    """One plain SGD step moves the one tensor by lr times the summed gradient; afterwards the
    head is still that tensor and the logits are the oracle's on the updated weights. The step
    moves no weight by more than ``tied.MAX_STEP`` (the oracle's gradients bound ``lr``), so that
    the forward pass after it stays in the domain chapter 7's bounds were measured on."""
    draw, impl, _ = _tied_model(suite, data, requirement, gradients=True)
    config = draw.config
    convention, tokens, labels = _gradient_batch(suite, data, config)
    before = _read_params(impl, config, requirement)
    grads = oracle.gradients(before, config, tokens, **checks.oracle_labels(convention, labels))
    lr = tied.draw_sgd_step(data, list(grads.grads.values()))
    tol = suite.tolerance("oracle")
    own = _OwnOutputs(requirement, suite, impl, config, tokens, before[WTE])
    targets = _targets(convention, labels)
    own_loss = _own_mean_loss(requirement, suite, impl, tokens, labels)
    ratio = None if own_loss is None else own.loss_ratio(requirement, own_loss, targets)
    checks.call(
        requirement, f"taking one SGD step (lr={lr:.3g})", impl.sgd_step, tokens, labels, lr=lr
    )
    named_after = checks.call(requirement, "reading get_params() after the step", impl.get_params)
    after = _canonical(named_after, config, requirement)
    if HEAD in named_after:
        head = checks.array(requirement, named_after[HEAD], what=HEAD, shape=after[WTE].shape)
        checks.rows_agree(
            requirement,
            head,
            after[WTE],
            suite.tolerance("self"),
            describe=lambda i, e, t: (
                f"after one SGD step get_params()' lm_head.weight differs from wte in row "
                f"{list(i)} by {e:.2e} (tolerance {t:.1e}): two tensors, stepped apart (untied)"
            ),
        )
    _head_is_wte(
        requirement, impl, config, after[WTE], suite.tolerance("self"), after="after one SGD step"
    )
    _judge_wte_gradient(
        requirement,
        (before[WTE] - after[WTE]) / lr,
        grads,
        own,
        targets,
        tokens,
        suite.tolerance("gradient"),
        what=f"the change of wte in one SGD step with lr={lr:.3g}, divided by -lr,",
        ratio=ratio,
    )
    _follows_wte(
        requirement, impl, config, tokens, after, before[WTE], tol, after="after one SGD step"
    )


@checks_requirement("head.tied-after-save-load", needs=("params", "save-load"))
def test_still_tied_after_save_and_load(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Save after changing wte, load: the loaded model's head holds the saved wte, and changing
    wte in the loaded model changes its head too."""
    draw, impl, params = _tied_model(suite, data, requirement)
    config = draw.config
    assert params is not None
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    tol = suite.tolerance("oracle")
    first = _new_wte(config, draw.scale, draw.seed)
    checks.call(requirement, "setting wte with set_params()", impl.set_params, {WTE: first})
    with tempfile.TemporaryDirectory() as tmp:
        checks.call(requirement, "saving", impl.save, Path(tmp) / "saved")
        loaded = checks.call(
            requirement, "loading what save() wrote", impl.load, Path(tmp) / "saved"
        )
    saved = _read_params(loaded, config, requirement)
    checks.tensors_agree(requirement, saved[WTE], first, tol, what="wte after saving and loading")
    _follows_wte(
        requirement, loaded, config, tokens, saved, params[WTE], tol, after="after save and load"
    )
    second = _new_wte(config, draw.scale, draw.seed + 1)
    checks.call(requirement, "setting wte of the loaded model", loaded.set_params, {WTE: second})
    again = dict(saved)
    again[WTE] = second
    _follows_wte(
        requirement,
        loaded,
        config,
        tokens,
        again,
        first,
        tol,
        after="after save and load, then set_params() of wte",
    )


@checks_requirement("head.tied-after-save-load", needs=("checkpoint",))
def test_checkpoint_without_lm_head_loads_tied(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """A canonical checkpoint has no lm_head.weight (written by the project's save_checkpoint):
    it loads, computes the oracle's log-probabilities with head = wte, and (with params) stays
    tied. A checkpoint whose lm_head.weight differs from wte is not loaded as a tied GPT-2 with a
    matrix dropped: refusing it, or keeping both matrices untied, conforms."""
    import torch

    from gpt2_reference.checkpoint import save_checkpoint

    draw, impl, _ = _tied_model(suite, data, requirement)
    config = draw.config
    source = draw.params or oracle.random_params(config, seed=draw.seed, scale=draw.scale)
    weights = {name: np.asarray(v, dtype=np.float32) for name, v in source.items()}
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    tol = suite.tolerance("oracle")
    with tempfile.TemporaryDirectory() as tmp:
        canonical = Path(tmp) / "canonical"
        save_checkpoint(canonical, config, {k: torch.from_numpy(v) for k, v in weights.items()})
        loaded = checks.call(
            requirement,
            "loading a canonical checkpoint that has no lm_head.weight",
            impl.load_checkpoint,
            canonical,
        )
        as_float64 = {k: v.astype(np.float64) for k, v in weights.items()}
        _follows_wte(
            requirement,
            loaded,
            config,
            tokens,
            as_float64,
            None,
            tol,
            after="after loading a checkpoint without lm_head.weight",
        )
        if suite.claims("params"):
            _set_wte_and_follow(
                requirement,
                loaded,
                config,
                tokens,
                as_float64,
                _new_wte(config, draw.scale, draw.seed),
                tol,
                setting="setting wte of the loaded model",
                after="after loading a checkpoint without lm_head.weight, then set_params() of wte",
            )
        from safetensors.numpy import save_file

        untied = Path(tmp) / "untied"
        untied.mkdir()
        (untied / "config.json").write_text((canonical / "config.json").read_text())
        other = _new_wte(config, draw.scale, draw.seed + 2).astype(np.float32)
        save_file({**weights, HEAD: other}, str(untied / "model.safetensors"))
        try:
            wrong = impl.load_checkpoint(untied)
        except Exception:
            return  # refused: conforming (the spec recommends a message that says why)
        logits = checks.logits_of(requirement, wrong, tokens, vocab_size=config.vocab_size)
        actual = _logp(logits)
        # Loaded untied (embedding wte, head lm_head.weight, as transformers does with a
        # warning): both matrices kept, so nothing was dropped and this requirement holds.
        hidden = oracle.forward(as_float64, config, tokens).hidden
        if checks.agree(actual, _logp(hidden @ other.astype(np.float64).T), tol):
            return
        kept = "its logits match neither matrix, nor both kept untied"
        if checks.matches(actual, _logp(oracle.forward(as_float64, config, tokens).logits), tol):
            kept = "it computes with wte as the head, lm_head.weight was dropped"
        else:
            head_both = dict(as_float64)
            head_both[WTE] = other.astype(np.float64)
            if checks.matches(actual, _logp(oracle.forward(head_both, config, tokens).logits), tol):
                kept = "it uses lm_head.weight for both, wte was dropped"
        checks.fail(
            requirement,
            "a checkpoint whose lm_head.weight differs from transformer.wte.weight was loaded "
            f"without complaint as a tied model ({kept}); it is not a tied GPT-2 checkpoint and "
            "must not be loaded silently",
        )


@checks_requirement("head.tied-after-resize", needs=("params", "resize-vocab"))
def test_still_tied_after_resizing_the_vocabulary(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    draw, impl, _ = _tied_model(suite, data, requirement)
    config = draw.config
    V = config.vocab_size
    new_V = tied.draw_vocab_size(data, V)
    before = _read_params(impl, config, requirement)
    tied.resize(requirement, impl, V, new_V)
    resized = GPT2Config(
        vocab_size=new_V,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
    )
    after = _read_params(impl, resized, requirement)
    tied.kept_rows_agree(
        requirement, after[WTE], before[WTE], new_V, suite.tolerance("self"), what="wte"
    )
    _head_is_wte(
        requirement, impl, resized, after[WTE], suite.tolerance("self"), after="after resizing"
    )
    tol = suite.tolerance("oracle")
    tokens = data.draw(strategies.tokens(resized, min_length=4), label="tokens")
    _follows_wte(
        requirement, impl, resized, tokens, after, None, tol, after=f"after resizing to {new_V}"
    )
    _set_wte_and_follow(
        requirement,
        impl,
        resized,
        tokens,
        after,
        _new_wte(resized, draw.scale, draw.seed),
        tol,
        setting="setting wte after the resize",
        after=f"after resizing to {new_V}, then set_params() of wte",
    )


@checks_requirement("head.tied-after-move", needs=("params", "move"))
def test_still_tied_after_a_device_or_dtype_move(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Away and back: the copy owns its weights (writing the original's leaves it alone, and
    writing its wte leaves the original alone), its head is its wte, and set_params() of wte
    changes its head too."""
    draw, impl, original = _tied_model(suite, data, requirement)
    config = draw.config
    assert original is not None
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    self_tol = suite.tolerance("self")
    V = config.vocab_size
    original_logits = checks.logits_of(requirement, impl, tokens, vocab_size=V)
    moved, route = tied.move_away_and_back(requirement, suite, impl)
    rng = np.random.default_rng([draw.seed, 11])
    std = 0.02 if draw.scale is None else draw.scale
    other = {k: v + rng.normal(0.0, std, np.shape(v)) for k, v in original.items()}
    modules: dict[str, list[str]] = {}  # the original's weights, by the module that holds them
    for name in sorted(original):
        if name != HEAD:
            modules.setdefault(name.rpartition(".")[0], []).append(name)

    def write(names: list[str], values: Params, what: str) -> None:
        checks.call(
            requirement,
            f"{what} the original's {names[0].rpartition('.')[0]}",
            impl.set_params,
            {name: values[name] for name in names},
        )

    writes = [
        (module, lambda n=names: write(n, other, "overwriting"),
         lambda n=names: write(n, original, "restoring"))
        for module, names in modules.items()
    ]  # fmt: skip
    tied.copy_is_independent(requirement, moved, tokens, V, self_tol, writes, route=route)
    params = _read_params(moved, config, requirement)
    _head_is_wte(requirement, moved, config, params[WTE], self_tol, after=f"after {route}")
    _set_wte_and_follow(
        requirement,
        moved,
        config,
        tokens,
        params,
        _new_wte(config, draw.scale, draw.seed),
        suite.tolerance("oracle"),
        setting="setting wte after the move",
        after=f"after moving {route}, then set_params() of wte",
    )
    checks.rows_agree(
        requirement,
        checks.logits_of(requirement, impl, tokens, vocab_size=V),
        original_logits,
        self_tol,
        describe=lambda i, e, t: (
            f"set_params() of wte on the model moved {route} changed the original's logits "
            f"{list(i)} by {e:.2e} (tolerance {t:.1e}): the copy shares storage with the "
            "original; moved() must return a model that owns its weights"
        ),
    )


@checks_requirement("head.untied-is-declared", needs=("params",))
def test_an_untied_head_is_declared(suite: Suite, data: st.DataObject, requirement: str) -> None:
    """Tiedness by behaviour: change wte (set_params) and see whether the head follows; with
    gradients, see whether wte's gradient holds the head's contribution. An implementation that
    behaves untied must declare tied_head=False."""
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    impl, params = strategies.build(suite, draw, requirement)
    assert params is not None
    if not suite.adapter.tied_head:
        return  # declared: the head.tied-* properties report the deviation as declared
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    tol = suite.tolerance("oracle")
    declared = "while the adapter declares tied_head=True (an untied head must be declared)"
    new = _new_wte(config, draw.scale, draw.seed)
    checks.call(requirement, "setting wte with set_params()", impl.set_params, {WTE: new})
    changed = dict(params)
    changed[WTE] = new
    actual = _logp(checks.logits_of(requirement, impl, tokens, vocab_size=config.vocab_size))
    as_tied = _logp(oracle.forward(changed, config, tokens).logits)
    if not checks.agree(actual, as_tied, tol):
        stale = _logp(oracle.forward(changed, config, tokens).hidden @ params[WTE].T)
        if checks.matches(actual, stale, tol):
            checks.fail(
                requirement,
                f"after set_params() of wte the head kept the previous wte (the logits match "
                f"hidden states times the old matrix): the head is a separate tensor {declared}",
            )
    if not suite.claims("gradients"):
        return
    checks.call(requirement, "restoring wte", impl.set_params, {WTE: params[WTE]})
    convention = checks.label_convention(suite.adapter)
    labels = tokens.copy() if convention == "inputs" else np.roll(tokens, -1, axis=1)
    _, grads = checks.call(
        requirement, "computing gradients", impl.gradients, tokens, labels, reduction="mean"
    )
    actual_grad = checks.gradient_of(
        requirement, grads, WTE, shape=(config.vocab_size, config.n_embd)
    ).reshape(1, -1)
    expected = oracle.gradients(params, config, tokens, **checks.oracle_labels(convention, labels))
    if not checks.agree(actual_grad, expected.grads[WTE].reshape(1, -1), tol) and checks.matches(
        actual_grad, expected.wte_from_lookup.reshape(1, -1), tol
    ):
        checks.fail(
            requirement,
            "the gradient of wte holds only the lookup contribution, not the head's: in "
            f"training the head behaves as a separate tensor {declared}",
        )
