"""Comparisons that fail in the spec's terms.

Every property in the suite judges an implementation through these helpers, so that a failure
always reads as the requirement it breaks, with numbers::

    causality.future-invisible: changing token 7 moved the log-probabilities of position 3 by
    4.1e-02 (tolerance 1.0e-06)

They know nothing about pytest or hypothesis; the plugin turns :class:`ConformanceFailure` into a
test failure tied to the requirement id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import numpy as np

from gpt2_spec import spec_definitions

from .adapter import to_numpy
from .timing import STOPWATCH

T = TypeVar("T")
S = spec_definitions()


class ConformanceFailure(AssertionError):
    """An implementation broke a requirement; ``str()`` starts with the requirement id.

    ``requirement`` is the requirement whose observable failed. It is usually the one the
    property checks; it is another one when the property saw that other requirement's violation
    (an output that is not finite, an input the implementation changed, log-probabilities that
    disagree with the oracle for no reason of the property's own), which the report's triage
    uses (spec/diagnosis.md). ``hint`` is a clause that names known deviations and
    ``hint_requirements`` the requirements they break: the report withdraws the hint when one of
    those passes in the same run, and otherwise, when the deviations were matched
    (``hint_matched``, not merely the closest), counts the failure as observing the first of them.
    """

    def __init__(
        self,
        requirement: str,
        message: str,
        *,
        hint: str = "",
        hint_requirements: tuple[str, ...] = (),
        hint_matched: bool = False,
    ) -> None:
        text = f"{requirement}: {message}" + (f"; {hint}" if hint else "")
        super().__init__(text)
        self.requirement = requirement
        self.detail = message
        self.hint = hint
        self.hint_requirements = tuple(hint_requirements)
        self.hint_matched = hint_matched


class ImplementationError(ConformanceFailure):
    """The implementation raised (or returned garbage) where the spec expects a result."""


class Margins:
    """How close the current test's comparisons came to their bounds.

    Every comparison of the implementation's numbers with the value the spec expects notes its
    worst error as a fraction of its bound (spec chapter 7: ``|actual - expected|`` over
    ``atol + rtol * max|expected|``, per row): the judging helpers (:func:`row_disagreement`,
    :func:`rows_agree`, :func:`scalar_agrees`, :func:`tensors_agree`) and the plain answers
    (:func:`agree`, :func:`first_agreeing`, :func:`row_excess`, :func:`exceeds`). Comparisons
    with a deviation's numbers, made only to word a failure (:func:`matches`), note nothing.
    :meth:`take` gives the largest fraction since the last take (None when nothing was
    compared) and starts again. A passing comparison has a fraction <= 1; a property whose
    fraction stays near 1 over many examples is close to a false alarm. Rows whose bound is
    exactly zero (exact comparisons) have no fraction and are not noted.
    """

    def __init__(self) -> None:
        self.worst: float | None = None

    @staticmethod
    def fraction(actual: Any, expected: Any, tol: Any) -> float | None:
        """The worst row's ``err / bound`` (None: different shapes, nothing finite to compare,
        or every bound zero)."""
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape or actual.size == 0:
            return None
        if not (np.isfinite(actual).all() and np.isfinite(expected).all()):
            return None
        if actual.ndim == 0:
            actual, expected = actual[None], expected[None]
        err = np.abs(actual - expected).max(axis=-1)
        limit = tol.atol + tol.rtol * np.abs(expected).max(axis=-1)
        positive = np.asarray(limit > 0)
        if not positive.any():
            return None
        return float((np.asarray(err)[positive] / np.asarray(limit)[positive]).max())

    def record(self, fraction: float | None) -> None:
        """Note one comparison's fraction (None: nothing to note)."""
        if fraction is not None and (self.worst is None or fraction > self.worst):
            self.worst = fraction

    def note(self, actual: Any, expected: Any, tol: Any) -> None:
        self.record(self.fraction(actual, expected, tol))

    def take(self) -> float | None:
        """The worst fraction since the last :meth:`take` (None if none), and start again."""
        taken, self.worst = self.worst, None
        return taken


#: The process' margins (one per process, like :data:`~gpt2_conformance.timing.STOPWATCH`).
MARGINS = Margins()


def fail(
    requirement: str,
    message: str,
    *,
    hint: str = "",
    hint_requirements: tuple[str, ...] = (),
    hint_matched: bool = False,
) -> NoReturn:
    raise ConformanceFailure(
        requirement,
        message,
        hint=hint,
        hint_requirements=hint_requirements,
        hint_matched=hint_matched,
    )


