"""The judgement helpers in ``gpt2_conformance.checks`` that properties share."""

from __future__ import annotations

import pytest

from gpt2_conformance import checks

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
