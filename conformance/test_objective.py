"""Chapter 2, the per-position objective.

One row per position; row i scored against token i+1; one loss term per counted target; the sum
and the mean over the whole batch; ignored targets; the declared label convention and its single
shift; micro-batches; the gradient the loss sends into the logits; zero counted targets; the
precision of the loss.

Every loss is judged against the spec's ``causal_lm_loss`` evaluated in float64 on the
implementation's *own* logits, under the "self" tolerance: these properties check how the loss is
formed from the rows, not the rows themselves (that is chapter 7's oracle comparison).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import assume, target
from hypothesis import strategies as st

from gpt2_conformance import checks, strategies
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
IGNORE = strategies.IGNORE_INDEX
MAX_LENGTH = 32  # positions per sequence: enough for every clause, cheap with a checkpoint too


def _spec_loss(logits: np.ndarray, targets: np.ndarray, reduction: str) -> float:
    return float(S.causal_lm_loss(logits, targets, reduction, IGNORE))


def _close(actual: float, expected: float, tol: Any) -> bool:
    """A loss against the value the spec expects (the margin is noted)."""
    return checks.agree(np.float64(actual), np.float64(expected), tol)


def _matches(actual: float, variant: float, tol: Any) -> bool:
    """A loss against a known deviation's value, to word a failure (nothing noted)."""
    return checks.matches(np.float64(actual), np.float64(variant), tol)


def _difference(actual: float, expected: float, tol: Any) -> str:
    limit = checks.bound(np.array([expected]), tol)
    return f"difference {abs(actual - expected):.2e}, tolerance {limit:.1e}"


# Where the shift happens. The labels of a batch are read as one stream per sequence: ``stream[j]``
# is the label of token j (token T is the one after the window). Row i must be scored against
# stream[i + 1]; offset 0 is "no shift" (a copier), offset 2 a double shift.


def _label_stream(labels: np.ndarray, convention: str) -> np.ndarray:  # [B, T] -> [B, T+1]
    ignore = np.full((labels.shape[0], 1), IGNORE, dtype=labels.dtype)
    if convention == "inputs":  # label j belongs to token j; nothing is known of token T
        return np.concatenate([labels, ignore], axis=1)
    return np.concatenate([ignore, labels], axis=1)  # "shifted": label i belongs to token i+1


def _scored_against(stream: np.ndarray, offset: int, T: int) -> np.ndarray:  # -> [B, T]
    targets = np.full((stream.shape[0], T), IGNORE, dtype=stream.dtype)
    n = max(0, min(T, stream.shape[1] - offset))
    targets[:, :n] = stream[:, offset : offset + n]
    return targets


def _misalignment(convention: str, offset: int) -> str:
    """Words for a loss that scores row i against token i + offset."""
    if offset == 0:
        if convention == "inputs":
            return (
                "it scores row i against x_i, the token it has already seen: the labels were used "
                'as given (the "shifted" convention), but the adapter declares "inputs"'
            )
        return (
            "it scores row i against x_i, the token it has already seen: the targets were moved "
            "back by one position"
        )
    if convention == "shifted":
        return (
            "it scores row i against x_(i+2): the already-shifted targets were shifted once more "
            '(the "inputs" convention), but the adapter declares "shifted"'
        )
    return "it scores row i against x_(i+2): the labels are shifted twice"


def _check_scoring(
    requirement: str,
    implementation: Any,
    tokens: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray,
    convention: str,
    tol: Any,
    reductions: tuple[str, ...] = ("sum", "mean"),
) -> None:
    """The loss equals the spec's for the declared convention; a mismatch is explained by the
    alignment the loss follows instead, when one fits."""
    T = tokens.shape[1]
    stream = _label_stream(labels, convention)
    targets = S.targets_for_convention(labels, convention, IGNORE)
    if not (targets != IGNORE).any():
        reductions = ("sum",)  # the mean of nothing is objective.no-counted-targets
    for reduction in reductions:
        actual = checks.loss_of(requirement, implementation, tokens, labels, reduction=reduction)
        expected = _spec_loss(logits, targets, reduction)
        if _close(actual, expected, tol):
            continue
        fits = [
            offset
            for offset in (0, 2)
            if _matches(
                actual, _spec_loss(logits, _scored_against(stream, offset, T), reduction), tol
            )
        ]
        why = f"; {_misalignment(convention, fits[0])}" if fits else ""
        checks.fail(
            requirement,
            f"with {convention!r} labels the {reduction} loss is {actual:.8g}, but scoring each "
            f"row i against x_(i+1) gives {expected:.8g} ({_difference(actual, expected, tol)})"
            f"{why}",
        )


