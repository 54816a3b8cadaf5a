"""Canonical GPT-2 checkpoint I/O (spec requirements ``model.canonical-names`` and
``model.canonical-layout``).

The canonical layout is the state dict of transformers' ``GPT2LMHeadModel`` minus
``lm_head.weight`` (GPT-2 ties the head to ``transformer.wte.weight``), with exactly the names and
shapes of ``gpt2_spec.spec_definitions().canonical_shapes(V, n_ctx, d, L)``:

- ``transformer.wte.weight`` [V, d], ``transformer.wpe.weight`` [n_ctx, d];
- per block ``transformer.h.{l}.``: ``ln_1``/``ln_2`` weight and bias [d];
  ``attn.c_attn`` [d, 3d] + [3d], ``attn.c_proj`` [d, d] + [d], ``mlp.c_fc`` [d, 4d] + [4d],
  ``mlp.c_proj`` [4d, d] + [d]; the four projections are Conv1D weights stored [in, out];
- ``transformer.ln_f`` weight and bias [d].

Reading accepts what transformers and plain ``torch.save`` write: ``GPT2LMHeadModel`` keys
(``transformer.`` prefix), ``GPT2Model`` keys (no prefix, as in the hub's ``gpt2`` files), a tied
``lm_head.weight`` (dropped) and the causal-mask buffers of old checkpoints (dropped). Pickle files
are read with ``torch.load(..., weights_only=True)`` only: this module never unpickles arbitrary
Python objects.

Loading real GPT-2 (no network is needed by this module; download the files first)::

    # e.g. `huggingface-cli download gpt2 --local-dir gpt2` fetches config.json + model.safetensors
    config, params = load_checkpoint("gpt2")
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gpt2_spec import ConfigError, GPT2Config, spec_definitions

__all__ = [
    "CONV1D_SUFFIXES",
    "CheckpointError",
    "canonicalize_state_dict",
    "infer_config",
    "load_checkpoint",
    "read_config",
    "read_state_dict",
    "save_checkpoint",
    "to_numpy_params",
]

PathLike = str | os.PathLike[str]

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PYTORCH_FILE = "pytorch_model.bin"
CONFIG_FILE = "config.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")

PREFIX = "transformer."
HEAD_KEY = "lm_head.weight"
WTE_KEY = "transformer.wte.weight"
WPE_KEY = "transformer.wpe.weight"

#: The projections stored as Conv1D weights [in, out] (nn.Linear would store [out, in]).
CONV1D_SUFFIXES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)

# Old checkpoints (transformers < 4.x era) saved the causal mask and its fill value as buffers;
# they are constants, not parameters. Note `attn.bias` is not `attn.c_attn.bias`.
_MASK_BUFFER = re.compile(r"^(?:transformer\.)?h\.\d+\.attn\.(?:bias|masked_bias)$")
_BLOCK_KEY = re.compile(r"^transformer\.h\.(\d{1,9})\.")
_WRAPPER_PREFIXES = ("_orig_mod.", "module.", "model.")
_MAX_LISTED = 8
#: The largest config.json read (a GPT-2 config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a canonical GPT-2; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint, as stored (no renaming, no validation).

    ``path`` may be a ``.safetensors`` file, a ``.bin``/``.pt``/``.pth`` file written by
    ``torch.save`` (read with ``weights_only=True`` only), or a directory written by transformers'
    ``save_pretrained`` holding ``model.safetensors``, a sharded ``model.safetensors.index.json``
    with its shards, or ``pytorch_model.bin`` (looked for in that order).

    Returns:
        name -> CPU tensor, in the file's key order.

    Raises:
        CheckpointError: the path does not exist, holds no weights file, or the file is not a
            plain mapping of names to tensors.
    """
    p = Path(path)
    if p.is_dir():
        return _read_directory(p)
    if not p.exists():
        raise CheckpointError(
            f"checkpoint path {str(p)!r} does not exist; pass a .safetensors/.bin/.pt/.pth file "
            "or a directory written by save_pretrained / save_checkpoint"
        )
    if p.suffix == ".safetensors":
        return _read_safetensors(p)
    if p.suffix in _PICKLE_SUFFIXES:
        return _read_pickle(p)
    raise CheckpointError(
        f"cannot tell the format of {str(p)!r} from its suffix {p.suffix!r}; supported: "
        f".safetensors, {', '.join(_PICKLE_SUFFIXES)}, or a save_pretrained directory"
    )


