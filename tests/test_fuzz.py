"""Hostile input gets a clear error, quickly and without large allocations.

Hypothesis generates malformed safetensors files (bad header lengths, bad JSON, wrong dtypes,
shapes and offsets, huge declared sizes) and pickles, malformed ``config.json`` bodies (wrong
types, negatives, huge values, non-finite floats, deep nesting, missing keys), configurations
too large to build, and invalid input to the reference model (ids out of range, wrong dtypes and
shapes, over-long sequences). Every example must end in the documented exception type
(:class:`~gpt2_reference.checkpoint.CheckpointError`, :class:`~gpt2_spec.ConfigError`,
:class:`~gpt2_spec.InvalidInputError`, or a suite failure) with a message, within
:data:`SECONDS` and without raising the process' peak memory by more than :data:`GROWTH`.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_conformance import checks
from gpt2_reference.checkpoint import CheckpointError, load_checkpoint, read_config
from gpt2_reference.model import GPT2, MAX_LAYERS
from gpt2_spec import ConfigError, GPT2Config, InvalidInputError

#: Every example's time limit (the slowest measured take milliseconds).
SECONDS = 1.0
#: The most an example may raise the process' peak resident memory (ru_maxrss).
GROWTH = 64 << 20
CONFIG = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _peak_rss() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@contextlib.contextmanager
def _bounded(what: str) -> Iterator[None]:
    """The body must finish within SECONDS and raise the peak RSS by at most GROWTH."""
    peak, started = _peak_rss(), time.perf_counter()
    yield
    took, grew = time.perf_counter() - started, _peak_rss() - peak
    assert took < SECONDS, f"{what} took {took:.2f} s"
    assert grew < GROWTH, f"{what} raised the peak memory by {grew / 2**20:.0f} MiB"


def _refused(
    function: Callable[[], Any], errors: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException:
    """``function()`` raises one of ``errors`` with a message, within the bounds."""
    with _bounded(getattr(function, "__name__", "the call")), pytest.raises(errors) as caught:
        function()
    assert str(caught.value).strip(), f"{type(caught.value).__name__} without a message"
    return caught.value


# ---- safetensors and pickles -------------------------------------------------------------------

DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "X9", ""]
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}


@st.composite
def tensor_entries(draw: st.DrawFn) -> dict[str, Any]:
    """One header entry, sometimes consistent (offsets matching shape and dtype), often not."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(
        st.lists(
            st.one_of(st.integers(0, 8), st.integers(-3, -1), st.integers(2**31, 2**63)),
            max_size=3,
        )
    )
    start = draw(st.integers(0, 64))
    size = SIZES.get(dtype, 4) * math.prod(max(s, 0) for s in shape)
    end = draw(st.one_of(st.just(start + size), st.integers(0, 2**64 - 1)))
    entry: dict[str, Any] = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
    if draw(st.booleans()):
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(
            st.one_of(st.none(), st.text(max_size=3), st.floats(), st.lists(st.integers()))
        )
    return entry


NAMES = st.sampled_from(
    ["transformer.wte.weight", "transformer.wpe.weight", "h.0.ln_1.weight", "__metadata__", "x"]
)


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """The bytes of a malformed (or well-formed but not GPT-2) safetensors file."""
    kind = draw(st.sampled_from(["short", "header", "json", "entries"]))
    if kind == "short":
        return draw(st.binary(max_size=7))
    if kind == "json":
        header = draw(st.binary(max_size=64))
    else:
        body = draw(st.dictionaries(NAMES, tensor_entries(), max_size=3))
        header = json.dumps(body).encode()
    declared = len(header)
    if kind == "header":  # a length that is not the header's: huge, short or zero
        declared = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(header) + 8)))
    data = draw(st.binary(max_size=64))
    return struct.pack("<Q", declared) + header + data


