"""Check that the reference model computes the same thing on a CUDA device as on the CPU.

For each shape (a tiny one and GPT-2 small's) the script builds the reference model with seeded
random weights, runs the same batch on the CPU in float32 and on the device in float32 and
bfloat16, and compares the logits, the mean loss and the token-embedding gradient:

- CPU float32 and device float32 against the float64 NumPy oracle, and against each other, with
  the spec's ``TOLERANCES[("oracle", "float32")]`` (chapter 7);
- device bfloat16 against the oracle with ``TOLERANCES[("oracle", "bfloat16")]``.

Each comparison prints its worst row as a fraction of the spec's bound (1.0 = exactly at the
bound), so the margin is visible, and the whole result is written as JSON::

    python -m gpt2_evidence.cpu_gpu_agreement --device cuda --out agreement.json

The spec promises its bounds only inside ``DOMAIN`` (tiny configurations); the GPT-2 small rows
show how far the same bounds hold at full width, and are reported, not asserted. The exit status
is 1 if a comparison inside the domain exceeds its bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from gpt2_evidence import provenance


def _run(model: Any, tokens: Any, device: str, dtype: Any) -> dict[str, np.ndarray]:
    import torch

    model = model.to(device=device, dtype=dtype)
    model.zero_grad(set_to_none=True)
    ids = tokens.to(device)
    out = model(ids, labels=ids)
    out.loss.backward()
    grad = model.head_weight.grad
    assert grad is not None
    result = {
        "logits": out.logits.detach().to("cpu", torch.float64).numpy(),
        "loss": out.loss.detach().to("cpu", torch.float64).numpy(),
        "wte_grad": grad.detach().to("cpu", torch.float64).numpy(),
    }
    model.to(device="cpu", dtype=torch.float32)
    return result


def check_shape(name: str, config: Any, *, batch: int, seq: int, device: str) -> dict[str, Any]:
    import torch

    from gpt2_evidence import measure_tolerances as measure
    from gpt2_reference import GPT2, oracle
    from gpt2_reference.checkpoint import to_numpy_params
    from gpt2_spec import spec_definitions

    tolerances = spec_definitions().TOLERANCES
    model = GPT2(config, seed=0)
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, config.vocab_size, (batch, seq)))
    params = to_numpy_params(model.state_dict())
    start = time.perf_counter()
    reference = oracle.gradients(params, config, tokens.numpy(), labels=tokens.numpy())
    oracle_s = time.perf_counter() - start
    expected = {
        "logits": reference.logits,
        "loss": np.asarray(reference.loss),
        "wte_grad": reference.grads["transformer.wte.weight"],
    }
    runs = {
        "cpu-float32": _run(model, tokens, "cpu", torch.float32),
        f"{device}-float32": _run(model, tokens, device, torch.float32),
        f"{device}-bfloat16": _run(model, tokens, device, torch.bfloat16),
    }
    rows: list[dict[str, Any]] = []

    def compare(run_name: str, against: str, dtype: str, got: Any, want: Any) -> None:
        for quantity in ("logits", "loss", "wte_grad"):
            kind = "gradient" if quantity == "wte_grad" else "oracle"
            tol = tolerances[(kind, dtype)]
            rows.append(
                {
                    "shape": name,
                    "run": run_name,
                    "against": against,
                    "quantity": quantity,
                    "max_abs_diff": float(np.abs(got[quantity] - want[quantity]).max()),
                    "fraction_of_bound": measure.fraction_of_bound(
                        got[quantity], want[quantity], tol, whole=kind == "gradient"
                    ),
                    "tolerance": f"{kind}/{dtype}",
                }
            )

    for run_name, got in runs.items():
        compare(run_name, "oracle (float64)", run_name.split("-")[-1], got, expected)
    cpu, dev = runs["cpu-float32"], runs[f"{device}-float32"]
    compare(f"{device}-float32", "cpu-float32", "float32", dev, cpu)
    return {"shape": name, "batch": batch, "seq": seq, "oracle_seconds": oracle_s, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device to compare with the CPU")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--shapes", default="tiny,gpt2-small", help="comma-separated: tiny, gpt2-small"
    )
    args = parser.parse_args(argv)

    import torch

    from gpt2_spec.config import GPT2Config

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"error: --device {args.device} asked for, but torch {torch.__version__} sees no CUDA "
            "device; run this on a machine with a GPU (or pass --device cpu to try the script).",
            file=sys.stderr,
        )
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 rows are promised in true fp32
    torch.backends.cudnn.allow_tf32 = False
    shapes = {
        "tiny": (
            GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4),
            2,
            32,
        ),
        "gpt2-small": (GPT2Config.gpt2_small(), 2, 64),
    }
    wanted = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in shapes]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {sorted(shapes)}")
    results = []
    for name in wanted:
        config, batch, seq = shapes[name]
        results.append(check_shape(name, config, batch=batch, seq=seq, device=args.device))
    device_name = (
        torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    )
    failed = False
    print(f"{'shape':<11} {'run':<15} {'against':<17} {'quantity':<9} {'max|diff|':>10} bound")
    for result in results:
        for row in result["rows"]:
            inside = row["shape"] == "tiny"
            over = row["fraction_of_bound"] > 1.0
            failed |= inside and over
            flag = " EXCEEDS" if over else ""
            print(
                f"{row['shape']:<11} {row['run']:<15} {row['against']:<17} {row['quantity']:<9} "
                f"{row['max_abs_diff']:10.2e} {row['fraction_of_bound']:5.3f}{flag}"
            )
    data = {
        "device": device_name,
        "provenance": provenance.collect(device=args.device),
        "tf32": False,
        "results": results,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(data, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
