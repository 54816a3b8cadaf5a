"""The NumPy oracle (gpt2_reference.oracle) as an implementation under test (built-in ``numpy``).

It computes in float64 whatever the run's dtype, on the CPU only, so it declares
``dtypes=("float32",)``: the float32 tolerances are the loosest bounds it is judged with. It
claims every capability except ``kv-cache`` (the oracle recomputes the whole sequence). Its head
is tied by construction: the logits are computed from ``transformer.wte.weight`` and there is no
other head matrix. The oracle validates its input with the spec's own checks (chapter 8).

Running the suite against it checks the suite as much as the oracle: a property that fails here
is wrong, or the oracle is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gpt2_reference import oracle
from gpt2_spec import GPT2Config

from ..adapter import Adapter, AdapterError, Implementation, Params, Reduction

__all__ = ["NumpyOracleAdapter", "NumpyOracleImplementation"]

WTE = "transformer.wte.weight"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class NumpyOracleImplementation(Implementation):
    """Canonical float64 weights and a config; every call goes through the oracle.

    Weight arrays are never changed in place (updates replace them), so arrays handed out by
    :meth:`get_params` stay as they were.
    """

    def __init__(self, config: GPT2Config, params: Params) -> None:
        oracle.check_params(params, config)
        self.config = config
        self.params = params

    # The protocol's keywords, by name: the oracle takes more (targets, masks for the loss), and
    # a caller who passes those here gets a TypeError, as from any other adapter.

    def logits(
        self,
        tokens: np.ndarray,
        *,
        attention_mask: np.ndarray | None = None,
        position_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        masks = {"attention_mask": attention_mask, "position_ids": position_ids}
        return oracle.forward(self.params, self.config, tokens, **masks).logits

    def loss(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = oracle.IGNORE_INDEX,
    ) -> float:
        options = {"reduction": reduction, "ignore_index": ignore_index}
        return oracle.loss(self.params, self.config, tokens, labels=labels, **options)

    def hidden_states(self, tokens: np.ndarray) -> np.ndarray:
        return oracle.forward(self.params, self.config, tokens).hidden

    def last_logits(self, tokens: np.ndarray) -> np.ndarray:
        return self.logits(tokens)[:, -1]

    def get_params(self) -> Mapping[str, np.ndarray]:
        return dict(self.params)

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        updated = dict(self.params)
        for name, value in params.items():
            if name not in updated:
                raise AdapterError(f"no canonical weight named {name!r}")
            updated[name] = np.array(value, dtype=np.float64)  # a copy we own
        oracle.check_params(updated, self.config)
        self.params = updated

    def head_weight(self) -> np.ndarray:
        return self.params[WTE]  # the head multiplies by wte: tied by construction

    def gradients(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = oracle.IGNORE_INDEX,
    ) -> tuple[float, Mapping[str, np.ndarray]]:
        options = {"reduction": reduction, "ignore_index": ignore_index}
        result = oracle.gradients(self.params, self.config, tokens, labels=labels, **options)
        return result.loss, result.grads

    def sgd_step(self, tokens: np.ndarray, labels: np.ndarray, *, lr: float) -> None:
        _, grads = self.gradients(tokens, labels)
        self.params = {name: value - lr * grads[name] for name, value in self.params.items()}

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.params, str(directory / WEIGHTS_FILE), metadata={"format": "np"})
        body = json.dumps(self.config.to_hf_dict(), indent=2)
        (directory / CONFIG_FILE).write_text(body + "\n", encoding="utf-8")

    def load(self, directory: Path) -> NumpyOracleImplementation:
        from safetensors.numpy import load_file

        directory = Path(directory)
        body = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        params = load_file(str(directory / WEIGHTS_FILE))
        return NumpyOracleImplementation(GPT2Config.from_hf_dict(body), params)

    def load_checkpoint(self, path: Path) -> NumpyOracleImplementation:
        """A canonical checkpoint (directory, or a weights file of this implementation's
        config), read by :mod:`gpt2_reference.checkpoint`."""
        from gpt2_reference.checkpoint import load_checkpoint, to_numpy_params

        path = Path(path)
        config, state = load_checkpoint(path, None if path.is_dir() else self.config)
        return NumpyOracleImplementation(config, to_numpy_params(state))

    def resize_vocab(self, vocab_size: int) -> None:
        config = dataclasses.replace(self.config, vocab_size=vocab_size)  # validates it
        old = self.params[WTE]
        rng = np.random.default_rng(0)
        wte = rng.normal(0.0, 0.02, size=(vocab_size, old.shape[1]))  # GPT-2's init for new rows
        keep = min(vocab_size, old.shape[0])
        wte[:keep] = old[:keep]
        self.params = {**self.params, WTE: wte}
        self.config = config

    def moved(self, device: str, dtype: str) -> NumpyOracleImplementation:
        """A copy; the oracle runs on the CPU and computes in float64 at any dtype."""
        if device != "cpu":
            raise AdapterError(f"the NumPy oracle runs on the CPU only, not on {device!r}")
        return NumpyOracleImplementation(self.config, dict(self.params))


class NumpyOracleAdapter(Adapter):
    """gpt2_reference.oracle: float64 NumPy, every capability but ``kv-cache``."""

    name = "numpy"
    capabilities = frozenset(
        {
            "loss", "hidden-states", "params", "gradients", "train-step", "attention-mask",
            "last-position", "save-load", "checkpoint", "resize-vocab", "move",
            "input-validation",
        }
    )  # fmt: skip
    label_convention = "inputs"
    tied_head = True
    devices = ("cpu",)
    dtypes = ("float32",)

    def __init__(self) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            self.version = version("gpt2-conformance")
        except PackageNotFoundError:
            self.version = "unknown"

    def build(
        self, config: GPT2Config, *, params: Params | None, seed: int, device: str, dtype: str
    ) -> Implementation:
        if device != "cpu":
            raise AdapterError(f"the NumPy oracle runs on the CPU only, not on {device!r}")
        if params is None:
            params = oracle.random_params(config, seed=seed)
        return NumpyOracleImplementation(config, {k: np.asarray(v) for k, v in params.items()})
