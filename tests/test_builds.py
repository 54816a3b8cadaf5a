"""Builds: how the suite counts the models it builds, and how an adapter that declares
``reuse = "copy"`` gets copies of one built model without letting state leak between them."""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_conformance import checks, options, report, strategies, timing
from gpt2_conformance import suite as suite_module
from gpt2_conformance.adapter import AdapterError, to_numpy
from gpt2_conformance.adapters.reference import ReferenceAdapter
from gpt2_conformance.suite import Suite
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
CONFIG = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
OTHER = GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=1, n_head=2)
TOKENS = np.array([[1, 2, 3]], dtype=np.int64)
WTE = "transformer.wte.weight"


class Counting(ReferenceAdapter):
    """The reference, counting its builds."""

    def __init__(self) -> None:
        super().__init__()
        self.builds = 0

    def build(self, config: GPT2Config, **kwargs: Any) -> Any:
        self.builds += 1
        return super().build(config, **kwargs)


class Copying(Counting):
    reuse = "copy"


def _wte(implementation: Any) -> np.ndarray:
    return np.asarray(implementation.get_params()[WTE], dtype=np.float64)


def test_the_stopwatch_counts_builds_configurations_and_shapes() -> None:
    suite = Suite(Counting())
    timing.STOPWATCH.take()
    first, _ = suite.build(CONFIG, requirement="r", seed=1)
    second, _ = suite.build(OTHER, requirement="r", seed=1)
    first.logits(TOKENS)
    first.logits(TOKENS)
    first.logits(np.zeros((2, 5), dtype=np.int64))
    second.logits(TOKENS)
    taken = timing.STOPWATCH.take()
    assert taken["builds"] == 2 == suite.adapter.builds
    assert taken["build_s"] > 0.0
    assert taken["build_s"] <= taken["implementation"]
    assert taken["configs"] == sorted({timing.config_key(CONFIG), timing.config_key(OTHER)})
    assert taken["shapes"] == sorted(
        {
            f"{timing.config_key(CONFIG)} 1x3",
            f"{timing.config_key(CONFIG)} 2x5",
            f"{timing.config_key(OTHER)} 1x3",
        }
    )
    again = timing.STOPWATCH.take()  # taken: counting starts again from zero
    assert (again["builds"], again["configs"], again["shapes"]) == (0, [], [])


def test_rebuild_is_the_default_and_builds_every_time() -> None:
    adapter = Counting()
    assert adapter.reuse == "rebuild"
    suite = Suite(adapter)
    for _ in range(3):
        suite.build(CONFIG, requirement="r", seed=4)
    assert adapter.builds == 3


def test_copy_builds_each_drawn_model_once_and_hands_out_independent_copies() -> None:
    adapter = Copying()
    suite = Suite(adapter)
    first, params = suite.build(CONFIG, requirement="r", seed=4, scale=0.1)
    second, params_again = suite.build(CONFIG, requirement="r", seed=4, scale=0.1)
    assert adapter.builds == 1
    assert params is not None
    assert params_again is not None
    np.testing.assert_array_equal(params[WTE], params_again[WTE])
    assert first is not second
    before = second.logits(TOKENS)
    # The first copy is trained: the second, and every later one, is still the model as built.
    labels = TOKENS.copy()
    first.sgd_step(TOKENS, labels, lr=1.0)
    assert not np.array_equal(_wte(first), params[WTE].astype(np.float32))
    third, _ = suite.build(CONFIG, requirement="r", seed=4, scale=0.1)
    assert adapter.builds == 1
    np.testing.assert_array_equal(_wte(third), _wte(second))
    np.testing.assert_array_equal(np.asarray(third.logits(TOKENS)), np.asarray(before))
    # Another seed, scale or configuration is another model: built.
    suite.build(CONFIG, requirement="r", seed=5, scale=0.1)
    suite.build(CONFIG, requirement="r", seed=4, scale=None)
    suite.build(OTHER, requirement="r", seed=4, scale=0.1)
    assert adapter.builds == 4