# --- T tokens in, T rows out ---------------------------------------------------------------------


@checks_requirement("objective.one-row-per-position")
def test_one_row_of_logits_per_input_position(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(strategies.tokens(config, max_length=MAX_LENGTH), label="tokens")
    B, T = tokens.shape
    out = checks.call(requirement, "computing logits", implementation.logits, tokens)
    checks.array(requirement, out, what="logits", shape=(B, T, config.vocab_size))


@checks_requirement("objective.row-predicts-next-token", needs=("loss",))
def test_row_i_is_scored_against_token_i_plus_1(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=2, max_length=MAX_LENGTH, p_ignore_max=0.3
    )
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    # The alignment shows in the sum of the terms; how the mean counts is another requirement.
    tol = suite.tolerance("self")
    _check_scoring(requirement, implementation, tokens, labels, logits, convention, tol, ("sum",))


# --- One term per counted target, sum and mean ---------------------------------------------------


@checks_requirement("objective.one-term-per-target", needs=("loss",))
def test_one_loss_term_per_counted_target(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=2, max_length=MAX_LENGTH
    )
    targets = S.targets_for_convention(labels, convention, IGNORE)
    n_counted = int((targets != IGNORE).sum())
    assume(n_counted > 0)
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    total = checks.loss_of(requirement, implementation, tokens, labels, reduction="sum")
    mean = checks.loss_of(requirement, implementation, tokens, labels, reduction="mean")

    # The sum over the mean is the number of terms: exactly the counted targets.
    terms = total / mean
    if not _close(terms, n_counted, tol):
        checks.fail(
            requirement,
            f"sum / mean = {total:.8g} / {mean:.8g} = {terms:.6g} terms, but {n_counted} targets "
            f"are counted ({_difference(terms, n_counted, tol)})",
        )

    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    if convention == "inputs":
        # No row is scored against label 0 of a sequence: changing it changes no term.
        moved = labels.copy()
        moved[:, 0] = np.where(
            rng.random(len(labels)) < 0.5, IGNORE, rng.integers(0, config.vocab_size, len(labels))
        )
        after = checks.loss_of(requirement, implementation, tokens, moved, reduction="sum")
        if not _close(after, total, tol):
            checks.fail(
                requirement,
                f"changing label 0 of each sequence, which no row is scored against, moved the "
                f"sum from {total:.8g} to {after:.8g} ({_difference(after, total, tol)})",
            )

    # A counted target has exactly one term: changing it changes that term and nothing else.
    counted = np.argwhere(targets != IGNORE)
    b, i = (int(k) for k in counted[rng.integers(len(counted))])
    j = i + 1 if convention == "inputs" else i  # the label that is row i's target
    moved = labels.copy()
    moved[b, j] = (labels[b, j] + rng.integers(1, config.vocab_size)) % config.vocab_size
    expected = _spec_loss(logits, S.targets_for_convention(moved, convention, IGNORE), "sum")
    after = checks.loss_of(requirement, implementation, tokens, moved, reduction="sum")
    if not _close(after, expected, tol):
        checks.fail(
            requirement,
            f"changing the target of row {i} of sequence {b} (label {j}) from {labels[b, j]} to "
            f"{moved[b, j]} moved the sum by {after - total:.6g}; its one term changes it by "
            f"{expected - _spec_loss(logits, targets, 'sum'):.6g} "
            f"({_difference(after, expected, tol)})",
        )


@checks_requirement("objective.sum-of-terms", needs=("loss",))
def test_sum_reduction_is_the_sum_of_the_terms(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, max_length=MAX_LENGTH
    )
    targets = S.targets_for_convention(labels, convention, IGNORE)
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    terms, counted = S.loss_terms(logits, targets, IGNORE)
    actual = checks.loss_of(requirement, implementation, tokens, labels, reduction="sum")
    expected = float(terms.sum())
    if not _close(actual, expected, tol):
        per_sequence = ", ".join(f"{s:.6g}" for s in terms.sum(axis=1))
        checks.fail(
            requirement,
            f"the sum loss is {actual:.8g}, but the {int(counted.sum())} counted terms add up to "
            f"{expected:.8g} (per sequence: {per_sequence}; {_difference(actual, expected, tol)})",
        )


@checks_requirement("objective.mean-over-counted-targets", needs=("loss",))
def test_mean_divides_by_the_counted_targets_of_the_batch(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data,
        suite,
        requirement,
        min_batch=2,
        max_batch=4,
        min_length=4,
        max_length=24,
        p_ignore_max=0.0,
    )
    # The targets are chosen after seeing the rows, so that the two means differ as much as the
    # draw allows: one sequence keeps only its most unusual term, the others many of theirs.
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    all_terms, counted = S.loss_terms(
        logits, S.targets_for_convention(labels, convention, IGNORE), IGNORE
    )
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    label_of_row = 1 if convention == "inputs" else 0  # row i's label sits at i + this
    short = int(rng.integers(len(labels)))
    typical = all_terms[counted].mean()
    for b in range(len(labels)):
        rows = np.flatnonzero(counted[b])  # every row but the last ("inputs"), >= 3 of them
        if b == short:
            kept = rows[[int(np.argmax(np.abs(all_terms[b, rows] - typical)))]]
        else:
            kept = rng.permutation(rows)[: int(rng.integers((len(rows) + 1) // 2, len(rows) + 1))]
        labels[b, np.setdiff1d(rows, kept) + label_of_row] = IGNORE
    targets = S.targets_for_convention(labels, convention, IGNORE)
    counts = (targets != IGNORE).sum(axis=1)
    terms, _ = S.loss_terms(logits, targets, IGNORE)
    expected = float(terms.sum() / counts.sum())
    mean_of_means = float((terms.sum(axis=1) / counts).mean())
    # How well this draw tells the two apart (at reduced precision often not at all: the
    # tolerance is then wider than the difference); hypothesis favours draws that do.
    target(abs(expected - mean_of_means) / checks.bound(np.array([expected]), tol))

    actual = checks.loss_of(requirement, implementation, tokens, labels, reduction="mean")
    if _close(actual, expected, tol):
        return
    B, T = targets.shape
    wrong = {
        "the mean of per-sequence means": mean_of_means,
        f"the sum divided by B*T = {B * T}": float(terms.sum()) / (B * T),
        f"the sum divided by B*(T-1) = {B * (T - 1)}": float(terms.sum()) / (B * (T - 1)),
    }
    fits = [name for name, value in wrong.items() if _matches(actual, value, tol)]
    why = f"; it equals {fits[0]}" if fits else ""
    checks.fail(
        requirement,
        f"the mean loss is {actual:.8g}, but the sum over the batch divided by its "
        f"{int(counts.sum())} counted targets (per sequence {counts.tolist()}) is {expected:.8g} "
        f"({_difference(actual, expected, tol)}){why}",
    )


@checks_requirement("objective.ignore-index", needs=("loss",))
def test_ignored_targets_count_nowhere(suite: Suite, data: st.DataObject, requirement: str) -> None:
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=3, max_length=MAX_LENGTH, p_ignore_max=0.0
    )
    # Between a fifth and nine tenths of the targets ignored; always at least one of each kind.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    targets = S.targets_for_convention(labels, convention, IGNORE)
    rows = np.argwhere(targets != IGNORE)
    order = rng.permutation(len(rows))
    n_ignored = int(np.clip(rng.uniform(0.2, 0.9) * len(rows), 1, len(rows) - 1))
    label_of_row = 1 if convention == "inputs" else 0  # row i's label sits at i + this
    for b, i in rows[order[:n_ignored]]:
        labels[b, i + label_of_row] = IGNORE
    targets = S.targets_for_convention(labels, convention, IGNORE)
    counted = targets != IGNORE
    # Ignored rows keep whatever logits the model gives them: random ones, unrelated to the loss.
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    terms, _ = S.loss_terms(logits, targets, IGNORE)
    ignored = int((~counted).sum())
    for reduction in ("sum", "mean"):
        actual = checks.loss_of(requirement, implementation, tokens, labels, reduction=reduction)
        expected = _spec_loss(logits, targets, reduction)
        if _close(actual, expected, tol):
            continue
        # What a loss that lets ignored rows in would give: scored as token 0, or only counted.
        as_token_0 = _spec_loss(logits, np.where(counted, targets, 0), reduction)
        only_counted = float(terms.sum()) / targets.size
        why = ""
        if _matches(actual, as_token_0, tol):
            why = "; it equals the loss with every ignored target scored as token 0"
        elif reduction == "mean" and _matches(actual, only_counted, tol):
            why = f"; it equals the sum divided by all {targets.size} rows, ignored ones included"
        checks.fail(
            requirement,
            f"with {ignored} of {targets.size} rows ignored the {reduction} loss is {actual:.8g}, "
            f"but without their terms and counts it is {expected:.8g} "
            f"({_difference(actual, expected, tol)}){why}",
        )


# --- Two label conventions, one shift ------------------------------------------------------------


@checks_requirement("objective.label-convention-declared", needs=("loss",))
def test_loss_follows_the_declared_label_convention(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=3, max_length=MAX_LENGTH, p_ignore_max=0.2
    )
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    _check_scoring(
        requirement, implementation, tokens, labels, logits, convention, suite.tolerance("self")
    )


@checks_requirement("objective.no-double-shift", needs=("loss",))
def test_labels_are_shifted_exactly_once(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    # Plain language-modelling labels, nothing ignored: the three alignments differ at every row.
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=3, max_length=MAX_LENGTH, p_ignore_max=0.0
    )
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    T = tokens.shape[1]
    stream = _label_stream(labels, convention)
    once = _spec_loss(logits, _scored_against(stream, 1, T), "sum")
    actual = checks.loss_of(requirement, implementation, tokens, labels, reduction="sum")
    if _close(actual, once, tol):
        return
    for offset in (2, 0):
        if _matches(actual, _spec_loss(logits, _scored_against(stream, offset, T), "sum"), tol):
            checks.fail(
                requirement,
                f"the sum loss is {actual:.8g}, not {once:.8g} (one shift): "
                f"{_misalignment(convention, offset)}",
            )
    checks.fail(
        requirement,
        f"the sum loss is {actual:.8g}, but scoring row i against x_(i+1) (one shift) gives "
        f"{once:.8g} ({_difference(actual, once, tol)})",
    )


# --- Micro-batches -------------------------------------------------------------------------------


@checks_requirement("objective.microbatch-additivity", needs=("loss",))
def test_micro_batch_sums_and_counts_add_up(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    convention, _, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_batch=2, max_batch=4, min_length=2, max_length=24
    )
    cuts = data.draw(strategies.splits(len(tokens)), label="cuts")
    targets = S.targets_for_convention(labels, convention, IGNORE)
    counts = [int((part != IGNORE).sum()) for part in np.split(targets, cuts)]
    assume(sum(counts) > 0)

    sums = [
        checks.loss_of(requirement, implementation, x, y, reduction="sum")
        for x, y in zip(np.split(tokens, cuts), np.split(labels, cuts), strict=True)
    ]
    whole = checks.loss_of(requirement, implementation, tokens, labels, reduction="sum")
    if not _close(sum(sums), whole, tol):
        checks.fail(
            requirement,
            f"the micro-batches (sequences split at {cuts}) have sums {sums} adding up to "
            f"{sum(sums):.8g}, but the whole batch's sum is {whole:.8g} "
            f"({_difference(sum(sums), whole, tol)})",
        )
    mean = checks.loss_of(requirement, implementation, tokens, labels, reduction="mean")
    expected = sum(sums) / sum(counts)
    if not _close(mean, expected, tol):
        checks.fail(
            requirement,
            f"the whole batch's mean loss is {mean:.8g}, but the micro-batch sums over their "
            f"counts, ({' + '.join(f'{s:.6g}' for s in sums)}) / ({' + '.join(map(str, counts))})"
            f", give {expected:.8g} ({_difference(mean, expected, tol)})",
        )


@checks_requirement("objective.microbatch-additivity", needs=("loss", "gradients"))
def test_micro_batch_gradients_add_up(suite: Suite, data: st.DataObject, requirement: str) -> None:
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_batch=2, max_batch=4, min_length=2, max_length=16
    )
    cuts = data.draw(strategies.splits(len(tokens)), label="cuts")
    n_counted = int((S.targets_for_convention(labels, convention, IGNORE) != IGNORE).sum())
    assume(n_counted > 0)

    shapes = _gradient_probes(config)

    def gradients(x: np.ndarray, y: np.ndarray, reduction: str) -> dict[str, np.ndarray]:
        what = f"computing the gradients of the {reduction} loss"
        _, grads = checks.call(
            requirement, what, implementation.gradients, x, y, reduction=reduction
        )
        return {
            n: checks.gradient_of(requirement, grads, n, shape=shape) for n, shape in shapes.items()
        }

    whole_sum = gradients(tokens, labels, "sum")
    whole_mean = gradients(tokens, labels, "mean")
    accumulated = {name: np.zeros(shape) for name, shape in shapes.items()}
    for x, y in zip(np.split(tokens, cuts), np.split(labels, cuts), strict=True):
        for name, grad in gradients(x, y, "sum").items():  # one micro-batch at a time
            accumulated[name] += grad
    for name in shapes:
        checks.tensors_agree(
            requirement,
            accumulated[name],
            whole_sum[name],
            tol,
            what=f"the micro-batch gradients of the sum (split at {cuts}) add up to a gradient "
            f"of {name} that differs from the whole batch's",
        )
        checks.tensors_agree(
            requirement,
            whole_mean[name],
            accumulated[name] / n_counted,
            tol,
            what=f"the gradient of the whole batch's mean loss for {name}, against the "
            f"accumulated micro-batch sum gradients over the {n_counted} counted targets,",
        )


def _gradient_probes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Parameters whose gradients stand for all (any misweighted loss shows in each of them):
    the tied embedding/head, the positions, one attention matrix, the final LayerNorm. A few
    rather than all keeps a full-size checkpoint's gradients affordable."""
    V, d = config.vocab_size, config.n_embd
    return {
        "transformer.wte.weight": (V, d),
        "transformer.wpe.weight": (config.n_positions, d),
        "transformer.h.0.attn.c_attn.weight": (d, 3 * d),
        "transformer.ln_f.weight": (d,),
        "transformer.ln_f.bias": (d,),
    }


# --- The gradient with respect to the logits -----------------------------------------------------


@checks_requirement("objective.logits-gradient", needs=("loss", "gradients"))
def test_logits_gradient_is_softmax_minus_one_hot(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Seen from outside: logits = h W^T with h = ln_f(...) and ln_f's bias added last, so
    d loss / d ln_f.bias = sum over rows of (d loss / d z_i) W."""
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=2, max_length=MAX_LENGTH
    )
    targets = S.targets_for_convention(labels, convention, IGNORE)
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    head = checks.array(
        requirement,
        checks.call(requirement, "reading the head weight", implementation.head_weight),
        what="the head weight",
        shape=(config.vocab_size, config.n_embd),
    )
    reductions = ("sum", "mean") if (targets != IGNORE).any() else ("sum",)
    for reduction in reductions:
        _, grads = checks.call(
            requirement,
            f"computing the gradients of the {reduction} loss",
            implementation.gradients,
            tokens,
            labels,
            reduction=reduction,
        )
        actual = checks.gradient_of(
            requirement, grads, "transformer.ln_f.bias", shape=(config.n_embd,)
        )
        expected = np.einsum(
            "btv,vd->d", S.logits_gradient(logits, targets, reduction, IGNORE), head
        )
        checks.tensors_agree(
            requirement,
            actual,
            expected,
            suite.tolerance("self"),
            what=f"d {reduction}-loss / d ln_f.bias, against the sum over rows of "
            "(softmax(z_i) - onehot(y_i)) W (zero for rows without a counted target),",
        )


# --- Zero counted targets ------------------------------------------------------------------------


@st.composite
def _nothing_counted(
    draw: st.DrawFn, config: GPT2Config, convention: str
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and labels with no counted target, in the ways a batch gets there."""
    ways = ["all ignored"] + (["first label only", "one token"] if convention == "inputs" else [])
    way = draw(st.sampled_from(ways), label="how")
    length = 1 if way == "one token" else None
    tokens = draw(
        strategies.tokens(config, min_length=length or 1, max_length=length or MAX_LENGTH)
    )
    labels = np.full_like(tokens, IGNORE)
    if way == "first label only":  # label 0 is real, but no row is scored against it
        labels[:, 0] = tokens[:, 0]
    elif way == "one token":  # its only row has no next token
        labels = tokens.copy()
    return tokens, labels


@checks_requirement("objective.no-counted-targets", needs=("loss",))
def test_zero_counted_targets_give_sum_zero_and_no_mean(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    convention = checks.label_convention(suite.adapter)
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens, labels = data.draw(_nothing_counted(config, convention), label="tokens, labels")
    total = checks.loss_of(requirement, implementation, tokens, labels, reduction="sum")
    checks.scalar_agrees(
        requirement, total, 0.0, suite.tolerance("self"), what="the sum loss with no counted target"
    )
    try:
        out = implementation.loss(tokens, labels, reduction="mean")
    except ValueError:
        return  # a clear error: accepted
    except Exception as error:
        checks.fail(
            requirement,
            f"the mean loss with no counted target raised {type(error).__name__}: {error}; it must "
            "be NaN or a clear error, a ValueError (input.clear-error)",
        )
    mean = checks.scalar(
        requirement, out, what="the mean loss with no counted target", allow_nan=True
    )
    if not np.isnan(mean):
        checks.fail(
            requirement,
            f"the mean loss with no counted target (0/0) is {mean:.8g}, a finite number; it must "
            "be NaN or a clear error",
        )


@checks_requirement("objective.no-counted-targets", needs=("loss", "gradients"))
def test_zero_counted_targets_give_zero_gradient(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    convention = checks.label_convention(suite.adapter)
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens, labels = data.draw(_nothing_counted(config, convention), label="tokens, labels")
    _, grads = checks.call(
        requirement,
        "computing the gradients of the sum loss",
        implementation.gradients,
        tokens,
        labels,
        reduction="sum",
    )
    for name in sorted(grads):
        grad = checks.array(requirement, grads[name], what=f"the gradient of {name}")
        checks.tensors_agree(
            requirement,
            grad,
            np.zeros_like(grad),
            suite.tolerance("self"),
            what=f"the gradient of {name} for a sum over no counted target (must be 0)",
        )


# --- Precision -----------------------------------------------------------------------------------

_HALF_PRECISION = ("float16", "bfloat16", "half")


@checks_requirement("objective.loss-in-float32", needs=("loss",))
def test_loss_is_computed_in_at_least_float32(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """At any dtype, the loss equals the spec's loss evaluated in float64 on the implementation's
    own logits; a loss returned in a 16-bit format was last computed in it."""
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, max_batch=4, min_length=2, max_length=MAX_LENGTH
    )
    targets = S.targets_for_convention(labels, convention, IGNORE)
    assume((targets != IGNORE).any())
    logits = checks.logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size)
    for reduction in ("sum", "mean"):
        out = checks.call(
            requirement, f"computing the {reduction} loss", implementation.loss, tokens, labels,
            reduction=reduction,
        )  # fmt: skip
        dtype = str(getattr(out, "dtype", "")).rpartition(".")[2]
        if dtype in _HALF_PRECISION:
            checks.fail(
                requirement,
                f"the {reduction} loss comes back as {dtype}: it was computed (or rounded) in a "
                "16-bit format; convert the logits to float32 before the log-softmax",
            )
        actual = checks.scalar(requirement, out, what=f"the {reduction} loss")
        expected = _spec_loss(logits, targets, reduction)
        if not _close(actual, expected, tol):
            checks.fail(
                requirement,
                f"at {suite.dtype} the {reduction} loss is {actual:.8g}, but the loss of the same "
                f"logits evaluated in float64 is {expected:.8g} "
                f"({_difference(actual, expected, tol)})",
            )
