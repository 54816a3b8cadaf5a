"""Canonical checkpoint I/O (gpt2_reference.checkpoint): model.canonical-names,
model.canonical-layout, head.tied-after-save-load.

Every checkpoint here is written by transformers itself (save_pretrained of a random tiny model)
or by torch.save / safetensors; no weights are downloaded.
"""

from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from gpt2_reference import checkpoint as ckpt
from gpt2_reference.checkpoint import (
    CheckpointError,
    canonicalize_state_dict,
    infer_config,
    load_checkpoint,
    read_config,
    read_state_dict,
    save_checkpoint,
    to_numpy_params,
)
from gpt2_spec import GPT2Config, spec_definitions

V, N_CTX, D, L, H = 61, 24, 32, 2, 4
CONFIG = GPT2Config(vocab_size=V, n_positions=N_CTX, n_embd=D, n_layer=L, n_head=H)

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def hf_config(**overrides: int) -> transformers.GPT2Config:
    kwargs = dict(vocab_size=V, n_positions=N_CTX, n_embd=D, n_layer=L, n_head=H)
    kwargs.update(overrides)
    # bos/eos inside the tiny vocabulary keeps transformers from warning about them.
    return transformers.GPT2Config(**kwargs, bos_token_id=0, eos_token_id=0)


def hf_model(seed: int = 0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(hf_config()).eval()
    # Random LayerNorm parameters and biases, so that a swapped or zeroed tensor shows.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def canonical_reference(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's own parameters under canonical names (no lm_head)."""
    sd = model.state_dict()
    if not any(k.startswith("transformer.") for k in sd):
        sd = {"transformer." + k: v for k, v in sd.items()}
    sd.pop("lm_head.weight", None)
    return sd


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert torch.equal(got[name], want[name]), name


@pytest.fixture(scope="module")
def model() -> transformers.GPT2LMHeadModel:
    return hf_model()


@pytest.fixture(scope="module")
def canonical(model: transformers.GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    return canonical_reference(model)


@pytest.fixture
def canonical_copy(canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in canonical.items()}


def test_canonical_reference_matches_spec_shapes(canonical: dict[str, torch.Tensor]) -> None:
    shapes = spec_definitions().canonical_shapes(V, N_CTX, D, L)
    assert {k: tuple(v.shape) for k, v in canonical.items()} == {
        k: tuple(s) for k, s in shapes.items()
    }


# ---- reading what transformers writes ------------------------------------------------------


def test_load_save_pretrained_lm_head_model(
    tmp_path: Path, model: transformers.GPT2LMHeadModel, canonical: dict[str, torch.Tensor]
) -> None:
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config, params = load_checkpoint(tmp_path)
    assert config == CONFIG
    assert list(params) == list(spec_definitions().canonical_shapes(V, N_CTX, D, L))
    assert_same_tensors(params, canonical)


def test_load_save_pretrained_base_model_without_prefix(tmp_path: Path) -> None:
    torch.manual_seed(1)
    base = transformers.GPT2Model(hf_config()).eval()
    base.save_pretrained(tmp_path)
    assert "h.0.attn.c_attn.weight" in read_state_dict(tmp_path)  # really unprefixed
    config, params = load_checkpoint(tmp_path)
    assert config == CONFIG
    assert_same_tensors(params, canonical_reference(base))


def test_load_sharded_safetensors(
    tmp_path: Path, model: transformers.GPT2LMHeadModel, canonical: dict[str, torch.Tensor]
) -> None:
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    config, params = load_checkpoint(tmp_path)
    assert config == CONFIG
    assert_same_tensors(params, canonical)


def test_sharded_index_with_missing_shard_is_refused(
    tmp_path: Path, model: transformers.GPT2LMHeadModel
) -> None:
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    (tmp_path / next(iter(index["weight_map"].values()))).unlink()
    with pytest.raises(CheckpointError, match="missing from"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_load_torch_save_file(
    tmp_path: Path,
    suffix: str,
    model: transformers.GPT2LMHeadModel,
    canonical: dict[str, torch.Tensor],
) -> None:
    # The full GPT2LMHeadModel state dict: lm_head.weight shares wte's storage.
    path = tmp_path / f"weights{suffix}"
    torch.save(model.state_dict(), path)
    config, params = load_checkpoint(path, CONFIG)
    assert config is CONFIG
    assert_same_tensors(params, canonical)


def test_pytorch_model_bin_directory(
    tmp_path: Path, model: transformers.GPT2LMHeadModel, canonical: dict[str, torch.Tensor]
) -> None:
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG.to_hf_dict()))
    config, params = load_checkpoint(tmp_path)
    assert config == CONFIG
    assert_same_tensors(params, canonical)


def test_single_safetensors_file(tmp_path: Path, canonical: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in canonical.items()}, path)
    _, params = load_checkpoint(path, CONFIG)
    assert_same_tensors(params, canonical)


