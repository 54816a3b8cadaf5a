"""The PyTorch reference model (gpt2_reference.model) against the spec's definitions.

Logits are compared with the spec's NumPy ``gpt2_logits`` and losses with its
``causal_lm_loss``. Structural properties (cache, padding, last-position-only) are checked in
float64 too, where the model agrees with itself to ~1e-15, so the tolerance can be tight.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gpt2_reference import oracle
from gpt2_reference.model import GPT2, GPT2Output
from gpt2_spec import GPT2Config, InvalidInputError, spec_definitions

SPEC = spec_definitions()
F32_ORACLE = SPEC.TOLERANCES[("oracle", "float32")]
F32_SELF = SPEC.TOLERANCES[("self", "float32")]
# float64 has no entry in the spec's table (it is the oracle's own precision). Measured over 100
# random tiny configs, weight scales up to 0.5: model vs oracle <= 5.2e-15 of the largest logit
# (8.4e-14 absolute), cached vs full <= 3.2e-15.
F64 = SPEC.Tolerance(atol=1e-12, rtol=1e-12)
# Model loss vs the spec's causal_lm_loss on the same (float32) logits: measured <= 1.9e-7.
LOSS_RTOL = 1e-6
BF16_SELF = SPEC.TOLERANCES[("self", "bfloat16")]


def tiny_config(**overrides: int) -> GPT2Config:
    fields = dict(vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=4)
    fields.update(overrides)
    return GPT2Config(**fields)


@st.composite
def configs(draw: st.DrawFn) -> GPT2Config:
    n_head = draw(st.sampled_from([1, 2, 4]))
    return GPT2Config(
        vocab_size=draw(st.integers(50, 100)),
        n_positions=draw(st.integers(8, 32)),
        n_embd=n_head * draw(st.sampled_from([4, 8, 16])),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
    )


def model_with(config: GPT2Config, seed: int, scale: float | None = None, dtype=torch.float32):
    """A model whose weights are the oracle's ``random_params`` (GPT-2 init when scale is None)."""
    model = GPT2(config)
    params = oracle.random_params(config, seed=seed, scale=scale)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    return model.to(dtype)


def drawn_model_and_tokens(
    config: GPT2Config, seed: int, data: st.DataObject, batch: int, min_length: int
) -> tuple[GPT2, torch.Tensor]:
    """A model with the oracle's weights at scale 0.3, and ``batch`` random sequences of a length
    drawn from [min_length, n_positions]."""
    length = data.draw(st.integers(min_length, config.n_positions))
    return model_with(config, seed, 0.3), random_tokens(config, batch, length, seed)


def numpy_params(model: GPT2) -> dict[str, np.ndarray]:
    return {k: v.detach().double().cpu().numpy() for k, v in model.state_dict().items()}


def random_tokens(config: GPT2Config, batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, length), generator=generator)


def assert_agree(actual: torch.Tensor, expected, tol) -> None:
    actual_np = actual.detach().double().cpu().numpy()
    expected_np = (
        expected.detach().double().cpu().numpy() if torch.is_tensor(expected) else expected
    )
    err = np.abs(actual_np - expected_np).max()
    assert SPEC.agree(actual_np, expected_np, tol), f"max abs difference {err:.3g} exceeds {tol}"


# --- model.canonical-names, model.canonical-layout, embedding.shapes ------------------------------


@settings(max_examples=20)
@given(config=configs())
def test_state_dict_is_exactly_the_canonical_checkpoint(config):
    model = GPT2(config, seed=0)
    shapes = SPEC.canonical_shapes(
        config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    )
    state = model.state_dict()
    assert list(state) == list(shapes)  # same names, nothing else (no buffers, no lm_head)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert list(model.buffers()) == []
    assert model.num_parameters() == sum(math.prod(s) for s in shapes.values())


def test_initialisation_follows_gpt2_scheme():
    config = GPT2Config(vocab_size=500, n_positions=256, n_embd=64, n_layer=3, n_head=4)
    model = GPT2(config, seed=1)
    state = model.state_dict()

    def pooled_std(suffix: str) -> float:
        return torch.cat([v.flatten() for k, v in state.items() if k.endswith(suffix)]).std().item()

    # At least 12k draws per group: the sample std is within ~1% of the true one; allow 5%.
    expected = {
        "wte.weight": 0.02,
        "wpe.weight": 0.01,
        "c_attn.weight": 0.02,
        "c_fc.weight": 0.02,
        "c_proj.weight": 0.02 / math.sqrt(2 * config.n_layer),
    }
    for suffix, std in expected.items():
        assert pooled_std(suffix) == pytest.approx(std, rel=0.05), suffix
    for name, value in state.items():
        if name.endswith(".bias"):
            assert torch.all(value == 0), name
        elif value.ndim == 1:
            assert torch.all(value == 1), name
    same = GPT2(config, seed=1).state_dict()
    other = GPT2(config, seed=2).state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert not torch.equal(state["transformer.wte.weight"], other["transformer.wte.weight"])


