"""Demo: load a checkpoint that transformers itself wrote into the reference model, and print how
closely the reference, transformers' GPT2LMHeadModel and the NumPy oracle agree.

    python -m gpt2_reference.demo                 # a small random GPT-2, written by transformers
    python -m gpt2_reference.demo --checkpoint DIR  # a save_pretrained directory (e.g. real GPT-2)

No weights are downloaded: without --checkpoint the demo builds a random GPT-2 with transformers,
saves it with ``save_pretrained`` (which omits the tied ``lm_head.weight``), and loads that.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpt2_reference import checkpoint, oracle
from gpt2_reference.model import GPT2
from gpt2_spec import SPEC_VERSION, GPT2Config, spec_definitions


def _write_transformers_checkpoint(directory: Path, config: GPT2Config, seed: int) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(**config.to_hf_dict(), bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(hf_config)
    with torch.no_grad():  # weights at 10x init scale, so GELU, softmax and LayerNorm work hard
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory)


def _transformers_logits(directory: Path, tokens: np.ndarray) -> np.ndarray | None:
    try:
        import transformers
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.double().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=32, help="sequence length to compare on")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.checkpoint
        if directory is None:
            directory = Path(tmp)
            config = GPT2Config(vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4)
            _write_transformers_checkpoint(directory, config, args.seed)
            print(f"wrote a random GPT-2 with transformers' save_pretrained to {directory}")

        start = time.perf_counter()
        try:
            model = GPT2.from_pretrained(directory).eval()
        except checkpoint.CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        config = model.config
        seconds = time.perf_counter() - start
        print(f"loaded {model.num_parameters():,} parameters in {seconds:.2f} s: {config}")
        tied = model.head_weight is model.transformer.wte.weight
        print(f"head tied to wte (one tensor): {tied}")

        rng = np.random.default_rng(args.seed)
        tokens = rng.integers(0, config.vocab_size, (2, min(args.tokens, config.n_positions)))
        with torch.no_grad():
            ours = model(torch.from_numpy(tokens)).logits.double().numpy()
        params = checkpoint.to_numpy_params(model.state_dict())
        truth = oracle.forward(params, config, tokens).logits
        theirs = _transformers_logits(directory, tokens)

        S = spec_definitions()
        print(f"spec {SPEC_VERSION}; {tokens.shape[0]} sequences of {tokens.shape[1]} tokens")
        print(f"max |logit| (oracle, float64): {np.abs(truth).max():.3f}")
        pairs = [("reference (float32) vs oracle (float64)", ours, truth)]
        if theirs is not None:
            pairs += [
                ("reference vs transformers (both float32)", ours, theirs),
                ("transformers (float32) vs oracle (float64)", theirs, truth),
            ]
        tolerance = S.TOLERANCES[("oracle", "float32")]
        verdict = S.agree(S.log_softmax(ours), S.log_softmax(truth), tolerance)
        for label, a, b in pairs:
            print(f"max abs logit difference, {label}: {np.abs(a - b).max():.2e}")
        print(f"reference agrees with the oracle within the spec's float32 tolerance: {verdict}")
        loss = S.causal_lm_loss(ours, S.shift_labels(tokens))
        targets = tokens.shape[0] * (tokens.shape[1] - 1)
        print(f"mean next-token loss of the reference: {loss:.4f} nats over {targets} targets")
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