# ---- writing what transformers reads ------------------------------------------------------


def test_save_checkpoint_loads_in_transformers(
    tmp_path: Path, model: transformers.GPT2LMHeadModel, canonical: dict[str, torch.Tensor]
) -> None:
    save_checkpoint(tmp_path, CONFIG, model.state_dict())
    assert "lm_head.weight" not in read_state_dict(tmp_path)
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert_same_tensors(canonical_reference(loaded), canonical)
    # head.tied-after-save-load: the reloaded head is wte itself, from a file without lm_head.
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    tokens = torch.randint(0, V, (2, N_CTX), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, model(tokens).logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_round_trip_is_exact(
    tmp_path: Path, canonical: dict[str, torch.Tensor], dtype: torch.dtype
) -> None:
    state = {k: v.to(dtype) for k, v in canonical.items()}
    save_checkpoint(tmp_path / "ckpt", CONFIG, state)
    config, params = load_checkpoint(tmp_path / "ckpt")
    assert config == CONFIG
    assert_same_tensors(params, state)
    assert read_config(tmp_path / "ckpt") == CONFIG


def test_save_checkpoint_writes_no_partial_file(
    tmp_path: Path, canonical: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, CONFIG, canonical)
    before = (tmp_path / "model.safetensors").read_bytes()

    def failing_save_file(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, CONFIG, {k: v + 1 for k, v in canonical.items()})
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_save_checkpoint_validates_before_writing(
    tmp_path: Path, canonical_copy: dict[str, torch.Tensor]
) -> None:
    del canonical_copy["transformer.ln_f.bias"]
    with pytest.raises(CheckpointError, match="missing key"):
        save_checkpoint(tmp_path / "out", CONFIG, canonical_copy)
    assert not (tmp_path / "out").exists()


# ---- canonicalization ----------------------------------------------------------------------


def test_canonicalize_does_not_mutate_input(model: transformers.GPT2LMHeadModel) -> None:
    state = model.state_dict()
    keys = list(state)
    out = canonicalize_state_dict(state, CONFIG)
    assert list(state) == keys
    assert "lm_head.weight" in state
    assert "lm_head.weight" not in out
    assert out is not state


def test_tied_head_copy_is_accepted(canonical_copy: dict[str, torch.Tensor]) -> None:
    # Equal values in a separate tensor (what an untying save would produce) are still GPT-2.
    state = {**canonical_copy, "lm_head.weight": canonical_copy["transformer.wte.weight"].clone()}
    assert "lm_head.weight" not in canonicalize_state_dict(state, CONFIG)


def test_untied_head_is_refused(canonical_copy: dict[str, torch.Tensor]) -> None:
    head = canonical_copy["transformer.wte.weight"].clone()
    head[3, 5] += 0.25
    state = {**canonical_copy, "lm_head.weight": head}
    with pytest.raises(CheckpointError, match="untied") as info:
        canonicalize_state_dict(state, CONFIG)
    assert "max abs difference 0.25" in str(info.value)
    assert "declared deviation" in str(info.value)


def test_old_mask_buffers_are_dropped(canonical_copy: dict[str, torch.Tensor]) -> None:
    mask = torch.tril(torch.ones(N_CTX, N_CTX)).view(1, 1, N_CTX, N_CTX)
    for prefixed in (True, False):
        state = dict(canonical_copy)
        if not prefixed:
            state = {k.removeprefix("transformer."): v for k, v in state.items()}
        p = "transformer." if prefixed else ""
        for layer in range(L):
            state[f"{p}h.{layer}.attn.bias"] = mask
            state[f"{p}h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
        assert_same_tensors(canonicalize_state_dict(state, CONFIG), canonical_copy)


def test_missing_key_is_refused(canonical_copy: dict[str, torch.Tensor]) -> None:
    del canonical_copy["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \[transformer.h.1.mlp.c_fc.bias"):
        canonicalize_state_dict(canonical_copy, CONFIG)


def test_unexpected_key_is_refused(canonical_copy: dict[str, torch.Tensor]) -> None:
    canonical_copy["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \[transformer.h.0.attn.rotary"):
        canonicalize_state_dict(canonical_copy, CONFIG)


def test_compile_wrapper_prefix_gets_a_hint(canonical_copy: dict[str, torch.Tensor]) -> None:
    state = {"_orig_mod." + k: v for k, v in canonical_copy.items()}
    with pytest.raises(CheckpointError, match="strip that prefix"):
        canonicalize_state_dict(state, CONFIG)


def test_long_key_lists_are_truncated(canonical_copy: dict[str, torch.Tensor]) -> None:
    with pytest.raises(CheckpointError, match=r"and \d+ more") as info:
        canonicalize_state_dict(canonical_copy, GPT2Config(V, N_CTX, D, 6, H))
    assert len(str(info.value)) < 1500
    assert "n_layer (6)" in str(info.value)


def test_wrong_shape_is_refused(canonical_copy: dict[str, torch.Tensor]) -> None:
    canonical_copy["transformer.wte.weight"] = torch.zeros(V + 3, D)
    with pytest.raises(CheckpointError, match=r"transformer.wte.weight: \(64, 32\), expected") as e:
        canonicalize_state_dict(canonical_copy, CONFIG)
    assert "infer_config" in str(e.value)


def test_transposed_linear_layout_is_refused(canonical_copy: dict[str, torch.Tensor]) -> None:
    # A nanoGPT-style (nn.Linear [out, in]) state dict: the same names, transposed projections.
    for name in list(canonical_copy):
        if name.endswith(ckpt.CONV1D_SUFFIXES):
            canonical_copy[name] = canonical_copy[name].t().contiguous()
    with pytest.raises(CheckpointError, match="Conv1D weights") as info:
        canonicalize_state_dict(canonical_copy, CONFIG)
    message = str(info.value)
    assert "stored transposed" in message
    assert "transformer.h.0.attn.c_attn.weight" in message
    for projection in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert projection in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(canonical_copy: dict[str, torch.Tensor], bad: float) -> None:
    canonical_copy["transformer.h.1.ln_2.weight"][7] = bad
    with pytest.raises(CheckpointError, match=r"'transformer.h.1.ln_2.weight' holds 1 non-finite"):
        canonicalize_state_dict(canonical_copy, CONFIG)


def test_integer_tensor_is_refused(canonical_copy: dict[str, torch.Tensor]) -> None:
    canonical_copy["transformer.ln_f.bias"] = torch.zeros(D, dtype=torch.int8)
    with pytest.raises(CheckpointError, match="floating point"):
        canonicalize_state_dict(canonical_copy, CONFIG)


# ---- paths and files -----------------------------------------------------------------------


def test_missing_config_json_is_refused(tmp_path: Path, canonical: dict[str, torch.Tensor]) -> None:
    save_checkpoint(tmp_path, CONFIG, canonical)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json at"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path, CONFIG)[0] is CONFIG  # passing the config is the way out


def test_single_file_without_config_is_refused(
    tmp_path: Path, canonical: dict[str, torch.Tensor]
) -> None:
    torch.save(canonical, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="carries no config"):
        load_checkpoint(tmp_path / "w.pt")


def test_bad_config_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG.to_hf_dict(), "n_head": 5}))
    with pytest.raises(CheckpointError, match=r"does not describe a GPT-2.*divisible"):
        read_config(tmp_path)


