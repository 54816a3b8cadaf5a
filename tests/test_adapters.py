"""The built-in adapters, and the example adapters of the documentation, do what they claim.

Every adapter is built on one tiny configuration and checked capability by capability against
what :data:`gpt2_conformance.adapter.CAPABILITIES` promises: against the NumPy oracle when the
adapter takes canonical weights (``params``), against itself otherwise (a non-GPT-2 model such as
a tiny Llama can still be checked for cache, mask and head consistency). Tolerances are the
spec's (chapter 7): ``oracle``/``self`` at float32, or at the dtype a move goes to.

These are the project's own tests of the adapters, not conformance properties: the properties in
conformance/ judge implementations; these tests make sure the adapters hand the implementations
over faithfully.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpt2_conformance.adapter import CAPABILITIES, Adapter, AdapterError, Implementation, to_numpy
from gpt2_conformance.adapters import BUILTINS, TABLE, baselines, builtin, zoo_baselines
from gpt2_conformance.adapters.hf import hf_causal_lm
from gpt2_conformance.adapters.torch_module import TorchModuleAdapter
from gpt2_conformance.loading import load_adapter
from gpt2_reference import oracle
from gpt2_reference.checkpoint import save_checkpoint
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "writing-an-adapter.md"

CONFIG = GPT2Config(vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=4)
SCALE = 0.3  # inside the float32 domain; large enough that GELU and LayerNorm matter
ORACLE = S.TOLERANCES[("oracle", "float32")]
SELF = S.TOLERANCES[("self", "float32")]
WTE = "transformer.wte.weight"
ALL = frozenset(CAPABILITIES)


def _llama() -> Adapter:
    transformers = pytest.importorskip("transformers")

    def make(c: GPT2Config, seed: int) -> Any:  # a non-GPT-2 model, from a random config
        hf = transformers.LlamaConfig(
            vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=2 * c.n_embd,
            num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=2,
            max_position_embeddings=c.n_positions, tie_word_embeddings=True,
            bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )  # fmt: skip
        return transformers.LlamaForCausalLM(hf)

    return hf_causal_lm(make, name="tiny-llama", tied=True)


def _example(module: str) -> Callable[[], Adapter]:
    def load() -> Adapter:
        adapter: Adapter = load_adapter(f"{module}:adapter")
        return adapter

    return load


def _builtin(name: str) -> Callable[[], Adapter]:
    return lambda: load_adapter(name)


#: The built-ins under test: the GPT-2s of the table, each once (an alias is the adapter it
#: names; tests/test_peers.py covers the peers).
GPT2_BUILTINS = [b for b in TABLE if not b.peer and b.reports_as == b.name]

#: Adapter under test -> (how to get it, the capabilities it must claim).
ADAPTERS: dict[str, tuple[Callable[[], Adapter], frozenset[str]]] = {
    **{b.name: (_builtin(b.name), ALL - b.not_claimed) for b in GPT2_BUILTINS},
    "hf-generic-llama": (
        _llama,
        ALL - {"params", "checkpoint", "gradients", "input-validation"},
    ),
    "example-hf": (_example("example_hf"), ALL - {"input-validation"}),
    "example-nanogpt": (
        _example("example_nanogpt"),
        frozenset({"move", "save-load", "loss", "gradients", "train-step", "params", "checkpoint"}),
    ),
    "example-numpy": (_example("example_numpy"), frozenset({"params"})),
    "example-engine": (_example("example_engine"), frozenset({"params"})),
}

#: Adapter under test -> the modules it needs beyond the core dependencies.
_REQUIRES: dict[str, tuple[str, ...]] = {
    **{b.name: b.requires for b in GPT2_BUILTINS},
    "hf-generic-llama": ("transformers",),
    "example-hf": ("transformers",),
}


@pytest.fixture(scope="session", autouse=True)
def _examples_importable() -> Iterator[None]:
    # The docs' example adapters are files a user keeps beside their own code, not a package of
    # the project: they are imported by module name from their folder, as a user's are.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        yield


_BUILT: dict[str, Adapter] = {}


def _get(name: str) -> Adapter:
    for module in _REQUIRES.get(name, ()):
        pytest.importorskip(module)
    if name not in _BUILT:
        _BUILT[name] = ADAPTERS[name][0]()
    return _BUILT[name]


@pytest.fixture
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return _get(request.param)


def claiming(*capabilities: str) -> pytest.MarkDecorator:
    """Run the test for every adapter that claims ``capabilities`` (and only those: the table
    is checked against the adapters by test_capabilities_are_the_expected_ones)."""
    names = [n for n, (_, claimed) in ADAPTERS.items() if set(capabilities) <= claimed]
    return pytest.mark.parametrize("adapter", names, indirect=True)


def params_for(adapter: Adapter, seed: int = 3) -> dict[str, np.ndarray] | None:
    if "params" not in adapter.capabilities:
        return None
    return oracle.random_params(CONFIG, seed=seed, scale=SCALE)


def build(
    adapter: Adapter, params: dict[str, np.ndarray] | None = None, dtype: str = "float32"
) -> Implementation:
    return adapter.build(CONFIG, params=params, seed=0, device="cpu", dtype=dtype)


def tokens(batch: int = 3, length: int = 11, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (batch, length))


def logp(value: Any) -> np.ndarray:
    return S.log_softmax(to_numpy(value))


def assert_rows_agree(actual: Any, expected: Any, tol: Any) -> None:
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape
    worst = float(S.row_excess(actual, expected, tol).max())
    assert S.agree(actual, expected, tol), f"worst row exceeds its bound by {worst:.3e}"


def assert_tensor_agrees(actual: Any, expected: Any, tol: Any) -> None:
    """Chapter 7's rule for a whole tensor: relative to its largest magnitude."""
    actual, expected = to_numpy(actual), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert_rows_agree(actual.reshape(1, -1), expected.reshape(1, -1), tol)


