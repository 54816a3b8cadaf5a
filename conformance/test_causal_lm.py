"""The causal-lm profile's requirements, judged through the model's own matrices.

Several requirements that any causal LM must meet are checked elsewhere through GPT-2's canonical
weights and the oracle (``transformer.wpe.weight``'s gradient, ``ln_f.bias``'s gradient, the
oracle's logits after a change of ``transformer.wte.weight``). An implementation that does not
speak GPT-2's names (another architecture, a model with rotary positions or RMSNorm) claims no
``params``; these properties judge the same requirements through what every causal LM has:

- ``embedding-matrix``: the token-embedding matrix W_in ``[V, d]`` the input lookup reads, which
  can be read and overwritten;
- ``embedding-gradients``: the gradients of the loss for the looked-up rows e_(b,i), for W_in
  (whole, and the share that reaches it through the lookup alone) and for the head matrix W_out;
- ``hidden-states``: the final hidden states H, so that the logits are H W_outᵀ (+ a bias).

With them: the Jacobian is lower triangular when d loss(rows 0..p) / d e_j vanishes for j > p;
the logits gradient is right when W_out's gradient holds Gᵀ H with G = softmax(z) - onehot(y)
(spec ``logits_gradient``); the head is tied when W_in's gradient is the lookup's share plus
Gᵀ H, and when writing W_in (directly, by an SGD step, through save and load, a resize or a
move) changes the head's matrix and the logits with it. Every comparison is of the
implementation with the spec's definitions applied to its own outputs: no oracle, no GPT-2
weights. The ``head.tied-*`` properties apply to a head declared tied (spec README, "Profiles").
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from gpt2_conformance import checks, strategies, tied
from gpt2_conformance.adapter import Implementation
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
IGNORE = strategies.IGNORE_INDEX
MAX_LENGTH = 32


# ------------------------------------------------------------------------------------------
# Helpers


def _embedding(rid: str, impl: Implementation, config: GPT2Config, *, what: str = "") -> Any:
    value = checks.call(rid, f"reading the input embedding{what}", impl.input_embedding)
    return checks.array(
        rid,
        value,
        what=f"the input embedding matrix{what}",
        shape=(config.vocab_size, config.n_embd),
    )


def _set_embedding(rid: str, impl: Implementation, weight: np.ndarray, *, what: str = "") -> None:
    checks.call(rid, f"setting the input embedding{what}", impl.set_input_embedding, weight)


def _new_matrix(current: np.ndarray, seed: int) -> np.ndarray:
    """A fresh matrix of ``current``'s shape and spread (so the model stays in its range)."""
    std = float(current.std()) or 0.02
    return np.random.default_rng([seed, 11]).normal(0.0, std, current.shape).astype(np.float32)


def _hidden(rid: str, impl: Implementation, tokens: np.ndarray, config: GPT2Config) -> Any:
    return checks.hidden_states_of(rid, impl, tokens, n_embd=config.n_embd)


def _head(rid: str, impl: Implementation, config: GPT2Config) -> np.ndarray:
    shape = (config.vocab_size, config.n_embd)
    return checks.head_matrix(rid, impl, shape=shape, from_params=False)


def _bias_only(logits: np.ndarray, product: np.ndarray, tol: Any) -> bool:
    """Do ``logits`` and ``product`` differ by one vector added to every row (a head bias)?"""
    rest = (logits - product).reshape(-1, logits.shape[-1])
    spread = np.abs(rest - rest.mean(axis=0)).max()
    return bool(spread <= checks.bound(logits.reshape(-1), tol))


def _head_is(
    rid: str,
    impl: Implementation,
    config: GPT2Config,
    weight: np.ndarray,
    tol: Any,
    *,
    after: str,
) -> None:
    """head_weight() holds the values of the input embedding ``weight``."""
    checks.rows_agree(
        rid,
        _head(rid, impl, config),
        weight,
        tol,
        describe=lambda i, e, t: (
            f"{after}, the head's matrix differs from the input embedding in row {list(i)} by "
            f"{e:.2e} (tolerance {t:.1e}): the head is not the embedding tensor"
        ),
    )