# --- numerics: logits against the spec's gpt2_logits ----------------------------------------------


@settings(max_examples=30)
@given(config=configs(), seed=st.integers(0, 2**16), batch=st.integers(1, 3), data=st.data())
def test_logits_match_spec_at_init_scale(config, seed, batch, data):
    length = data.draw(st.integers(1, config.n_positions))
    model = GPT2(config, seed=seed)
    tokens = random_tokens(config, batch, length, seed)
    expected = SPEC.gpt2_logits(numpy_params(model), tokens.numpy(), config.n_head)
    assert_agree(model(tokens).logits, expected, F32_ORACLE)
    assert_agree(model.double()(tokens).logits, expected, F64)


@settings(max_examples=40)
@given(
    config=configs(),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.1, 0.3, 0.5]),
    data=st.data(),
)
def test_logits_match_spec_at_large_weight_scale(config, seed, scale, data):
    # Large weights drive GELU, softmax and LayerNorm across their range: tanh vs erf GELU, a
    # wrong epsilon or a missing bias all show here, while at init scale they hide.
    length = data.draw(st.integers(1, config.n_positions))
    model = model_with(config, seed, scale)
    tokens = random_tokens(config, 2, length, seed)
    expected = SPEC.gpt2_logits(numpy_params(model), tokens.numpy(), config.n_head)
    if scale in SPEC.DOMAIN["weight_scales"]["float32"]:  # where the spec's table is promised
        assert_agree(model(tokens).logits, expected, F32_ORACLE)
    assert_agree(model.double()(tokens).logits, expected, F64)


@settings(max_examples=25)
@given(config=configs(), seed=st.integers(0, 2**16), data=st.data())
def test_future_tokens_do_not_change_earlier_rows(config, seed, data):
    length = data.draw(st.integers(2, config.n_positions))
    cut = data.draw(st.integers(1, length - 1))
    model = model_with(config, seed, 0.5, torch.float64)
    tokens = random_tokens(config, 1, length, seed)
    changed = tokens.clone()
    changed[:, cut:] = (changed[:, cut:] + 1) % config.vocab_size
    assert_agree(model(changed).logits[:, :cut], model(tokens).logits[:, :cut], F64)


# --- inference: cache, positions, padding, last position ------------------------------------------


@settings(max_examples=40)
@given(
    config=configs(),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    data=st.data(),
)
def test_kv_cache_decoding_equals_full_forward(config, seed, dtype, data):
    length = data.draw(st.integers(2, config.n_positions))
    prefix = data.draw(st.integers(1, length - 1))
    chunks = []  # sizes of the pieces fed after the prefix: single tokens and longer chunks
    while prefix + sum(chunks) < length:
        chunks.append(data.draw(st.integers(1, length - prefix - sum(chunks))))
    model = model_with(config, seed, 0.3, dtype)
    tokens = random_tokens(config, 2, length, seed)
    with torch.no_grad():
        full = model(tokens).logits
        out = model(tokens[:, :prefix], use_cache=True)
        rows, start = [out.logits], prefix
        for size in chunks:
            out = model(
                tokens[:, start : start + size], past_key_values=out.past_key_values, use_cache=True
            )
            rows.append(out.logits)
            start += size
    assert out.past_key_values is not None
    assert out.past_key_values[0][0].shape == (2, config.n_head, length, config.head_dim)
    assert_agree(torch.cat(rows, dim=1), full, F64 if dtype == torch.float64 else F32_SELF)


def test_cached_tokens_get_positions_after_the_cache():
    config = tiny_config()
    model = model_with(config, 3, 0.3, torch.float64)
    tokens = random_tokens(config, 2, 9, 3)
    P = 6
    with torch.no_grad():
        full = model(tokens).logits[:, P:]
        past = model(tokens[:, :P], use_cache=True).past_key_values
        cached = model(tokens[:, P:], past_key_values=past).logits
        explicit = model(tokens[:, P:], past_key_values=past, position_ids=torch.arange(P, 9))
        from_zero = model(tokens[:, P:], past_key_values=past, position_ids=torch.arange(9 - P))
    assert_agree(cached, full, F64)
    assert_agree(explicit.logits, full, F64)
    assert (from_zero.logits - full).abs().max() > 1e-3  # positions 0.. would be a real bug


