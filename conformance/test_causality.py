"""Chapter 3, causality: row i depends on tokens 0..i only, and on its own sequence only.

The three forms of the property are each checked the way that is cheap for them: many changes of
future tokens as the rows of one batch (future-invisible), a few shorter runs (prefix-consistency),
one backward pass per cut (the Jacobian), and the same sequence alone, among other sequences and
in another order (batch independence). Rows are compared as log-probabilities under the spec's
"self" tolerance.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from gpt2_conformance import checks, strategies
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_spec import spec_definitions

S = spec_definitions()
IGNORE = strategies.IGNORE_INDEX
MAX_LENGTH = 32


def _positions(changed: np.ndarray) -> str:
    """'token 7' or 'tokens 3, 5, 9' for the changed positions of a copy."""
    where = [int(j) for j in np.flatnonzero(changed)]
    if len(where) == 1:
        return f"token {where[0]}"
    if where == list(range(where[0], where[-1] + 1)):
        return f"tokens {where[0]}..{where[-1]}"
    return "tokens " + ", ".join(map(str, where))


@checks_requirement("causality.future-invisible")
def test_changing_future_tokens_changes_no_earlier_row(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    V = config.vocab_size
    T = data.draw(st.integers(2, min(config.n_positions, MAX_LENGTH)), label="length")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    original = rng.integers(0, V, T)

    # Copies of the sequence, each changing tokens after some cut p: every token after it (with
    # p = 0 and p = T-2 always among them), one token, or the last token alone.
    copies, cuts = [], [0, T - 2]
    n_copies = data.draw(st.integers(4, 12), label="copies")
    cuts += [int(p) for p in rng.integers(0, T - 1, n_copies - 2)]
    for k, p in enumerate(cuts):
        changed = np.zeros(T, dtype=bool)
        kind = k % 3 if k >= 2 else 0
        if kind == 0:
            changed[p + 1 :] = True
        elif kind == 1:
            changed[rng.integers(p + 1, T)] = True
        else:
            changed[T - 1] = True
        copy = original.copy()
        copy[changed] = (original[changed] + rng.integers(1, V, int(changed.sum()))) % V
        copies.append((copy, changed))

    batch = np.stack([original] + [copy for copy, _ in copies])
    logp = checks.log_probs_of(requirement, implementation, batch, config)
    worst: tuple[float, int, int, float] | None = None  # (excess, copy, position, error)
    for c, (_, changed) in enumerate(copies, start=1):
        first = int(np.argmax(changed))  # rows 0..first-1 have seen only unchanged tokens
        if first == 0:
            continue
        excess = checks.row_excess(logp[c, :first], logp[0, :first], tol)
        i = int(np.argmax(excess))
        if excess[i] > 0 and (worst is None or excess[i] > worst[0]):
            err = float(np.abs(logp[c, i] - logp[0, i]).max())
            worst = (float(excess[i]), c, i, err)
    if worst is not None:
        _, c, i, err = worst
        checks.fail(
            requirement,
            f"changing {_positions(copies[c - 1][1])} (of {T}) moved the log-probabilities of "
            f"position {i} by {err:.2e} (tolerance {checks.bound(logp[0, i], tol):.1e})",
        )


@checks_requirement("causality.prefix-consistency")
def test_a_prefix_gives_the_same_rows(suite: Suite, data: st.DataObject, requirement: str) -> None:
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(
        strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="tokens"
    )
    T = tokens.shape[1]
    lengths = data.draw(st.lists(st.integers(1, T - 1), min_size=1, max_size=3), label="prefixes")
    full = checks.log_probs_of(requirement, implementation, tokens, config)
    for k in sorted(set(lengths)):
        prefix = checks.log_probs_of(requirement, implementation, tokens[:, :k], config)
        checks.rows_agree(
            requirement,
            prefix,
            full[:, :k],
            tol,
            describe=lambda index, err, limit, k=k: (
                f"the prefix of {k} tokens gives log-probabilities at position {index[1]} of "
                f"sequence {index[0]} that differ from the full {T}-token sequence's by "
                f"{err:.2e} (tolerance {limit:.1e})"
            ),
        )


@checks_requirement("causality.jacobian-lower-triangular", needs=("loss", "gradients"))
def test_earlier_rows_send_no_gradient_to_later_positions(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """The loss of rows 0..p only; wpe row j receives exactly d loss / d e_j (the input of block
    0 at position j, summed over the batch), which must vanish for j > p. An example whose
    gradients at j <= p are too small to resolve at the dtype is discarded (spec chapter 3)."""
    tol = suite.tolerance("self")
    convention, config, implementation, tokens, labels = strategies.draw_labelled_implementation(
        data, suite, requirement, min_length=2, max_length=MAX_LENGTH, p_ignore_max=0.0
    )
    T = tokens.shape[1]
    cuts = data.draw(st.lists(st.integers(0, T - 2), min_size=1, max_size=2), label="cuts")
    shape = (config.n_positions, config.n_embd)
    for p in sorted(set(cuts)):
        counted = labels.copy()  # targets on rows 0..p only
        if convention == "inputs":
            counted[:, p + 2 :] = IGNORE  # row i's target is label i+1
        else:
            counted[:, p + 1 :] = IGNORE
        _, grads = checks.call(
            requirement,
            f"computing the gradients of the loss of rows 0..{p}",
            implementation.gradients,
            tokens,
            counted,
            reduction="sum",
        )
        wpe = checks.gradient_of(requirement, grads, "transformer.wpe.weight", shape=shape)
        limit = checks.bound(wpe.reshape(-1), tol)  # a gradient's bound: its largest entry
        future = np.abs(wpe[p + 1 : T]).max(axis=1)
        if checks.exceeds(float(future.max()), limit):
            j = p + 1 + int(np.argmax(future))
            checks.fail(
                requirement,
                f"the loss of rows 0..{p} sends a gradient of size {future.max():.2e} to the "
                f"input embedding of position {j} (d row_i / d e_{j} must be 0 for i < {j}; "
                f"tolerance {limit:.1e}, the largest wpe gradient is {np.abs(wpe).max():.2e})",
            )
        past = float(np.abs(wpe[: p + 1]).max())
        what = f"the gradient the loss of rows 0..{p} sends to wpe rows 0..{p}"
        assume(checks.gradient_resolves(requirement, past, limit, what=what))


@checks_requirement("causality.batch-independence")
def test_a_sequence_ignores_the_rest_of_its_batch(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(
        strategies.tokens(config, min_batch=2, max_batch=4, max_length=MAX_LENGTH), label="tokens"
    )
    B, T = tokens.shape
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    order = np.roll(rng.permutation(B), 1)  # a reordering ...
    if (order == np.arange(B)).all():
        order = order[::-1].copy()  # ... that moves something
    probe = int(rng.integers(B))  # the sequence also run alone and among new companions
    others = tokens.copy()
    others[np.arange(B) != probe] = rng.integers(0, config.vocab_size, (B - 1, T))

    batch = checks.log_probs_of(requirement, implementation, tokens, config)
    alone = checks.log_probs_of(requirement, implementation, tokens[probe : probe + 1], config)
    checks.rows_agree(
        requirement,
        batch[probe : probe + 1],
        alone,
        tol,
        describe=lambda index, err, limit: (
            f"sequence {probe} inside a batch of {B} and alone differ at position {index[1]} by "
            f"{err:.2e} in log-probability (tolerance {limit:.1e})"
        ),
    )
    reordered = checks.log_probs_of(requirement, implementation, tokens[order], config)
    checks.rows_agree(
        requirement,
        reordered,
        batch[order],
        tol,
        describe=lambda index, err, limit: (
            f"reordering the batch as {order.tolist()} moved the log-probabilities of sequence "
            f"{int(order[index[0]])} at position {index[1]} by {err:.2e} (tolerance {limit:.1e})"
        ),
    )
    companions = checks.log_probs_of(requirement, implementation, others, config)
    checks.rows_agree(
        requirement,
        companions[probe : probe + 1],
        batch[probe : probe + 1],
        tol,
        describe=lambda index, err, limit: (
            f"changing the other {B - 1} sequences of the batch moved the log-probabilities of "
            f"sequence {probe} at position {index[1]} by {err:.2e} (tolerance {limit:.1e})"
        ),
    )


@checks_requirement("causality.batch-independence", needs=("attention-mask",))
def test_a_padded_sequence_ignores_the_rest_of_its_batch(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Each sequence with its own attention mask and position ids: the batch gives the rows that
    the sequence gives alone with the same mask and positions (compared at real positions)."""
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    _, tokens, mask = data.draw(
        strategies.left_padded(config, max_batch=4, max_length=MAX_LENGTH), label="padded batch"
    )
    positions = S.position_ids_from_mask(mask)
    batch = checks.log_probs_of(
        requirement, implementation, tokens, config, attention_mask=mask, position_ids=positions
    )
    for b in range(len(tokens)):
        alone = checks.log_probs_of(
            requirement,
            implementation,
            tokens[b : b + 1],
            config,
            attention_mask=mask[b : b + 1],
            position_ids=positions[b : b + 1],
        )
        real = mask[b] == 1
        checks.rows_agree(
            requirement,
            batch[b, real],
            alone[0, real],
            tol,
            describe=lambda index, err, limit, b=b, real=real: (
                f"sequence {b} ({int(real.sum())} real tokens, {int((~real).sum())} padded) "
                f"inside a batch of {len(tokens)} and alone, with the same attention mask and "
                f"position ids, differ at index {int(np.flatnonzero(real)[index[0]])} by "
                f"{err:.2e} in log-probability (tolerance {limit:.1e})"
            ),
        )