def test_copy_never_reuses_a_model_built_from_weights_the_property_gave() -> None:
    adapter = Copying()
    suite = Suite(adapter)
    _, params = suite.build(CONFIG, requirement="r", seed=4)
    assert params is not None
    params[WTE][0] = 1.0  # a property's own weights: no key names them
    for _ in range(2):
        built, _ = suite.build(CONFIG, requirement="r", params=params, seed=4)
        assert _wte(built)[0, 0] == np.float32(1.0)
    assert adapter.builds == 3


class SharesItsModule(Copying):
    """Claims copies are independent, but its copies share the torch module of the original
    (a ``__deepcopy__`` that copies only the wrapper)."""

    def implementation(self, module: Any, config: GPT2Config, device: str, dtype: str) -> Any:
        built = super().implementation(module, config, device, dtype)

        class Shallow(type(built)):  # type: ignore[misc]
            def __deepcopy__(self, memo: dict[int, Any]) -> Any:
                return copy.copy(self)

        built.__class__ = Shallow
        return built


def test_a_copy_that_shares_state_with_its_original_is_refused() -> None:
    suite = Suite(SharesItsModule())
    first, _ = suite.build(CONFIG, requirement="r", seed=4)
    first.sgd_step(TOKENS, TOKENS.copy(), lr=1.0)  # trains the original through the copy
    with pytest.raises(AdapterError, match=r"share state with it.*reuse = 'rebuild'"):
        suite.build(CONFIG, requirement="r", seed=4)


def test_an_unknown_reuse_is_refused() -> None:
    adapter = Counting()
    adapter.reuse = "share"  # type: ignore[assignment]
    with pytest.raises(AdapterError, match="reuse is 'share': give 'rebuild' or 'copy'"):
        Suite(adapter).build(CONFIG, requirement="r", seed=0)


def _record(nodeid: str, builds: int, configs: set[str], shapes: set[str]) -> report.TestRecord:
    return report.TestRecord(
        nodeid=nodeid,
        requirements=("r",),
        outcome="passed",
        duration_s=2.0,
        implementation_s=1.0,
        builds=builds,
        build_s=0.25 * builds,
        configs=frozenset(configs),
        shapes=frozenset(shapes),
    )


def test_timing_counts_builds_and_distinct_configurations_and_shapes() -> None:
    tests = [
        _record("a", 3, {"V5", "V7"}, {"V5 1x2", "V7 1x2"}),
        _record("b", 2, {"V7", "V9"}, {"V7 1x2", "V9 3x1", "V9 1x1"}),
    ]
    summary = report.timing_summary(tests, wall_s=5.0)
    assert (summary["builds"], summary["build_s"]) == (5, 1.25)
    assert (summary["configs"], summary["shapes"]) == (3, 4)  # distinct over the run
    line = report.timing_line({"timing": summary})
    assert line.endswith("; 5 models built in 1.2 s (3 configurations, 4 shapes)")
    # The JSON keeps the counts per test, not the sets: a report read back (merged) says so.
    again = [report.TestRecord.from_dict(t.as_dict(), t.requirements) for t in tests]
    assert [t.builds for t in again] == [3, 2]
    merged = report.timing_summary(again, wall_s=5.0)
    assert (merged["builds"], merged["configs"], merged["shapes"]) == (5, None, None)
    assert report.timing_line({"timing": merged}).endswith("; 5 models built in 1.2 s")
    none = report.timing_summary([_record("c", 0, set(), set())], wall_s=1.0)
    assert "built" not in report.timing_line({"timing": none})


def test_ci_runs_without_the_explain_phase_and_the_other_profiles_with_it() -> None:
    from hypothesis import Phase, settings

    options.register_profiles()
    ci = settings.get_profile(options.profile_name("ci"))
    assert Phase.explain not in ci.phases
    assert set(ci.phases) == {Phase[name] for name in options.CI_PHASES}
    assert Phase.shrink in ci.phases  # a failure is still shrunk to a readable example
    for name in ("dev", "thorough"):
        assert Phase.explain in settings.get_profile(options.profile_name(name)).phases


