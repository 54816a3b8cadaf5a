"""Chapter 1, the model: canonical parameter names and the canonical storage layout."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from gpt2_conformance import checks, diagnose, strategies, tied, timing
from gpt2_conformance.adapter import Implementation, Params, to_numpy
from gpt2_conformance.properties import checks_requirement
from gpt2_conformance.suite import Suite
from gpt2_conformance.timing import oracle
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
HEAD = "lm_head.weight"
WTE = "transformer.wte.weight"


def _shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(shape)
        for name, shape in S.canonical_shapes(
            config.vocab_size, config.n_positions, config.n_embd, config.n_layer
        ).items()
    }


@checks_requirement("model.canonical-names", needs=("params",))
def test_parameters_are_exposed_under_the_canonical_names(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """get_params() holds every canonical name and nothing else, except an lm_head.weight that is
    wte (equal values); mask buffers are not parameters."""
    draw = data.draw(strategies.models(suite), label="model")
    impl, _ = strategies.build(suite, draw, requirement)
    named = checks.call(requirement, "reading get_params()", impl.get_params)
    expected = _shapes(draw.config)
    missing = [name for name in expected if name not in named]
    if missing:
        checks.fail(
            requirement,
            f"get_params() lacks {len(missing)} canonical name(s), e.g. {missing[:3]}; it has "
            f"{sorted(named)[:4]}... (names are transformers' GPT2LMHeadModel state-dict keys)",
        )
    extra = [name for name in named if name not in expected and name != HEAD]
    if extra:
        buffers = [name for name in extra if S.is_mask_buffer(name)]
        why = (
            "causal-mask buffers are not parameters"
            if buffers
            else "only canonical names and lm_head.weight may appear"
        )
        checks.fail(requirement, f"get_params() has non-canonical name(s) {extra[:4]}: {why}")
    if HEAD in named:
        head = checks.array(requirement, named[HEAD], what=HEAD, shape=expected[WTE])
        wte = checks.array(requirement, named[WTE], what=WTE, shape=expected[WTE])
        if not np.array_equal(head, wte):
            checks.fail(  # an untied head, seen through the names
                tied.TIED_TO_EMBEDDING,
                f"get_params() lists lm_head.weight with values that differ from "
                f"transformer.wte.weight by up to {np.abs(head - wte).max():.2e}: if present it "
                "must be the token embedding itself",
            )


def _write_safetensors(directory: Path, config: GPT2Config, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    save_file(arrays, str(directory / "model.safetensors"), metadata={"format": "pt"})
    body = json.dumps(config.to_hf_dict(), indent=2, sort_keys=True)
    (directory / "config.json").write_text(body + "\n", encoding="utf-8")


def _float32(params: Params) -> Params:
    return {name: np.asarray(value, dtype=np.float32) for name, value in params.items()}


@checks_requirement("model.canonical-names", needs=("checkpoint",))
def test_loader_reads_the_names_that_real_checkpoints_carry(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """A loader accepts lm_head.weight equal to wte and the old mask buffers (ignored); one that
    accepts base-model names (no ``transformer.`` prefix) reads them as the canonical names."""
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    impl, _ = strategies.build(suite, draw, requirement)
    weights = _float32(
        draw.params or oracle.random_params(config, seed=draw.seed, scale=draw.scale)
    )
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    T = config.n_positions
    causal = np.tril(np.ones((T, T), dtype=np.float32))[None, None]
    with_extras = dict(weights)
    with_extras[HEAD] = weights[WTE].copy()
    for layer in range(config.n_layer):
        with_extras[f"transformer.h.{layer}.attn.bias"] = causal
        with_extras[f"transformer.h.{layer}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    base_model = {name.removeprefix("transformer."): value for name, value in weights.items()}
    tol = suite.tolerance("oracle")

    def judge(loaded: Implementation, what: str) -> None:
        logits = checks.logits_of(requirement, loaded, tokens, vocab_size=config.vocab_size)
        diagnose.judge_log_probs(requirement, weights, config, tokens, logits, tol, what=what)

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        _write_safetensors(files / "extras", config, with_extras)
        loaded = checks.call(
            requirement,
            "loading a checkpoint with lm_head.weight (equal to wte) and the causal-mask buffers "
            "attn.bias/attn.masked_bias of older transformers versions",
            impl.load_checkpoint,
            files / "extras",
        )
        judge(loaded, "the loaded model's log-probabilities")
        _write_safetensors(files / "base", config, base_model)
        try:
            loaded = impl.load_checkpoint(files / "base")
        except Exception:  # a loader need not accept base-model names
            return
        judge(
            loaded,
            "the log-probabilities after loading base-model names (h.0..., read as "
            "transformer.h.0...)",
        )


@checks_requirement("model.canonical-layout", needs=("params",))
def test_parameters_have_the_canonical_layout(
    suite: Suite, data: st.DataObject, requirement: str
) -> None:
    """Canonical shapes; get_params() gives back the weights it was built with; and those
    weights mean what the spec says (Conv1D [in, out], q|k|v column blocks, contiguous heads):
    the log-probabilities agree with the oracle's on the same canonical weights."""
    draw = data.draw(strategies.models(suite), label="model")
    config = draw.config
    impl, params = strategies.build(suite, draw, requirement)
    assert params is not None
    named = checks.call(requirement, "reading get_params()", impl.get_params)
    tol = suite.tolerance("oracle")
    for name, shape in _shapes(config).items():
        if name not in named:
            checks.fail(requirement, f"get_params() has no {name}: its layout cannot be checked")
        actual = to_numpy(named[name])
        if tuple(actual.shape) != shape:
            hint = ""
            if len(shape) == 2 and tuple(actual.shape) == shape[::-1]:
                hint = (
                    " (transposed: nn.Linear's [out, in]; Conv1D weights are stored [in, out])"
                    if S.is_conv1d_weight(name)
                    else " (transposed: one row per token id or position is the canonical layout)"
                )
            checks.fail(
                requirement, f"{name} has shape {tuple(actual.shape)}, expected {shape}{hint}"
            )
        checks.tensors_agree(
            requirement,
            actual,
            params[name],
            tol,
            what=f"{name} read back with get_params() after building with canonical weights",
        )
    tokens = data.draw(strategies.tokens(config, min_length=4), label="tokens")
    logits = checks.logits_of(requirement, impl, tokens, vocab_size=config.vocab_size)
    diagnose.judge_log_probs(requirement, params, config, tokens, logits, tol)


