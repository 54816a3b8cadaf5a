"""Chapter 8, input validation: every invalid input is refused with a ValueError at the entry.

Each property feeds one kind of invalid input to every entry point the adapter claims (logits
always; hidden_states, last_logits, prefill, loss and gradients where claimed) and requires a
``ValueError`` (or a subclass, such as ``gpt2_spec.InvalidInputError``). Returning a result fails
("accepted token id 97 >= vocab_size 97 and returned logits"); raising anything else fails too,
naming what was raised (an ``IndexError`` from inside an embedding lookup is a late error, not a
refusal).

One property here checks chapter 1's ``model.no-result-for-invalid-input`` with the same invalid
inputs, and needs no capability: whether or not the adapter claims ``input-validation``, an id
outside the vocabulary or a position beyond the context must raise (any exception will do there);
a returned result never conforms.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gpt2_conformance import checks, strategies
from gpt2_conformance.adapter import Implementation
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
REFUSE = (
    "refusals must be a ValueError (or a subclass such as gpt2_spec.InvalidInputError) raised "
    "at the entry, before any computation"
)


def _describe(result: Any) -> str:
    shape = getattr(result, "shape", None)
    if shape is not None:
        return f"a result of shape {tuple(shape)}"
    if isinstance(result, tuple):
        return "a result"
    return f"{type(result).__name__} {result!r}"[:80]


def refusal(
    rid: str, entry: str, bad: str, why: str, function: Callable[..., Any], *args: Any, **kw: Any
) -> ValueError:
    """Call ``function`` on invalid input; return the ValueError it raised, fail otherwise."""
    try:
        result = function(*args, **kw)
    except ValueError as error:
        return error
    except Exception as error:
        text = str(error).splitlines()[0][:160] if str(error) else ""
        checks.fail(
            rid,
            f"{entry} given {bad} raised {type(error).__name__}({text!r}) instead of a "
            f"ValueError: {REFUSE}",
        )
    checks.fail(rid, f"{entry} accepted {bad} and returned {_describe(result)}: {why}")


def _entries(
    suite: Suite, impl: Implementation, labels: np.ndarray | None
) -> list[tuple[str, Callable[[np.ndarray], Any]]]:
    """Every claimed entry point that takes token ids, as one-argument callables."""
    entries: list[tuple[str, Callable[[np.ndarray], Any]]] = [("logits()", impl.logits)]
    if suite.claims("hidden-states"):
        entries.append(("hidden_states()", impl.hidden_states))
    if suite.claims("last-position"):
        entries.append(("last_logits()", impl.last_logits))
    if suite.claims("kv-cache"):
        entries.append(("prefill()", impl.prefill))
    if labels is not None and suite.claims("loss"):
        entries.append(("loss()", lambda tokens: impl.loss(tokens, _fit(labels, tokens))))
    if labels is not None and suite.claims("gradients"):
        entries.append(("gradients()", lambda tokens: impl.gradients(tokens, _fit(labels, tokens))))
    return entries


def _fit(labels: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Valid labels of the tokens' shape (the input under test is the tokens, not the labels)."""
    shape = tokens.shape if np.ndim(tokens) == 2 else labels.shape
    return np.zeros(shape, dtype=np.int64)


def _valid(
    data: st.DataObject, suite: Suite, **kw: Any
) -> tuple[GPT2Config, Implementation, np.ndarray]:
    draw = data.draw(strategies.models(suite), label="model")
    impl, _ = strategies.build(suite, draw, kw.pop("rid"))
    tokens = data.draw(strategies.tokens(draw.config, **kw), label="valid tokens")
    return draw.config, impl, tokens


# ------------------------------------------------------------------------------------------
# The token checks


