"""Margins: every numeric comparison notes its worst error as a fraction of its bound
(:class:`gpt2_conformance.checks.Margins`), and the JSON report carries the worst per test and
per requirement."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_conformance import checks
from gpt2_conformance import report as reports
from gpt2_spec import spec_definitions

S = spec_definitions()


def test_a_comparison_notes_its_error_over_its_bound() -> None:
    tol = S.Tolerance(atol=1e-3, rtol=1e-2)
    expected = np.array([[1.0, -2.0], [0.5, 0.25]])
    actual = expected + np.array([[0.0, 0.0105], [0.0, 0.0]])  # row 0: bound 1e-3 + 2e-2
    checks.MARGINS.take()
    assert checks.row_disagreement(actual, expected, tol, lambda *a: "x") is None
    assert checks.MARGINS.take() == pytest.approx(0.0105 / 0.021)
    assert checks.MARGINS.take() is None  # taken: starts again


def test_the_worst_of_several_comparisons_is_kept_and_a_failure_is_above_one() -> None:
    tol = S.Tolerance(atol=1e-6, rtol=0.0)
    checks.MARGINS.take()
    checks.scalar_agrees("r.x", 1.0, 1.0 + 5e-7, tol, what="a loss")
    with pytest.raises(checks.ConformanceFailure):
        checks.tensors_agree("r.x", np.zeros(3), np.full(3, 3e-6), tol, what="a gradient")
    checks.scalar_agrees("r.x", 2.0, 2.0, tol, what="a loss")
    assert checks.MARGINS.take() == pytest.approx(3.0)


def test_exact_comparisons_have_no_margin() -> None:
    checks.MARGINS.take()
    checks.scalar_agrees("r.x", 2.0, 2.0, S.Tolerance(atol=0.0, rtol=0.0), what="a count")
    assert checks.MARGINS.take() is None


def test_the_report_keeps_the_worst_margin_per_test_and_per_requirement() -> None:
    from gpt2_spec import load_requirements

    requirements = load_requirements()
    rid = requirements[0].id
    tests = [
        reports.TestRecord("t::a", (rid,), "passed", margin=0.125),
        reports.TestRecord("t::b", (rid,), "passed", margin=0.5),
        reports.TestRecord("t::c", (rid,), "passed"),
    ]
    built = reports.build_report(
        requirements=requirements,
        tests=tests,
        implementation={"name": "x"},
        hypothesis={},
        suite_version="0",
        spec_version="0",
        duration_s=1.0,
    )
    [entry] = [r for r in built["requirements"] if r["id"] == rid]
    assert entry["margin"] == 0.5
    assert [t.get("margin") for t in entry["tests"]] == [0.125, 0.5, None]
    again = reports.TestRecord.from_dict(entry["tests"][1], (rid,))
    assert again.margin == 0.5
