"""Measure how far honest GPT-2 implementations land from the float64 oracle, per dtype.

The spec's tolerance table (chapter 7, ``TOLERANCES``) is justified by this script's output.
For every comparison the suite makes, it prints the largest observed error as a fraction of the
spec's bound (``err / (atol + rtol * scale)``) over many random draws of the spec's ``DOMAIN``.
A fraction of at most 0.2 leaves the promised safety factor of 5. Rerun it after changing the
domain, the table, or adding an implementation:

    python -m gpt2_evidence.measure_tolerances --draws 300

Comparisons: ``logp`` (log-probabilities vs the oracle), ``logits`` (raw logits vs the oracle,
float32 only), ``loss`` (mean loss vs the oracle), ``grads`` (every parameter's gradient vs the
oracle's backward, per tensor, on the gradient domain), and self-consistency: ``prefix`` (the
implementation on a prefix vs on the full sequence), ``head`` (logits vs the implementation's own
final hidden states times its head matrix, in float64) and, for the reference, ``cache`` (cached
decoding vs the full forward).

``--checkpoint DIR`` measures the same comparisons on a trained checkpoint instead (the project's
``docs/data/trained``, from ``python -m gpt2_evidence.train_checkpoint``), on windows of its
training text and on random token ids, and ``--out`` writes the result as JSON (the *trained* rows
of chapter 7's table)::

    python -m gpt2_evidence.measure_tolerances --checkpoint docs/data/trained --draws 12 \
        --gradient-draws 4 --out docs/data/tolerances-trained.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2_evidence import provenance
from gpt2_evidence.provenance import cpu_model
from gpt2_reference import oracle
from gpt2_reference.model import GPT2
from gpt2_spec import GPT2Config, spec_definitions

S = spec_definitions()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Run = Callable[[torch.Tensor], object]


def gradient_fraction(
    module: torch.nn.Module, x: torch.Tensor, expected: oracle.Params, tol: object
) -> float:
    """Largest per-tensor gradient error (vs the oracle) as a fraction of the spec's bound."""
    module.zero_grad(set_to_none=True)
    module(x, labels=x).loss.backward()
    worst = 0.0
    for name, p in module.named_parameters():
        got = p.grad.double().cpu().numpy()
        worst = max(worst, fraction_of_bound(got, expected[name], tol, whole=True))
    module.zero_grad(set_to_none=True)
    return worst


def logits_and_head_error(output: object, head: torch.Tensor, tol: object) -> tuple:
    """The logits (float64 NumPy) and, for head.linear-no-bias, their distance to h @ W^T."""
    logits = output.logits.double().cpu().numpy()  # type: ignore[attr-defined]
    hidden = getattr(output, "hidden_states", None)
    if isinstance(hidden, tuple):  # transformers: the last entry is after ln_f
        hidden = hidden[-1]
    product = hidden.double().cpu().numpy() @ head.double().cpu().numpy().T
    return logits, fraction_of_bound(logits, product, tol)


