"""The judgement helpers in ``gpt2_conformance.checks`` that properties share."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_conformance import checks, tied

RID = "causality.jacobian-lower-triangular"


def test_a_gradient_that_is_exactly_zero_fails_as_no_dependence() -> None:
    with pytest.raises(checks.ConformanceFailure) as info:
        checks.gradient_resolves(RID, 0.0, 0.05, what="the gradient to wpe rows 0..0")
    assert info.value.requirement == RID
    assert str(info.value) == (
        f"{RID}: the gradient to wpe rows 0..0 is exactly zero: the gradients show no "
        "dependence at all, so they cannot show causality"
    )


@pytest.mark.parametrize(
    ("counted", "limit", "resolves"),
    [
        (5.8e-2, 6.16e-2, False),  # the bfloat16 example the false-alarm campaign found
        (1e-12, 1e-6, False),  # non-zero but below float32's resolution
        (7e-2, 6.4e-2, True),
        (1e-3, 1e-6, True),
    ],
)
def test_a_gradient_within_the_bound_cannot_resolve_a_leak(
    counted: float, limit: float, resolves: bool
) -> None:
    assert checks.gradient_resolves(RID, counted, limit, what="g") is resolves


# ---- the bounded SGD step of the head.tied-after-update properties ---------------------------


def test_the_sgd_step_is_bounded_by_its_largest_move() -> None:
    big = np.array([[0.1, -3.0], [2.0, 0.5]])
    lr = tied.bounded_lr(2.0, [np.array([0.2]), big])
    assert lr * 3.0 == pytest.approx(tied.MAX_STEP)  # the largest entry moves by MAX_STEP
    assert tied.bounded_lr(0.5, [np.array([0.2, -0.4])]) == 0.5  # a small step is left alone
    assert tied.bounded_lr(2.0, [np.zeros((2, 3)), np.zeros(0)]) == 2.0  # nothing to bound


def test_a_non_finite_gradient_leaves_the_step_to_the_property_in_any_order() -> None:
    nan, finite = np.array([np.nan, 1.0]), np.array([3.0])
    assert tied.bounded_lr(2.0, [nan, finite]) == 2.0
    assert tied.bounded_lr(2.0, [finite, nan]) == 2.0
