"""Chapter 7, numerical agreement: log-probabilities, loss and gradients against the float64
oracle under the spec's tolerance table; finite outputs; deterministic outputs."""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from gpt2_conformance import checks, diagnose, strategies
from gpt2_conformance.adapter import Implementation, Params
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.strategies import Draw
from gpt2_conformance.suite import Suite
from gpt2_conformance.timing import oracle
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
WTE = "transformer.wte.weight"


@checks_requirement("numerics.tolerance-table")
def test_agreement_holds_across_the_measured_domain(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """The run is judged with the table's entries for its dtype, and with them the
    implementation agrees with the oracle at *every* weight scale of the domain for that dtype,
    on one configuration (without params: only that the table covers the run's dtype). A
    mismatch that a known deviation explains is that deviation's failure, not a need for a
    looser tolerance, and is left to its own requirement."""
    for kind in ("oracle", "self"):
        if (kind, suite.dtype) not in S.TOLERANCES:
            checks.fail(
                requirement, f"the spec's tolerance table has no ({kind!r}, {suite.dtype!r}) entry"
            )
        if suite.tolerance(kind) != S.TOLERANCES[(kind, suite.dtype)]:
            checks.fail(
                requirement, f"the suite judges {kind} comparisons with {suite.tolerance(kind)}"
            )
    if suite.claims("params"):
        _log_probs_agree_at_every_scale(suite, data, requirement, attribute=True)


def _log_probs_agree_at_every_scale(
    suite: Suite, data: st.DataObject, rid: str, *, attribute: bool
) -> None:
    """One configuration and batch, built at every weight scale of the dtype's domain (or with
    the checkpoint's weights), each judged against the oracle's log-probabilities. Every scale
    matters: LayerNorm's epsilon shows at GPT-2's init scale, the exact GELU only at 0.1-0.3.
    ``attribute``: let a mismatch that a named deviation explains fail that deviation's
    requirement instead (see :func:`diagnose.judge_log_probs`)."""
    config = data.draw(strategies.configs(suite), label="config")
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    if suite.checkpoint is not None:
        cases = [(None, suite.checkpoint[1])]
    else:
        cases = [(scale, None) for scale in suite.weight_scales]
    for scale, given_params in cases:
        impl, params = suite.build(
            config, requirement=rid, params=given_params, seed=seed, scale=scale
        )
        assert params is not None
        logits = checks.logits_of(rid, impl, tokens, vocab_size=config.vocab_size)
        label = "GPT-2's init" if scale is None else f"{scale}"
        diagnose.judge_log_probs(
            rid,
            params,
            config,
            tokens,
            logits,
            suite.tolerance("oracle"),
            what=f"at weight scale {label} (inside the domain for {suite.dtype}), the "
            "log-probabilities",
            attribute=attribute,
        )


@checks_requirement("numerics.log-probs-match-oracle", needs=("params",))
def test_log_probabilities_agree_with_the_oracle(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """At every weight scale of the domain, so no deviation hides behind a lucky scale."""
    _log_probs_agree_at_every_scale(suite, data, requirement, attribute=False)


def _oracle_batch(
    suite: Suite, data: st.DataObject, requirement: str, models: st.SearchStrategy[Draw]
) -> tuple[GPT2Config, Implementation, Params, str, np.ndarray, np.ndarray]:
    """A model drawn from ``models`` and built on the oracle's weights, then a labelled batch of
    two or more tokens with a counted target, in the adapter's label convention:
    ``(config, implementation, params, convention, tokens, labels)``."""
    draw = data.draw(models, label="model")
    config = draw.config
    impl, params = strategies.build(suite, draw, requirement)
    assert params is not None
    convention = checks.label_convention(suite.adapter)
    tokens, labels = data.draw(
        strategies.labelled_batches(config, convention, min_length=2), label="tokens and labels"
    )
    assume(checks.counted_targets(convention, labels) > 0)
    return config, impl, params, convention, tokens, labels


@checks_requirement("numerics.loss-matches-oracle", needs=("params", "loss"))
def test_loss_agrees_with_the_oracle(suite: Suite, data: st.DataObject, requirement: str) -> None:
    """Both reductions, with ignored targets, in the adapter's label convention."""
    config, impl, params, convention, tokens, labels = _oracle_batch(
        suite, data, requirement, strategies.models(suite)
    )
    tol = suite.tolerance("oracle")
    for reduction in ("mean", "sum"):
        actual = checks.loss_of(requirement, impl, tokens, labels, reduction=reduction)
        expected = oracle.loss(
            params, config, tokens, reduction=reduction, **checks.oracle_labels(convention, labels)
        )
        checks.scalar_agrees(
            requirement,
            actual,
            expected,
            tol,
            what=f"the {reduction} loss of a {tokens.shape[0]}x{tokens.shape[1]} batch with "
            f"{checks.counted_targets(convention, labels)} counted targets ({convention!r} labels)",
        )


@checks_requirement("numerics.gradients-match-oracle", needs=("params", "gradients"))
def test_every_parameter_gradient_agrees_with_the_oracle(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Every canonical parameter, each judged with the bound of its own tensor (chapter 7)."""
    config, impl, params, convention, tokens, labels = _oracle_batch(
        suite, data, requirement, strategies.gradient_models(suite)
    )
    reduction = data.draw(st.sampled_from(["mean", "sum"]), label="reduction")
    loss, grads = checks.call(
        requirement, "computing gradients", impl.gradients, tokens, labels, reduction=reduction
    )
    expected = oracle.gradients(
        params, config, tokens, reduction=reduction, **checks.oracle_labels(convention, labels)
    )
    tol = suite.tolerance("gradient")
    checks.scalar_agrees(
        requirement,
        checks.scalar(requirement, loss, what="the loss returned with the gradients"),
        expected.loss,
        suite.tolerance("oracle"),
        what=f"the {reduction} loss returned with the gradients",
    )
    for name, value in expected.grads.items():
        actual = checks.gradient_of(requirement, grads, name, shape=value.shape)
        note = ""
        flat = actual.reshape(1, -1)
        if name == WTE and not checks.agree(flat, value.reshape(1, -1), tol):
            if checks.matches(flat, expected.wte_from_lookup.reshape(1, -1), tol):
                note = " (it holds the lookup contribution only: the head's part is missing)"
            elif checks.matches(flat, expected.wte_from_head.reshape(1, -1), tol):
                note = " (it holds the head contribution only: the lookup's part is missing)"
        checks.tensors_agree(
            requirement, actual, value, tol, what=f"the {reduction}-loss gradient of {name}{note}"
        )


@checks_requirement("numerics.finite")
def test_outputs_for_valid_input_are_finite(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Logits, and hidden states, loss and gradients where claimed, at the largest scale of the
    domain and up to the full context."""
    draw = data.draw(strategies.models_at(suite, (0.3, 0.1)), label="model")
    config = draw.config
    impl, _ = strategies.build(suite, draw, requirement)
    convention = checks.label_convention(suite.adapter) if suite.claims("loss") else "inputs"
    tokens, labels = data.draw(
        strategies.labelled_batches(config, convention, min_length=2, p_ignore_max=0.3),
        label="tokens and labels",
    )
    checks.logits_of(
        requirement, impl, tokens, vocab_size=config.vocab_size
    )  # shape and finiteness
    if suite.claims("hidden-states"):
        checks.hidden_states_of(requirement, impl, tokens, n_embd=config.n_embd)
    if checks.counted_targets(convention, labels) == 0:
        return  # a mean over zero targets is NaN by definition (objective.no-counted-targets)
    if suite.claims("loss"):
        for reduction in ("mean", "sum"):
            checks.loss_of(requirement, impl, tokens, labels, reduction=reduction)
    if suite.claims("gradients"):
        loss, grads = checks.call(
            requirement, "computing gradients", impl.gradients, tokens, labels, reduction="mean"
        )
        checks.scalar(requirement, loss, what="the loss returned with the gradients")
        for name, value in grads.items():
            checks.array(requirement, value, what=f"the gradient of {name}")


@checks_requirement("numerics.deterministic")
def test_the_same_input_gives_the_same_output(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """The same batch twice in a row, and again after a call on another batch: raw logits (and
    the loss, where claimed) agree under the self tolerance."""
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    impl, _ = strategies.build(suite, draw, requirement)
    tokens = data.draw(strategies.tokens(config), label="tokens")
    other = data.draw(strategies.tokens(config), label="another batch")
    tol = suite.tolerance("self")
    V = config.vocab_size
    first = checks.logits_of(requirement, impl, tokens, vocab_size=V)
    second = checks.logits_of(requirement, impl, tokens, vocab_size=V)
    checks.logits_of(
        requirement, impl, other, vocab_size=V, what="computing logits of another batch"
    )
    third = checks.logits_of(requirement, impl, tokens, vocab_size=V)
    for again, when in ((second, "called twice in a row"), (third, "after another batch")):
        checks.rows_agree(
            requirement,
            again,
            first,
            tol,
            describe=lambda i, e, t, when=when: (
                f"the same input {when} gave logits that differ in row {list(i)} by {e:.2e} "
                f"(tolerance {t:.1e}): evaluation depends on hidden state (dropout left on?)"
            ),
        )
    if suite.claims("loss") and tokens.shape[1] >= 2:
        convention = checks.label_convention(suite.adapter)
        labels = tokens if convention == "inputs" else np.roll(tokens, -1, axis=1)
        one = checks.loss_of(requirement, impl, tokens, labels, reduction="sum")
        two = checks.loss_of(requirement, impl, tokens, labels, reduction="sum")
        checks.scalar_agrees(requirement, two, one, tol, what="the sum loss computed a second time")