def fraction_of_bound(
    actual: np.ndarray, expected: np.ndarray, tol: object, *, whole: bool = False
) -> float:
    """Largest row error as a fraction of the spec's bound for that row (1.0: at the bound).

    Both the error and the bound come from the spec's ``row_excess``: with a zero tolerance it
    is the row's error, and ``row_excess(expected, expected, tol)`` is minus its bound. A scalar
    is one row; ``whole`` judges the tensor as one row, as chapter 7 does for a gradient tensor.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.ndim == 0 or whole:
        actual, expected = actual.reshape(1, -1), expected.reshape(1, -1)
    error = S.row_excess(actual, expected, S.Tolerance(atol=0.0, rtol=0.0))
    bound = -S.row_excess(expected, expected, tol)
    return float((error / bound).max())


def implementations(
    config: GPT2Config, params: oracle.Params, dtype: torch.dtype, device: str
) -> Iterator[tuple[str, torch.nn.Module, GPT2 | None]]:
    tensors = {k: torch.from_numpy(v) for k, v in params.items()}
    model = GPT2(config)
    model.load_state_dict(tensors)
    model = model.to(device=device, dtype=dtype).eval()
    yield "reference", model, model
    try:
        import transformers
    except ImportError:
        return
    transformers.logging.set_verbosity_error()
    for attn in ("eager", "sdpa"):
        hf_config = transformers.GPT2Config(
            **config.to_hf_dict(), bos_token_id=0, eos_token_id=0, attn_implementation=attn
        )
        hf = transformers.GPT2LMHeadModel(hf_config)
        hf.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
        hf.tie_weights()
        hf = hf.to(device=device, dtype=dtype).eval()
        yield f"transformers-{attn}", hf, None


def params_head(
    model: GPT2 | None, config: GPT2Config, params: oracle.Params, dtype: torch.dtype, device: str
) -> torch.Tensor:
    """The head matrix as the implementation holds it (wte, rounded to its dtype)."""
    if model is not None:
        return model.head_weight.detach()
    return torch.from_numpy(params["transformer.wte.weight"]).to(device=device, dtype=dtype)


def measure(
    config: GPT2Config,
    params: oracle.Params,
    tokens: np.ndarray,
    k: int,
    dtype_name: str,
    device: str,
    *,
    gradients: bool,
) -> dict[tuple[str, str], float]:
    """Every comparison's largest error as a fraction of its bound, per implementation:
    ``(comparison, implementation) -> fraction`` for one batch ``tokens`` (prefix length ``k``)
    at one dtype; ``gradients``: compare the gradients too."""
    dtype = DTYPES[dtype_name]
    expected = oracle.forward(params, config, tokens).logits
    expected_loss = S.causal_lm_loss(expected, S.shift_labels(tokens))
    expected_grads = (
        oracle.gradients(params, config, tokens, labels=tokens).grads if gradients else None
    )
    to_oracle = S.TOLERANCES[("oracle", dtype_name)]
    to_self = S.TOLERANCES[("self", dtype_name)]
    x = torch.from_numpy(tokens).to(device)
    result: dict[tuple[str, str], float] = {}
    for name, module, model in implementations(config, params, dtype, device):

        def run(t: torch.Tensor, module: torch.nn.Module = module, ours: object = model) -> object:
            return module(t, output_hidden_states=True) if ours is None else module(t)

        head = params_head(model, config, params, dtype, device)
        with torch.no_grad():
            full, head_fraction = logits_and_head_error(run(x), head, to_self)
            prefix = run(x[:, :k]).logits.double().cpu().numpy()  # type: ignore[attr-defined]
        found = {
            "head": head_fraction,
            "logp": fraction_of_bound(S.log_softmax(full), S.log_softmax(expected), to_oracle),
            "loss": fraction_of_bound(
                np.array([S.causal_lm_loss(full, S.shift_labels(tokens))]),
                np.array([expected_loss]),
                to_oracle,
            ),
            "prefix": fraction_of_bound(S.log_softmax(prefix), S.log_softmax(full[:, :k]), to_self),
        }
        if dtype_name == "float32":
            found["logits"] = fraction_of_bound(full, expected, to_oracle)
        if expected_grads is not None:
            to_gradient = S.TOLERANCES[("gradient", dtype_name)]
            found["grads"] = gradient_fraction(module, x, expected_grads, to_gradient)
        if model is not None:
            with torch.no_grad():
                first = model(x[:, :k], use_cache=True)
                rest = model(x[:, k:], past_key_values=first.past_key_values)
            cached = torch.cat([first.logits, rest.logits], 1).double().cpu().numpy()
            found["cache"] = fraction_of_bound(S.log_softmax(cached), S.log_softmax(full), to_self)
        for comparison, value in found.items():
            result[(comparison, name)] = value
    return result


def measure_random(draws: int, seed: int, device: str) -> dict[tuple[str, str, str, str], float]:
    """The random-weight measurement over ``DOMAIN``: (dtype, comparison, scale, implementation)
    -> the largest fraction of the bound over ``draws`` draws."""
    rng = np.random.default_rng(seed)
    domain = S.DOMAIN
    worst: dict[tuple[str, str, str, str], float] = collections.defaultdict(float)
    for draw in range(draws):
        n_head = int(rng.choice([1, 2, 4]))
        config = GPT2Config(
            vocab_size=int(rng.integers(8, 256)),
            n_positions=domain["max_positions"],
            n_embd=n_head * int(rng.choice([4, 8, 16, 32])),
            n_layer=int(rng.integers(1, domain["max_n_layer"] + 1)),
            n_head=n_head,
        )
        shape = (int(rng.integers(1, 5)), int(rng.integers(2, domain["max_positions"] + 1)))
        tokens = rng.integers(0, config.vocab_size, shape)
        k = int(rng.integers(1, shape[1]))  # prefix length
        for dtype_name in DTYPES:
            scales = domain["weight_scales"][dtype_name]
            scale = scales[draw % len(scales)]
            params = oracle.random_params(config, seed=draw, scale=scale)
            label = "init" if scale is None else str(scale)
            gradients = scale in domain["gradient_weight_scales"][dtype_name]
            found = measure(config, params, tokens, k, dtype_name, device, gradients=gradients)
            for (comparison, name), value in found.items():
                key = (dtype_name, comparison, label, name)
                worst[key] = max(worst[key], value)
    return worst


def measure_trained(
    path: str, draws: int, seed: int, device: str, *, gradient_draws: int
) -> dict[str, Any]:
    """The same comparisons on a trained checkpoint (``python -m gpt2_evidence.train_checkpoint``):
    half the batches random token ids (what the suite draws), half windows of the training
    corpus (text the model predicts well: peaked distributions), lengths up to its context.
    Gradients are compared on the first ``gradient_draws`` draws of each dtype (the oracle's
    float64 backward at T=256 is the slow part). Returns the JSON-ready record."""
    from gpt2_evidence.train_checkpoint import build_corpus
    from gpt2_reference.checkpoint import load_checkpoint, to_numpy_params

    config, state = load_checkpoint(path)
    params = to_numpy_params(state)
    text, _ = build_corpus()
    rng = np.random.default_rng(seed)
    worst: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    started = time.perf_counter()
    for draw in range(draws):
        batch = int(rng.integers(1, 4))
        length = int(rng.integers(2, config.n_positions + 1))
        if draw % 2:
            tokens = rng.integers(0, config.vocab_size, (batch, length))
            kind = "random"
        else:
            starts = rng.integers(0, len(text) - length, batch)
            tokens = np.stack([text[s : s + length] for s in starts]).astype(np.int64)
            kind = "text"
        k = int(rng.integers(1, length))
        for dtype_name in DTYPES:
            found = measure(
                config, params, tokens, k, dtype_name, device, gradients=draw < gradient_draws
            )
            for (comparison, name), value in found.items():
                key = (dtype_name, comparison, name)
                worst[key] = max(worst[key], value)
        print(f"draw {draw + 1}/{draws} ({kind}, {batch}x{length})", flush=True)
    rows = [
        {"dtype": d, "comparison": c, "implementation": n, "fraction": round(v, 6)}
        for (d, c, n), v in sorted(worst.items())
    ]
    return {
        "checkpoint": str(path),
        "draws": draws,
        "gradient_draws": gradient_draws,
        "seed": seed,
        "device": device,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "provenance": provenance.collect(),
    }


def trained_table(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """dtype -> comparison -> the largest fraction over the implementations."""
    table: dict[str, dict[str, float]] = {}
    for row in data["rows"]:
        cells = table.setdefault(row["dtype"], {})
        cells[row["comparison"]] = max(cells.get(row["comparison"], 0.0), row["fraction"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="measure on this trained checkpoint instead of random weights "
        "(docs/data/trained, written by python -m gpt2_evidence.train_checkpoint)",
    )
    parser.add_argument(
        "--gradient-draws", type=int, default=4, help="with --checkpoint: draws with gradients"
    )
    parser.add_argument("--out", default=None, help="with --checkpoint: write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.checkpoint is not None:
        data = measure_trained(
            args.checkpoint, args.draws, args.seed, args.device, gradient_draws=args.gradient_draws
        )
        table = trained_table(data)
        for dtype_name, cells in table.items():
            print(dtype_name, " ".join(f"{c}={v:.3f}" for c, v in sorted(cells.items())))
        if args.out:
            Path(args.out).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return
    start = time.perf_counter()
    worst = measure_random(args.draws, args.seed, args.device)
    seconds = time.perf_counter() - start
    print(f"{args.draws} draws in {seconds:.0f} s on {args.device} ({cpu_model()}),")
    print(f"torch {torch.__version__}; largest error as a fraction of the spec's bound:")
    print(f"{'dtype':9} {'comparison':10} {'scale':6} {'implementation':20} {'fraction':>9}")
    for (dtype_name, comparison, label, name), value in sorted(worst.items()):
        print(f"{dtype_name:9} {comparison:10} {label:6} {name:20} {value:9.3f}")
    print(f"largest fraction overall: {max(worst.values()):.3f} (the spec promises <= 0.2)")


if __name__ == "__main__":
    main()