def _read_directory(directory: Path) -> dict[str, torch.Tensor]:
    single = directory / SAFETENSORS_FILE
    if single.is_file():
        return _read_safetensors(single)
    index = directory / SAFETENSORS_INDEX_FILE
    if index.is_file():
        return _read_sharded(index)
    pickled = directory / PYTORCH_FILE
    if pickled.is_file():
        return _read_pickle(pickled)
    raise CheckpointError(
        f"directory {str(directory)!r} holds no weights file; looked for {SAFETENSORS_FILE}, "
        f"{SAFETENSORS_INDEX_FILE} (sharded) and {PYTORCH_FILE}. Pass the directory that "
        "save_pretrained / save_checkpoint wrote, or the weights file itself"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except Exception as error:  # safetensors raises its own (non-ValueError) error type
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({error}); "
            "the file may be truncated or of another format"
        ) from error


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        body = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read the shard index {str(index)!r}: {error}") from error
    weight_map = body.get("weight_map") if isinstance(body, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"shard index {str(index)!r} has no 'weight_map' object of tensor name -> shard file"
        )
    tensors: dict[str, torch.Tensor] = {}
    for shard_name in dict.fromkeys(weight_map.values()):
        # A shard is a plain file name next to the index, never a path elsewhere.
        if Path(shard_name).name != shard_name or shard_name in (".", ".."):
            raise CheckpointError(
                f"shard index {str(index)!r} names the shard {shard_name!r}, which is not a "
                "file name in the checkpoint's directory"
            )
        shard = index.parent / shard_name
        if not shard.is_file():
            raise CheckpointError(
                f"shard index {str(index)!r} names {shard_name!r}, which is missing from "
                f"{str(index.parent)!r}; download or copy every shard"
            )
        for name, tensor in _read_safetensors(shard).items():
            if name in tensors:
                raise CheckpointError(f"tensor {name!r} appears in more than one shard")
            tensors[name] = tensor
    unlisted = sorted(set(weight_map) - set(tensors))
    if unlisted:
        raise CheckpointError(
            f"shard index {str(index)!r} lists tensors that no shard contains: {_listing(unlisted)}"
        )
    return tensors


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only=True: tensors, primitive types and containers only. Never drop it: a
        # pickle can run arbitrary code while it is being loaded.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own reason, first sentence only (the rest is advice for torch.load's callers).
        reason = str(error.__context__ or "").strip().split(". ")[0].strip().rstrip(".")
        detail = f" (torch: {reason})" if reason else ""
        raise CheckpointError(
            f"{str(path)!r} could not be loaded with torch.load(weights_only=True): it contains "
            f"non-tensor Python objects, or is not a PyTorch file at all{detail}. This project "
            "never unpickles arbitrary objects. If, and only if, you trust the file, convert it "
            "once to safetensors: sd = torch.load(path, weights_only=False) (then, for a "
            "training checkpoint, take its state dict, e.g. sd['model']), and "
            "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "
            "'model.safetensors')"
        ) from error
    except Exception as error:  # a damaged file makes the unpickler raise almost anything
        # (EOFError, RuntimeError, IndexError, struct.error, ...: found by tests/test_fuzz.py)
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch file ({type(error).__name__}: {error}); "
            "it may be truncated or of another format"
        ) from error
    return _as_tensor_dict(obj, path)


def _as_tensor_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict (a mapping of "
            "names to tensors); save model.state_dict()"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(
            f"{str(path)!r} is a mapping but not a state dict: the entries "
            f"{_listing([str(k) for k in not_tensors])} are not tensors. If it is a training "
            "checkpoint (nanoGPT's ckpt.pt holds 'model', 'optimizer', 'model_args', ...), "
            "save its state dict alone, e.g. torch.save(ckpt['model'], 'model.pt')"
        )
    return dict(obj)


def read_config(path: PathLike) -> GPT2Config:
    """Read a transformers ``config.json`` as a :class:`~gpt2_spec.GPT2Config`.

    ``path`` is a checkpoint directory (its ``config.json`` is read) or a ``.json`` file.

    Raises:
        CheckpointError: the file is missing, is not JSON, or does not describe a plain GPT-2.
    """
    p = Path(path)
    file = p / CONFIG_FILE if p.is_dir() else p
    if not file.is_file():
        raise CheckpointError(
            f"no {CONFIG_FILE} at {str(file)!r}; save_pretrained writes one next to the weights. "
            "Without it, pass the model's GPT2Config (e.g. load_checkpoint(path, config)); "
            "infer_config(state_dict, n_head) derives one from the weights and n_head"
        )
    size = file.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{str(file)!r} is {size} bytes, more than the {MAX_CONFIG_BYTES} a config.json may "
            "have (GPT-2's is under 1 KB): it is not a model configuration"
        )
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
    except RecursionError as error:
        raise CheckpointError(
            f"{str(file)!r} nests its JSON too deeply to be read: a config.json is a flat object "
            "of the model's sizes"
        ) from error
    except (OSError, UnicodeDecodeError, ValueError) as error:  # ValueError: JSONDecodeError,
        # and integers with more digits than Python converts
        raise CheckpointError(f"{str(file)!r} is not a readable JSON file: {error}") from error
    if not isinstance(body, dict):
        raise CheckpointError(f"{str(file)!r} holds a JSON {type(body).__name__}, not an object")
    try:
        return GPT2Config.from_hf_dict(body)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{str(file)!r} does not describe a GPT-2: {error}") from error


