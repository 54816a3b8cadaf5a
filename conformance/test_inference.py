"""Chapter 4, inference: the next-token row, last-position-only heads, the key/value cache (and
where new tokens sit after it), and left padding.

Every property compares the implementation with itself: its full forward pass is the reference
for its own shortcuts. Rows are compared as log-probabilities under the spec's "self" tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gpt2_conformance import checks, strategies
from gpt2_conformance.adapter import Cache
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
IGNORE = strategies.IGNORE_INDEX
MAX_LENGTH = 32


# --- The next token is read from the last row ----------------------------------------------------


@checks_requirement("inference.next-token-is-last-row")
def test_earlier_rows_are_the_last_rows_of_shorter_contexts(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(
        strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="contexts"
    )
    k = tokens.shape[1]
    shorter = {0, k - 2} | set(
        data.draw(st.lists(st.integers(0, k - 2), max_size=2), label="shorter contexts")
    )
    full = checks.log_probs_of(requirement, implementation, tokens, config)
    for i in sorted(shorter):
        last = checks.log_probs_of(requirement, implementation, tokens[:, : i + 1], config)[:, -1]
        checks.rows_agree(
            requirement,
            full[:, i],
            last,
            tol,
            describe=lambda index, err, limit, i=i: (
                f"row {i} of the {k}-token context of sequence {index[0]} differs from the last "
                f"row of its first {i + 1} tokens run alone (the next-token distribution of that "
                f"context) by {err:.2e} in log-probability (tolerance {limit:.1e})"
            ),
        )


@checks_requirement("inference.next-token-is-last-row", needs=("loss",))
def test_the_last_row_is_what_the_loss_scores_the_next_token_with(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """The distribution read from the last row of a context is the one training scores the next
    token with: -log softmax(z_(k-1))[v] is the loss term of v after that context."""
    tol = suite.tolerance("self")
    convention = checks.label_convention(suite.adapter)
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    stream = data.draw(
        strategies.tokens(config, min_length=2, max_length=min(MAX_LENGTH, config.n_positions)),
        label="context and next token",
    )
    context, following = stream[:, :-1], stream[:, -1]
    B, k = context.shape
    last = checks.log_probs_of(requirement, implementation, context, config)[:, -1]  # [B, V]
    expected = float(-last[np.arange(B), following].sum())
    if convention == "inputs":  # the next token is appended and is the only counted label
        tokens, labels = stream, np.full_like(stream, IGNORE)
        labels[:, k] = following
    else:  # row k-1's target is the next token
        tokens, labels = context, np.full_like(context, IGNORE)
        labels[:, k - 1] = following
    actual = checks.loss_of(requirement, implementation, tokens, labels, reduction="sum")
    if not checks.agree(np.float64(actual), np.float64(expected), tol):
        limit = checks.bound(np.array([expected]), tol)
        checks.fail(
            requirement,
            f"the last rows of {B} contexts of {k} tokens give the next tokens "
            f"{following.tolist()} a total of -log p = {expected:.8g}, but the sum loss of those "
            f"next tokens is {actual:.8g} (tolerance {limit:.1e})",
        )


@checks_requirement("inference.last-position-only", needs=("last-position",))
def test_last_position_logits_are_the_full_forwards_last_row(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(strategies.tokens(config, max_length=MAX_LENGTH), label="tokens")
    B, T = tokens.shape
    V = config.vocab_size
    out = checks.call(
        requirement, "computing the last position's logits", implementation.last_logits, tokens
    )
    last = checks.array(requirement, out, what=f"the last-position logits of a {B}x{T} batch")
    if last.shape not in ((B, V), (B, 1, V)):
        checks.fail(
            requirement, f"the last-position logits have shape {last.shape}, expected {(B, V)}"
        )
    full = checks.log_probs_of(requirement, implementation, tokens, config)
    checks.rows_agree(
        requirement,
        checks.log_probs(last.reshape(B, V)),
        full[:, -1],
        suite.tolerance("self"),
        describe=lambda index, err, limit: (
            f"the last-position logits of sequence {index[0]} differ from row {T - 1} of the full "
            f"forward by {err:.2e} in log-probability (tolerance {limit:.1e})"
        ),
    )


# --- The key/value cache -------------------------------------------------------------------------


def _run_cached(
    requirement: str,
    implementation: Any,
    tokens: np.ndarray,
    config: GPT2Config,
    schedule: list[int],
    tol: Any,
    *,
    hint: str = "",
) -> None:
    """Prefill ``schedule[0]`` tokens, feed the rest in calls of ``schedule[1:]`` tokens, and
    compare every returned row with the same row of one full forward pass."""
    full = checks.log_probs_of(requirement, implementation, tokens, config)
    B = tokens.shape[0]
    cache: Cache | None = None
    start = 0
    for call_number, size in enumerate(schedule):
        piece = tokens[:, start : start + size]
        if cache is None:
            what = f"prefilling a cache with {size} tokens"
            out, cache = checks.call(requirement, what, implementation.prefill, piece)
        else:
            what = f"extending a cache of {start} positions by {size} tokens"
            out, cache = checks.call(requirement, what, implementation.extend, cache, piece)
        rows = checks.array(
            requirement,
            out,
            what=f"the logits returned by {what}",
            shape=(B, size, config.vocab_size),
        )
        checks.rows_agree(
            requirement,
            checks.log_probs(rows),
            full[:, start : start + size],
            tol,
            describe=lambda index, err, limit, start=start, size=size, n=call_number: (
                (
                    f"prefilling {size} tokens gave a row for position {start + index[1]}"
                    if n == 0
                    else f"after a cache of {start} positions, new token {index[1]} of {size} "
                    f"(absolute position {start + index[1]}) got a row"
                )
                + f" of sequence {index[0]} that differs from the full forward's by {err:.2e} in "
                f"log-probability (tolerance {limit:.1e}; cached calls {schedule}){hint}"
            ),
        )
        start += size


@checks_requirement("inference.kv-cache", needs=("kv-cache",))
def test_cached_decoding_equals_the_full_forward(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(
        strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="tokens"
    )
    T = tokens.shape[1]
    prefill = data.draw(st.integers(1, T - 1), label="prefill")
    schedule = [prefill, *data.draw(strategies.chunk_sizes(T - prefill), label="chunks")]
    _run_cached(requirement, implementation, tokens, config, schedule, suite.tolerance("self"))


@checks_requirement("inference.kv-cache", needs=("kv-cache",))
def test_one_cache_serves_two_continuations(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """A cache of the prefix x_0..x_(P-1) is a value: extending it with one continuation must not
    change it (beam search and speculative decoding extend one prefix several times). A cache
    object that grows in place shows here and nowhere else."""
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(
        strategies.tokens(config, min_length=2, max_length=MAX_LENGTH), label="tokens"
    )
    B, T = tokens.shape
    P = data.draw(st.integers(1, T - 1), label="prefix")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    other = tokens.copy()  # the same prefix, another continuation
    other[:, P:] = rng.integers(0, config.vocab_size, (B, T - P))
    prefill = f"prefilling a cache with {P} tokens"
    _, cache = checks.call(requirement, prefill, implementation.prefill, tokens[:, :P])
    for n, sequence in enumerate((tokens, other)):
        what = f"extending one cache of {P} positions by {T - P} tokens (continuation {n + 1})"
        full = checks.log_probs_of(requirement, implementation, sequence, config)
        try:
            _cached_rows_agree(requirement, implementation, cache, sequence, P, full, tol, what, n)
        except checks.ConformanceFailure as failure:
            if n == 0:
                raise
            # Only a fresh cache that gets the second continuation right shows that the first
            # continuation changed the shared cache; otherwise the rows are wrong either way.
            _, fresh = checks.call(requirement, prefill, implementation.prefill, tokens[:, :P])
            try:
                _cached_rows_agree(requirement, implementation, fresh, other, P, full, tol, what, n)
            except checks.ConformanceFailure:
                raise failure from None
            checks.fail(
                requirement,
                f"{failure.detail}; a fresh {P}-token cache gives this continuation's rows right, "
                "so the first continuation changed the cache (a cache must not grow in place)",
            )


def _cached_rows_agree(
    requirement: str,
    implementation: Any,
    cache: Any,
    sequence: np.ndarray,
    P: int,
    full: np.ndarray,
    tol: Any,
    what: str,
    n: int,
) -> None:
    """The rows ``extend`` returns for ``sequence[:, P:]`` on ``cache`` agree with ``full``."""
    B, T = sequence.shape
    out, _ = checks.call(requirement, what, implementation.extend, cache, sequence[:, P:])
    vocab = full.shape[-1]
    rows = checks.array(
        requirement, out, what=f"the logits returned by {what}", shape=(B, T - P, vocab)
    )
    checks.rows_agree(
        requirement,
        checks.log_probs(rows),
        full[:, P:],
        tol,
        describe=lambda index, err, limit: (
            f"continuation {n + 1} of one {P}-token cache gave absolute position "
            f"{P + index[1]} of sequence {index[0]} a row that differs from the full "
            f"forward's by {err:.2e} in log-probability (tolerance {limit:.1e})"
        ),
    )


@checks_requirement("inference.cache-positions", needs=("kv-cache",))
def test_new_tokens_continue_the_cached_positions(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """After a non-empty cache: one call of several tokens (a top-left aligned causal mask shows
    there), then single tokens at positions P > 0 (positions restarting at 0 show there)."""
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    longest = min(config.n_positions, MAX_LENGTH)
    prefill = data.draw(st.integers(1, longest - 3), label="prefill")
    chunk = data.draw(st.integers(2, longest - prefill - 1), label="chunk")
    singles = data.draw(st.integers(1, min(3, longest - prefill - chunk)), label="single tokens")
    schedule = [prefill, chunk] + [1] * singles
    tokens = data.draw(
        strategies.tokens(config, min_length=sum(schedule), max_length=sum(schedule)),
        label="tokens",
    )
    _run_cached(
        requirement,
        implementation,
        tokens,
        config,
        schedule,
        suite.tolerance("self"),
        hint=(
            "; new tokens must sit at positions P, P+1, ... and read keys 0..P+t (a causal mask "
            "aligned to the top-left corner, or positions restarting at 0, breaks this)"
        ),
    )


# --- Left padding --------------------------------------------------------------------------------


@checks_requirement("inference.left-padding", needs=("attention-mask",))
def test_left_padding_leaves_real_rows_unchanged(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    tol = suite.tolerance("self")
    config, implementation = strategies.draw_implementation(data, suite, requirement)
    sequences, tokens, mask = data.draw(
        strategies.left_padded(config, max_length=MAX_LENGTH), label="padded batch"
    )
    T = tokens.shape[1]
    positions = S.position_ids_from_mask(mask)
    padded = checks.log_probs_of(
        requirement, implementation, tokens, config, attention_mask=mask, position_ids=positions
    )
    for b, sequence in enumerate(sequences):
        n = len(sequence)
        alone = checks.log_probs_of(requirement, implementation, sequence[None], config)
        checks.rows_agree(
            requirement,
            padded[b : b + 1, T - n :],
            alone,
            tol,
            describe=lambda index, err, limit, b=b, n=n: (
                f"sequence {b} ({n} real tokens after {T - n} padding tokens, position ids "
                f"position_ids_from_mask) gives at index {T - n + index[1]} log-probabilities "
                f"that differ from row {index[1]} of its unpadded run by {err:.2e} "
                f"(tolerance {limit:.1e})"
            ),
        )