@settings(max_examples=30)
@given(config=configs(), seed=st.integers(0, 2**16), pad_token=st.integers(0, 49), data=st.data())
def test_left_padding_with_mask_equals_unpadded(config, seed, pad_token, data):
    width = data.draw(st.integers(2, config.n_positions))
    lengths = data.draw(st.lists(st.integers(1, width), min_size=1, max_size=3))
    model = model_with(config, seed, 0.3, torch.float64)
    tokens = random_tokens(config, len(lengths), width, seed)
    mask = torch.zeros_like(tokens)
    for row, n in enumerate(lengths):
        tokens[row, : width - n] = pad_token
        mask[row, width - n :] = 1
    positions = torch.from_numpy(SPEC.position_ids_from_mask(mask.numpy()))
    with torch.no_grad():
        padded = model(tokens, attention_mask=mask, position_ids=positions).logits
    # Every row, padding included, is the spec's (a padding query attends to itself only).
    expected = SPEC.gpt2_logits(
        numpy_params(model), tokens.numpy(), config.n_head, positions.numpy(), mask.numpy()
    )
    assert_agree(padded, expected, F64)
    with torch.no_grad():
        for row, n in enumerate(lengths):
            alone = model(tokens[row : row + 1, width - n :]).logits
            assert_agree(padded[row : row + 1, width - n :], alone, F64)


