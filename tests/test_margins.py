"""Margins: every numeric comparison notes its worst error as a fraction of its bound
(:class:`gpt2_conformance.checks.Margins`), and the JSON report carries the worst per test and
per requirement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------------------
# Every property that compares numbers notes a margin


def test_agree_notes_and_matches_does_not() -> None:
    tol = S.Tolerance(atol=1e-3, rtol=0.0)
    checks.MARGINS.take()
    assert checks.matches(np.array([1.0]), np.array([1.0 + 5e-4]), tol)
    assert checks.MARGINS.take() is None  # a deviation's numbers: nothing noted
    assert checks.agree(np.array([1.0]), np.array([1.0 + 5e-4]), tol)
    assert checks.MARGINS.take() == pytest.approx(0.5)
    assert not checks.agree(np.array([1.0]), np.array([1.0 + 4e-3]), tol)
    assert checks.MARGINS.take() == pytest.approx(4.0)


def test_accepted_alternatives_note_the_closer_one() -> None:
    tol = S.Tolerance(atol=1e-2, rtol=0.0)
    actual = np.array([[1.0, 2.0]])
    far, near = actual + 9e-3, actual + 1e-3
    checks.MARGINS.take()
    assert checks.first_agreeing(actual, [far, near], tol) == 0
    assert checks.MARGINS.take() == pytest.approx(0.1)
    assert checks.first_agreeing(actual, [actual + 1.0, near], tol) == 1
    assert checks.MARGINS.take() == pytest.approx(0.1)
    assert checks.first_agreeing(actual, [actual + 1.0, actual + 0.5], tol) is None
    assert checks.MARGINS.take() == pytest.approx(50.0)


def test_row_excess_and_exceeds_note_their_fractions() -> None:
    tol = S.Tolerance(atol=1e-2, rtol=0.0)
    checks.MARGINS.take()
    excess = checks.row_excess(np.array([[0.0, 0.0]]), np.array([[0.0, 5e-3]]), tol)
    np.testing.assert_allclose(excess, S.row_excess(np.zeros((1, 2)), np.array([[0, 5e-3]]), tol))
    assert checks.MARGINS.take() == pytest.approx(0.5)
    assert not checks.exceeds(0.25, 1.0)
    assert checks.exceeds(3.0, 1.0)
    assert checks.MARGINS.take() == pytest.approx(3.0)
    assert not checks.exceeds(0.0, 0.0)  # a zero bound: exact, no fraction
    assert checks.MARGINS.take() is None


PACKAGE = Path(checks.__file__).parent

#: The properties that compare no numbers against a bound, and why (a margin is a fraction of
#: a bound; these check names, shapes, refusals or exact equality, whose bound is zero).
NO_NUMERIC_COMPARISON = {
    "test_parameters_are_exposed_under_the_canonical_names": "names, and exact equality",
    "test_inputs_are_left_unchanged": "the inputs compared exactly (bit for bit)",
    "test_invalid_input_never_yields_a_result": "a refusal, not a number",
    "test_one_row_of_logits_per_input_position": "shapes",
    "test_embeddings_have_one_row_per_token_and_per_position": "shapes",
    "test_outputs_for_valid_input_are_finite": "finiteness, no bound",
    "test_token_ids_must_be_integers": "a refusal",
    "test_token_ids_outside_the_vocabulary_are_refused": "a refusal",
    "test_a_cache_plus_new_tokens_beyond_the_context_is_refused": "a refusal",
    "test_sequences_longer_than_the_context_are_refused": "a refusal",
    "test_empty_or_unbatched_input_is_refused": "a refusal",
    "test_labels_must_have_the_tokens_shape_and_integer_dtype": "a refusal",
    "test_labels_outside_the_vocabulary_are_refused": "a refusal",
}


def _calls_by_function() -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(module, function) -> the (module, function) pairs it calls, read from the package's
    source: bare names resolve to the same module, ``alias.name`` to an imported sibling module;
    nested functions and lambdas count as their enclosing function's. ``("", "MARGINS")`` stands
    for a use of the margins themselves."""
    import ast

    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for name in node.names:
                    if name.name in modules:
                        aliases[name.asname or name.name] = name.name
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            called = graph.setdefault((path.stem, node.name), set())
            for inner in ast.walk(node):
                name = getattr(inner, "id", None) or getattr(inner, "attr", None)
                if isinstance(inner, ast.Name | ast.Attribute) and name == "MARGINS":
                    called.add(("", "MARGINS"))
                elif isinstance(inner, ast.Call):
                    f = inner.func
                    if isinstance(f, ast.Name):
                        called.add((path.stem, f.id))
                    elif (
                        isinstance(f, ast.Attribute)
                        and isinstance(f.value, ast.Name)
                        and f.value.id in aliases
                    ):
                        called.add((aliases[f.value.id], f.attr))
    return graph


def _comparing_properties() -> tuple[set[str], set[str]]:
    """The property functions (``test_*`` in ``test_*.py``) that reach a margin-noting
    comparison, and those that do not."""
    graph = _calls_by_function()
    noting: set[tuple[str, str]] = {("", "MARGINS")}
    while True:
        more = {f for f, calls in graph.items() if f not in noting and calls & noting}
        if not more:
            break
        noting |= more
    properties = {f for f in graph if f[0].startswith("test_") and f[1].startswith("test_")}
    return {f[1] for f in properties & noting}, {f[1] for f in properties - noting}


def test_the_properties_without_a_numeric_comparison_are_the_listed_ones() -> None:
    comparing, other = _comparing_properties()
    assert "test_log_probabilities_agree_with_the_oracle" in comparing  # the derivation works
    assert other == set(NO_NUMERIC_COMPARISON)


def test_no_property_compares_outside_the_margin_noting_helpers() -> None:
    """``S.agree`` and ``S.row_excess`` answer without noting: outside checks.py only the
    diagnosis may use them (ranking a deviation's variants is not the property's margin)."""
    import re

    direct = re.compile(r"\bS\.(agree|row_excess)\(")
    found = {
        f"{p.name}:{n}"
        for p in PACKAGE.glob("*.py")
        if p.name != "checks.py"
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if direct.search(line)
    }
    assert {f.split(":")[0] for f in found} <= {"diagnose.py"}, sorted(found)


def test_a_reference_run_notes_a_margin_for_every_comparing_property(
    tmp_path: Path, installed_suite: Any
) -> None:
    import json

    report = tmp_path / "reference.json"
    done = installed_suite(
        "--impl=reference",
        "--max-examples=2",
        "--hypothesis-seed=0",
        f"--conformance-report={report}",
        "-p",
        "no:cacheprovider",
        "-q",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    comparing, other = _comparing_properties()
    margins = {
        t["nodeid"].split("::")[-1]: t.get("margin")
        for r in json.loads(report.read_text())["requirements"]
        for t in r["tests"]
    }
    assert set(margins) == comparing | other
    assert sorted(name for name in comparing if margins[name] is None) == []
    assert sorted(name for name in other if margins[name] is not None) == []
    assert all(0.0 <= margins[name] <= 1.0 for name in comparing)  # all passed