@FUZZ
@given(content=safetensors_files())
def test_malformed_safetensors_are_refused_clearly(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        path.write_bytes(content)
        error = _refused(lambda: load_checkpoint(path, CONFIG), CheckpointError)
    assert "model.safetensors" in str(error) or "GPT-2" in str(error) or "tensor" in str(error)


@FUZZ
@given(content=st.binary(max_size=256), zip_like=st.booleans())
def test_malformed_pickles_are_refused_clearly(content: bytes, zip_like: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pytorch_model.bin"
        path.write_bytes((b"PK\x03\x04" if zip_like else b"") + content)
        _refused(lambda: load_checkpoint(path, CONFIG), CheckpointError)


# ---- config.json -------------------------------------------------------------------------------

FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon")
BAD_VALUES = st.one_of(
    st.integers(-(2**70), 0),
    st.integers(2**40, 2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def config_bodies(draw: st.DrawFn) -> str:
    """A config.json text with at least one wrong field (or a malformed document)."""
    kind = draw(st.sampled_from(["field", "missing", "deep", "not-object", "digits"]))
    body: dict[str, Any] = CONFIG.to_hf_dict()
    if kind == "deep":
        depth = draw(st.sampled_from([10_000, 100_000, 400_000]))
        return '{"n_layer": ' + _deep(depth) + "}"
    if kind == "not-object":
        return json.dumps(draw(st.one_of(st.lists(st.integers()), st.integers(), st.text())))
    if kind == "digits":
        return '{"n_layer": 1' + "0" * draw(st.integers(4301, 20_000)) + "}"
    if kind == "missing":
        for key in draw(st.lists(st.sampled_from(FIELDS[:-1]), min_size=1, unique=True)):
            del body[key]
    else:
        for key in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
            body[key] = draw(BAD_VALUES.filter(lambda v, k=key: not _valid(k, v)))
    return json.dumps(body)  # NaN and infinities are written as JSON's NaN/Infinity


def _valid(key: str, value: Any) -> bool:
    """Would ``value`` be a valid ``key`` on its own?"""
    if isinstance(value, bool):
        return False
    if key == "layer_norm_epsilon":
        return isinstance(value, int | float) and 0 < value <= 1 and math.isfinite(value)
    return isinstance(value, int) and value >= 1 and key != "n_head"


@FUZZ
@given(text=config_bodies())
def test_malformed_configs_are_refused_clearly(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(text, encoding="utf-8")
        error = _refused(lambda: read_config(folder), CheckpointError)
    assert "config.json" in str(error)


@FUZZ
@given(n_layer=st.integers(MAX_LAYERS + 1, 10**12))
def test_a_config_with_more_layers_than_the_checkpoint_is_refused_at_once(n_layer: int) -> None:
    """n_layer=1000000 beside a 1-layer checkpoint took 49.6 s and 2.9 GB before the fix."""
    with tempfile.TemporaryDirectory() as folder:
        GPT2(CONFIG, seed=0).save_pretrained(folder)
        body = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        body["n_layer"] = n_layer
        (Path(folder) / "config.json").write_text(json.dumps(body), encoding="utf-8")
        error = _refused(lambda: load_checkpoint(folder), CheckpointError)
    assert f"n_layer={n_layer}" in str(error)


@FUZZ
@given(
    sizes=st.tuples(
        st.integers(1, 2**40), st.integers(1, 2**40), st.integers(1, 2**20), st.integers(1, 2**40)
    ),
    epsilon=st.floats(allow_nan=True, allow_infinity=True),
)
def test_configs_are_valid_or_refused_and_too_large_ones_never_built(
    sizes: tuple[int, int, int, int], epsilon: float
) -> None:
    V, n_ctx, d, L = sizes
    if not (0 < epsilon <= 1 and math.isfinite(epsilon)):
        _refused(lambda: GPT2Config(V, n_ctx, d, L, 1, layer_norm_epsilon=epsilon), ConfigError)
        return
    config = GPT2Config(V, n_ctx, d, L, 1, layer_norm_epsilon=epsilon)
    assert math.isfinite(config.layer_norm_epsilon)
    if L <= MAX_LAYERS and 4 * config.parameter_count < 2**30:
        return  # buildable, and small: not this test's business
    _refused(lambda: GPT2(config), ConfigError)


# ---- the reference model's input ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> GPT2:
    return GPT2(CONFIG, seed=0)


@st.composite
def bad_inputs(draw: st.DrawFn) -> tuple[torch.Tensor, str]:
    """Input ids that the reference must refuse, and a word its message must contain."""
    kind = draw(st.sampled_from(["range", "dtype", "ndim", "length", "empty"]))
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, CONFIG.n_positions))
    ids = torch.randint(0, CONFIG.vocab_size, (B, T))
    if kind == "range":
        b, t = draw(st.integers(0, B - 1)), draw(st.integers(0, T - 1))
        ids[b, t] = draw(
            st.one_of(st.integers(-(2**62), -1), st.integers(CONFIG.vocab_size, 2**62))
        )
        return ids, "["
    if kind == "dtype":
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bool, torch.complex64]))
        return ids.to(dtype), "integer"
    if kind == "ndim":
        shape = draw(st.sampled_from([(B * T,), (1, B, T), ()]))
        return ids.reshape(shape) if shape else ids[0, 0], "2-D"
    if kind == "length":
        extra = draw(st.integers(1, 64))
        return torch.randint(0, CONFIG.vocab_size, (B, CONFIG.n_positions + extra)), "long"
    return ids[:, :0], "empty"


@FUZZ
@given(case=bad_inputs())
def test_invalid_reference_input_is_refused_clearly(
    model: GPT2, case: tuple[torch.Tensor, str]
) -> None:
    ids, word = case
    error = _refused(lambda: model(ids), InvalidInputError)
    assert word in str(error), str(error)


@FUZZ
@given(prompt=st.integers(1, CONFIG.n_positions), new=st.integers(0, 40))
def test_generate_refuses_past_the_context_before_generating(
    model: GPT2, prompt: int, new: int
) -> None:
    """Before the fix, 4 prompt tokens and 6 new ones at n_positions=8 generated 5 tokens, then
    raised "keep the last 0 tokens", losing them."""
    ids = torch.zeros((1, prompt), dtype=torch.long)
    if prompt + new - 1 <= CONFIG.n_positions or new == 0:
        assert model.generate(ids, new).shape == (1, prompt + new)
        return
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        error = _refused(lambda: model.generate(ids, new), InvalidInputError)
    finally:
        hook.remove()
    assert calls == [], "generate ran the model before refusing"
    assert f"at most {CONFIG.n_positions - prompt + 1} new tokens" in str(error)


# ---- outputs the suite reads -------------------------------------------------------------------


@FUZZ
@given(
    dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint64", "bool"]),
    torch_tensor=st.booleans(),
)
def test_integer_logits_are_refused_naming_their_dtype(dtype: str, torch_tensor: bool) -> None:
    """Before the fix, integer logits were accepted and compared with the oracle's ("differs
    from the oracle's by 7.31e+04"), the dtype never named."""
    values = np.arange(2 * 3 * CONFIG.vocab_size).reshape(2, 3, -1).astype(dtype)
    output: Any = torch.from_numpy(values.astype("int64")) if torch_tensor else values
    error = _refused(
        lambda: checks.array("r.id", output, what="the logits", shape=values.shape),
        checks.ConformanceFailure,
    )
    assert str(output.dtype) in str(error)
    assert "floating" in str(error)
