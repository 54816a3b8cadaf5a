"""Three-way agreement: the reference model, transformers' GPT2LMHeadModel and the NumPy oracle,
given the same canonical weights, agree on logits, loss and every parameter's gradient at float32
within the spec's tolerance (chapter 7), at GPT-2's init scale and at larger weight scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gpt2_reference import oracle
from gpt2_reference.model import GPT2
from gpt2_spec import GPT2Config, spec_definitions

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

S = spec_definitions()
ORACLE = S.TOLERANCES[("oracle", "float32")]
GRADIENT = S.TOLERANCES[("gradient", "float32")]


@st.composite
def draws(draw: st.DrawFn) -> tuple[GPT2Config, float | None, np.ndarray, np.ndarray]:
    n_head = draw(st.sampled_from([1, 2, 4]))
    config = GPT2Config(
        vocab_size=draw(st.integers(5, 120)),
        n_positions=32,
        n_embd=n_head * draw(st.sampled_from([4, 8, 16])),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
    )
    scale = draw(st.sampled_from(S.DOMAIN["weight_scales"]["float32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    tokens = rng.integers(0, config.vocab_size, (draw(st.integers(1, 3)), draw(st.integers(2, 32))))
    labels = np.where(rng.random(tokens.shape) < 0.2, S.IGNORE_INDEX, tokens)
    labels[:, 1] = tokens[:, 1]  # at least one counted target per sequence
    return config, scale, tokens, labels


def _reference(config: GPT2Config, params: oracle.Params) -> torch.nn.Module:
    model = GPT2(config)
    model.load_state_dict({k: torch.from_numpy(v).float() for k, v in params.items()})
    return model


def _transformers(config: GPT2Config, params: oracle.Params) -> torch.nn.Module:
    hf_config = transformers.GPT2Config(**config.to_hf_dict(), bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v).float() for k, v in params.items()}, strict=False
    )
    assert set(missing) <= {"lm_head.weight"}
    assert not unexpected
    model.tie_weights()
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


def _run(model: torch.nn.Module, tokens: np.ndarray, labels: np.ndarray):
    model.zero_grad(set_to_none=True)
    ids = torch.from_numpy(tokens)
    out = model(ids, labels=torch.from_numpy(labels))
    out.loss.backward()
    grads = {name: p.grad.double().numpy() for name, p in model.named_parameters()}
    return out.logits.detach().double().numpy(), float(out.loss.detach()), grads


@given(draws())
def test_reference_transformers_and_oracle_agree(draw) -> None:
    config, scale, tokens, labels = draw
    params = oracle.random_params(config, seed=0, scale=scale)
    truth = oracle.gradients(params, config, tokens, labels=labels)
    for name, model in (
        ("reference", _reference(config, params)),
        ("transformers", _transformers(config, params)),
    ):
        logits, loss, grads = _run(model, tokens, labels)
        assert S.agree(logits, truth.logits, ORACLE), f"{name}: raw logits"
        assert S.agree(S.log_softmax(logits), S.log_softmax(truth.logits), ORACLE), name
        assert S.agree(np.float64(loss), np.float64(truth.loss), ORACLE), f"{name}: loss"
        for key, expected in truth.grads.items():
            got = grads[key]
            # per-tensor scale (chapter 7): flatten so the whole tensor is one "row"
            assert S.agree(got.reshape(1, -1), expected.reshape(1, -1), GRADIENT), f"{name} {key}"


def test_agreement_detects_an_exact_gelu() -> None:
    """The comparison above can fail: transformers with exact GELU disagrees at scale 0.3."""
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    params = oracle.random_params(config, seed=1, scale=0.3)
    tokens = np.random.default_rng(0).integers(0, 50, (2, 16))
    model = _transformers(config, params)
    for block in model.transformer.h:
        block.mlp.act = torch.nn.GELU()  # erf GELU, as nanoGPT uses
    logits, _, _ = _run(model, tokens, tokens)
    truth = oracle.forward(params, config, tokens).logits
    assert not S.agree(S.log_softmax(logits), S.log_softmax(truth), ORACLE)


@pytest.mark.parametrize("scale", [None, 0.3])
def test_a_checkpoint_transformers_wrote_loads_into_the_reference_with_the_same_logits(
    tmp_path, scale
) -> None:
    config = GPT2Config(vocab_size=70, n_positions=24, n_embd=24, n_layer=2, n_head=3)
    params = oracle.random_params(config, seed=3, scale=scale)
    theirs = _transformers(config, params)
    theirs.save_pretrained(tmp_path)  # writes model.safetensors without lm_head.weight
    ours = GPT2.from_pretrained(tmp_path).eval()
    assert ours.config == config
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 70, (2, 24)))
    with torch.no_grad():
        a = ours(tokens).logits.double().numpy()
        b = theirs(tokens).logits.double().numpy()
    truth = oracle.forward(params, config, tokens.numpy()).logits
    assert S.agree(a, b, S.TOLERANCES[("self", "float32")])
    assert S.agree(a, truth, ORACLE)