# ---- the guide's JAX example: fixed shapes ------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
JAX_EXAMPLE = ROOT / "docs" / "examples" / "example_jax.py"


def test_the_guide_shows_the_jax_example_verbatim() -> None:
    guide = (ROOT / "docs" / "writing-an-adapter.md").read_text(encoding="utf-8")
    marker = "tests/test_builds.py runs this file (as shown here) when JAX is installed -->\n"
    shown = guide.split(marker, 1)[1].removeprefix("```python\n").split("```\n", 1)[0]
    assert shown == JAX_EXAMPLE.read_text(encoding="utf-8")


def test_the_jax_example_pads_to_few_shapes_and_agrees_with_the_oracle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("jax", reason="JAX is not installed (pip install jax)")
    from gpt2_reference import oracle as numpy_oracle

    monkeypatch.syspath_prepend(str(JAX_EXAMPLE.parent))
    example = importlib.import_module("example_jax")
    adapter = example.adapter
    suite = Suite(adapter)
    tolerance = suite.tolerance()
    rng = np.random.default_rng(0)
    asked = set()
    for config in adapter.supported_configs:
        built, params = suite.build(config, requirement="r", seed=3, scale=0.1)
        for B, T in [(1, 1), (2, 3), (3, config.n_positions), (1, 5), (3, 2), (5, 4)]:
            tokens = rng.integers(0, config.vocab_size, (B, T))
            asked.add((config, B, T))
            got = to_numpy(built.logits(tokens))
            expected = numpy_oracle.forward(params, config, tokens).logits
            assert got.shape == (B, T, config.vocab_size)
            assert S.agree(checks.log_probs(got), checks.log_probs(expected), tolerance)
    # Compiles: one per configuration and power-of-two row count (1, 2, 4, 8), not per shape.
    buckets = {(c, 1 << (B - 1).bit_length()) for c, B, _ in asked}
    assert example.forward._cache_size() == len(buckets) < len(asked)


class FixedCopying(Copying):
    supported_configs = (CONFIG, OTHER)


class FixedRebuilding(Counting):
    supported_configs = (CONFIG, OTHER)


@settings(max_examples=40, deadline=None, database=None)
@given(data=st.data())
def test_fixed_configurations_that_are_copied_draw_few_seeds(data: st.DataObject) -> None:
    copied = data.draw(strategies.models(Suite(FixedCopying())))
    assert copied.config in (CONFIG, OTHER)
    assert 0 <= copied.seed < strategies.SEEDS_PER_CONFIG
    rebuilt = data.draw(strategies.models(Suite(FixedRebuilding())))
    assert 0 <= rebuilt.seed < 2**31
    anything = data.draw(strategies.models(Suite(Copying())))  # drawn configurations: any seed
    assert 0 <= anything.seed < 2**31


