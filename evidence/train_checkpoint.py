"""Train a small GPT-2 on the CPU, deterministically, so the suite has realistic weights to run on.

No weights can be downloaded on the machines this project runs on, and every tolerance in spec
chapter 7 was first measured on random weights. Trained transformers differ from random ones in
exactly the ways that stress low-precision agreement (LayerNorm gains away from 1, outlier
features, peaked attention), so this module makes trained weights from text every machine has:

- the project's own Markdown (``spec/*.md``, ``docs/**/*.md``, sorted by path), and
- a fixed, sorted list of modules of the Python standard library's source
  (``sysconfig.get_paths()["stdlib"]``; the Python version is recorded, since the stdlib's text
  changes between releases).

Tokenizer: bytes (vocabulary 256). It needs no training, no file and no library version: the
same text is the same token ids on every machine, which a trained BPE would only give with its
vocabulary committed and the ``tokenizers`` version pinned. Byte-level GPT-2s are a known,
working configuration; the suite does not care what the tokens mean.

Model: the reference model (:class:`gpt2_reference.model.GPT2`), d=128, L=4, H=4, n_ctx=256:
0.86M parameters, 3.4 MB in float32. Training: AdamW, linear warm-up then cosine decay to 10% of
the peak rate, a fixed number of steps (never a time limit: the result must not depend on the
machine's speed), one CPU thread, ``torch.use_deterministic_algorithms(True)``, fixed seeds for
the initialisation and for the batches (a NumPy generator).

Output (``docs/data/trained/``): ``model.safetensors`` + ``config.json`` written by the
project's canonical :func:`gpt2_reference.checkpoint.save_checkpoint`, and ``training.json``
with the loss curve (training loss per interval, held-out loss), the corpus (every file with its
byte count and sha256), the software versions and the sha256 of ``model.safetensors``.

Run (about 11 minutes on one core)::

    nice python -m gpt2_evidence.train_checkpoint

The corpus includes the project's Markdown, so it is the same only on the same commit (the
record lists every file with its sha256; the committed checkpoint was trained on commit f0937c4's
docs). Verify the determinism: rerun on that commit, with the same Python and torch, and
compare the printed sha256 with the one in ``training.json`` (``--out`` elsewhere keeps the
committed files). A quick check of the machinery is two short runs into two directories whose
hashes must be equal::

    python -m gpt2_evidence.train_checkpoint --steps 5 --out /tmp/a
    python -m gpt2_evidence.train_checkpoint --steps 5 --out /tmp/b
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "data" / "trained"
WEIGHTS = "model.safetensors"
RECORD = "training.json"

#: Modules of the standard library in the corpus (paths under the stdlib directory). Plain,
#: long-lived Python modules; sorted so the corpus is the same list in the same order.
STDLIB_FILES = tuple(
    sorted(
        (
            "argparse.py",
            "ast.py",
            "bisect.py",
            "calendar.py",
            "collections/__init__.py",
            "configparser.py",
            "contextlib.py",
            "csv.py",
            "dataclasses.py",
            "datetime.py",
            "decimal.py",
            "difflib.py",
            "enum.py",
            "fractions.py",
            "functools.py",
            "gettext.py",
            "heapq.py",
            "inspect.py",
            "json/decoder.py",
            "json/encoder.py",
            "logging/__init__.py",
            "pathlib.py",
            "pprint.py",
            "random.py",
            "shutil.py",
            "statistics.py",
            "string.py",
            "subprocess.py",
            "tempfile.py",
            "textwrap.py",
            "threading.py",
            "typing.py",
            "unittest/case.py",
            "zipfile.py",
        )
    )
)

#: The run's settings; recorded in training.json.
SETTINGS: dict[str, Any] = {
    "vocab_size": 256,
    "n_positions": 256,
    "n_embd": 128,
    "n_layer": 4,
    "n_head": 4,
    "batch_size": 16,
    "steps": 700,
    "peak_lr": 3e-3,
    "min_lr_fraction": 0.1,
    "warmup_steps": 40,
    "weight_decay": 0.1,
    "betas": [0.9, 0.95],
    "grad_clip": 1.0,
    "init_seed": 1234,
    "data_seed": 5678,
    "log_every": 25,
    "eval_every": 50,
    "eval_batches": 8,
    "heldout_fraction": 0.05,
}


def corpus_files() -> list[tuple[str, Path]]:
    """(label, path) of every corpus file, in corpus order: project Markdown, then stdlib."""
    files = [(f"project:{p.relative_to(ROOT)}", p) for p in sorted((ROOT / "spec").glob("*.md"))]
    files += [(f"project:{p.relative_to(ROOT)}", p) for p in sorted((ROOT / "docs").rglob("*.md"))]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_FILES:
        path = stdlib / name
        if not path.is_file():
            raise SystemExit(f"the standard library has no {name} at {path}: another Python?")
        files.append((f"stdlib:{name}", path))
    return files


def build_corpus() -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The corpus as uint8 token ids (bytes), files joined by a NUL byte, and its manifest."""
    parts, manifest = [], []
    for label, path in corpus_files():
        data = path.read_bytes()
        parts.append(data + b"\x00")
        manifest.append(
            {"file": label, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
    return np.frombuffer(b"".join(parts), dtype=np.uint8), manifest


def learning_rate(step: int, settings: dict[str, Any]) -> float:
    """Linear warm-up, then cosine decay from the peak to ``min_lr_fraction`` of it."""
    peak, warmup, total = settings["peak_lr"], settings["warmup_steps"], settings["steps"]
    if step < warmup:
        return float(peak * (step + 1) / warmup)
    progress = (step - warmup) / max(1, total - warmup)
    floor = settings["min_lr_fraction"]
    return float(peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train, write the checkpoint into ``out``, and return the record (also written)."""
    import torch

    from gpt2_reference.model import GPT2
    from gpt2_spec import GPT2Config

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(settings["init_seed"])

    tokens, manifest = build_corpus()
    split = int(len(tokens) * (1 - settings["heldout_fraction"]))
    train_ids, heldout_ids = tokens[:split], tokens[split:]
    T, B = settings["n_positions"], settings["batch_size"]
    config = GPT2Config(
        vocab_size=settings["vocab_size"],
        n_positions=T,
        n_embd=settings["n_embd"],
        n_layer=settings["n_layer"],
        n_head=settings["n_head"],
    )
    model = GPT2(config, seed=settings["init_seed"])
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim != 2]
    optimiser = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings["peak_lr"],
        betas=tuple(settings["betas"]),
        foreach=False,
    )
    rng = np.random.default_rng(settings["data_seed"])

    def batch(ids: np.ndarray, generator: np.random.Generator) -> torch.Tensor:
        starts = generator.integers(0, len(ids) - T, size=B)
        return torch.from_numpy(np.stack([ids[s : s + T] for s in starts]).astype(np.int64))

    def heldout_loss() -> float:
        evaluation = np.random.default_rng(settings["data_seed"] + 1)  # the same batches each time
        model.eval()
        with torch.no_grad():
            losses = [
                float(model(x, labels=x).loss)
                for x in (batch(heldout_ids, evaluation) for _ in range(settings["eval_batches"]))
            ]
        model.train()
        return float(np.mean(losses))

    curve: list[dict[str, float]] = []
    window: list[float] = []
    started = time.perf_counter()
    for step in range(settings["steps"]):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, settings)
        x = batch(train_ids, rng)
        loss = model(x, labels=x).loss
        assert loss is not None
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
        optimiser.step()
        window.append(float(loss))
        done = step + 1
        if done % settings["log_every"] == 0 or done == settings["steps"]:
            point: dict[str, float] = {"step": done, "train_loss": float(np.mean(window))}
            window = []
            if done % settings["eval_every"] == 0 or done == settings["steps"]:
                point["heldout_loss"] = heldout_loss()
            curve.append(point)
            elapsed = time.perf_counter() - started
            print(
                f"step {done:5d}  train {point['train_loss']:.4f}"
                + (f"  heldout {point['heldout_loss']:.4f}" if "heldout_loss" in point else "")
                + f"  ({elapsed:.0f} s)",
                flush=True,
            )

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    digest = sha256_of(out / WEIGHTS)
    record = {
        "settings": settings,
        "config": config.to_hf_dict(),
        "parameters": model.num_parameters(),
        "tokenizer": "bytes (token id = byte value, 0..255; files joined by a NUL byte)",
        "corpus": {
            "tokens": len(tokens),
            "train_tokens": len(train_ids),
            "heldout_tokens": len(heldout_ids),
            "sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
            "files": manifest,
        },
        "software": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "curve": curve,
        "weights": WEIGHTS,
        "sha256": digest,
    }
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


# ------------------------------------------------------------------------------------------
# Statistics: the trained weights beside the random-weight domain
# ------------------------------------------------------------------------------------------

STATISTICS = ROOT / "docs" / "data" / "trained-checkpoint.json"
#: The random weights the suite draws (spec chapter 7, DOMAIN["weight_scales"]["float32"]):
#: None is GPT-2's initialisation.
RANDOM_SCALES: tuple[float | None, ...] = (None, 0.1, 0.3)


def activation_statistics(config: Any, params: dict[str, np.ndarray], tokens: np.ndarray) -> dict:
    """Per layer, in float64 with the reference model: the residual stream's and the MLP input's
    largest magnitude over their RMS (outlier features), and the attention's entropy as a
    fraction of the uniform distribution's over the visible keys (1: uniform, 0: one-hot) and
    the share of query rows whose largest probability exceeds 0.9 (peaked). Plus every
    LayerNorm's gains: largest and mean magnitude."""
    import torch

    from gpt2_reference.model import GPT2

    model = GPT2(config).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    model.eval()
    captured: dict[str, list[torch.Tensor]] = {"residual": [], "qkv": [], "mlp_in": []}
    hooks = []

    def keep(kind: str, first: bool = False) -> Any:
        return lambda module, inputs, output: captured[kind].append(output[0] if first else output)

    for block in model.transformer.h:
        hooks.append(block.register_forward_hook(keep("residual", first=True)))
        hooks.append(block.attn.c_attn.register_forward_hook(keep("qkv")))
        hooks.append(block.mlp.c_fc.register_forward_hook(keep("mlp_in")))
    with torch.no_grad():
        model(torch.from_numpy(tokens))
    for hook in hooks:
        hook.remove()

    def outlier(x: torch.Tensor) -> float:
        return float(x.abs().max() / x.pow(2).mean().sqrt())

    d, H = config.n_embd, config.n_head
    layers = []
    for layer, (residual, qkv, mlp_in) in enumerate(
        zip(captured["residual"], captured["qkv"], captured["mlp_in"], strict=True)
    ):
        B, T, _ = qkv.shape
        q, k, _v = (t.view(B, T, H, d // H).transpose(1, 2) for t in qkv.split(d, dim=2))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)  # [B,H,T,T]
        entropy = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1)[..., 1:]  # t >= 1
        uniform = torch.log(torch.arange(2, T + 1, dtype=torch.float64))
        peak = probs.max(-1).values[..., 1:]
        layers.append(
            {
                "layer": layer,
                "residual_max_over_rms": outlier(residual),
                "mlp_in_max_over_rms": outlier(mlp_in),
                "attention_entropy_fraction": float((entropy / uniform).mean()),
                "attention_peaked_rows": float((peak > 0.9).double().mean()),
            }
        )
    gains = {
        name.removeprefix("transformer.").removesuffix(".weight"): value
        for name, value in params.items()
        if (".ln_" in name or "ln_f" in name) and name.endswith(".weight")
    }
    return {
        "layers": layers,
        "layernorm_gain_max": float(max(np.abs(g).max() for g in gains.values())),
        "layernorm_gain_mean": float(np.mean([np.abs(g).mean() for g in gains.values()])),
        "layernorm_gains": {
            name: {"max": float(np.abs(g).max()), "mean": float(np.abs(g).mean())}
            for name, g in gains.items()
        },
    }


def measure_statistics(path: Path, *, batch: int = 4, seed: int = 0) -> dict[str, Any]:
    """The statistics of the checkpoint at ``path`` and of random weights of its shape at each
    of :data:`RANDOM_SCALES`, on the same ``batch`` windows of the corpus (full context)."""
    import torch

    from gpt2_evidence import provenance
    from gpt2_reference import oracle
    from gpt2_reference.checkpoint import load_checkpoint, to_numpy_params

    torch.set_num_threads(1)
    config, state = load_checkpoint(path)
    trained = to_numpy_params(state)
    text, _ = build_corpus()
    rng = np.random.default_rng(seed)
    T = config.n_positions
    tokens = np.stack([text[s : s + T] for s in rng.integers(0, len(text) - T, batch)]).astype(
        np.int64
    )
    weights = [{"weights": "trained", **activation_statistics(config, trained, tokens)}]
    for scale in RANDOM_SCALES:
        params = oracle.random_params(config, seed=seed, scale=scale)
        label = "random, GPT-2 init" if scale is None else f"random, scale {scale}"
        weights.append({"weights": label, **activation_statistics(config, params, tokens)})
    return {
        "checkpoint": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "tokens": f"{batch} windows of {T} bytes of the training corpus (seed {seed})",
        "weights": weights,
        "provenance": provenance.collect(),
    }


def conformance_run(report: dict[str, Any]) -> dict[str, Any]:
    """A suite report (``--conformance-report``) of a ``--checkpoint`` run, in brief: what ran,
    the requirement statuses, and every requirement's margin (worst error over its bound)."""
    implementation, hypothesis = report["implementation"], report["hypothesis"]
    margins = {r["id"]: r["margin"] for r in report["requirements"] if r.get("margin") is not None}
    return {
        "impl": implementation.get("adapter", implementation.get("name")),
        "dtype": implementation.get("dtype"),
        "checkpoint": implementation.get("checkpoint"),
        "profile": hypothesis.get("profile"),
        "max_examples": hypothesis.get("max_examples"),
        "summary": report["summary"],
        "classes": {name: c["status"] for name, c in report.get("classes", {}).items()},
        "duration_s": round(float(report.get("duration_s", 0.0)), 1),
        "margins": dict(sorted(margins.items(), key=lambda item: -item[1])),
    }


# ------------------------------------------------------------------------------------------
# Markdown (the docs build imports this; it needs neither torch nor the checkpoint)
# ------------------------------------------------------------------------------------------

_COLOURS = ("#c0392b", "#2e86c1", "#27ae60", "#8e44ad")


def _loss_svg(curve: list[dict[str, float]]) -> str:
    """The training and held-out loss against the step, as an inline SVG line chart."""
    width, height, left, bottom, top, right = 640, 260, 50, 36, 14, 120
    steps = [p["step"] for p in curve]
    values = [p["train_loss"] for p in curve] + [
        p["heldout_loss"] for p in curve if "heldout_loss" in p
    ]
    lo, hi = math.floor(min(values) * 2) / 2, math.ceil(max(values) * 2) / 2
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(step: float, loss: float) -> str:
        x = left + plot_w * step / max(steps)
        y = top + plot_h * (hi - loss) / (hi - lo)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="12">',
        "<title>Loss of the trained checkpoint against the training step</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
    ]
    tick = lo
    while tick <= hi + 1e-9:
        y = top + plot_h * (hi - tick) / (hi - lo)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        tick += 0.5
    for step in (0, max(steps) // 2, max(steps)):
        x = left + plot_w * step / max(steps)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{step}</text>'
        )
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">step</text>')
    series = (
        ("train (mean of the interval)", "train_loss", _COLOURS[1]),
        ("held-out", "heldout_loss", _COLOURS[0]),
    )
    for i, (name, key, colour) in enumerate(series):
        points = " ".join(xy(p["step"], p[key]) for p in curve if key in p)
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        y = top + 14 + 18 * i
        parts.append(
            f'<line x1="{left + plot_w + 8}" y1="{y - 4}" x2="{left + plot_w + 24}" '
            f'y2="{y - 4}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{left + plot_w + 28}" y="{y}">{name.split(" ")[0]}</text>')
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 '
        f'{top + plot_h / 2})" text-anchor="middle">loss (nats/byte)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


#: The per-layer statistics drawn, with their labels.
_PANELS = (
    ("residual_max_over_rms", "residual stream: max |x| / RMS"),
    ("mlp_in_max_over_rms", "MLP input (c_fc): max |x| / RMS"),
    ("attention_entropy_fraction", "attention entropy / uniform"),
    ("attention_peaked_rows", "share of peaked rows (max p > 0.9)"),
)


def _statistics_svg(weights: list[dict[str, Any]]) -> str:
    """Four small panels of grouped bars: each statistic per layer, one bar per weights."""
    panel_w, panel_h, gap, legend = 300, 170, 30, 30
    width, height = 2 * panel_w + gap + 20, 2 * (panel_h + gap) + legend
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="12">',
        "<title>Activation statistics per layer: trained weights beside random weights</title>",
    ]
    for i, w in enumerate(weights):
        x = 20 + 150 * i
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{_COLOURS[i % len(_COLOURS)]}"/>'
        )
        parts.append(f'<text x="{x + 16}" y="16">{w["weights"]}</text>')
    for n, (key, title) in enumerate(_PANELS):
        ox = 10 + (n % 2) * (panel_w + gap)
        oy = legend + 14 + (n // 2) * (panel_h + gap)
        values = [[layer[key] for layer in w["layers"]] for w in weights]
        top = max(max(v) for v in values) or 1.0
        layers = len(values[0])
        inner_h = panel_h - 36
        parts.append(f'<text x="{ox}" y="{oy}">{title}</text>')
        base = oy + 8 + inner_h
        parts.append(f'<line x1="{ox}" y1="{base}" x2="{ox + panel_w}" y2="{base}" stroke="#333"/>')
        group = panel_w / layers
        bar = (group - 10) / len(weights)
        for layer in range(layers):
            for j, series in enumerate(values):
                h = inner_h * series[layer] / top
                x = ox + layer * group + 5 + j * bar
                parts.append(
                    f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                    f'fill="{_COLOURS[j % len(_COLOURS)]}"><title>{weights[j]["weights"]}, layer '
                    f"{layer}: {series[layer]:.3g}</title></rect>"
                )
            parts.append(
                f'<text x="{ox + layer * group + group / 2:.1f}" y="{base + 14}" '
                f'text-anchor="middle">layer {layer}</text>'
            )
        parts.append(f'<text x="{ox + panel_w}" y="{oy}" text-anchor="end">max {top:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def plateau(curve: list[dict[str, float]], *, tail: float = 0.2) -> dict[str, float]:
    """How flat the end of the held-out curve is: the drop over the last ``tail`` of the steps
    as a fraction of the whole drop (first to last held-out point)."""
    points = [(p["step"], p["heldout_loss"]) for p in curve if "heldout_loss" in p]
    last_step = points[-1][0]
    start = min((p for p in points if p[0] >= last_step * (1 - tail)), key=lambda p: p[0])
    total = points[0][1] - points[-1][1]
    return {
        "first": points[0][1],
        "last": points[-1][1],
        "tail_start_step": start[0],
        "tail_drop": start[1] - points[-1][1],
        "tail_share_of_drop": (start[1] - points[-1][1]) / total if total > 0 else float("nan"),
    }


def render_markdown(data: dict[str, Any]) -> str:
    """The statistics page section (``docs/data/trained-checkpoint.json``) with the loss curve
    from the committed ``training.json``."""
    record = json.loads((OUT / RECORD).read_text(encoding="utf-8"))
    flat = plateau(record["curve"])
    settings = record["settings"]
    lines = [
        f"The checkpoint: `{record['config']['n_layer']}` layers, d = {settings['n_embd']}, "
        f"{settings['n_head']} heads, context {settings['n_positions']}, byte vocabulary "
        f"({record['parameters']:,} parameters), trained for {settings['steps']} steps of "
        f"{settings['batch_size']} x {settings['n_positions']} bytes on "
        f"{record['corpus']['tokens']:,} bytes ({len(record['corpus']['files'])} files) in "
        f"{record['seconds'] / 60:.0f} minutes on one CPU thread (Python "
        f"{record['software']['python']}, torch {record['software']['torch']}). sha256 of "
        f"`model.safetensors`: `{record['sha256'][:16]}...`.",
        "",
        f"Held-out loss {flat['first']:.3f} -> {flat['last']:.3f} nats per byte; over the last "
        f"20% of the steps (from step {flat['tail_start_step']}) it fell by "
        f"{flat['tail_drop']:.3f}, {flat['tail_share_of_drop']:.1%} of the whole drop.",
        "",
        _loss_svg(record["curve"]),
        "",
        "| weights | LayerNorm gain max | LayerNorm gain mean | residual max/RMS (worst layer) "
        "| MLP input max/RMS (worst layer) | attention entropy / uniform (mean) "
        "| peaked rows (max p > 0.9) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in data["weights"]:
        layers = w["layers"]
        lines.append(
            f"| {w['weights']} | {w['layernorm_gain_max']:.2f} | {w['layernorm_gain_mean']:.2f} "
            f"| {max(x['residual_max_over_rms'] for x in layers):.1f} "
            f"| {max(x['mlp_in_max_over_rms'] for x in layers):.1f} "
            f"| {np.mean([x['attention_entropy_fraction'] for x in layers]):.2f} "
            f"| {np.mean([x['attention_peaked_rows'] for x in layers]):.1%} |"
        )
    lines += ["", _statistics_svg(data["weights"]), "", f"Inputs: {data['tokens']}.", ""]
    runs = data.get("conformance_runs", [])
    if runs:
        lines += [
            "### The built-ins on the trained checkpoint",
            "",
            "`python -m pytest --pyargs gpt2_conformance --impl=IMPL "
            "--checkpoint=docs/data/trained --dtype=DTYPE`; the margin is the worst error as a "
            "fraction of its bound over the run (see the false-alarms page), with its "
            "requirement.",
            "",
            "| implementation | dtype | profile | requirements | classes | worst margin "
            "| next worst | time |",
            "| --- | --- | --- | --- | --- | ---: | --- | ---: |",
        ]
        for run in runs:
            counts = ", ".join(f"{n} {k}" for k, n in run["summary"].items() if n)
            classes = ", ".join(f"{k}: {v}" for k, v in run["classes"].items())
            ranked = list(run["margins"].items())
            worst = f"{ranked[0][1]:.3f} (`{ranked[0][0]}`)" if ranked else "-"
            rest = ", ".join(f"`{k}` {v:.3f}" for k, v in ranked[1:3])
            lines.append(
                f"| `{run['impl']}` | {run['dtype']} | {run['profile']} ({run['max_examples']} "
                f"per property) | {counts} | {classes} | {worst} | {rest} "
                f"| {run['duration_s'] / 60:.0f} min |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    parser.add_argument(
        "--steps", type=int, default=None, help="override the step count (a quick check only)"
    )
    parser.add_argument(
        "--statistics",
        action="store_true",
        help=f"do not train: measure the checkpoint in --out beside random weights -> {STATISTICS}",
    )
    parser.add_argument(
        "--add-runs",
        nargs="+",
        default=[],
        metavar="REPORT",
        help=f"record these --checkpoint runs' JSON reports in {STATISTICS.name} (replacing a run "
        "of the same implementation and dtype)",
    )
    args = parser.parse_args(argv)
    if args.add_runs:
        data = json.loads(STATISTICS.read_text(encoding="utf-8"))
        runs = {(r["impl"], r["dtype"]): r for r in data.get("conformance_runs", [])}
        for path in args.add_runs:
            run = conformance_run(json.loads(Path(path).read_text(encoding="utf-8")))
            runs[(run["impl"], run["dtype"])] = run
        data["conformance_runs"] = sorted(runs.values(), key=lambda r: (r["impl"], r["dtype"]))
        STATISTICS.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return 0
    if args.statistics:
        data = measure_statistics(args.out)
        STATISTICS.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(render_markdown(data) if args.out == OUT else json.dumps(data, indent=1))
        return 0
    settings = dict(SETTINGS)
    if args.steps is not None:
        if args.steps < 1:
            parser.error("--steps must be at least 1")
        settings.update(
            steps=args.steps, warmup_steps=min(settings["warmup_steps"], args.steps), log_every=1
        )
    record = train(settings, args.out)
    print(f"{args.out / WEIGHTS}: sha256 {record['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
