"""What both routes to the ``head.tied-*`` requirements share (spec chapter 5, "Weight tying").

The GPT-2 route (``test_embedding_head``) changes ``transformer.wte.weight`` through canonical
parameters and judges the head against the oracle; the causal-LM route (``test_causal_lm``)
writes the model's own input-embedding matrix and judges the head through its own hidden states.
Both first refuse an adapter that declares an untied head, move a model away and back along the
same route, draw a new vocabulary size the same way, and compare one gradient tensor under one
bound: those pieces live here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gpt2_conformance import checks
from gpt2_conformance.adapter import Implementation
from gpt2_conformance.suite import Suite

#: The requirement an untied head breaks first; the other head.tied-* presuppose it.
TIED_TO_EMBEDDING = "head.tied-to-embedding"
#: The requirements a declared-untied head does not claim.
TIED_IDS = (
    TIED_TO_EMBEDDING,
    "head.tied-gradient",
    "head.tied-after-update",
    "head.tied-after-save-load",
    "head.tied-after-resize",
    "head.tied-after-move",
)

_UNTIED = "the adapter sets tied_head=False, so it does not claim the head.tied-* requirements"


def declared_tied(suite: Suite, requirement: str, *, profile: bool = False) -> None:
    """Fail ``requirement`` (a head.tied-* id) when the adapter declares an untied head.

    ``profile``: the causal-LM route, whose message adds that the causal-lm profile applies the
    tied requirements to declared-tied models only."""
    if suite.adapter.tied_head:
        return
    if profile:
        checks.fail(
            requirement,
            f"declared untied head: {_UNTIED} (spec head.untied-is-declared; the causal-lm "
            "profile applies them to declared-tied models only)",
        )
    checks.fail(
        requirement,
        f"declared untied head (a declared deviation): {_UNTIED} (spec head.untied-is-declared)",
    )


def move_path(suite: Suite) -> list[tuple[str, str]]:
    """Away to another dtype (or to the CPU) and back to the run's device and dtype, so that the
    final state is judged at the run's tolerance."""
    home = (suite.device, suite.dtype)
    away = [(suite.device, dt) for dt in suite.adapter.dtypes if dt != suite.dtype]
    if suite.device != "cpu" and "cpu" in suite.adapter.devices:
        away.append(("cpu", suite.dtype))
    return [away[0], home] if away else [home]


def move_away_and_back(
    requirement: str, suite: Suite, impl: Implementation
) -> tuple[Implementation, str]:
    """``impl`` moved along :func:`move_path`, and the route in words ("cpu/float64 then ...")."""
    path = move_path(suite)
    moved = impl
    for device, dtype in path:
        moved = checks.call(requirement, f"moving to {device}/{dtype}", moved.moved, device, dtype)
    return moved, " then ".join(f"{device}/{dtype}" for device, dtype in path)


#: The most one SGD step of a head.tied-after-update property may move any parameter. Chapter 7's
#: bounds were measured on weights of GPT-2's initialisation or of scale 0.1 (0.3 at float32); a
#: step of ``lr=2`` on trained weights, whose gradients are of order 1, moved an entry by 4.25 and
#: judged a forward pass far outside that domain. A move of this size keeps the stepped weights
#: near it, and is still far above every dtype's "self" bound on the head (an untied head falls
#: behind the embedding by a share of it).
MAX_STEP = 0.5


def bounded_lr(lr: float, gradients: Sequence[np.ndarray]) -> float:
    """``lr``, made smaller where needed so that a plain SGD step along ``gradients`` moves no
    entry by more than :data:`MAX_STEP` (``lr`` as it is when the gradients are zero or not
    finite: the property judges those)."""
    sizes = [float(np.abs(g).max()) for g in gradients if np.size(g)]
    largest = max(sizes, default=0.0)
    if not all(np.isfinite(sizes)) or largest * lr <= MAX_STEP:
        return lr
    return MAX_STEP / largest


def draw_sgd_step(data: st.DataObject, gradients: Sequence[np.ndarray]) -> float:
    """The learning rate of a property's one SGD step: 0.5, 1 or 2, bounded by
    :func:`bounded_lr`."""
    lr: float = data.draw(st.sampled_from([0.5, 1.0, 2.0]), label="lr")
    return bounded_lr(lr, gradients)


