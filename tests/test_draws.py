"""The suite's examples come from the seed and the suite's strategies: hypothesis' pool of
literals found in local modules (which would include an implementation under test, and this
package when installed editable) is off while a conformance property runs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_conformance import draws

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(
    not draws.local_constants_supported(), reason="this hypothesis draws no local constants"
)

#: A literal no float draw meets by chance, planted in a module of the implementation's author.
PLANTED = 1234.5678901


def _plant(folder: Path, name: str) -> None:
    (folder / f"{name}.py").write_text(f"SCALE = {PLANTED!r}\n", encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def _hits() -> int:
    """How often 300 derandomized draws of a float in [1234, 1235] give the planted literal."""
    seen: list[float] = []

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(st.floats(1234.0, 1235.0))
    def draw(x: float) -> None:
        seen.append(x)

    draw()
    return sum(x == PLANTED for x in seen)


def test_a_local_module_steers_hypothesis_unless_the_suite_turns_it_off(tmp_path: Path) -> None:
    _plant(tmp_path, "gpt2_author_model_constants")
    try:
        assert _hits() > 0  # hypothesis draws the author's literal: the mechanism is real
        with draws.suite_draws_only():
            assert _hits() == 0
        assert _hits() > 0  # restored afterwards (other tests of the session keep hypothesis')
    finally:
        sys.modules.pop("gpt2_author_model_constants", None)


PROBE = """
import pytest
from hypothesis import given, strategies as st
from hypothesis.internal.conjecture import providers


def _empty():
    pool = providers._get_local_constants()
    return not (pool.integers or pool.floats or pool.strings)


@pytest.mark.requirement("objective.one-row-per-position")
@given(x=st.integers(0, 9))
def test_a_property_draws_from_the_suite_only(suite, x):
    assert _empty()


def test_an_ordinary_test_keeps_hypothesis_pool():
    assert not _empty()  # this module's own literals, at least
"""


def test_the_plugin_runs_every_property_with_suite_draws_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(probe_props=PROBE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--impl=reference", "probe_props.py"
    )
    result.assert_outcomes(passed=2)