def test_nonexistent_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", CONFIG)


def test_directory_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"holds no weights file; looked for model\.safet"):
        read_state_dict(tmp_path)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        read_state_dict(tmp_path / "w.npz")


def test_corrupt_safetensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"0123456789abcdef")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_state_dict(tmp_path)


def test_training_checkpoint_dict_is_refused(
    tmp_path: Path, canonical: dict[str, torch.Tensor]
) -> None:
    # nanoGPT-style ckpt.pt: loadable with weights_only=True, but not a state dict.
    torch.save({"model": canonical, "iter_num": 5, "model_args": {"n_layer": L}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"not a state dict.*ckpt\['model'\]"):
        read_state_dict(tmp_path / "c.pt")


class _CreatesFile:
    """Unpickling this runs open(path, "w"): a stand-in for arbitrary code execution."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (builtins.open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_it(
    tmp_path: Path, writer: str, canonical: dict[str, torch.Tensor]
) -> None:
    # The payload is real: plain unpickling creates its marker file.
    probe = tmp_path / "probe_marker"
    pickle.loads(pickle.dumps(_CreatesFile(probe))).close()
    assert probe.exists()

    marker = tmp_path / "marker"
    state = {**canonical, "transformer.ln_f.bias": _CreatesFile(marker)}
    path = tmp_path / "pytorch_model.bin"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with path.open("wb") as f:
            pickle.dump(state, f)
    with pytest.raises(CheckpointError, match="non-tensor Python objects") as info:
        read_state_dict(tmp_path)
    assert not marker.exists()
    assert "safetensors" in str(info.value)


# ---- infer_config and to_numpy_params ------------------------------------------------------


def test_infer_config(model: transformers.GPT2LMHeadModel) -> None:
    assert infer_config(model.state_dict(), n_head=H) == CONFIG
    unprefixed = transformers.GPT2Model(hf_config(n_layer=3)).state_dict()
    assert infer_config(unprefixed, n_head=2, layer_norm_epsilon=1e-6) == GPT2Config(
        V, N_CTX, D, 3, 2, 1e-6
    )


def test_infer_config_refuses_gaps_and_bad_heads(canonical: dict[str, torch.Tensor]) -> None:
    gap = {k: v for k, v in canonical.items() if not k.startswith("transformer.h.0.")}
    with pytest.raises(CheckpointError, match="without gaps"):
        infer_config(gap, n_head=H)
    with pytest.raises(CheckpointError, match="divisible"):
        infer_config(canonical, n_head=5)
    no_wpe = {k: v for k, v in canonical.items() if k != "transformer.wpe.weight"}
    with pytest.raises(CheckpointError, match="wpe"):
        infer_config(no_wpe, n_head=H)


def test_to_numpy_params(canonical: dict[str, torch.Tensor]) -> None:
    state = {k: v.to(torch.bfloat16) for k, v in canonical.items()}
    params = to_numpy_params(state)
    assert list(params) == list(state)
    for name, array in params.items():
        assert array.dtype == np.float64
        np.testing.assert_array_equal(array, state[name].double().numpy())
    params["transformer.wte.weight"][0, 0] += 1.0
    assert (
        float(state["transformer.wte.weight"][0, 0].double())
        != params["transformer.wte.weight"][0, 0]
    )
    f64 = {k: v.double() for k, v in canonical.items()}
    to_numpy_params(f64)["transformer.wpe.weight"][:] = 0  # a copy even when already float64
    assert bool(f64["transformer.wpe.weight"].abs().sum() > 0)


def _timed_refusal(function, match: str) -> CheckpointError:
    import time

    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=match) as caught:
        function()
    assert time.perf_counter() - started < 1.0, "the refusal took a second or more"
    return caught.value


def test_a_config_with_a_million_layers_beside_a_small_checkpoint_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """Before: all 12e6 expected names were listed first (49.6 s, +2.9 GB), then it failed."""
    from gpt2_reference.model import GPT2

    GPT2(CONFIG, seed=0).save_pretrained(tmp_path)
    body = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    body["n_layer"] = 1_000_000
    (tmp_path / "config.json").write_text(json.dumps(body), encoding="utf-8")
    error = _timed_refusal(lambda: load_checkpoint(tmp_path), "n_layer=1000000")
    assert f"blocks h.0..h.{L - 1}" in str(error)
    # a config a block or two off still lists the exact names that differ
    body["n_layer"] = L + 1
    (tmp_path / "config.json").write_text(json.dumps(body), encoding="utf-8")
    _timed_refusal(lambda: load_checkpoint(tmp_path), rf"missing key\(s\) \[transformer\.h\.{L}\.")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"n_layer": ' + "[" * 200_000 + "]" * 200_000 + "}", "nests its JSON too deeply"),
        ('{"n_layer": 1' + "0" * 5000 + "}", "not a readable JSON file"),
        (" " * (ckpt.MAX_CONFIG_BYTES + 1), "more than the"),
        (json.dumps({**CONFIG.to_hf_dict(), "layer_norm_epsilon": float("inf")}), "finite"),
        (json.dumps({**CONFIG.to_hf_dict(), "layer_norm_epsilon": float("nan")}), "finite"),
        (json.dumps({**CONFIG.to_hf_dict(), "n_embd": "32"}), "n_embd='32'"),
        (json.dumps({**CONFIG.to_hf_dict(), "n_embd": [32], "n_inner": 1}), "n_embd=\\[32\\]"),
    ],
    ids=["deep", "digits", "huge", "inf-epsilon", "nan-epsilon", "string", "list"],
)
def test_a_malformed_config_json_is_a_clear_checkpoint_error(
    tmp_path: Path, text: str, match: str
) -> None:
    """Before: the deep one raised RecursionError (INTERNALERROR through --checkpoint), the
    5000-digit one a bare ValueError, and the infinite epsilon was accepted (the model and the
    oracle both degenerate, so it conformed)."""
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    _timed_refusal(lambda: read_config(tmp_path), match)


@pytest.mark.parametrize("content", [b"PK\x03\x04", b"\x80\x02K", b"\x80\x02J\x01"])
def test_a_damaged_pickle_is_a_clear_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    """Before: some damaged pickles escaped as IndexError or struct.error (found by fuzzing)."""
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(content)
    _timed_refusal(lambda: read_state_dict(path), "not a readable PyTorch file|could not be loaded")