def draw_vocab_size(data: st.DataObject, vocab_size: int) -> int:
    """A new vocabulary size for a resize: smaller (down to half) or larger (up to 16 more)."""
    V = vocab_size
    new_V: int = data.draw(
        st.integers(max(2, V // 2), V + 16).filter(lambda v: v != V), label="new vocab size"
    )
    return new_V


def resize(requirement: str, impl: Implementation, vocab_size: int, new_vocab_size: int) -> None:
    """Ask ``impl`` to resize its vocabulary."""
    checks.call(
        requirement,
        f"resizing the vocabulary from {vocab_size} to {new_vocab_size}",
        impl.resize_vocab,
        new_vocab_size,
    )


def kept_rows_agree(
    requirement: str,
    after: np.ndarray,
    before: np.ndarray,
    new_vocab_size: int,
    tol: Any,
    *,
    what: str,
) -> None:
    """After a resize, the rows both sizes share (``what``: the matrix) kept their values."""
    V, new_V = before.shape[0], new_vocab_size
    keep = min(V, new_V)
    checks.rows_agree(
        requirement,
        after[:keep],
        before[:keep],
        tol,
        describe=lambda i, e, t: (
            f"resizing from {V} to {new_V} changed kept row {list(i)} of {what} by {e:.2e} "
            f"(tolerance {t:.1e}); the first {keep} rows must keep their values"
        ),
    )


def agree_tensor(actual: np.ndarray, expected: np.ndarray, tol: Any) -> bool:
    """One tensor, one bound (spec chapter 7: a gradient's bound scales with its largest entry),
    against the value the spec expects (the margin is noted)."""
    return checks.agree(actual.reshape(1, -1), expected.reshape(1, -1), tol)


def matches_tensor(actual: np.ndarray, variant: np.ndarray, tol: Any) -> bool:
    """:func:`agree_tensor` against a known deviation's tensor, to word a failure (nothing
    noted)."""
    return checks.matches(actual.reshape(1, -1), variant.reshape(1, -1), tol)


def loss_ratio(own_loss: float, spec_loss: float) -> float | None:
    """The implementation's own loss over the spec's loss of the same logits and targets, when
    both are finite and positive: the factor by which its normalisation differs from the spec's.

    Tying is judged by what the gradient is made of (spec ``head.tied-gradient``: the lookup's
    contribution plus the head's), and both contributions are linear in the gradient of the
    logits. A loss that divides by another count (every position, ignored ones included) scales
    both by the same factor, which its own loss shows; the tie is then intact, and the objective's
    requirements judge the normalisation. None when the ratio says nothing."""
    if not (np.isfinite(own_loss) and np.isfinite(spec_loss)) or own_loss <= 0 or spec_loss <= 0:
        return None
    return float(own_loss / spec_loss)


def at_loss_scale(
    actual: np.ndarray, expected_at: Any, tol: Any, ratio: float | None
) -> tuple[float, bool]:
    """``(scale, agrees)``: ``actual`` against ``expected_at(1.0)``, and when that fails and the
    implementation's own loss differs from the spec's by ``ratio`` (:func:`loss_ratio`), against
    ``expected_at(ratio)``. ``scale`` is the factor the failure message should compare at: 1
    when the ratio is within the bound's relative tolerance of 1 (rounding, not a normalisation)."""
    scales = [1.0]
    if ratio is not None and abs(ratio - 1.0) > max(float(tol.rtol), 1e-6):
        scales.append(ratio)
    flat = actual.reshape(1, -1)
    candidates = [np.reshape(expected_at(scale), (1, -1)) for scale in scales]
    k = checks.first_agreeing(flat, candidates, tol)  # notes the accepted reading's margin
    if k == 0:
        return 1.0, True
    return scales[-1], k is not None


def scale_note(scale: float) -> str:
    """Words for a comparison made at the implementation's own loss scale."""
    if scale == 1.0:
        return ""
    return (
        f" (compared at {scale:.6g} times the spec's value: the ratio of the implementation's own "
        "loss to the spec's mean over counted targets of the same logits)"
    )


#: A module of the original: its name, a function that overwrites its weights, one that restores
#: them.
Write = tuple[str, Callable[[], None], Callable[[], None]]


def copy_is_independent(
    requirement: str,
    copy: Implementation,
    tokens: np.ndarray,
    vocab_size: int,
    tol: Any,
    writes: Sequence[Write],
    *,
    route: str,
) -> None:
    """What ``moved()`` returned owns its modules: overwriting the original's weights (those of
    each module in ``writes``) leaves the copy's logits as they were.

    A move that trusts ``copy.deepcopy`` can return a copy that still computes with the
    original's modules (deepcopy keeps a lambda or closure captured in ``__init__`` as it is, and
    the closure points at the original) or shares a tensor with it. The tie after a move cannot
    be judged on such a copy, so this is checked first and said plainly, naming the modules of
    the original that the copy still computes with."""
    before = checks.logits_of(
        requirement, copy, tokens, vocab_size=vocab_size, what="computing the copy's logits"
    )

    def changed() -> float:
        now = checks.logits_of(
            requirement, copy, tokens, vocab_size=vocab_size, what="computing the copy's logits"
        )
        return 0.0 if checks.agree(now, before, tol) else float(np.abs(now - before).max())

    for _, write, _ in writes:
        write()
    moved_by = changed()
    for _, _, restore in writes:
        restore()
    if not moved_by:
        return
    shared = []
    for name, write, restore in writes:
        write()
        if changed():
            shared.append(name)
        restore()
    names = ", ".join(shared[:4]) + (f" and {len(shared) - 4} more" if len(shared) > 4 else "")
    which = f"the original's {names}" if shared else "the original's weights"
    checks.fail(
        requirement,
        f"the model moved {route} is not independent of the original: overwriting the "
        f"original's weights changed the copy's logits by up to {moved_by:.2e}, so the copy "
        f"still computes with {which} (a copy.deepcopy keeps a lambda or closure captured in "
        "__init__ as it is, pointing at the original's modules, or a tensor is shared instead of "
        "copied). moved() must return a model that owns its modules and weights; until it does, "
        "whether the head stays tied after a move cannot be judged",
    )