#: The requirement a non-finite output violates, whichever property met it.
FINITE = "numerics.finite"


def call(requirement: str, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call into the implementation (timed as the implementation's time); an exception becomes a
    failure of ``requirement``."""
    try:
        return STOPWATCH.call("implementation", function, *args, **kwargs)
    except ConformanceFailure:
        raise
    except NotImplementedError as error:
        raise ImplementationError(
            requirement,
            f"the adapter claims the capability for {what} but raised NotImplementedError: {error}",
        ) from error
    except Exception as error:
        raise ImplementationError(
            requirement, f"the implementation raised {type(error).__name__} while {what}: {error}"
        ) from error


def array(
    requirement: str, value: Any, *, what: str, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Convert an output to float64 NumPy, checking that it is floating point (integer logits
    or gradients are refused, naming their dtype), its shape, and that it is finite."""
    try:
        result = to_numpy(value)
    except Exception as error:
        raise ImplementationError(
            requirement,
            f"{what}: the output ({type(value).__name__}) is not an array NumPy can read: {error}",
        ) from error
    if result.dtype.kind != "f":
        source = getattr(value, "dtype", result.dtype)
        fail(
            requirement,
            f"{what} has dtype {source}, expected a real floating dtype (float16, bfloat16, "
            "float32 or float64): return the model's floating-point output, not a rounded, "
            "integer or complex one",
        )
    if shape is not None and result.shape != tuple(shape):
        fail(requirement, f"{what} has shape {result.shape}, expected {tuple(shape)}")
    if not np.isfinite(result).all():
        bad = np.argwhere(~np.isfinite(result))[0]
        fail(
            FINITE,
            f"{what} contains {result[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
            f"outputs must be finite (seen while checking {requirement})",
        )
    return result.astype(np.float64)  # a copy: an implementation may reuse its output buffer


def worst_row(actual: np.ndarray, expected: np.ndarray, tol: Any) -> tuple[tuple[int, ...], float]:
    """The row with the largest excess over its bound, and its absolute error."""
    excess = S.row_excess(actual, expected, tol)
    index = np.unravel_index(int(np.argmax(excess)), excess.shape)
    err = float(np.abs(actual[index] - expected[index]).max())
    return tuple(int(i) for i in index), err


def bound(expected_row: np.ndarray, tol: Any) -> float:
    return float(tol.atol + tol.rtol * np.abs(expected_row).max())


def gradient_resolves(requirement: str, counted: float, limit: float, *, what: str) -> bool:
    """Can this example show causality through gradients (spec chapter 3, "Checking the
    Jacobian")? ``counted``: the largest gradient the counted rows send to their own positions;
    ``limit``: the bound a later position's gradient must stay under.

    Exactly zero fails: the implementation sends no gradient at all (detached embeddings, a
    missing backward). Above zero but within the bound, a leak of the same size could not be
    told from rounding at this dtype: returns False, and the property discards the example.
    """
    if counted == 0.0:
        fail(
            requirement,
            f"{what} is exactly zero: the gradients show no dependence at all, so they cannot "
            "show causality",
        )
    return counted > limit


def agree(actual: Any, expected: Any, tol: Any) -> bool:
    """The spec's ``agree`` (chapter 7), noting the margin: for comparing the implementation's
    numbers with the value the spec expects of them."""
    MARGINS.note(actual, expected, tol)
    return bool(S.agree(actual, expected, tol))


def matches(actual: Any, variant: Any, tol: Any) -> bool:
    """The spec's ``agree``, noting nothing: for asking whether the numbers are those of a known
    deviation (to word a failure), where a margin would say nothing about the property."""
    return bool(S.agree(actual, variant, tol))


def first_agreeing(actual: Any, candidates: Sequence[Any], tol: Any) -> int | None:
    """The index of the first of ``candidates`` (values the spec accepts alike, such as a loss at
    two scales) that ``actual`` agrees with, or None; notes the smallest fraction among them, the
    margin of the accepted reading."""
    fractions = [Margins.fraction(actual, candidate, tol) for candidate in candidates]
    known = [f for f in fractions if f is not None]
    MARGINS.record(min(known) if known else None)
    for k, candidate in enumerate(candidates):
        if S.agree(actual, candidate, tol):
            return k
    return None


def row_excess(actual: np.ndarray, expected: np.ndarray, tol: Any) -> np.ndarray:
    """The spec's ``row_excess`` (error minus bound per row), noting the margin."""
    MARGINS.note(actual, expected, tol)
    excess: np.ndarray = S.row_excess(actual, expected, tol)
    return excess


def exceeds(value: float, limit: float) -> bool:
    """``value > limit`` for a size that must stay within a bound (a gradient that must vanish),
    noting ``value / limit`` as the margin when the bound is positive."""
    if limit > 0 and np.isfinite(value):
        MARGINS.record(float(value) / float(limit))
    return bool(value > limit)


def rows_agree(
    requirement: str,
    actual: np.ndarray,
    expected: np.ndarray,
    tol: Any,
    *,
    describe: Callable[[tuple[int, ...], float, float], str],
) -> None:
    """Every row (last axis) of ``actual`` agrees with ``expected`` (spec chapter 7's rule).

    ``describe(index, error, tolerance)`` words the failure for the worst row, e.g.
    ``"changing token 7 moved the log-probabilities of position 3 by 4.1e-02 (tolerance 1e-06)"``.
    """
    if actual.shape != expected.shape:
        fail(requirement, f"shape {actual.shape} where {expected.shape} was expected")
    where = row_disagreement(actual, expected, tol, describe)
    if where is not None:
        fail(requirement, where)


def row_disagreement(
    actual: np.ndarray,
    expected: np.ndarray,
    tol: Any,
    describe: Callable[[tuple[int, ...], float, float], str],
) -> str | None:
    """None when every row (last axis) agrees under spec chapter 7's rule; otherwise
    ``describe(index, error, tolerance)`` for the worst row (see :func:`rows_agree`)."""
    if agree(actual, expected, tol):
        return None
    index, err = worst_row(actual, expected, tol)
    return describe(index, err, bound(expected[index], tol))


def scalar_agrees(requirement: str, actual: float, expected: float, tol: Any, *, what: str) -> None:
    """A scalar (a loss) agrees with its expected value under the spec's rule."""
    if np.isnan(expected) and np.isnan(actual):
        return
    if not agree(np.float64(actual), np.float64(expected), tol):
        limit = bound(np.array([expected]), tol)
        fail(
            requirement,
            f"{what} is {actual:.8g}, expected {expected:.8g} "
            f"(difference {abs(actual - expected):.2e}, tolerance {limit:.1e})",
        )


def log_probs(logits: np.ndarray) -> np.ndarray:
    """Distribution-level view of logits (spec chapter 7): row-wise log-softmax, float64."""
    return S.log_softmax(np.asarray(logits, dtype=np.float64))


# Helpers for properties that call the implementation (chapters 2 to 4): each call and each
# output check fails the property's own requirement, with the spec's words.


def label_convention(adapter: Any) -> str:
    """The adapter's declared label convention; anything but "inputs"/"shifted" is a failure of
    ``objective.label-convention-declared``, whichever property asked."""
    convention = getattr(adapter, "label_convention", None)
    if convention not in S.LABEL_CONVENTIONS:
        fail(
            "objective.label-convention-declared",
            f"the adapter declares label_convention={convention!r}; it must be one of "
            f'{S.LABEL_CONVENTIONS} ("inputs": labels are the input ids and the loss shifts '
            'them once; "shifted": targets are already aligned with the rows)',
        )
    return str(convention)


def oracle_labels(convention: str, labels: np.ndarray) -> dict[str, np.ndarray]:
    """``labels`` in ``convention`` as the keyword argument the oracle's loss and gradients take."""
    return {"labels": labels} if convention == "inputs" else {"targets": labels}


def counted_targets(convention: str, labels: np.ndarray) -> int:
    """How many of ``labels`` (in ``convention``) are scored: not ignored, and for "inputs"
    labels not the first of a sequence (no row predicts it)."""
    scored = labels[:, 1:] if convention == "inputs" else labels
    return int((scored != S.IGNORE_INDEX).sum())


def logits_of(
    requirement: str,
    implementation: Any,
    tokens: np.ndarray,
    *,
    vocab_size: int,
    what: str = "computing logits",
    **kwargs: Any,
) -> np.ndarray:
    """``implementation.logits(tokens, **kwargs)`` as float64 ``[B, T, V]``, shape and finiteness
    checked."""
    out = call(requirement, what, implementation.logits, tokens, **kwargs)
    B, T = tokens.shape
    return array(requirement, out, what=f"the logits of a {B}x{T} batch", shape=(B, T, vocab_size))


def hidden_states_of(
    requirement: str, implementation: Any, tokens: np.ndarray, *, n_embd: int
) -> np.ndarray:
    """``implementation.hidden_states(tokens)`` as float64 ``[B, T, d]``, shape and finiteness
    checked."""
    B, T = tokens.shape
    return array(
        requirement,
        call(requirement, "computing hidden states", implementation.hidden_states, tokens),
        what="the hidden states",
        shape=(B, T, n_embd),
    )


def scalar(requirement: str, value: Any, *, what: str, allow_nan: bool = False) -> float:
    """An output that must be one number (a loss) as a Python float; finite unless allowed NaN."""
    try:
        result = to_numpy(value)
    except Exception as error:
        raise ImplementationError(
            requirement, f"{what}: the output ({type(value).__name__}) is not a number: {error}"
        ) from error
    if result.size != 1 or result.dtype.kind not in "fiu":
        fail(requirement, f"{what} is {result.dtype} of shape {result.shape}, not one number")
    number = float(result.reshape(()))
    if not (np.isfinite(number) or (allow_nan and np.isnan(number))):
        fail(
            FINITE,
            f"{what} is {number}; outputs must be finite (seen while checking {requirement})",
        )
    return number


def loss_of(
    requirement: str,
    implementation: Any,
    tokens: np.ndarray,
    labels: np.ndarray,
    *,
    reduction: str,
    allow_nan: bool = False,
) -> float:
    """``implementation.loss(tokens, labels, reduction=...)`` as a float."""
    what = f"the {reduction} loss"
    out = call(
        requirement, f"computing {what}", implementation.loss, tokens, labels, reduction=reduction
    )
    return scalar(requirement, out, what=what, allow_nan=allow_nan)


def gradient_of(
    requirement: str, gradients: Any, name: str, *, shape: tuple[int, ...]
) -> np.ndarray:
    """One canonical parameter's gradient from the mapping ``Implementation.gradients`` returns."""
    try:
        value = gradients[name]
    except (KeyError, TypeError) as error:
        raise ImplementationError(
            requirement, f"the gradients hold no entry for the canonical parameter {name!r}"
        ) from error
    return array(requirement, value, what=f"the gradient of {name}", shape=shape)


def tensors_agree(
    requirement: str, actual: np.ndarray, expected: np.ndarray, tol: Any, *, what: str
) -> None:
    """Whole-tensor agreement (spec chapter 7: a gradient's bound scales with the largest
    magnitude in the expected tensor), failing with the worst entry."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        fail(requirement, f"{what} has shape {actual.shape} where {expected.shape} was expected")
    if agree(actual.reshape(1, -1), expected.reshape(1, -1), tol):
        return
    error = np.abs(actual - expected)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
    fail(
        requirement,
        f"{what} differs by {error[index]:.2e} at index {index} (expected {expected[index]:.6g}, "
        f"got {actual[index]:.6g}; tolerance {bound(expected.reshape(-1), tol):.1e})",
    )


def head_matrix(
    requirement: str, implementation: Any, *, shape: tuple[int, int], from_params: bool
) -> np.ndarray:
    """The matrix W ``[V, d]`` the implementation's head multiplies by (logits = h Wᵀ):
    ``head_weight()``, or, where that is not implemented and ``from_params`` (the adapter claims
    ``params``), ``lm_head.weight`` (else ``transformer.wte.weight``) from ``get_params()``."""
    try:
        value = implementation.head_weight()
    except NotImplementedError:
        if not from_params:
            raise ImplementationError(
                requirement,
                "head_weight() is not implemented and the adapter does not claim params: the "
                "head's matrix cannot be read",
            ) from None
        named = call(requirement, "reading get_params()", implementation.get_params)
        value = named.get("lm_head.weight", named.get("transformer.wte.weight"))
        if value is None:
            fail(requirement, "get_params() has neither lm_head.weight nor transformer.wte.weight")
    except Exception as error:
        raise ImplementationError(
            requirement,
            f"the implementation raised {type(error).__name__} in head_weight(): {error}",
        ) from error
    return array(requirement, value, what="the head's weight", shape=shape)


def log_probs_of(
    requirement: str, implementation: Any, tokens: np.ndarray, config: Any, **kwargs: Any
) -> np.ndarray:
    """The implementation's logits for ``tokens`` as float64 log-probabilities (checked shape)."""
    logits = logits_of(requirement, implementation, tokens, vocab_size=config.vocab_size, **kwargs)
    return log_probs(logits)