def _still_tied(
    rid: str,
    impl: Implementation,
    config: GPT2Config,
    tokens: np.ndarray,
    weight: np.ndarray,
    previous: np.ndarray | None,
    tol: Any,
    *,
    after: str,
) -> None:
    """The head is the input embedding ``weight``: its matrix holds ``weight``'s values
    (:func:`_head_is`) and the raw logits are H Wᵀ (a bias per vocabulary entry allowed:
    head.linear-no-bias judges it); a head still holding ``previous`` is named."""
    _head_is(rid, impl, config, weight, tol, after=after)
    logits = checks.logits_of(rid, impl, tokens, vocab_size=config.vocab_size)
    hidden = _hidden(rid, impl, tokens, config)
    expected = hidden @ weight.T
    if checks.agree(logits, expected, tol) or _bias_only(logits, expected, tol):
        return
    note = ""
    if previous is not None and previous.shape == weight.shape:
        stale = hidden @ previous.T
        if checks.matches(logits, stale, tol) or _bias_only(logits, stale, tol):
            note = (
                ": the logits match the hidden states times the previous embedding matrix, so "
                "the head is a copy of the embedding, not the embedding itself (untied)"
            )
    checks.rows_agree(
        rid,
        logits,
        expected,
        tol,
        describe=lambda i, e, t: (
            f"{after}, raw logits {list(i)} differ from hidden_states @ input_embeddingᵀ by "
            f"{e:.2e} (tolerance {t:.1e}){note}"
        ),
    )


def _tied_model(
    suite: Suite, data: st.DataObject, requirement: str
) -> tuple[GPT2Config, Implementation]:
    """A head.tied-* property's model: the adapter must declare a tied head (the causal-lm
    profile applies these requirements to declared-tied models only); then one is drawn and
    built."""
    tied.declared_tied(suite, requirement, profile=True)
    return strategies.draw_implementation(data, suite, requirement)


@dataclasses.dataclass
class _Gradients:
    loss: float
    inputs: np.ndarray  # [B, T, d]: d loss / d e_(b,i), the rows the lookup returned
    lookup: np.ndarray  # [V, d]: the share of d loss / d W_in that comes through the lookup
    embedding: np.ndarray  # [V, d]: d loss / d W_in
    head: np.ndarray  # [V, d]: d loss / d W_out (the same tensor when tied)


def _gradients(
    rid: str,
    impl: Implementation,
    tokens: np.ndarray,
    labels: np.ndarray,
    config: GPT2Config,
    reduction: str,
    *,
    what: str = "",
) -> _Gradients:
    B, T = tokens.shape
    V, d = config.vocab_size, config.n_embd
    loss, grads = checks.call(
        rid,
        f"computing the embedding gradients of the {reduction} loss{what}",
        impl.embedding_gradients,
        tokens,
        labels,
        reduction=reduction,
    )
    return _Gradients(
        checks.scalar(rid, loss, what=f"the {reduction} loss"),
        checks.gradient_of(rid, grads, "inputs", shape=(B, T, d)),
        checks.gradient_of(rid, grads, "lookup", shape=(V, d)),
        checks.gradient_of(rid, grads, "embedding", shape=(V, d)),
        checks.gradient_of(rid, grads, "head", shape=(V, d)),
    )


def _linear_head(
    rid: str, logits: np.ndarray, hidden: np.ndarray, head: np.ndarray, tol: Any
) -> None:
    """The head's part of a gradient is Gᵀ H only when the logits are H Wᵀ (+ a bias)."""
    if not _bias_only(logits, hidden @ head.T, tol):
        checks.fail(
            rid,
            "the logits are not hidden_states @ head_weightᵀ (plus a bias), so the head's "
            "gradient cannot be read as Gᵀ H (head.linear-no-bias reports how the head differs)",
        )