@checks_requirement("model.inputs-unchanged")
def test_inputs_are_left_unchanged(suite: Suite, data: st.DataObject, requirement: str) -> None:
    """Every claimed call leaves the arrays it was given as they were, during the call and after
    it: the suite hands each call read-only copies and compares them with what it gave when the
    call returns and, while the implementation still holds them, at every later call
    (gpt2_conformance.timing). Here each claimed path is called, the kept copies are checked
    once more at the end, and the property's own arrays are checked to be untouched."""
    config, impl = strategies.draw_implementation(data, suite, requirement)
    tokens = data.draw(strategies.tokens(config, min_length=2), label="tokens")
    given = {"tokens": tokens, "labels": tokens.copy()}
    kept = {name: array.copy() for name, array in given.items()}
    V = config.vocab_size
    checks.logits_of(requirement, impl, tokens, vocab_size=V)
    labels = given["labels"]
    if suite.claims("attention-mask"):
        mask = np.ones_like(tokens)
        given["attention_mask"], given["position_ids"] = mask, np.cumsum(mask, axis=1) - 1
        kept["attention_mask"], kept["position_ids"] = mask.copy(), given["position_ids"].copy()
        checks.logits_of(
            requirement,
            impl,
            tokens,
            vocab_size=V,
            attention_mask=mask,
            position_ids=given["position_ids"],
            what="computing logits with an attention mask and position ids",
        )
    if suite.claims("loss"):
        checks.loss_of(requirement, impl, tokens, labels, reduction="mean")
    if suite.claims("hidden-states"):
        checks.call(requirement, "computing hidden states", impl.hidden_states, tokens)
    if suite.claims("last-position"):
        checks.call(requirement, "computing the last position's logits", impl.last_logits, tokens)
    if suite.claims("gradients"):
        checks.call(requirement, "computing gradients", impl.gradients, tokens, labels)
    if suite.claims("kv-cache"):
        split = tokens.shape[1] // 2
        _, cache = checks.call(requirement, "prefilling a cache", impl.prefill, tokens[:, :split])
        checks.call(requirement, "extending a cache", impl.extend, cache, tokens[:, split:])
    checks.logits_of(requirement, impl, tokens, vocab_size=V, what="computing logits once more")
    timing.check_inputs(impl)
    for name, array in given.items():
        if not np.array_equal(array, kept[name]):
            checks.fail(
                requirement, f"the {name} the suite passed changed in the suite's own array"
            )