def labels_and_expected(
    adapter: Adapter, ids: np.ndarray, ignore_index: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels in the adapter's convention (with some ignored) and the oracle's keywords."""
    ignored = np.random.default_rng(9).random(ids.shape) < 0.3
    if adapter.label_convention == "inputs":
        labels = np.where(ignored, ignore_index, ids)
        return labels, {"labels": labels}
    targets = np.where(ignored, ignore_index, S.shift_labels(ids, ignore_index))
    return targets, {"targets": targets}


def oracle_logits(params: dict[str, np.ndarray], ids: np.ndarray, **kwargs: Any) -> np.ndarray:
    return oracle.forward(params, CONFIG, ids, **kwargs).logits


# ---- declarations ---------------------------------------------------------------------------


@claiming()
def test_declarations_are_valid(adapter: Adapter) -> None:
    assert adapter.capabilities <= ALL
    assert adapter.label_convention in ("inputs", "shifted")
    assert "cpu" in adapter.devices
    assert "float32" in adapter.dtypes
    assert adapter.name
    assert adapter.name != "unnamed"
    assert adapter.tied_head is True


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_capabilities_are_the_expected_ones(name: str) -> None:
    assert _get(name).capabilities == ADAPTERS[name][1]


def test_builtins_resolve_by_name() -> None:
    """Each GPT-2 built-in (aliases too) loads by its name and reports the name the table says."""
    for record in TABLE:
        if record.peer:  # tests/test_peers.py covers these
            continue
        for module in record.requires:
            pytest.importorskip(module)
        assert load_adapter(record.name).name == record.reports_as, record.name


def test_the_builtins_table_is_consistent() -> None:
    names = [b.name for b in TABLE]
    assert len(set(names)) == len(names), "a name is in the table twice"
    assert {b.name: b.target for b in TABLE} == BUILTINS  # the view --impl resolution reads
    assert all(re.fullmatch(r"[\w.]+:\w+", b.target) for b in TABLE)
    for b in TABLE:
        assert b.not_claimed <= ALL, (b.name, b.not_claimed - ALL)
        assert builtin(b.name) is b
        if b.reports_as != b.name:  # an alias: the adapter it names, under another name
            (same,) = [x for x in TABLE if x.name == b.reports_as]
            assert (same.target, same.not_claimed) == (b.target, b.not_claimed), b.name
    # a baseline is a GPT-2 under its own name (no alias, no peer)
    assert set(baselines()) <= {b.name for b in GPT2_BUILTINS}
    assert set(zoo_baselines().values()) <= set(names)
    with pytest.raises(KeyError, match="reference"):
        builtin("no-such-adapter")


def test_builtins_extras_are_the_packages_extras() -> None:
    """A record's extra is one of pyproject's optional-dependencies and installs what the
    adapter imports."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for b in TABLE:
        if b.extra is None:
            assert not b.requires, b.name
            continue
        assert b.extra in extras, (b.name, b.extra)
        listed = {re.split(r"[<>=\[ ;]", spec, maxsplit=1)[0] for spec in extras[b.extra]}
        assert set(b.requires) <= listed, (b.name, b.requires, listed)


def test_reference_never_imports_transformers() -> None:
    code = (
        "import sys, numpy as np; from gpt2_conformance.loading import load_adapter; "
        "from gpt2_spec import GPT2Config; a = load_adapter('reference'); "
        "c = GPT2Config(vocab_size=7, n_positions=4, n_embd=8, n_layer=1, n_head=2); "
        "a.build(c, params=None, seed=0, device='cpu', dtype='float32').logits(np.zeros((1, 2), "
        "dtype=np.int64)); load_adapter('transformers'); print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- logits and loss ------------------------------------------------------------------------


@claiming()
def test_logits_agree_with_the_oracle(adapter: Adapter) -> None:
    params = params_for(adapter)
    ids = tokens()
    out = to_numpy(build(adapter, params).logits(ids))
    assert out.shape == (*ids.shape, CONFIG.vocab_size)
    assert np.isfinite(out).all()
    if params is None:  # not GPT-2's weights: the same input gives the same output at least
        assert_rows_agree(build(adapter).logits(ids), out, SELF)
        return
    expected = oracle_logits(params, ids)
    assert_rows_agree(logp(out), S.log_softmax(expected), ORACLE)
    assert_rows_agree(out, expected, ORACLE)  # raw logits too: the head has no bias


@claiming("loss")
@pytest.mark.parametrize(("reduction", "ignore_index"), [("mean", -100), ("sum", -7)])
def test_loss_agrees_with_the_oracle(adapter: Adapter, reduction: str, ignore_index: int) -> None:
    params = params_for(adapter)
    impl, ids = build(adapter, params), tokens()
    labels, keywords = labels_and_expected(adapter, ids, ignore_index)
    value = float(to_numpy(impl.loss(ids, labels, reduction=reduction, ignore_index=ignore_index)))
    if params is not None:
        expected = oracle.loss(
            params, CONFIG, ids, reduction=reduction, ignore_index=ignore_index, **keywords
        )
    else:  # the spec's loss of the implementation's own logits
        targets = keywords.get("targets", S.shift_labels(labels, ignore_index))
        logits = to_numpy(impl.logits(ids))
        expected = float(S.causal_lm_loss(logits, targets, reduction, ignore_index))
    assert S.agree(np.float64(value), np.float64(expected), ORACLE), (value, expected)


@claiming("loss")
def test_loss_without_counted_targets(adapter: Adapter) -> None:
    impl, ids = build(adapter, params_for(adapter)), tokens()
    nothing = np.full_like(ids, -100)
    assert np.isnan(float(to_numpy(impl.loss(ids, nothing, reduction="mean"))))
    assert float(to_numpy(impl.loss(ids, nothing, reduction="sum"))) == 0.0


@pytest.mark.parametrize("name", ["numpy", "reference"])
def test_a_keyword_outside_the_protocol_is_refused(name: str) -> None:
    """The loss takes the protocol's options only: a mask (which the oracle underneath would
    accept) raises TypeError rather than giving a masked loss no other adapter gives."""
    adapter = _get(name)
    impl, ids = build(adapter, params_for(adapter)), tokens()
    with pytest.raises(TypeError):
        impl.loss(ids, ids, attention_mask=np.ones_like(ids))
    with pytest.raises(TypeError):
        impl.gradients(ids, ids, attention_mask=np.ones_like(ids))


# ---- gradients and training -----------------------------------------------------------------


@claiming("gradients")
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradients_agree_with_the_oracle(adapter: Adapter, reduction: str) -> None:
    params = params_for(adapter)
    impl, ids = build(adapter, params), tokens()
    labels, keywords = labels_and_expected(adapter, ids, -100)
    loss, grads = impl.gradients(ids, labels, reduction=reduction)
    own_loss = impl.loss(ids, labels, reduction=reduction)
    assert S.agree(to_numpy(loss), to_numpy(own_loss), SELF)
    assert params is not None  # gradients are claimed with canonical names only
    expected = oracle.gradients(params, CONFIG, ids, reduction=reduction, **keywords)
    assert S.agree(to_numpy(loss), np.float64(expected.loss), ORACLE)
    assert set(expected.grads) <= set(grads) <= set(expected.grads) | {"lm_head.weight"}
    for name, value in expected.grads.items():
        assert_tensor_agrees(grads[name], value, ORACLE)


def test_gradients_without_canonical_names_use_the_modules_own() -> None:
    """Not a claim (the protocol's gradients are canonical), but the method still works."""
    impl, ids = build(_get("hf-generic-llama")), tokens()
    loss, grads = impl.gradients(ids, ids)
    module = impl.module
    assert set(grads) == {name for name, _ in module.named_parameters()}
    assert all(np.isfinite(to_numpy(g)).all() for g in grads.values())
    assert S.agree(to_numpy(loss), to_numpy(impl.loss(ids, ids)), SELF)


@claiming("train-step")
def test_sgd_step_is_one_plain_step(adapter: Adapter) -> None:
    params, lr = params_for(adapter), 0.05
    impl, ids = build(adapter, params), tokens()
    labels, keywords = labels_and_expected(adapter, ids, -100)
    before = float(to_numpy(impl.loss(ids, labels)))
    impl.sgd_step(ids, labels, lr=lr)
    if params is None:  # a small step down the gradient lowers the loss
        assert float(to_numpy(impl.loss(ids, labels))) < before
        return
    grads = oracle.gradients(params, CONFIG, ids, **keywords).grads
    updated = impl.get_params()
    for name, value in params.items():
        assert_tensor_agrees(updated[name], value - lr * grads[name], ORACLE)
    np.testing.assert_array_equal(to_numpy(impl.head_weight()), to_numpy(updated[WTE]))


# ---- inference ------------------------------------------------------------------------------


@claiming("kv-cache")
def test_cached_decoding_equals_the_full_forward(adapter: Adapter) -> None:
    impl, ids = build(adapter, params_for(adapter)), tokens(length=12)
    full = logp(impl.logits(ids))
    first, cache = impl.prefill(ids[:, :5])
    second, longer = impl.extend(cache, ids[:, 5:9])
    third, longest = impl.extend(longer, ids[:, 9:])
    assert (cache.length, longer.length, longest.length) == (5, 9, 12)
    pieces = np.concatenate([logp(first), logp(second), logp(third)], axis=1)
    assert_rows_agree(pieces, full, SELF)
    # Extending a cache leaves it usable: the same step again gives the same rows.
    again, _ = impl.extend(cache, ids[:, 5:9])
    assert_rows_agree(logp(again), logp(second), SELF)


@claiming("attention-mask")
def test_left_padding_leaves_real_rows_unchanged(adapter: Adapter) -> None:
    params = params_for(adapter)
    impl, ids, pad = build(adapter, params), tokens(batch=2, length=10), 3
    mask = np.ones_like(ids)
    mask[1, :pad] = 0
    positions = S.position_ids_from_mask(mask)
    padded = logp(impl.logits(ids, attention_mask=mask, position_ids=positions))
    alone = logp(impl.logits(ids[1:, pad:]))
    assert_rows_agree(padded[1, pad:], alone[0], SELF)
    assert_rows_agree(padded[0], logp(impl.logits(ids[:1]))[0], SELF)
    if params is not None:
        expected = oracle_logits(params, ids, attention_mask=mask, position_ids=positions)
        assert_rows_agree(padded[1, pad:], S.log_softmax(expected)[1, pad:], ORACLE)


@claiming("last-position")
def test_last_logits_are_the_last_row(adapter: Adapter) -> None:
    impl, ids = build(adapter, params_for(adapter)), tokens()
    last = to_numpy(impl.last_logits(ids))
    assert last.shape == (ids.shape[0], CONFIG.vocab_size)
    assert_rows_agree(S.log_softmax(last), logp(impl.logits(ids))[:, -1], SELF)


@claiming("hidden-states")
def test_hidden_states_feed_the_head(adapter: Adapter) -> None:
    params = params_for(adapter)
    impl, ids = build(adapter, params), tokens()
    hidden = to_numpy(impl.hidden_states(ids))
    assert hidden.shape == (*ids.shape, CONFIG.n_embd)
    head = to_numpy(impl.head_weight())
    assert_rows_agree(impl.logits(ids), hidden @ head.T, SELF)  # "head (self)", chapter 7
    if params is not None:
        assert_rows_agree(hidden, oracle.forward(params, CONFIG, ids).hidden, ORACLE)


# ---- weights --------------------------------------------------------------------------------


@claiming("params")
def test_params_round_trip_and_the_head_follows_wte(adapter: Adapter) -> None:
    params = params_for(adapter)
    assert params is not None
    impl, ids = build(adapter, params), tokens()
    got = impl.get_params()
    assert set(params) <= set(got) <= set(params) | {"lm_head.weight"}
    for name, value in params.items():
        assert_tensor_agrees(got[name], value, ORACLE)
    if not hasattr(impl, "set_params") or type(impl).set_params is Implementation.set_params:
        return
    changed = {**params, WTE: oracle.random_params(CONFIG, seed=11, scale=SCALE)[WTE]}
    impl.set_params({WTE: changed[WTE]})
    assert_tensor_agrees(impl.head_weight(), changed[WTE], ORACLE)  # tied: the head moved too
    assert_rows_agree(logp(impl.logits(ids)), S.log_softmax(oracle_logits(changed, ids)), ORACLE)


@claiming("save-load")
def test_save_then_load_gives_the_same_model(adapter: Adapter, tmp_path: Path) -> None:
    impl, ids = build(adapter, params_for(adapter)), tokens()
    impl.save(tmp_path / "saved")
    loaded = impl.load(tmp_path / "saved")
    assert loaded is not impl
    assert_rows_agree(logp(loaded.logits(ids)), logp(impl.logits(ids)), SELF)
    np.testing.assert_array_equal(to_numpy(loaded.head_weight()), to_numpy(impl.head_weight()))


@claiming("checkpoint")
def test_load_checkpoint_reads_a_canonical_checkpoint(adapter: Adapter, tmp_path: Path) -> None:
    params = oracle.random_params(CONFIG, seed=21, scale=SCALE)
    save_checkpoint(tmp_path, CONFIG, {k: torch.from_numpy(v).float() for k, v in params.items()})
    impl, ids = build(adapter, params_for(adapter)), tokens()
    expected = S.log_softmax(oracle_logits(params, ids))
    for path in (tmp_path, tmp_path / "model.safetensors"):  # a directory, or a bare file
        loaded = impl.load_checkpoint(path)
        assert_rows_agree(logp(loaded.logits(ids)), expected, ORACLE)


@claiming("resize-vocab")
def test_resize_vocab_keeps_the_old_rows(adapter: Adapter) -> None:
    impl, ids = build(adapter, params_for(adapter)), tokens()
    head, logits = to_numpy(impl.head_weight()), to_numpy(impl.logits(ids))
    impl.resize_vocab(CONFIG.vocab_size + 5)
    resized = to_numpy(impl.head_weight())
    assert resized.shape == (CONFIG.vocab_size + 5, CONFIG.n_embd)
    np.testing.assert_array_equal(resized[: CONFIG.vocab_size], head)
    after = to_numpy(impl.logits(ids))
    assert after.shape == (*ids.shape, CONFIG.vocab_size + 5)
    assert_rows_agree(after[..., : CONFIG.vocab_size], logits, SELF)


@claiming("move")
def test_moved_is_a_copy_at_the_new_dtype(adapter: Adapter) -> None:
    params = params_for(adapter)
    impl, ids = build(adapter, params), tokens()
    before = to_numpy(impl.logits(ids))
    for dtype in adapter.dtypes:
        moved = impl.moved("cpu", dtype)
        assert moved is not impl
        out = logp(moved.logits(ids))
        expected = S.log_softmax(oracle_logits(params, ids) if params is not None else before)
        assert_rows_agree(out, expected, S.TOLERANCES[("oracle", dtype)])
    np.testing.assert_array_equal(to_numpy(impl.logits(ids)), before)  # the original is unmoved


def test_numpy_oracle_runs_on_the_cpu_only() -> None:
    impl = build(load_adapter("numpy"), oracle.random_params(CONFIG, seed=0))
    with pytest.raises(AdapterError, match="CPU only"):
        impl.moved("cuda", "float32")


# ---- input validation -----------------------------------------------------------------------

INVALID_IDS = {
    "out of range": np.array([[1, CONFIG.vocab_size]]),
    "negative": np.array([[1, -1]]),
    "float": np.array([[1.0, 2.0]]),
    "bool": np.array([[True, False]]),
    "one-dimensional": np.array([1, 2]),
    "empty": np.zeros((1, 0), dtype=np.int64),
    "too long": np.zeros((1, CONFIG.n_positions + 1), dtype=np.int64),
}


@claiming("input-validation")
@pytest.mark.parametrize("case", list(INVALID_IDS))
def test_claimed_input_validation_refuses_with_a_value_error(adapter: Adapter, case: str) -> None:
    impl = build(adapter, params_for(adapter))
    with pytest.raises(ValueError, match=r"."):
        impl.logits(INVALID_IDS[case])


def test_transformers_does_not_validate_ids_so_it_does_not_claim_it() -> None:
    """What the transformers adapters' docstring says: the lookup fails late, with IndexError."""
    pytest.importorskip("transformers")
    adapter = load_adapter("transformers")
    assert "input-validation" not in adapter.capabilities
    impl = build(adapter, params_for(adapter))
    with pytest.raises(IndexError):
        impl.logits(INVALID_IDS["out of range"])


class _WithoutLossOptions(torch.nn.Module):
    """A transformers model behind a forward that takes no loss options (no ``**kwargs``)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        return self.inner(input_ids=input_ids, labels=labels)


@pytest.mark.parametrize(("reduction", "ignore_index"), [("mean", -7), ("sum", -100)])
def test_hf_loss_without_loss_options_still_honours_the_call(
    reduction: str, ignore_index: int
) -> None:
    pytest.importorskip("transformers")
    from example_hf import make_gpt2

    adapter = hf_causal_lm(
        lambda config, seed: _WithoutLossOptions(make_gpt2(config, seed)),
        name="no-loss-options",
        param_names=lambda name: name.removeprefix("inner."),
    )
    params = oracle.random_params(CONFIG, seed=3, scale=SCALE)
    impl, ids = build(adapter, params), tokens()
    labels = np.where(np.random.default_rng(2).random(ids.shape) < 0.3, ignore_index, ids)
    value = float(to_numpy(impl.loss(ids, labels, reduction=reduction, ignore_index=ignore_index)))
    expected = oracle.loss(
        params, CONFIG, ids, labels=labels, reduction=reduction, ignore_index=ignore_index
    )
    assert S.agree(np.float64(value), np.float64(expected), ORACLE), (value, expected)
    nothing = np.full_like(ids, ignore_index)
    assert float(to_numpy(impl.loss(ids, nothing, reduction="sum", ignore_index=ignore_index))) == 0


# ---- the torch base class -------------------------------------------------------------------


class _Linear(torch.nn.Module):  # a "model" with an nn.Linear head only, for the base's tests
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(config.vocab_size, config.n_embd)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.wte(ids) @ self.wte.weight.T


class _Minimal(TorchModuleAdapter):
    name = "minimal"

    def make_module(self, config: GPT2Config, seed: int) -> torch.nn.Module:
        return _Linear(config)

    def forward_logits(self, module: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        return module(input_ids)


def test_required_hooks_alone_claim_move_and_save_load() -> None:
    assert _Minimal.capabilities == {"move", "save-load"}
    assert _Minimal().capabilities == {"move", "save-load"}


def test_a_mask_aware_forward_claims_attention_mask() -> None:
    class Masked(_Minimal):
        def forward_logits(
            self, module: Any, input_ids: Any, attention_mask: Any = None, position_ids: Any = None
        ) -> Any:
            return module(input_ids)

    assert Masked.capabilities == {"move", "save-load", "attention-mask"}


def test_explicit_capabilities_are_kept() -> None:
    class Declared(_Minimal):
        capabilities = frozenset({"move"})

    assert Declared.capabilities == {"move"}


def test_build_is_deterministic_in_the_seed() -> None:
    adapter = _Minimal()
    ids = tokens()

    def logits(seed: int) -> np.ndarray:
        impl = adapter.build(CONFIG, params=None, seed=seed, device="cpu", dtype="float32")
        return to_numpy(impl.logits(ids))

    np.testing.assert_array_equal(logits(1), logits(1))
    assert not np.array_equal(logits(1), logits(2))


def test_canonical_copies_instead_of_views_are_refused() -> None:
    class Copies(_Minimal):
        def canonical_state_dict(self, module: Any) -> dict[str, torch.Tensor]:
            return {WTE: module.wte.weight.clone()}

    config = GPT2Config(vocab_size=61, n_positions=24, n_embd=32, n_layer=1, n_head=4)
    with pytest.raises(AdapterError, match="view"):
        Copies().build(
            config, params={WTE: np.zeros((61, 32))}, seed=0, device="cpu", dtype="float32"
        )


# ---- the guide's code is the examples' code -------------------------------------------------

_INCLUDED = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```\n", re.DOTALL)


def test_the_guide_shows_the_example_files_verbatim() -> None:
    shown = _INCLUDED.findall(GUIDE.read_text(encoding="utf-8"))
    assert len(shown) >= 4
    for relative, code in shown:
        path = ROOT / relative
        assert path.parent == EXAMPLES, relative
        assert code == path.read_text(encoding="utf-8"), f"{relative} differs from the guide"