def _bad_dtypes(tokens: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [
        ("float64 ids holding whole numbers", tokens.astype(np.float64)),
        ("float32 ids holding whole numbers", tokens.astype(np.float32)),
        ("float64 ids with fractions (x + 0.6)", tokens.astype(np.float64) + 0.6),
        ("a boolean array (a mask, not ids)", tokens % 2 == 0),
    ]


@checks_requirement("input.integer-tokens", needs=("input-validation",))
def test_token_ids_must_be_integers(suite: Suite, data: st.DataObject, requirement: str) -> None:
    _, impl, tokens = _valid(data, suite, rid=requirement)
    for bad, array in _bad_dtypes(tokens):
        for entry, function in _entries(suite, impl, tokens):
            refusal(
                requirement,
                entry,
                f"{bad} (dtype {array.dtype})",
                "ids must have an integer dtype and must not be cast silently",
                function,
                array,
            )


def _placed(
    data: st.DataObject, tokens: np.ndarray, values: list[int]
) -> list[tuple[int, tuple[int, int], np.ndarray]]:
    """Each of ``values`` at a drawn place of its own copy of ``tokens``: (value, place, copy)."""
    cases = []
    for value in values:
        b = data.draw(st.integers(0, tokens.shape[0] - 1), label="row")
        i = data.draw(st.integers(0, tokens.shape[1] - 1), label="position")
        bad = tokens.copy()
        bad[b, i] = value
        cases.append((value, (b, i), bad))
    return cases


def _out_of_range(
    data: st.DataObject, config: GPT2Config, tokens: np.ndarray
) -> list[tuple[int, tuple[int, int], np.ndarray]]:
    """Token ids V, beyond V, -1 and ignore_index, each at a drawn place (:func:`_placed`)."""
    V = config.vocab_size
    values = [V, V + data.draw(st.integers(1, 1000), label="beyond V"), -1, S.IGNORE_INDEX]
    return _placed(data, tokens, values)


@checks_requirement("input.token-range", needs=("input-validation",))
def test_token_ids_outside_the_vocabulary_are_refused(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """V, beyond V, -1 and -100, one per batch at a random place: never wrapped or clamped."""
    config, impl, tokens = _valid(data, suite, rid=requirement)
    V = config.vocab_size
    for value, where, bad in _out_of_range(data, config, tokens):
        relation = f">= vocab_size {V}" if value >= V else "< 0"
        for entry, function in _entries(suite, impl, tokens):
            refusal(
                requirement,
                entry,
                f"token id {value} {relation} at {list(where)}",
                "ids must be refused, never wrapped or clamped",
                function,
                bad,
            )


@checks_requirement("input.context-length", needs=("input-validation",))
def test_sequences_longer_than_the_context_are_refused(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    config, impl, _ = _valid(data, suite, rid=requirement)
    n_ctx = config.n_positions
    extra = data.draw(st.integers(1, 8), label="tokens beyond n_ctx")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    long = rng.integers(0, config.vocab_size, (data.draw(st.integers(1, 2)), n_ctx + extra))
    for entry, function in _entries(suite, impl, long):
        refusal(
            requirement,
            entry,
            f"{n_ctx + extra} tokens > n_positions {n_ctx}",
            "wpe has no row for a position >= n_positions; the input must be refused",
            function,
            long,
        )


@checks_requirement("input.context-length", needs=("input-validation", "kv-cache"))
def test_a_cache_plus_new_tokens_beyond_the_context_is_refused(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """P cached positions + T new tokens > n_ctx is refused at extend()."""
    config, impl, _ = _valid(data, suite, rid=requirement)
    n_ctx = config.n_positions
    P = data.draw(st.integers(1, n_ctx), label="cached positions")
    T = data.draw(st.integers(n_ctx - P + 1, n_ctx - P + 4), label="new tokens")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    B = data.draw(st.integers(1, 2), label="batch")
    _, cache = checks.call(
        requirement,
        f"prefilling {P} tokens",
        impl.prefill,
        rng.integers(0, config.vocab_size, (B, P)),
    )
    refusal(
        requirement,
        "extend()",
        f"{T} new tokens after {P} cached ({P + T} > n_positions {n_ctx})",
        "positions beyond n_positions have no wpe row; the input must be refused",
        impl.extend,
        cache,
        rng.integers(0, config.vocab_size, (B, T)),
    )


def no_result(rid: str, entry: str, bad: str, function: Callable[..., Any], *args: Any) -> None:
    """Call ``function`` on invalid input: any exception is enough, a result fails ``rid``."""
    try:
        result = function(*args)
    except checks.ConformanceFailure:
        raise  # the suite's own verdict on the call (an input it changed, say), not a refusal
    except Exception:
        return
    checks.fail(
        rid,
        f"{entry} accepted {bad} and returned {_describe(result)}: GPT-2 has no output for it "
        "(wte has rows for ids 0..V-1 only, wpe for positions 0..n_positions-1), so a result is "
        "a silent wrong answer (ids clamped or wrapped, positions wrapped or reused). Raise "
        "instead: without the input-validation capability any exception conforms",
    )


@checks_requirement("model.no-result-for-invalid-input")
def test_invalid_input_never_yields_a_result(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Ids V, beyond V, -1 and -100 at a random place, and a sequence longer than the context
    (with a cache: cached plus new positions beyond it), to every claimed entry point. Only
    logits are needed; an exception of any type passes, a returned result fails."""
    config, impl, tokens = _valid(data, suite, rid=requirement)
    V, n_ctx = config.vocab_size, config.n_positions
    cases = [
        (f"token id {value} {'>= vocab_size ' + str(V) if value >= V else '< 0'} at "
         f"{list(where)}", bad)
        for value, where, bad in _out_of_range(data, config, tokens)
    ]  # fmt: skip
    extra = data.draw(st.integers(1, 8), label="tokens beyond n_ctx")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    long = rng.integers(0, V, (tokens.shape[0], n_ctx + extra))
    cases.append((f"{n_ctx + extra} tokens > n_positions {n_ctx}", long))
    for bad, array in cases:
        for entry, function in _entries(suite, impl, tokens):
            no_result(requirement, entry, bad, function, array)
    if suite.claims("kv-cache"):
        P = data.draw(st.integers(1, n_ctx), label="cached positions")
        _, cache = checks.call(
            requirement, f"prefilling {P} tokens", impl.prefill, rng.integers(0, V, (1, P))
        )
        T = n_ctx - P + extra
        no_result(
            requirement,
            "extend()",
            f"{T} new tokens after {P} cached ({P + T} > n_positions {n_ctx})",
            impl.extend,
            cache,
            rng.integers(0, V, (1, T)),
        )


@checks_requirement("input.empty", needs=("input-validation",))
def test_empty_or_unbatched_input_is_refused(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    _, impl, tokens = _valid(data, suite, rid=requirement)
    B, T = tokens.shape
    cases = [
        (f"an empty batch of shape (0, {T})", np.zeros((0, T), dtype=np.int64)),
        (f"sequences without tokens, shape ({B}, 0)", np.zeros((B, 0), dtype=np.int64)),
        ("an input of shape (0, 0)", np.zeros((0, 0), dtype=np.int64)),
        (f"a 1-D array of shape ({T},) (no batch axis)", tokens[0].copy()),
    ]
    for bad, array in cases:
        for entry, function in _entries(suite, impl, tokens):
            refusal(
                requirement,
                entry,
                bad,
                "ids must be a [B, T] array with B >= 1 and T >= 1",
                function,
                array,
            )


# ------------------------------------------------------------------------------------------
# The label checks


def _label_entries(
    suite: Suite, impl: Implementation
) -> list[tuple[str, Callable[[np.ndarray, np.ndarray], Any]]]:
    entries: list[tuple[str, Callable[[np.ndarray, np.ndarray], Any]]] = [("loss()", impl.loss)]
    if suite.claims("gradients"):
        entries.append(("gradients()", impl.gradients))
    if suite.claims("train-step"):
        entries.append(("sgd_step()", lambda t, y: impl.sgd_step(t, y, lr=0.1)))
    return entries


def _labels_refused(
    requirement: str,
    suite: Suite,
    impl: Implementation,
    tokens: np.ndarray,
    cases: list[tuple[str, np.ndarray]],
    rule: str,
) -> None:
    """Every entry point that takes labels (:func:`_label_entries`) refuses, with ``tokens``, each
    of ``cases`` (what the labels are, the labels); ``rule`` says why it must."""
    for bad, labels in cases:
        for entry, function in _label_entries(suite, impl):
            refusal(requirement, entry, bad, rule, function, tokens, labels)


def _bad_label_shapes(tokens: np.ndarray) -> list[tuple[str, np.ndarray]]:
    B, T = tokens.shape
    cases = [
        (f"labels of shape ({B}, {T + 1})", np.zeros((B, T + 1), dtype=np.int64)),
        (f"labels of shape ({B * T},) (flattened)", tokens.reshape(-1).copy()),
        (f"float labels of the right shape ({B}, {T})", tokens.astype(np.float64)),
        (f"boolean labels of the right shape ({B}, {T})", tokens % 2 == 0),
    ]
    if T >= 2:
        cases.append((f"labels of shape ({B}, {T - 1}) (shifted by hand)", tokens[:, 1:].copy()))
    if B >= 2:
        cases.append((f"labels of shape (1, {T}) (would broadcast)", tokens[:1].copy()))
    return cases


@checks_requirement("input.label-shape", needs=("input-validation", "loss"))
def test_labels_must_have_the_tokens_shape_and_integer_dtype(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    _, impl, tokens = _valid(data, suite, rid=requirement)
    _labels_refused(
        requirement,
        suite,
        impl,
        tokens,
        [
            (f"{bad} for tokens of shape {tokens.shape}", labels)
            for bad, labels in _bad_label_shapes(tokens)
        ],
        "labels must be integer ids of the tokens' shape; never broadcast, padded, trimmed or cast",
    )


def _bad_label_values(
    data: st.DataObject, config: GPT2Config, tokens: np.ndarray
) -> list[tuple[int, tuple[int, int], np.ndarray]]:
    """Labels V, beyond V, -1 and -5, each at a drawn place (:func:`_placed`)."""
    V = config.vocab_size
    return _placed(data, tokens, [V, V + data.draw(st.integers(1, 1000), label="beyond V"), -1, -5])


@checks_requirement("input.label-values", needs=("input-validation", "loss"))
def test_labels_outside_the_vocabulary_are_refused(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """V, beyond V, -1 (nanoGPT's ignore marker) and -5, with ignore_index -100."""
    config, impl, tokens = _valid(data, suite, rid=requirement)
    V = config.vocab_size
    outside = f"(outside [0, {V}) and not ignore_index {S.IGNORE_INDEX})"
    _labels_refused(
        requirement,
        suite,
        impl,
        tokens,
        [
            (f"label {value} at {list(where)} {outside}", labels)
            for value, where, labels in _bad_label_values(data, config, tokens)
        ],
        "labels must be in [0, vocab_size) or equal ignore_index",
    )


# ------------------------------------------------------------------------------------------
# How to refuse

_NUMBER = r"(?<![\w.]){}(?![\w.]|\.\d)"


def mentions(message: str, needles: list[str]) -> bool:
    """True when ``message`` names one of ``needles``: a number as a whole number (97 is found in
    "id 97 at" or "[0, 97)", not in "970" or "0.97"), any other needle as a case-insensitive
    substring."""
    for needle in needles:
        if re.fullmatch(r"-?\d+", needle):
            if re.search(_NUMBER.format(re.escape(needle)), message):
                return True
        elif needle.lower() in message.lower():
            return True
    return False


@checks_requirement("input.clear-error", needs=("input-validation",))
def test_refusals_are_value_errors_that_name_the_problem(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """One invalid input of each kind. The check of the message is mechanical and deliberately
    lenient: it must be non-empty and name the offending value, shape or dtype, or the limit it
    broke (a number as a whole number, a dtype by its name). Whether it also says what to do is
    left to review. A refused sgd_step() must leave the weights exactly as they were, and a
    refused extend() must leave the cache usable."""
    config, impl, tokens = _valid(data, suite, rid=requirement, min_length=2)
    B, T = tokens.shape
    V, n_ctx = config.vocab_size, config.n_positions
    value, where, out_of_range = _out_of_range(data, config, tokens)[
        data.draw(st.integers(0, 3), label="which id")
    ]
    dtype_name, floats = _bad_dtypes(tokens)[data.draw(st.integers(0, 3), label="which dtype")]
    long = np.zeros((1, n_ctx + 1), dtype=np.int64)
    cases: list[tuple[str, np.ndarray, list[str]]] = [
        (f"token id {value} at {list(where)}", out_of_range, [str(value), str(V)]),
        (f"{dtype_name}", floats, [str(floats.dtype), "int", "dtype"]),
        (f"{n_ctx + 1} tokens (n_positions {n_ctx})", long, [str(n_ctx + 1), str(n_ctx)]),
        (f"an empty batch of shape (0, {T})", tokens[:0], ["0", "empty"]),
        (f"a 1-D array of shape ({T},)", tokens[0], [str(T), "batch", "2-d", "2d", "dimension"]),
    ]
    label_cases: list[tuple[str, np.ndarray, list[str]]] = []
    if suite.claims("loss"):
        label, lwhere, bad_labels = _bad_label_values(data, config, tokens)[0]
        label_cases = [
            (f"label {label} at {list(lwhere)}", bad_labels, [str(label), str(V)]),
            (
                f"labels of shape ({B}, {T - 1})",
                tokens[:, 1:].copy(),
                [str(T - 1), str(T)],
            ),
        ]
    problems = []
    for bad, array, needles in cases:
        error = refusal(
            requirement, "logits()", bad, "invalid input must be refused", impl.logits, array
        )
        if not mentions(str(error), needles):
            problems.append(f"logits() refused {bad} with {type(error).__name__}({str(error)!r})")
    for bad, labels, needles in label_cases:
        error = refusal(
            requirement, "loss()", bad, "invalid labels must be refused", impl.loss, tokens, labels
        )
        if not mentions(str(error), needles):
            problems.append(f"loss() refused {bad} with {type(error).__name__}({str(error)!r})")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        checks.fail(
            requirement,
            f"{problems[0]}: the message must name the offending value, shape or dtype, or the "
            f"limit it broke (and say what to do){more}",
        )
    if suite.claims("train-step") and suite.claims("params") and suite.claims("loss"):
        before = {k: checks.array(requirement, v, what=k) for k, v in impl.get_params().items()}
        bad_labels = label_cases[0][1]
        refusal(
            requirement,
            "sgd_step()",
            label_cases[0][0],
            "invalid labels must be refused",
            impl.sgd_step,
            tokens,
            bad_labels,
            lr=1.0,
        )
        after = {k: checks.array(requirement, v, what=k) for k, v in impl.get_params().items()}
        changed = [k for k in before if not np.array_equal(before[k], after.get(k))]
        if changed:
            checks.fail(
                requirement,
                f"a refused sgd_step() changed {changed[:3]}: a refusal must come before any "
                "computation and leave the weights unchanged",
            )
    if suite.claims("kv-cache") and n_ctx > T:
        _, cache = checks.call(requirement, "prefilling", impl.prefill, tokens[:, :-1])
        bad_next = tokens[:, -1:].copy()
        bad_next[0, 0] = V
        refusal(
            requirement,
            "extend()",
            f"token id {V}",
            "invalid ids must be refused",
            impl.extend,
            cache,
            bad_next,
        )
        step, _ = checks.call(
            requirement,
            "extending the cache after a refused call",
            impl.extend,
            cache,
            tokens[:, -1:],
        )
        full = checks.logits_of(requirement, impl, tokens, vocab_size=V)
        step = checks.array(
            requirement, step, what="the logits after the refused extend", shape=(B, 1, V)
        )
        checks.rows_agree(
            requirement,
            step[:, 0],
            full[:, -1],
            suite.tolerance("self"),
            describe=lambda i, e, t: (
                f"after a refused extend(), extending the same cache gave logits that differ "
                f"from the full forward in row {list(i)} by {e:.2e} (tolerance {t:.1e}): the "
                "refused call changed the cache (or evaluation is not deterministic)"
            ),
        )
