"""The committed trained checkpoint (``docs/data/trained/``, written by
``python -m gpt2_evidence.train_checkpoint``): the file is the one the training run recorded, the
project's loader reads it, it predicts text far better than its initialisation, and its recorded
loss curve flattens out (no retraining here: that takes minutes; see the module for how to check
the determinism)."""

from __future__ import annotations

import hashlib
import json
import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2_evidence import train_checkpoint as trained
from gpt2_reference.checkpoint import load_checkpoint
from gpt2_reference.model import GPT2

RECORD = json.loads((trained.OUT / trained.RECORD).read_text(encoding="utf-8"))
#: "Plateau": the last fifth of the steps brought less than this share of the whole improvement.
PLATEAU_SHARE = 0.1


def test_the_committed_weights_are_the_ones_the_training_run_recorded() -> None:
    data = (trained.OUT / trained.WEIGHTS).read_bytes()
    assert hashlib.sha256(data).hexdigest() == RECORD["sha256"]
    assert len(data) < 5 * 2**20, "the checkpoint is meant to stay a few MB"


def test_the_project_loader_reads_it_with_the_recorded_config() -> None:
    config, state = load_checkpoint(trained.OUT)
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        assert getattr(config, key) == RECORD["settings"][key], key
    model = GPT2(config)
    model.load_state_dict(state, strict=True)
    assert model.num_parameters() == RECORD["parameters"]


def test_it_predicts_python_source_far_better_than_its_initialisation() -> None:
    path = Path(sysconfig.get_paths()["stdlib"]) / trained.STDLIB_FILES[0]
    if not path.is_file():
        pytest.skip(f"this Python has no {path}")
    T = RECORD["settings"]["n_positions"]
    text = np.frombuffer(path.read_bytes()[: 4 * T], dtype=np.uint8).astype(np.int64)
    tokens = torch.from_numpy(text.reshape(4, T))
    config, state = load_checkpoint(trained.OUT)
    model = GPT2(config)
    model.load_state_dict(state)
    with torch.no_grad():
        loss = float(model(tokens, labels=tokens).loss)
        fresh = GPT2(config, seed=RECORD["settings"]["init_seed"])
        initial = float(fresh(tokens, labels=tokens).loss)
    assert initial == pytest.approx(math.log(config.vocab_size), abs=0.1)
    # Below the curve's first held-out point, and within 0.5 nats of its last.
    assert loss < RECORD["curve"][0]["train_loss"]
    assert loss < trained.plateau(RECORD["curve"])["last"] + 0.5


def test_the_recorded_loss_curve_reaches_a_plateau() -> None:
    curve = RECORD["curve"]
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    assert curve[-1]["step"] == RECORD["settings"]["steps"]
    flat = trained.plateau(curve)
    assert flat["last"] < flat["first"]
    assert flat["tail_share_of_drop"] < PLATEAU_SHARE, flat


def test_the_plateau_measure_tells_a_flat_curve_from_a_falling_one() -> None:
    falling = [
        {"step": s, "train_loss": 0.0, "heldout_loss": 5.0 - s / 100} for s in range(0, 501, 50)
    ]
    flat = [
        {"step": s, "train_loss": 0.0, "heldout_loss": 2 + 3 * math.exp(-s / 50)}
        for s in range(0, 501, 50)
    ]
    assert trained.plateau(falling)["tail_share_of_drop"] == pytest.approx(0.2)
    assert trained.plateau(flat)["tail_share_of_drop"] < 0.01


def test_a_checkpoint_run_is_recorded_with_its_worst_margins_first() -> None:
    report = {
        "implementation": {"adapter": "reference", "dtype": "bfloat16", "checkpoint": "x"},
        "hypothesis": {"profile": "dev", "max_examples": 5},
        "summary": {"pass": 3, "fail": 0},
        "classes": {"function": {"status": "conforms"}},
        "duration_s": 60.0,
        "requirements": [
            {"id": "a", "margin": 0.1},
            {"id": "b", "margin": 0.4},
            {"id": "c", "margin": None},
        ],
    }
    run = trained.conformance_run(report)
    assert list(run["margins"].items()) == [("b", 0.4), ("a", 0.1)]
    data = json.loads(trained.STATISTICS.read_text(encoding="utf-8"))
    markdown = trained.render_markdown({**data, "conformance_runs": [run]})
    assert "| `reference` | bfloat16 | dev (5 per property) | 3 pass |" in markdown
    assert "0.400 (`b`)" in markdown