def _labelled(
    data: st.DataObject, suite: Suite, config: GPT2Config, **kwargs: Any
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    convention = checks.label_convention(suite.adapter)
    tokens, labels = data.draw(
        strategies.labelled_batches(config, convention, max_length=MAX_LENGTH, **kwargs),
        label="tokens, labels",
    )
    return convention, tokens, labels, S.targets_for_convention(labels, convention, IGNORE)


# ------------------------------------------------------------------------------------------
# Chapter 2 and 3 through the input embeddings' gradients


@checks_requirement("causality.jacobian-lower-triangular", needs=("loss", "embedding-gradients"))
def test_earlier_rows_send_no_gradient_to_later_input_embeddings(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """The loss of rows 0..p only: d loss / d e_(b,j) must vanish for j > p, in every sequence,
    and must not vanish for every j <= p (else the gradients show nothing); an example whose
    gradients at j <= p are too small to resolve at the dtype is discarded (spec chapter 3)."""
    tol = suite.tolerance("self")
    config, impl = strategies.draw_implementation(data, suite, requirement)
    convention, tokens, labels, _ = _labelled(data, suite, config, min_length=2, p_ignore_max=0.0)
    T = tokens.shape[1]
    cuts = data.draw(st.lists(st.integers(0, T - 2), min_size=1, max_size=2), label="cuts")
    for p in sorted(set(cuts)):
        counted = labels.copy()  # targets on rows 0..p only
        counted[:, p + (2 if convention == "inputs" else 1) :] = IGNORE
        grads = _gradients(
            requirement, impl, tokens, counted, config, "sum", what=f" of rows 0..{p}"
        )
        size = np.abs(grads.inputs).max(axis=-1)  # [B, T]
        limit = checks.bound(grads.inputs.reshape(-1), tol)
        future = size[:, p + 1 :]
        if future.size and checks.exceeds(float(future.max()), limit):
            b, j = np.unravel_index(int(np.argmax(future)), future.shape)
            checks.fail(
                requirement,
                f"the loss of rows 0..{p} sends a gradient of size {future.max():.2e} to the "
                f"input embedding of position {p + 1 + int(j)} of sequence {int(b)} (d row_i / "
                f"d e_j must be 0 for i < j; tolerance {limit:.1e})",
            )
        past = float(size[:, : p + 1].max())
        what = f"the gradient the loss of rows 0..{p} sends to the input embeddings of 0..{p}"
        assume(checks.gradient_resolves(requirement, past, limit, what=what))


@checks_requirement(
    "objective.logits-gradient", needs=("loss", "embedding-gradients", "hidden-states")
)
def test_head_gradient_is_softmax_minus_one_hot_times_hidden_states(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """logits = H Wᵀ (+ b), so d loss / d W = Gᵀ H with G = d loss / d logits, which the spec
    defines (softmax minus one-hot over the counted rows, divided by the count for the mean).
    A tied W also holds the lookup's share of its gradient."""
    tol = suite.tolerance("gradient")
    config, impl = strategies.draw_implementation(data, suite, requirement)
    _, tokens, labels, targets = _labelled(data, suite, config, min_length=2)
    logits = checks.logits_of(requirement, impl, tokens, vocab_size=config.vocab_size)
    hidden = _hidden(requirement, impl, tokens, config)
    head = _head(requirement, impl, config)
    _linear_head(requirement, logits, hidden, head, suite.tolerance("self"))
    H = hidden.reshape(-1, config.n_embd)
    for reduction in ("sum", "mean") if (targets != IGNORE).any() else ("sum",):
        grads = _gradients(requirement, impl, tokens, labels, config, reduction)
        G = S.logits_gradient(logits, targets, reduction, IGNORE).reshape(-1, config.vocab_size)
        expected = G.T @ H
        lookup = grads.lookup
        # untied, or a tied head that holds the lookup's part too: the margin is the closer one's
        if (
            checks.first_agreeing(
                grads.head.reshape(1, -1),
                [expected.reshape(1, -1), (expected + lookup).reshape(1, -1)],
                tol,
            )
            is not None
        ):
            continue
        checks.tensors_agree(
            requirement,
            grads.head,
            expected,
            tol,
            what=f"the {reduction}-loss gradient of the head matrix, against Gᵀ H with G = "
            "softmax(z_i) - onehot(y_i) (zero for rows without a counted target) and H the "
            "hidden states (neither alone nor plus the lookup's part),",
        )


# ------------------------------------------------------------------------------------------
# Chapter 5, the head as declared


def _changed_head(
    rid: str,
    suite: Suite,
    impl: Implementation,
    config: GPT2Config,
    tokens: np.ndarray,
    seed: int,
    *,
    after: str,
) -> np.ndarray:
    """Write a new input embedding; the head's matrix and the logits must follow it."""
    tol = suite.tolerance("self")
    before = _embedding(rid, impl, config, what=f" {after}")
    new = _new_matrix(before, seed)
    _set_embedding(rid, impl, new, what=f" {after}")
    _still_tied(
        rid, impl, config, tokens, new, before, tol, after=f"{after}, after set_input_embedding()"
    )
    return new


@checks_requirement("head.tied-to-embedding", needs=("embedding-matrix", "hidden-states"))
def test_writing_the_embedding_matrix_changes_the_head(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    config, impl = _tied_model(suite, data, requirement)
    tokens = data.draw(strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="x")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    _changed_head(requirement, suite, impl, config, tokens, seed, after="on a fresh model")


@checks_requirement("head.untied-is-declared", needs=("embedding-matrix", "hidden-states"))
def test_a_head_that_behaves_untied_is_declared_untied(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Declared tied: after a new input embedding is written, the head's matrix is it and the
    logits follow it, and (with embedding gradients) the embedding's gradient holds the head's
    part Gᵀ H. Declared untied: nothing to check."""
    if not suite.adapter.tied_head:
        return  # declared: meets the requirement whatever the behaviour
    declared = "while the adapter declares tied_head=True (an untied head must be declared)"
    tol = suite.tolerance("self")
    config, impl = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="x")
    before = _embedding(requirement, impl, config)
    new = _new_matrix(before, int(data.draw(st.integers(0, 2**31 - 1), label="seed")))
    _set_embedding(requirement, impl, new)
    head = _head(requirement, impl, config)
    if not checks.agree(head, new, tol):
        what = (
            "the previous embedding matrix (a copy)"
            if checks.matches(head, before, tol)
            else ("another matrix")
        )
        checks.fail(
            requirement,
            "after set_input_embedding() the head's matrix is not the new embedding matrix but "
            f"{what}: the head is a separate tensor {declared}",
        )
    logits = checks.logits_of(requirement, impl, tokens, vocab_size=config.vocab_size)
    hidden = _hidden(requirement, impl, tokens, config)
    if not _bias_only(logits, hidden @ new.T, tol) and _bias_only(logits, hidden @ before.T, tol):
        checks.fail(
            requirement,
            "after set_input_embedding() the logits are the hidden states times the previous "
            f"embedding matrix: the head is a separate tensor {declared}",
        )
    if not suite.claims("embedding-gradients"):
        return
    convention = checks.label_convention(suite.adapter)
    labels = tokens if convention == "inputs" else np.roll(tokens, -1, axis=1)
    targets = S.targets_for_convention(labels, convention, IGNORE)
    grads = _gradients(requirement, impl, tokens, labels, config, "sum")
    lookup = grads.lookup
    G = S.logits_gradient(logits, targets, "sum", IGNORE).reshape(-1, config.vocab_size)
    head_part = G.T @ hidden.reshape(-1, config.n_embd)
    gtol = suite.tolerance("gradient")
    if np.abs(head_part).max() > 0 and (
        tied.matches_tensor(grads.embedding, lookup, gtol)
        and not tied.agree_tensor(grads.embedding, lookup + head_part, gtol)
    ):
        checks.fail(
            requirement,
            "the gradient of the input embedding holds only the lookup's contribution, not the "
            f"head's: in training the head behaves as a separate tensor {declared}",
        )


@checks_requirement("head.tied-gradient", needs=("embedding-gradients", "hidden-states"))
def test_embedding_gradient_is_lookup_plus_head_contribution(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("gradient")
    config, impl = _tied_model(suite, data, requirement)
    _, tokens, labels, targets = _labelled(data, suite, config, min_length=2, p_ignore_max=0.3)
    assume((targets != IGNORE).any())
    reduction = data.draw(st.sampled_from(["mean", "sum"]), label="reduction")
    logits = checks.logits_of(requirement, impl, tokens, vocab_size=config.vocab_size)
    hidden = _hidden(requirement, impl, tokens, config)
    _linear_head(
        requirement, logits, hidden, _head(requirement, impl, config), suite.tolerance("self")
    )
    grads = _gradients(requirement, impl, tokens, labels, config, reduction)
    lookup = grads.lookup
    G = S.logits_gradient(logits, targets, reduction, IGNORE).reshape(-1, config.vocab_size)
    head_part = G.T @ hidden.reshape(-1, config.n_embd)
    # The tie, not the loss's denominator: a head part at the scale of the own loss is the head's.
    ratio = tied.loss_ratio(grads.loss, float(S.causal_lm_loss(logits, targets, reduction, IGNORE)))
    scale, _ = tied.at_loss_scale(grads.embedding, lambda s: lookup + s * head_part, tol, ratio)
    head_part = scale * head_part
    total = lookup + head_part
    note = tied.scale_note(scale)
    if not tied.agree_tensor(grads.embedding, total, tol):
        if tied.matches_tensor(grads.embedding, lookup, tol):
            note = (
                ": it equals the lookup's contribution alone; the head's Gᵀ H is missing (a head "
                "that reads a detached or separate copy of the embedding)" + note
            )
        elif tied.matches_tensor(grads.embedding, head_part, tol):
            note = ": it equals the head's contribution alone; the lookup's share is missing" + note
        elif tied.matches_tensor(grads.embedding, 2 * total, tol):
            note = ": it is twice the expected total (the shared tensor counted twice)" + note
    checks.tensors_agree(
        requirement,
        grads.embedding,
        total,
        tol,
        what=f"the {reduction}-loss gradient of the input embedding, against the lookup's "
        f"share plus the head's Gᵀ H{note};",
    )
    checks.tensors_agree(
        requirement,
        grads.head,
        grads.embedding,
        tol,
        what="the gradient of the head's matrix (the same tensor as the embedding, so the same "
        "total)",
    )


@checks_requirement(
    "head.tied-after-update",
    needs=("embedding-matrix", "embedding-gradients", "hidden-states", "train-step"),
)
def test_still_tied_after_an_sgd_step_of_the_own_weights(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """One plain SGD step moves the embedding by lr times its whole gradient (lookup + head);
    afterwards the head is still that matrix, in its weight and in the logits. The step moves no
    entry of the embedding by more than ``tied.MAX_STEP`` (its own gradient bounds ``lr``)."""
    tol = suite.tolerance("self")
    config, impl = _tied_model(suite, data, requirement)
    _, tokens, labels, targets = _labelled(data, suite, config, min_length=2, p_ignore_max=0.3)
    assume((targets != IGNORE).any())
    before = _embedding(requirement, impl, config)
    gradient = _gradients(requirement, impl, tokens, labels, config, "mean").embedding
    lr = tied.draw_sgd_step(data, [gradient])
    checks.call(
        requirement, f"taking one SGD step (lr={lr:.3g})", impl.sgd_step, tokens, labels, lr=lr
    )
    after = _embedding(requirement, impl, config, what=" after the step")
    checks.tensors_agree(
        requirement,
        (before - after) / lr,
        gradient,
        suite.tolerance("gradient"),
        what=f"the change of the input embedding in one SGD step with lr={lr:.3g}, divided by -lr, "
        "against its gradient (lookup + head),",
    )
    _still_tied(requirement, impl, config, tokens, after, before, tol, after="after one SGD step")


@checks_requirement(
    "head.tied-after-save-load", needs=("embedding-matrix", "hidden-states", "save-load")
)
def test_still_tied_after_saving_and_loading_the_own_checkpoint(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, impl = _tied_model(suite, data, requirement)
    tokens = data.draw(strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="x")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    saved = _new_matrix(_embedding(requirement, impl, config), seed)
    _set_embedding(requirement, impl, saved)
    with tempfile.TemporaryDirectory() as tmp:
        checks.call(requirement, "saving", impl.save, Path(tmp) / "saved")
        loaded = checks.call(
            requirement, "loading what save() wrote", impl.load, Path(tmp) / "saved"
        )
    read = _embedding(requirement, loaded, config, what=" of the loaded model")
    checks.tensors_agree(
        requirement, read, saved, tol, what="the input embedding after save and load"
    )
    _still_tied(requirement, loaded, config, tokens, read, None, tol, after="after save and load")
    _changed_head(requirement, suite, loaded, config, tokens, seed + 1, after="after save and load")


@checks_requirement(
    "head.tied-after-resize", needs=("embedding-matrix", "hidden-states", "resize-vocab")
)
def test_still_tied_after_resizing_the_own_vocabulary(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, impl = _tied_model(suite, data, requirement)
    V = config.vocab_size
    new_V = tied.draw_vocab_size(data, V)
    before = _embedding(requirement, impl, config)
    tied.resize(requirement, impl, V, new_V)
    resized = dataclasses.replace(config, vocab_size=new_V)
    after = _embedding(requirement, impl, resized, what=" after the resize")
    tied.kept_rows_agree(requirement, after, before, new_V, tol, what="the input embedding")
    tokens = data.draw(strategies.tokens(resized, min_length=2, max_length=MAX_LENGTH), label="x")
    _still_tied(
        requirement, impl, resized, tokens, after, None, tol, after=f"after resizing to {new_V}"
    )
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    _changed_head(
        requirement, suite, impl, resized, tokens, seed, after=f"after resizing to {new_V}"
    )


@checks_requirement("head.tied-after-move", needs=("embedding-matrix", "hidden-states", "move"))
def test_still_tied_after_moving_the_own_weights(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, impl = _tied_model(suite, data, requirement)
    moved, route = tied.move_away_and_back(requirement, suite, impl)
    weight = _embedding(requirement, moved, config, what=f" after {route}")
    tokens = data.draw(strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="x")
    _still_tied(requirement, moved, config, tokens, weight, None, tol, after=f"after {route}")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    _changed_head(requirement, suite, moved, config, tokens, seed, after=f"after moving {route}")