def test_left_padded_prefix_then_cached_decoding_equals_unpadded():
    config = tiny_config()
    model = model_with(config, 4, 0.3, torch.float64)
    tokens = random_tokens(config, 2, 10, 4)
    lengths = (10, 6)  # row 1 is padded with 4 tokens on the left
    mask = torch.ones_like(tokens)
    mask[1, :4] = 0
    tokens[1, :4] = 0
    prefix = 7
    with torch.no_grad():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            tokens[:, :prefix],
            attention_mask=mask[:, :prefix],
            position_ids=positions[:, :prefix],
            use_cache=True,
        )
        steps = []
        for i in range(prefix, 10):
            out = model(
                tokens[:, i : i + 1],
                attention_mask=mask[:, : i + 1],
                position_ids=positions[:, i : i + 1],
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            steps.append(out.logits)
        decoded = torch.cat(steps, dim=1)
        for row, n in enumerate(lengths):
            alone = model(tokens[row : row + 1, 10 - n :]).logits[:, prefix - 10 :]
            assert_agree(decoded[row : row + 1], alone, F64)


@settings(max_examples=20)
@given(config=configs(), seed=st.integers(0, 2**16), data=st.data())
def test_last_only_equals_the_full_last_row(config, seed, data):
    model, tokens = drawn_model_and_tokens(config, seed, data, 2, 1)
    with torch.no_grad():
        last = model(tokens, last_only=True).logits
        full = model(tokens).logits
    assert last.shape == (2, 1, config.vocab_size)
    assert_agree(last, full[:, -1:], F32_SELF)


def test_generate_is_greedy_decoding_of_the_full_forward():
    config = tiny_config()
    model = model_with(config, 5, 0.5, torch.float64)
    prompt = random_tokens(config, 2, 4, 5)
    generated = model.generate(prompt, 8)
    expected = prompt
    with torch.no_grad():
        for _ in range(8):
            next_id = model(expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    assert torch.equal(generated, expected)


# --- objective: the loss -----------------------------------------------------------------------


def spec_loss(logits: torch.Tensor, targets, reduction="mean", ignore_index=-100) -> float:
    return float(
        SPEC.causal_lm_loss(
            logits.detach().double().numpy(), np.asarray(targets), reduction, ignore_index
        )
    )


@settings(max_examples=30)
@given(
    config=configs(),
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(["mean", "sum"]),
    data=st.data(),
)
def test_both_label_conventions_give_the_spec_loss(config, seed, reduction, data):
    model, tokens = drawn_model_and_tokens(config, seed, data, 3, 2)
    targets = torch.from_numpy(SPEC.shift_labels(tokens.numpy()))
    by_labels = model(tokens, labels=tokens, reduction=reduction)
    by_targets = model(tokens, targets=targets, reduction=reduction)
    expected = spec_loss(by_labels.logits, targets.numpy(), reduction)
    assert by_labels.loss.dtype == torch.float32
    assert by_labels.loss.item() == pytest.approx(expected, rel=LOSS_RTOL)
    assert by_targets.loss.item() == pytest.approx(expected, rel=LOSS_RTOL)
    # nanoGPT's convention marks "no target" with -1.
    nanogpt = torch.where(targets == -100, -1, targets)
    loss = model(tokens, targets=nanogpt, reduction=reduction, ignore_index=-1).loss
    assert loss.item() == pytest.approx(expected, rel=LOSS_RTOL)


def test_shifting_twice_changes_the_loss():
    config = tiny_config()
    model = model_with(config, 6, 0.3)
    tokens = random_tokens(config, 2, 12, 6)
    shifted = torch.from_numpy(SPEC.shift_labels(tokens.numpy()))
    right = model(tokens, labels=tokens)
    double = model(tokens, labels=shifted)  # the double-shift bug: scored against token i+2
    assert double.loss.item() == pytest.approx(
        spec_loss(right.logits, SPEC.shift_labels(shifted.numpy())), rel=LOSS_RTOL
    )
    assert abs(double.loss.item() - right.loss.item()) > 1e-3


@settings(max_examples=30)
@given(config=configs(), seed=st.integers(0, 2**16), data=st.data())
def test_sum_is_mean_times_count_and_ignored_targets_add_nothing(config, seed, data):
    model, tokens = drawn_model_and_tokens(config, seed, data, 2, 2)
    length = tokens.shape[1]
    targets = SPEC.shift_labels(tokens.numpy())
    ignored = np.array(data.draw(st.lists(st.booleans(), min_size=2 * length, max_size=2 * length)))
    partial = np.where(ignored.reshape(2, length), -100, targets)
    count = int((partial != -100).sum())
    with torch.no_grad():
        out = model(tokens, targets=torch.from_numpy(partial), reduction="sum")
        mean = model(tokens, targets=torch.from_numpy(partial)).loss.item()
    terms, _ = SPEC.loss_terms(out.logits.double().numpy(), targets)
    kept = terms[partial != -100].sum()  # the spec's per-position terms of the counted targets
    assert out.loss.item() == pytest.approx(kept, rel=LOSS_RTOL, abs=1e-6)
    if count:
        assert out.loss.item() == pytest.approx(mean * count, rel=LOSS_RTOL)
    else:
        assert math.isnan(mean)


def test_micro_batch_sums_and_counts_add_up():
    config = tiny_config()
    model = model_with(config, 7, 0.3)
    tokens = random_tokens(config, 4, 10, 7)
    labels = tokens.clone()
    labels[0, 3:] = -100  # sequences with different numbers of counted targets
    labels[2, 8:] = -100
    whole = model(tokens, labels=labels).loss
    sums = [
        model(tokens[i : i + 2], labels=labels[i : i + 2], reduction="sum").loss for i in (0, 2)
    ]
    counts = [(labels[i : i + 2, 1:] != -100).sum() for i in (0, 2)]
    assert (sum(sums) / sum(counts)).item() == pytest.approx(whole.item(), rel=LOSS_RTOL)
    means = [model(tokens[i : i + 2], labels=labels[i : i + 2]).loss for i in (0, 2)]
    assert abs((sum(means) / 2).item() - whole.item()) > 1e-3  # the mean of means is wrong


def test_no_counted_targets_gives_nan_mean_and_zero_sum():
    config = tiny_config()
    model = GPT2(config, seed=8)
    tokens = random_tokens(config, 2, 5, 8)
    nothing = torch.full_like(tokens, -100)
    assert math.isnan(model(tokens, targets=nothing).loss.item())
    assert math.isnan(model(tokens[:, :1], labels=tokens[:, :1]).loss.item())  # T=1: no target
    total = model(tokens, targets=nothing, reduction="sum").loss
    assert total.item() == 0.0
    total.backward()
    assert all(torch.all(p.grad == 0) for p in model.parameters())


# --- head: tied to the embedding ------------------------------------------------------------------


class UntiedGPT2(GPT2):
    """The same function with a separate copy of wte as the head: splits the tied gradient."""

    def __init__(self, tied: GPT2) -> None:
        super().__init__(tied.config)
        self.load_state_dict(tied.state_dict())
        self.lm_head = nn.Parameter(tied.head_weight.detach().clone())
        self.to(tied.head_weight.dtype)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.lm_head


def assert_tied(model: GPT2) -> None:
    wte = model.transformer.wte.weight
    assert model.head_weight is wte
    assert model.head_weight.data_ptr() == wte.data_ptr()
    assert sum(p is wte for p in model.parameters()) == 1
    tokens = random_tokens(model.config, 1, 5, 0).to(wte.device)
    with torch.no_grad():
        out = model(tokens)
    # Behaviour, not only identity: the logits are the hidden states times the current wte.
    assert_agree(
        out.logits, out.hidden_states @ wte.T, F64 if wte.dtype == torch.float64 else F32_SELF
    )


def test_head_weight_is_the_embedding_parameter():
    model = GPT2(tiny_config(), seed=9)
    assert_tied(model)
    assert "lm_head.weight" not in model.state_dict()


def test_tied_gradient_is_lookup_plus_head_contribution():
    config = tiny_config()
    tied = model_with(config, 10, 0.3, torch.float64)
    untied = UntiedGPT2(tied)
    tokens = random_tokens(config, 2, 12, 10)
    tied_out, untied_out = tied(tokens, labels=tokens), untied(tokens, labels=tokens)
    assert_agree(untied_out.logits, tied_out.logits, F64)
    tied_out.loss.backward()
    untied_out.loss.backward()
    lookup, head = untied.transformer.wte.weight.grad, untied.lm_head.grad
    assert lookup.abs().max() > 1e-6  # both contributions matter
    assert head.abs().max() > 1e-6
    assert_agree(tied.transformer.wte.weight.grad, lookup + head, F64)


def test_still_tied_after_an_optimizer_step():
    config = tiny_config()
    model = GPT2(config, seed=11)
    tokens = random_tokens(config, 2, 8, 11)
    before = model.head_weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(tokens, labels=tokens).loss.backward()
    optimizer.step()
    assert not torch.equal(model.head_weight, before)
    assert_tied(model)


def test_still_tied_after_resizing_the_vocabulary():
    config = tiny_config()
    model = GPT2(config, seed=12)
    old = model.head_weight.detach().clone()
    model.resize_token_embeddings(config.vocab_size + 7, seed=0)
    assert model.config.vocab_size == config.vocab_size + 7
    assert_tied(model)
    assert torch.equal(model.head_weight[: config.vocab_size], old)
    new_rows = model.head_weight[config.vocab_size :]
    assert 0 < new_rows.std().item() < 0.1
    tokens = torch.tensor([[0, config.vocab_size + 6, 3]])
    assert model(tokens).logits.shape == (1, 3, config.vocab_size + 7)
    shapes = SPEC.canonical_shapes(config.vocab_size + 7, 24, 32, 2)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes

    model.resize_token_embeddings(config.vocab_size - 5)
    assert_tied(model)
    assert torch.equal(model.head_weight, old[: config.vocab_size - 5])
    with pytest.raises(InvalidInputError, match="vocab_size=56"):
        model(torch.tensor([[config.vocab_size - 5]]))


def test_still_tied_after_dtype_moves_and_bfloat16_runs():
    config = tiny_config()
    model = GPT2(config, seed=13)
    tokens = random_tokens(config, 2, 10, 13)
    reference = model(tokens, labels=tokens).loss
    model.to(torch.float64)
    assert model.head_weight.dtype == torch.float64
    assert_tied(model)
    model.to(torch.bfloat16)
    assert model.head_weight.dtype == torch.bfloat16
    assert model.head_weight is model.transformer.wte.weight
    out = model(tokens, labels=tokens)
    assert out.logits.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32
    assert SPEC.agree(out.loss.item(), reference.item(), BF16_SELF)


# --- input: refused before any computation -------------------------------------------------------

CONFIG = tiny_config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
IDS = torch.ones(2, 5, dtype=torch.long)
PAST = tuple((torch.zeros(2, 2, 3, 8), torch.zeros(2, 2, 3, 8)) for _ in range(2))

BAD_INPUTS = {
    "float ids": (dict(input_ids=IDS.float()), "integer dtype"),
    "bool ids": (dict(input_ids=IDS.bool()), "torch.bool"),
    "list ids": (dict(input_ids=[[1, 2]]), "torch.Tensor"),
    "1-D ids": (dict(input_ids=IDS[0]), "add a batch dimension"),
    "3-D ids": (dict(input_ids=IDS[None]), "2-D"),
    "empty batch": (dict(input_ids=IDS[:0]), "empty"),
    "empty sequence": (dict(input_ids=IDS[:, :0]), "empty"),
    "id = V": (dict(input_ids=torch.tensor([[1, 50]])), "holds 50, outside [0, vocab_size=50)"),
    "negative id": (dict(input_ids=torch.tensor([[-1, 2]])), "holds -1"),
    "too long": (dict(input_ids=torch.ones(1, 17, dtype=torch.long)), "n_positions=16"),
    "too long with cache": (
        dict(input_ids=torch.ones(2, 14).long(), past_key_values=PAST),
        "3 cached",
    ),
    "label shape": (dict(labels=IDS[:, 1:]), "labels shape (2, 4)"),
    "float labels": (dict(labels=IDS.float()), "labels must have an integer dtype"),
    "label = V": (dict(labels=torch.full((2, 5), 50)), "labels holds 50"),
    "label -5": (dict(labels=torch.full((2, 5), -5)), "labels holds -5"),
    "target = V": (dict(targets=torch.full((2, 5), 50)), "targets holds 50"),
    "ignore_index a token": (dict(labels=IDS, ignore_index=3), "ignore_index=3"),
    "labels and targets": (dict(labels=IDS, targets=IDS), "not both"),
    "last_only with loss": (dict(labels=IDS, last_only=True), "last_only"),
    "reduction": (dict(reduction="none"), "reduction must be"),
    "mask shape": (dict(attention_mask=torch.ones(2, 4)), "attention_mask must have shape"),
    "mask shape with cache": (
        dict(attention_mask=torch.ones(2, 5), past_key_values=PAST),
        "(2, 8)",
    ),
    "mask value": (dict(attention_mask=torch.full((2, 5), 2)), "attention_mask holds 2"),
    "mask list": (dict(attention_mask=[[1] * 5] * 2), "attention_mask must be a torch.Tensor"),
    "position = n_ctx": (dict(position_ids=torch.tensor([0, 1, 2, 3, 16])), "holds 16"),
    "negative position": (dict(position_ids=torch.tensor([-1, 1, 2, 3, 4])), "holds -1"),
    "position shape": (dict(position_ids=torch.arange(4)), "position_ids must have shape"),
    "float positions": (dict(position_ids=torch.arange(5.0)), "position_ids must have an integer"),
    "cache layers": (dict(past_key_values=PAST[:1]), "must hold 2 layers"),
    "cache head_dim": (dict(past_key_values=((torch.zeros(2, 2, 3, 4),) * 2,) * 2), "[2, 2, P, 8]"),
    "cache batch": (dict(past_key_values=((torch.zeros(1, 2, 3, 8),) * 2,) * 2), "[2, 2, P, 8]"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_invalid_input_is_refused_before_any_computation(case):
    kwargs, fragment = BAD_INPUTS[case]
    kwargs = {"input_ids": IDS, **kwargs}
    model = GPT2(CONFIG, seed=14)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model.transformer.wte.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(InvalidInputError) as caught:
        model(**kwargs)
    assert fragment in str(caught.value)
    assert calls == []  # refused before the first layer ran
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(model(IDS), GPT2Output)  # and the model still works


def test_generate_refuses_past_the_context_before_generating_anything():
    """Before: 4 prompt tokens and 6 new ones at n_positions=8 ran 5 steps, then raised "keep
    the last 0 tokens, or start a new cache", and the 5 generated tokens were lost."""
    model = GPT2(tiny_config(n_positions=8), seed=0)
    prompt = torch.tensor([[1, 2, 3, 4]])
    assert model.generate(prompt, 5).shape == (1, 9)  # 8 positions read: the context is full
    steps: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: steps.append(1))
    try:
        with pytest.raises(InvalidInputError, match="at most 5 new tokens") as caught:
            model.generate(prompt, 6)
    finally:
        hook.remove()
    assert steps == []
    assert "n_positions=8" in str(caught.value)
    with pytest.raises(InvalidInputError, match="max_new_tokens must be >= 0"):
        model.generate(prompt, -1)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"n_layer": 10**6}, "more blocks than the reference builds"),
        ({"vocab_size": 10**12}, "more than this machine's"),
    ],
)
def test_a_configuration_too_large_to_build_is_refused_before_allocating(overrides, words):
    """Before: n_layer=10**6 built blocks for minutes; vocab_size=10**12 failed in torch's
    allocator with "can't allocate memory"."""
    import time

    from gpt2_spec import ConfigError

    started = time.perf_counter()
    with pytest.raises(ConfigError, match=words):
        GPT2(tiny_config(**overrides))
    assert time.perf_counter() - started < 1.0