def test_rebuilding_adapters_still_draw_seeds_from_the_whole_range() -> None:
    seeds = set()

    @settings(max_examples=30, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        seeds.add(data.draw(strategies.models(Suite(FixedRebuilding()))).seed)

    collect()
    assert max(seeds) >= strategies.SEEDS_PER_CONFIG  # not the copied adapters' few seeds


# ---- the ci profile's pool of configurations ----------------------------------------------------

POOL = suite_module.CI_POOL


def test_ci_draws_from_the_pool_and_the_other_profiles_draw_freely() -> None:
    assert options.profile_pool("ci") == POOL
    assert options.profile_pool("dev") is None
    assert options.profile_pool("thorough") is None
    pooled, free = Suite(Counting(), pool=POOL), Suite(Counting())
    seen_pooled, seen_free = set(), set()

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        seen_pooled.add(data.draw(strategies.models(pooled)).config)
        seen_free.add(data.draw(strategies.models(free)).config)

    collect()
    assert seen_pooled <= set(POOL)
    assert len(seen_pooled) > 1
    assert not seen_free <= set(POOL)  # any small configuration, as before


def test_the_pool_keeps_the_edges_and_covers_every_pair_of_heads_widths_and_layers() -> None:
    smallest = POOL[0]  # what a failing example shrinks to
    assert (smallest.n_head, smallest.n_embd, smallest.n_layer) == (1, 4, 1)
    assert (smallest.vocab_size, smallest.n_positions) == (5, 8)
    assert max(c.vocab_size for c in POOL) == 97
    assert max(c.n_positions for c in POOL) == strategies.MAX_POSITIONS
    rows = [(c.n_head, c.n_embd // c.n_head, c.n_layer) for c in POOL]
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert len({(r[i], r[j]) for r in rows}) == 9, (i, j)
    for c in POOL:
        assert len({c.vocab_size, c.n_positions, c.n_embd}) == 3, c  # no shape coincides
    assert any(c.vocab_size < c.n_positions for c in POOL)
    assert any(c.vocab_size > c.n_positions for c in POOL)


def test_a_fixed_configuration_takes_precedence_over_the_pool() -> None:
    @settings(max_examples=10, deadline=None, database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        fixed = data.draw(strategies.models(Suite(FixedRebuilding(), pool=POOL)))
        assert fixed.config in (CONFIG, OTHER)
        large = suite_module.SHAPES["gpt2-small"]
        assert data.draw(strategies.configs(Suite(Counting(), shape=large, pool=POOL))) == large

    check()


def test_copied_adapters_draw_few_seeds_from_the_pool_and_rebuilt_ones_any_seed() -> None:
    copied, rebuilt = set(), set()

    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        copied.add(data.draw(strategies.models(Suite(Copying(), pool=POOL))).seed)
        rebuilt.add(data.draw(strategies.models(Suite(Counting(), pool=POOL))).seed)

    collect()
    assert copied <= set(range(strategies.SEEDS_PER_CONFIG))
    assert max(rebuilt) >= strategies.SEEDS_PER_CONFIG


def test_the_kept_originals_are_bounded_by_their_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = 2 * CONFIG.parameter_count
    monkeypatch.setattr(suite_module, "ORIGINALS_KEPT_WEIGHTS", limit)
    adapter = Copying()
    suite = Suite(adapter)
    for seed in range(3):
        suite.build(CONFIG, requirement="r", seed=seed)
    assert len(suite._originals) == 2
    suite.build(CONFIG, requirement="r", seed=0)  # the oldest was let go: built again
    assert adapter.builds == 4
    model = ReferenceAdapter().build(CONFIG, params=None, seed=0, device="cpu", dtype="float32")
    module = model.module  # type: ignore[attr-defined]
    assert CONFIG.parameter_count == sum(p.numel() for p in module.parameters())


# ---- copies of torch modules, and which adapters copy -------------------------------------------


def test_a_module_copy_equals_deepcopy_and_shares_nothing() -> None:
    import torch

    from gpt2_conformance.adapters.torch_module import deepcopy_module

    built = ReferenceAdapter().build(CONFIG, params=None, seed=3, device="cpu", dtype="float32")
    module = built.module  # type: ignore[attr-defined]
    calls = []
    module.transformer.ln_f.register_forward_hook(lambda *args: calls.append(1))
    copied = deepcopy_module(module, {})
    slow = copy.deepcopy(module)
    assert type(copied) is type(module)
    assert [n for n, _ in copied.named_modules()] == [n for n, _ in slow.named_modules()]
    ours, original = copied.state_dict(), module.state_dict()
    assert list(ours) == list(original)
    for name, value in ours.items():
        assert torch.equal(value, original[name]), name
        assert value.data_ptr() != original[name].data_ptr(), name
    assert copied.head_weight is copied.transformer.wte.weight  # tied in the copy too
    ids = torch.as_tensor(TOKENS)
    with torch.no_grad():
        assert torch.equal(copied(ids).logits, module(ids).logits)
    assert len(calls) == 2  # the hook came along (the original's ran once, the copy's once)
    assert copied.transformer.ln_f._forward_hooks is not module.transformer.ln_f._forward_hooks
    copied.transformer.ln_f._forward_hooks.clear()
    assert len(module.transformer.ln_f._forward_hooks) == 1
    with torch.no_grad():
        copied.transformer.wte.weight.add_(1.0)
    assert torch.equal(module.transformer.wte.weight, original["transformer.wte.weight"])


def test_the_built_in_adapters_copy_and_their_subclasses_rebuild_unless_they_say() -> None:
    from gpt2_conformance.adapters.transformers_gpt2 import (
        TransformersEagerAdapter,
        TransformersSDPAAdapter,
    )
    from gpt2_zoo.hf_bugs import HFBug
    from gpt2_zoo.sequence_bugs import CausalLeak, LogitsMemoisedOnTokens

    assert ReferenceAdapter.reuse == "copy"
    assert TransformersSDPAAdapter.reuse == TransformersEagerAdapter.reuse == "copy"
    # The zoo patches the modules it builds (closures over the original module): rebuilt.
    assert CausalLeak.reuse == HFBug.reuse == Counting.reuse == "rebuild"
    assert LogitsMemoisedOnTokens.reuse == Copying.reuse == FixedCopying.reuse == "copy"


# ---- strategies made once per set of arguments --------------------------------------------------


def test_a_strategy_is_made_once_per_set_of_arguments() -> None:
    adapter = Counting()
    suite, other = Suite(adapter, pool=POOL), Suite(adapter, pool=POOL)
    assert suite == other  # equal dataclasses, but strategies are kept per suite object
    assert strategies.models(suite) is strategies.models(suite)
    assert strategies.models(suite) is not strategies.models(other)
    assert strategies.tokens(CONFIG, max_batch=2) is strategies.tokens(CONFIG, max_batch=2)
    assert strategies.tokens(CONFIG, max_batch=2) is not strategies.tokens(CONFIG, max_batch=3)
    assert strategies.tokens(CONFIG) is not strategies.tokens(OTHER)
    assert strategies.tokens(dataclasses.replace(CONFIG)) is strategies.tokens(CONFIG)  # by value
    assert strategies.sampled(tuple([1, 2])) is strategies.sampled((1, 2))
    # equal values of other types are other arguments: 1.0 and True are not 1
    assert strategies.sampled((1.0, 2.0)) is not strategies.sampled((1, 2))
    assert strategies.sampled((True, 2)) is not strategies.sampled((1, 2))
    # an unhashable argument gets a new strategy each time, which still draws
    shape_as_list: Any = [2, 3]
    masks = strategies.ignore_masks(shape_as_list)
    assert masks is not strategies.ignore_masks(shape_as_list)

    @settings(max_examples=3, deadline=None, database=None)
    @given(mask=masks)
    def draws(mask: np.ndarray) -> None:
        assert mask.shape == (2, 3)

    draws()


def test_a_suites_strategies_go_with_it() -> None:
    suite = Suite(Counting(), pool=POOL)
    strategies.models(suite)
    gone = weakref.ref(suite)
    del suite
    gc.collect()
    assert gone() is None  # no memo outside the suite holds it


def test_a_kept_strategy_reads_the_suite_when_it_draws() -> None:
    suite = Suite(Counting(), pool=POOL)
    kept = strategies.configs(suite)

    @settings(max_examples=10, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def draws(data: st.DataObject, seen: set[GPT2Config]) -> None:
        seen.add(data.draw(kept))

    before: set[GPT2Config] = set()
    draws(seen=before)
    assert before <= set(POOL)
    suite.pool = (OTHER,)  # a changed suite is seen by the strategy kept for it
    after: set[GPT2Config] = set()
    draws(seen=after)
    assert after == {OTHER}
    assert strategies.configs(suite) is kept


def test_the_kept_strategies_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategies, "REUSED_KEPT", 4)

    @strategies.reused
    def made(n: int) -> Any:
        return st.just(n)

    first = made(0)
    for n in range(1, 10):
        made(n)
    assert made(0) is not first  # dropped with the oldest half, then made again
    assert made(9) is made(9)