# --------------------------------------------------------------------------------------------
# Canonical names and validation
# --------------------------------------------------------------------------------------------


def canonicalize_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: GPT2Config
) -> dict[str, torch.Tensor]:
    """Rename, check and return a GPT-2 state dict in the canonical layout.

    Accepts ``GPT2LMHeadModel`` keys (``transformer.`` prefix) or ``GPT2Model`` keys (no prefix).
    Drops the causal-mask buffers ``h.{l}.attn.bias`` / ``h.{l}.attn.masked_bias`` of old
    checkpoints, and ``lm_head.weight`` when it equals ``wte`` exactly (GPT-2 ties the two).

    Returns:
        A new dict with exactly the keys of ``canonical_shapes(config)``, in that order; the
        tensors are the input's own (not copied). The input is not modified.

    Raises:
        CheckpointError: an untied head; missing or unexpected keys; a shape that differs from the
            canonical one (with a hint when a Conv1D weight is stored transposed, [out, in]);
            a non-tensor, non-floating or non-finite value.
    """
    renamed = _rename(state_dict)
    _check_layer_count(renamed, config)
    expected = _expected_shapes(config)

    head = renamed.pop(HEAD_KEY, None)
    if head is not None and WTE_KEY in renamed:
        _check_tied(head, renamed[WTE_KEY])

    missing = [k for k in expected if k not in renamed]
    unexpected = [k for k in renamed if k not in expected]
    if missing or unexpected:
        raise CheckpointError(_key_mismatch_message(missing, unexpected, config))

    for name in expected:
        if not isinstance(renamed[name], torch.Tensor):
            raise CheckpointError(
                f"{name!r} is a {type(renamed[name]).__name__}, not a torch.Tensor"
            )
    _check_shapes(renamed, expected, config)
    for name in expected:
        tensor = renamed[name]
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"{name!r} has dtype {tensor.dtype}; GPT-2 parameters are floating point "
                "(float32, float16, bfloat16 or float64). A quantised checkpoint must be "
                "dequantised first"
            )
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{name!r} holds {bad} non-finite value(s) (NaN or inf) out of "
                f"{tensor.numel()}; the checkpoint is corrupt or came from a diverged run"
            )
    return {name: renamed[name] for name in expected}


def _check_layer_count(renamed: Mapping[str, Any], config: GPT2Config) -> None:
    """Refuse a config with far more blocks than the state dict holds, before the expected names
    (12 per block) are listed: the work stays proportional to the state dict, not to n_layer."""
    tensors = len(renamed) - (HEAD_KEY in renamed)
    if 12 * config.n_layer + 4 <= 2 * tensors + 64:  # close enough to list the differences
        return
    blocks = {int(m.group(1)) for k in renamed if (m := _BLOCK_KEY.match(k))}
    held = f"blocks h.0..h.{max(blocks)}" if blocks else "no blocks h.{l}."
    raise CheckpointError(
        f"the config has n_layer={config.n_layer}, 12 tensors per block, but the state dict holds "
        f"{tensors} tensor(s) in all ({held}): check that the config's n_layer is the "
        "checkpoint's (infer_config(state_dict, n_head) reads it from the weights)"
    )


def _expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    shapes = spec_definitions().canonical_shapes(
        config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    )
    return {name: tuple(shape) for name, shape in shapes.items()}


