"""Measure the agreement errors at a GPT-2-sized shape against the spec's float32 bounds.

The spec's tolerance table (chapter 7) was measured on small configurations (the spec's
``DOMAIN``). ``--conformance-shape=gpt2-small`` runs the suite at GPT-2 small's shape, so this
script measures, at that shape, the largest error of the reference and of transformers (eager and
sdpa) against the float64 oracle as a fraction of the spec's bound (``err / (atol + rtol *
scale)``; at most 1 passes, at most 0.2 keeps the table's safety factor of 5), per weight scale
of the float32 domain, for log-probabilities, raw logits, the mean loss and every parameter's
gradient, on the short rows the suite draws at that shape:

    python -m gpt2_evidence.measure_shape_tolerances --shape gpt2-small --draws 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gpt2_conformance.suite import SHAPES, WIDE_MODEL_LENGTH
from gpt2_evidence import measure_tolerances as measure
from gpt2_evidence.provenance import cpu_model
from gpt2_reference import oracle
from gpt2_spec import spec_definitions

S = spec_definitions()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape", default="gpt2-small", choices=[k for k, v in SHAPES.items() if v]
    )
    parser.add_argument("--draws", type=int, default=1, help="draws per weight scale")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=WIDE_MODEL_LENGTH)
    parser.add_argument("--no-gradients", action="store_true")
    args = parser.parse_args()
    config = SHAPES[args.shape]
    assert config is not None
    to_oracle = S.TOLERANCES[("oracle", "float32")]
    to_gradient = S.TOLERANCES[("gradient", "float32")]
    started = time.monotonic()
    worst: dict[tuple[str, str, str], float] = {}
    for scale in S.DOMAIN["weight_scales"]["float32"]:
        for draw in range(args.draws):
            params = oracle.random_params(config, seed=draw, scale=scale)
            rng = np.random.default_rng(draw)
            tokens = rng.integers(0, config.vocab_size, (args.batch, args.length))
            expected = oracle.forward(params, config, tokens).logits
            expected_logp = S.log_softmax(expected)
            expected_loss = oracle.loss(params, config, tokens, labels=tokens)
            grads = None
            if not args.no_gradients:
                grads = oracle.gradients(params, config, tokens, labels=tokens).grads
            x = torch.from_numpy(tokens)
            for name, module, _model in measure.implementations(
                config, params, torch.float32, "cpu"
            ):
                with torch.no_grad():
                    out = module(x, labels=x)
                logits = out.logits.double().numpy()
                found = {
                    "logp": measure.fraction_of_bound(
                        S.log_softmax(logits), expected_logp, to_oracle
                    ),
                    "logits": measure.fraction_of_bound(logits, expected, to_oracle),
                    "loss": measure.fraction_of_bound(
                        np.array([[float(out.loss)]]), np.array([[float(expected_loss)]]), to_oracle
                    ),
                }
                if grads is not None:
                    found["grads"] = measure.gradient_fraction(module, x, grads, to_gradient)
                label = "init" if scale is None else f"{scale:g}"
                for kind, value in found.items():
                    key = (name, label, kind)
                    worst[key] = max(worst.get(key, 0.0), value)
                print(
                    f"{name:20s} scale {label:5s} draw {draw}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in found.items()),
                    flush=True,
                )
                del module
    seconds = time.monotonic() - started
    print(
        f"\n{args.shape} ({config}), rows of {args.length} tokens, batch {args.batch}, float32, "
        f"{args.draws} draw(s) per scale in {seconds:.0f} s on {cpu_model()} "
        f"(torch {torch.__version__}); largest error as a fraction of the spec's bound:"
    )
    for (name, label, kind), value in sorted(worst.items()):
        print(f"  {name:20s} {label:5s} {kind:6s} {value:.3f}")


if __name__ == "__main__":
    main()