def _rename(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Give every key the ``transformer.`` prefix (GPT2Model keys) and drop mask buffers."""
    bad_keys = [k for k in state_dict if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(
            f"state dict keys must be strings, got {_listing(map(repr, bad_keys))}"
        )
    prefixed = any(k.startswith(PREFIX) for k in state_dict)
    renamed: dict[str, Any] = {}
    for key, value in state_dict.items():
        if _MASK_BUFFER.match(key):
            continue
        name = key if prefixed or key == HEAD_KEY else PREFIX + key
        renamed[name] = value
    return renamed


def _check_tied(head: object, wte: object) -> None:
    if not (isinstance(head, torch.Tensor) and isinstance(wte, torch.Tensor)):
        raise CheckpointError(f"{HEAD_KEY!r} and {WTE_KEY!r} must both be torch.Tensors")
    if head.shape != wte.shape:
        difference = f"shape {tuple(head.shape)} vs wte's {tuple(wte.shape)}"
    elif torch.equal(head, wte):
        return
    else:
        delta = (head.detach().to(torch.float64) - wte.detach().to(torch.float64)).abs().max()
        difference = f"max abs difference {float(delta):.3g}"
    raise CheckpointError(
        f"the checkpoint has an untied head: {HEAD_KEY} differs from {WTE_KEY} ({difference}). "
        "GPT-2 ties the output head to the token embedding (logits = h @ wte.T), so a GPT-2 "
        "checkpoint's lm_head.weight, if stored at all, equals wte. This project reports an "
        "untied head as a declared deviation (head.untied-is-declared); it cannot load one as "
        "a GPT-2"
    )


def _key_mismatch_message(missing: list[str], unexpected: list[str], config: GPT2Config) -> str:
    parts = []
    if missing:
        parts.append(f"missing key(s) {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected key(s) {_listing(unexpected)}")
    message = (
        f"the state dict does not have the canonical GPT-2 names for {config}: "
        + "; ".join(parts)
        + ". Expected transformers GPT2LMHeadModel names ('transformer.h.0.attn.c_attn.weight') "
        "or GPT2Model names ('h.0.attn.c_attn.weight')"
    )
    wrappers = {p for k in unexpected for p in _WRAPPER_PREFIXES if k.startswith(PREFIX + p)}
    wrappers |= {p for k in unexpected for p in _WRAPPER_PREFIXES if k.startswith(p)}
    if wrappers:
        message += (
            f"; keys start with {sorted(wrappers)} (torch.compile / DataParallel wrappers): "
            "strip that prefix (nanoGPT's own names are the canonical ones)"
        )
    elif any(_BLOCK_KEY.match(k) for k in missing + unexpected):
        message += f"; check that the config's n_layer ({config.n_layer}) is the checkpoint's"
    return message


def _check_shapes(
    tensors: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    config: GPT2Config,
) -> None:
    wrong = {n: tuple(tensors[n].shape) for n in expected if tuple(tensors[n].shape) != expected[n]}
    if not wrong:
        return
    lines = [f"{n}: {got}, expected {expected[n]}" for n, got in wrong.items()]
    message = f"{len(wrong)} tensor(s) do not have the canonical shape for {config}: " + _listing(
        lines
    )
    transposed = [
        n for n, got in wrong.items() if n.endswith(CONV1D_SUFFIXES) and got == expected[n][::-1]
    ]
    if transposed:
        message += (
            f". {_listing(transposed)} are stored transposed, as nn.Linear's [out, in]: GPT-2's "
            "canonical layout stores the Conv1D weights [in, out] (applied as x @ W + b). "
            "nanoGPT-style checkpoints must be transposed (.t()) for attn.c_attn, attn.c_proj, "
            "mlp.c_fc and mlp.c_proj (all four, including the square attn.c_proj, whose shape "
            "cannot show it)"
        )
    else:
        message += (
            ". Check that the config matches the checkpoint (infer_config(state_dict, n_head) "
            "reads V, n_ctx, d and L from the weights)"
        )
    raise CheckpointError(message)


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


def infer_config(
    state_dict: Mapping[str, torch.Tensor], n_head: int, layer_norm_epsilon: float = 1e-5
) -> GPT2Config:
    """Derive a GPT2Config from a state dict's shapes.

    V and d come from ``wte`` [V, d], n_ctx from ``wpe`` [n_ctx, d], L from the block indices
    ``h.{l}.`` (which must run 0..L-1 without gaps). The number of heads cannot be inferred: the
    weights of H heads of width d/H are the same tensors for any H dividing d (heads are column
    slices of c_attn), so ``n_head`` is a required argument (GPT-2 small: 12). Keys may carry the
    ``transformer.`` prefix or not. The state dict is not validated: pass the result to
    :func:`canonicalize_state_dict` for that.

    Raises:
        CheckpointError: wte, wpe or blocks are missing, indices have gaps, or the derived sizes do
            not form a valid config (e.g. d not divisible by n_head).
    """
    renamed = _rename(state_dict)
    tables = {}
    for key in (WTE_KEY, WPE_KEY):
        tensor = renamed.get(key)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
            raise CheckpointError(
                f"cannot infer the config: {key!r} (or its unprefixed form) is missing or not a "
                "2-D tensor"
            )
        tables[key] = tuple(tensor.shape)
    (vocab_size, n_embd), (n_positions, wpe_width) = tables[WTE_KEY], tables[WPE_KEY]
    if wpe_width != n_embd:
        raise CheckpointError(f"cannot infer the config: wte has width {n_embd}, wpe {wpe_width}")
    indices = sorted({int(m.group(1)) for k in renamed if (m := _BLOCK_KEY.match(k))})
    if not indices:
        raise CheckpointError("cannot infer the config: the state dict has no blocks 'h.{l}.'")
    if indices != list(range(len(indices))):
        gaps = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise CheckpointError(
            f"cannot infer the config: block indices must run 0..L-1 without gaps; found "
            f"{_listing(map(str, indices))}, missing {_listing(map(str, gaps))}"
        )
    try:
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=n_positions,
            n_embd=n_embd,
            n_layer=len(indices),
            n_head=n_head,
            layer_norm_epsilon=layer_norm_epsilon,
        )
    except ConfigError as error:
        raise CheckpointError(f"cannot infer the config: {error}") from error


# --------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------


def load_checkpoint(
    path: PathLike, config: GPT2Config | None = None
) -> tuple[GPT2Config, dict[str, torch.Tensor]]:
    """Read, canonicalize and validate a GPT-2 checkpoint.

    Args:
        path: a weights file or a checkpoint directory (see :func:`read_state_dict`).
        config: the model's config; if None, the directory's ``config.json`` is read.

    Returns:
        (config, state dict in the canonical layout; see :func:`canonicalize_state_dict`).

    Raises:
        CheckpointError: see :func:`read_state_dict`, :func:`read_config` and
            :func:`canonicalize_state_dict`.
    """
    tensors = read_state_dict(path)
    if config is None:
        p = Path(path)
        if not p.is_dir():
            raise CheckpointError(
                f"{str(p)!r} is a single weights file, which carries no config: pass the model's "
                "GPT2Config (load_checkpoint(path, config)); infer_config(read_state_dict(path), "
                "n_head) builds one from the weights and the number of heads"
            )
        config = read_config(p)
    return config, canonicalize_state_dict(tensors, config)


def save_checkpoint(
    directory: PathLike, config: GPT2Config, state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Write a checkpoint that transformers' ``GPT2LMHeadModel.from_pretrained`` loads.

    The state dict is validated by :func:`canonicalize_state_dict` first (nothing is written if it
    fails). Writes ``model.safetensors`` (canonical names, CPU, contiguous, dtypes kept, metadata
    ``{"format": "pt"}``, no ``lm_head.weight``: loading re-ties the head, as with
    ``save_pretrained``) and ``config.json`` (``config.to_hf_dict()``). Each file is written to a
    temporary file in ``directory`` and then renamed over the target, so a failure never leaves a
    half-written file (the pair of files is not updated as one unit). Creates ``directory``.

    Raises:
        CheckpointError: the state dict is not a canonical GPT-2 for ``config``, or ``directory``
            exists and is not a directory.
    """
    canonical = canonicalize_state_dict(state_dict, config)
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{str(target)!r} exists and is not a directory")
    target.mkdir(parents=True, exist_ok=True)
    # Fresh contiguous CPU copies: safetensors refuses views and tensors that share memory.
    tensors = {
        name: t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for name, t in canonical.items()
    }
    _write_atomically(
        target / SAFETENSORS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"})
    )
    body = json.dumps(config.to_hf_dict(), indent=2, sort_keys=True) + "\n"
    _write_atomically(target / CONFIG_FILE, lambda tmp: Path(tmp).write_text(body, "utf-8"))


def _write_atomically(target: Path, write: Callable[[str], object]) -> None:
    """Call ``write(temp_path)`` for a temp file beside ``target``, then rename it over target."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def to_numpy_params(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Float64 NumPy copies of a (canonical) state dict, for the NumPy oracle.

    Pass :func:`load_checkpoint`'s output; names are kept as given. The arrays own their memory:
    changing them does not change the tensors.
    """
    params: dict[str, np.ndarray] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise CheckpointError(f"{name!r} is not a floating-point torch.Tensor")
        params[name] = tensor.detach().to("cpu", torch.float64).numpy().copy()
    return params
