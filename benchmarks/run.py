"""Benchmarks: the reference GPT-2 beside transformers' GPT2LMHeadModel (sdpa) and the NumPy oracle.

One command (see docs/benchmarks.md)::

    python -m gpt2_benchmarks --mode quick|full [--device cpu|cuda] [--dtype float32|bfloat16]
                              [--threads N] [--out docs/data/benchmarks.json]

What happens, per row (a model shape and a batch):

* every implementation gets the same weights (the reference's seeded initialisation, loaded into
  transformers by its canonical state-dict names and converted to float64 for the oracle) and the
  same token ids;
* timing: rounds that run each implementation once, in an order rotated every round, with the
  first rounds discarded as warm-up; per-call medians and quartiles, and per-round paired ratios;
* the matmul ceiling: in the same rounds, ``torch.matmul`` runs every GEMM shape the model needs
  (linear layers, attention, tied head; for training also their two backward GEMMs each), and
  its time is the practical lower bound for the model's time;
* memory: each implementation runs again in a fresh subprocess that reports its peak resident
  set (CPU, via /proc's VmHWM, reset before the measured call) or torch's CUDA allocator peak.

Only the standard library and :mod:`gpt2_evidence.provenance` (the machine and versions every
record carries) are imported at module level, so :func:`render_markdown` (used by the docs build)
stays cheap; torch, transformers and NumPy are imported inside the functions that
measure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gpt2_evidence import provenance

SCHEMA = 1
IMPLEMENTATIONS = ("reference", "transformers", "oracle")
WORKLOADS = ("forward", "train")
CEILING = "matmul-ceiling"
LR = 1e-4  # AdamW learning rate of the training step (its value does not affect the timing)


# --------------------------------------------------------------------------------------------
# What is measured


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark row: a model shape, a batch, and how many rounds to measure it for."""

    name: str
    n_embd: int
    n_layer: int
    n_head: int
    vocab_size: int
    n_positions: int
    batch: int
    seq: int
    rounds: int  # measured rounds (after the warm-up rounds)
    warmup: int  # discarded rounds
    min_sample_s: float  # calls are repeated within a sample until it lasts at least this long
    oracle_samples: int  # the oracle (slow, float64) joins only the first rounds; 0 = not at all

    def config_dict(self) -> dict[str, int]:
        return {
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
        }


_TINY = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=512, n_positions=64)
_SMALL = dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)
_MEDIUM = dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024)

PLANS: dict[tuple[str, str], list[Shape]] = {
    ("quick", "cpu"): [
        Shape("tiny", **_TINY, batch=4, seq=32, rounds=9, warmup=2, min_sample_s=0.05,
              oracle_samples=9),
        Shape("small-reduced", **_SMALL, batch=1, seq=64, rounds=3, warmup=1, min_sample_s=0.0,
              oracle_samples=1),
    ],
    ("full", "cpu"): [
        Shape("tiny", **_TINY, batch=4, seq=32, rounds=21, warmup=3, min_sample_s=0.2,
              oracle_samples=21),
        Shape("small", **_SMALL, batch=4, seq=256, rounds=6, warmup=1, min_sample_s=0.0,
              oracle_samples=3),
    ],
    ("quick", "cuda"): [
        Shape("tiny", **_TINY, batch=4, seq=32, rounds=7, warmup=2, min_sample_s=0.05,
              oracle_samples=0),
        Shape("small", **_SMALL, batch=8, seq=512, rounds=5, warmup=2, min_sample_s=0.05,
              oracle_samples=0),
    ],
    ("full", "cuda"): [
        Shape("tiny", **_TINY, batch=4, seq=32, rounds=15, warmup=3, min_sample_s=0.2,
              oracle_samples=0),
        Shape("small", **_SMALL, batch=16, seq=1024, rounds=10, warmup=3, min_sample_s=0.2,
              oracle_samples=0),
        Shape("medium", **_MEDIUM, batch=8, seq=1024, rounds=10, warmup=3, min_sample_s=0.2,
              oracle_samples=0),
    ],
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Statistics (pure functions; the tests check them)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, quartiles (inclusive method), min, max and count of ``values``."""
    if not values:
        raise ValueError("summarize needs at least one value")
    v = sorted(float(x) for x in values)
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1 = q3 = v[0]
    return {
        "median": statistics.median(v),
        "q1": q1,
        "q3": q3,
        "min": v[0],
        "max": v[-1],
        "n": len(v),
    }


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios numerators[r] / denominators[r] of two equally long series.

    With interleaved rounds, both entries of a pair ran within seconds of each other, so a burst
    of load from other processes affects both; their ratio is steadier than a ratio of medians.
    """
    if len(numerators) != len(denominators):
        raise ValueError(
            f"paired ratios need series of equal length, got {len(numerators)} and "
            f"{len(denominators)}"
        )
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def row_ratios(row: dict[str, Any]) -> dict[str, Any]:
    """The reference/transformers ratios of a row (None where transformers did not run).

    speed: transformers' time / reference's time per round (> 1: the reference is faster).
    memory_working, memory_peak: reference's / transformers' memory beyond the loaded model,
    and the process's peak (< 1: the reference needs less).
    """
    res = row["results"]
    if "reference" not in res or "transformers" not in res:
        return {"speed": None, "memory_working": None, "memory_peak": None}
    ref, hf = res["reference"], res["transformers"]
    speed = summarize(paired_ratios(hf["times_s"], ref["times_s"]))
    out: dict[str, Any] = {"speed": speed, "memory_working": None, "memory_peak": None}
    if ref.get("memory") and hf.get("memory"):
        for key in ("working", "peak"):  # a zero denominator (nothing measurable) gives None
            r, h = ref["memory"][f"{key}_mb"], hf["memory"][f"{key}_mb"]
            out[f"memory_{key}"] = r / h if h > 0 else None
    return out


# --------------------------------------------------------------------------------------------
# FLOP counting: every matrix multiplication of the model, as (m, k) x (k, n) GEMMs


@dataclasses.dataclass(frozen=True)
class Gemm:
    """``count`` batched products of [batch, m, k] x [batch, k, n] (batch 1: a plain GEMM)."""

    what: str
    count: int
    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:  # a multiply and an add per term
        return 2 * self.count * self.batch * self.m * self.k * self.n


def model_gemms(shape: Shape, workload: str) -> list[Gemm]:
    """The matrix multiplications of one forward (or training step) of ``shape``.

    Forward, per block: qkv [N, d] x [d, 3d], attention output [N, d] x [d, d], MLP [N, d] x
    [d, 4d] and [N, 4d] x [4d, d] (N = B*T); attention scores [T, hd] x [hd, T] and the weighted
    sum [T, T] x [T, hd] for each of the B*H heads, counted in full (the causal half is not
    subtracted); once, the tied head [N, d] x [d, V]. A training step adds, for each product
    A[m, k] B[k, n], the two backward products dA = dC Bᵀ ([m, n] x [n, k]) and dB = Aᵀ dC
    ([k, m] x [m, n]), so it counts three times the forward's FLOPs. Embedding lookups, LayerNorm,
    GELU, softmax and the loss are not matmuls and are not counted.
    """
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    N, d, L = shape.batch * shape.seq, shape.n_embd, shape.n_layer
    T, hd, BH = shape.seq, shape.n_embd // shape.n_head, shape.batch * shape.n_head
    forward = [
        Gemm("qkv", L, 1, N, d, 3 * d),
        Gemm("attn-proj", L, 1, N, d, d),
        Gemm("mlp-fc", L, 1, N, d, 4 * d),
        Gemm("mlp-proj", L, 1, N, 4 * d, d),
        Gemm("attn-scores", L, BH, T, hd, T),
        Gemm("attn-values", L, BH, T, T, hd),
        Gemm("head", 1, 1, N, d, shape.vocab_size),
    ]
    if workload == "forward":
        return forward
    backward = []
    for g in forward:
        backward.append(Gemm(g.what + "-dA", g.count, g.batch, g.m, g.n, g.k))
        backward.append(Gemm(g.what + "-dB", g.count, g.batch, g.k, g.m, g.n))
    return forward + backward


def model_flops(shape: Shape, workload: str) -> int:
    return sum(g.flops for g in model_gemms(shape, workload))


# --------------------------------------------------------------------------------------------
# Building the three implementations with identical weights


def _gpt2_config(shape: Shape) -> Any:
    from gpt2_spec import GPT2Config

    return GPT2Config(**shape.config_dict())


def build_reference(shape: Shape, device: str, dtype: Any) -> Any:
    """The reference GPT2 with seed 0: its state dict is the canonical weights every model gets."""
    from gpt2_reference import GPT2

    return GPT2(_gpt2_config(shape), seed=0).to(device=device, dtype=dtype)


def build_transformers(state_dict: dict[str, Any], shape: Shape, device: str, dtype: Any) -> Any:
    """transformers' GPT2LMHeadModel with SDPA attention, no dropout, loaded from the canonical
    ``state_dict`` (its head is the same tensor as ``wte``, so it gets the same values)."""
    import transformers

    hf_config = transformers.GPT2Config(
        **_gpt2_config(shape).to_hf_dict(),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,  # the reference builds no key/value cache unless asked; neither does this
    )
    try:  # the documented way in transformers 4.4x and 5.x
        model = transformers.GPT2LMHeadModel._from_config(hf_config, attn_implementation="sdpa")
    except (AttributeError, TypeError):  # an older or newer signature: set it on the config
        hf_config._attn_implementation = "sdpa"
        model = transformers.GPT2LMHeadModel(hf_config)
    state = dict(state_dict)
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state, strict=True)
    model.loss_type = "ForCausalLM"
    return model.to(device=device, dtype=dtype)


def attn_implementation(model: Any) -> str:
    config = model.config
    return str(getattr(config, "_attn_implementation", None) or config.attn_implementation)


def token_ids(shape: Shape) -> Any:
    import torch

    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, shape.vocab_size, (shape.batch, shape.seq), generator=generator)


# --------------------------------------------------------------------------------------------
# The calls that are timed


def forward_call(impl: str, model: Any, ids: Any, config: Any = None) -> Callable[[], object]:
    """One forward with full logits [B, T, V] (no gradient tracking)."""
    import torch

    if impl == "oracle":
        from gpt2_reference import oracle

        ids_np = ids.numpy()
        return lambda: oracle.forward(model, config, ids_np).logits
    if impl == "transformers":
        model.eval()

        def call() -> object:
            with torch.no_grad():
                return model(input_ids=ids).logits

        return call
    model.eval()

    def call_reference() -> object:
        with torch.no_grad():
            return model(ids).logits

    return call_reference


def train_call(impl: str, model: Any, ids: Any) -> Callable[[], object]:
    """One training step: forward with labels = the inputs (shifted inside), backward, AdamW."""
    if impl == "oracle":
        raise ValueError("the oracle is benchmarked forward only")
    model.train()
    optimizer = make_optimizer(model)
    kwargs = {"input_ids": ids} if impl == "transformers" else {}
    args = () if impl == "transformers" else (ids,)

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = model(*args, **kwargs, labels=ids).loss
        loss.backward()
        optimizer.step()
        return loss

    return step


def make_optimizer(model: Any) -> Any:
    """AdamW, fused (one kernel over all parameters; torch >= 2.4 on CPU) where torch offers it,
    else torch's default (foreach) implementation. Both implementations get the same kind."""
    import torch

    try:
        return torch.optim.AdamW(model.parameters(), lr=LR, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=LR)


def optimizer_kind(device: str) -> str:
    import torch

    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1, device=device))], lr=LR, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return "AdamW (torch default, foreach)"
    return "AdamW (fused=True)"


class Ceiling:
    """The practical ceiling: torch.matmul on every GEMM shape of the model, on random operands.

    Each distinct GEMM runs ``reps`` times per measurement; its time is scaled by its count (e.g.
    the number of blocks). Operands are allocated once and reused.
    """

    def __init__(self, gemms: list[Gemm], device: str, dtype: Any) -> None:
        import torch

        generator = torch.Generator(device=device).manual_seed(2)
        self.ops = []
        for g in gemms:
            a_shape = (g.batch, g.m, g.k) if g.batch > 1 else (g.m, g.k)
            b_shape = (g.batch, g.k, g.n) if g.batch > 1 else (g.k, g.n)
            a, b = (
                torch.randn(s, generator=generator, device=device, dtype=dtype)
                for s in (a_shape, b_shape)
            )
            self.ops.append((g, a, b))
        self.device = device
        self.reps = [1] * len(self.ops)

    def calibrate(self, min_op_s: float) -> None:
        """Choose repetitions so that each op is timed over at least ``min_op_s`` seconds."""
        for i, (_, a, b) in enumerate(self.ops):
            t = _time(functools.partial(_matmul, a, b), 1, self.device)
            self.reps[i] = max(1, math.ceil(min_op_s / max(t, 1e-9)))

    def __call__(self) -> float:
        """Seconds the model's GEMMs take run back to back (one measurement)."""
        total = 0.0
        for (g, a, b), reps in zip(self.ops, self.reps, strict=True):
            total += g.count * _time(functools.partial(_matmul, a, b), reps, self.device)
        return total


def _matmul(a: Any, b: Any) -> object:
    import torch

    return torch.matmul(a, b)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _time(fn: Callable[[], object], reps: int, device: str) -> float:
    """Seconds per call of ``fn``, over ``reps`` calls (the device synchronised on both ends)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        result = fn()
    _sync(device)
    elapsed = time.perf_counter() - start
    del result
    return elapsed / reps


# --------------------------------------------------------------------------------------------
# Interleaved rounds


def interleaved_rounds(
    calls: dict[str, Callable[[], object]],
    ceiling: Callable[[], float],
    shape: Shape,
    device: str,
    log: Callable[[str], None],
) -> dict[str, list[float]]:
    """Per-call seconds of each implementation (and the ceiling's seconds), round by round.

    Round r runs every implementation once, starting at a position that rotates with r, so no
    implementation always runs first or right after the same neighbour. ``shape.warmup`` rounds
    are run and discarded first. The oracle joins only the first ``shape.oracle_samples``
    measured rounds (a float64 NumPy forward takes seconds at GPT-2 small's shape).
    """
    names = [*calls, CEILING]
    reps = {name: 1 for name in calls}
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(shape.warmup + shape.rounds):
        measured = r >= shape.warmup
        order = names[r % len(names) :] + names[: r % len(names)]
        this_round = {}
        for name in order:
            if name == "oracle" and measured and len(times["oracle"]) >= shape.oracle_samples:
                continue
            if name == CEILING:
                this_round[name] = ceiling()
            else:
                this_round[name] = t = _time(calls[name], reps[name], device)
                if not measured:  # repeat short calls so that a sample lasts min_sample_s
                    reps[name] = max(reps[name], math.ceil(shape.min_sample_s / max(t, 1e-9)))
        if measured:
            for name, t in this_round.items():
                times[name].append(t)
            log(f"    round {r - shape.warmup + 1}/{shape.rounds}: "
                + ", ".join(f"{n} {_fmt_time(t)}" for n, t in this_round.items()))  # fmt: skip
    return times


# --------------------------------------------------------------------------------------------
# Memory: a fresh subprocess per implementation and row


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Set VmHWM (the peak resident set) to the current resident set (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


MINIATURE = Shape(
    "miniature",
    n_embd=16,
    n_layer=1,
    n_head=2,
    vocab_size=64,
    n_positions=16,
    batch=2,
    seq=8,
    rounds=1,
    warmup=0,
    min_sample_s=0.0,
    oracle_samples=1,
)


def _run_miniature(impl: str, workload: str, device: str, dtype: Any) -> None:
    reference = build_reference(MINIATURE, device, dtype)
    ids = token_ids(MINIATURE).to(device)
    model: Any = reference
    if impl == "transformers":
        model = build_transformers(reference.state_dict(), MINIATURE, device, dtype)
    elif impl == "oracle":
        from gpt2_reference.checkpoint import to_numpy_params

        model, ids = to_numpy_params(reference.state_dict()), ids.cpu()
    if workload == "forward":
        forward_call(impl, model, ids, reference.config)()
    else:
        train_call(impl, model, ids)()


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: build one implementation, run its workload once as warm-up, and
    measure the memory of a second call.

    Reported (MB): ``model_mb``, what the process holds once the model is built (libraries,
    weights); ``before_mb``, just before the measured call; ``peak_mb``, the peak during it;
    ``step_mb = peak - before``; ``persistent_mb``, what the warm-up left allocated for later
    calls (AdamW's state, gradients, caches); and ``working_mb = step + persistent``: the memory
    the workload needs beyond the loaded model, the figure the ratios compare.

    CPU: the resident set (VmRSS) and its peak (VmHWM, reset just before the measured call). The
    persistent part counts anonymous memory only (RssAnon): the first call also pages in library
    code (file-backed pages), which is not the workload's data. The parent starts this process
    with glibc's mmap threshold fixed at 64 KiB, so freed tensors go back to the kernel at once
    and the resident set follows live memory. CUDA: torch's allocator (memory_allocated,
    max_memory_allocated).
    """
    import torch

    shape = Shape(**spec["shape"])
    impl, device, workload = spec["impl"], spec["device"], spec["workload"]
    dtype = getattr(torch, spec["dtype"])
    torch.set_num_threads(spec["threads"])
    # One-time library set-up (autograd's engine, the BLAS's buffers, fused AdamW, the code
    # paths of transformers) happens at the first call of a kind; run the same workload once on
    # a miniature model of the same implementation, so that it lands before the baseline.
    _run_miniature(impl, workload, device, dtype)
    gc.collect()
    ids = token_ids(shape).to(device)
    reference = build_reference(shape, device, dtype)
    config = reference.config
    if impl == "reference":
        model: Any = reference
    else:
        state = {k: v.detach().cpu() for k, v in reference.state_dict().items()}
        del reference
        if impl == "transformers":
            model = build_transformers(state, shape, device, dtype)
        else:
            from gpt2_reference.checkpoint import to_numpy_params

            model = to_numpy_params(state)
            ids = ids.cpu()
        del state
    gc.collect()

    def held() -> tuple[int, int]:  # bytes: (all held, data only)
        _sync(device)
        if device == "cuda":
            allocated = int(torch.cuda.memory_allocated())
            return allocated, allocated
        return _proc_status_kb("VmRSS") * 1024, _proc_status_kb("RssAnon") * 1024

    loaded, loaded_data = held()
    call = forward_call(impl, model, ids, config) if workload == "forward" else None
    call = call or train_call(impl, model, ids)
    call()  # warm-up: first-call allocations, AdamW's state
    gc.collect()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()
    before, before_data = held()
    result = call()
    _sync(device)
    if device == "cuda":
        peak = int(torch.cuda.max_memory_allocated())
    else:
        peak = _proc_status_kb("VmHWM") * 1024
    del result
    mb = 1024 * 1024
    step, persistent = peak - before, before_data - loaded_data
    return {
        "model_mb": loaded / mb,
        "before_mb": before / mb,
        "peak_mb": peak / mb,
        "step_mb": step / mb,
        "persistent_mb": persistent / mb,
        "working_mb": (step + persistent) / mb,
    }


def measure_memory(
    shape: Shape, impl: str, workload: str, device: str, dtype: str, threads: int
) -> dict[str, Any]:
    """Run :func:`memory_worker` in a fresh Python process and return what it reports."""
    spec = {
        "shape": dataclasses.asdict(shape),
        "impl": impl,
        "workload": workload,
        "device": device,
        "dtype": dtype,
        "threads": threads,
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_benchmarks.run", "--memory-worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"the memory subprocess for {impl} ({shape.name}, {workload}) failed:\n"
            + proc.stderr[-3000:]
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


MEMORY_METHOD = {
    "cpu": "a fresh process per implementation and row, which first runs the workload on a "
    "miniature model of the same implementation (one-time library set-up); then the model is "
    "built and run once as warm-up; peak resident set (VmHWM, reset via "
    "/proc/self/clear_refs just before the measured call, which follows one warm-up call); "
    "glibc's mmap threshold fixed at 64 KiB so freed tensors leave the resident set at once. "
    "working = (peak - resident set before the call) + (anonymous memory before the call - "
    "anonymous memory once the model was built)",
    "cuda": "a fresh process per implementation and row (miniature run first, as on the cpu); "
    "torch.cuda.max_memory_allocated during "
    "the measured call (after one warm-up call). working = peak - memory_allocated once the "
    "model was built",
}


# --------------------------------------------------------------------------------------------
# One row, and the whole run


def run_shape(
    shape: Shape,
    device: str,
    dtype_name: str,
    threads: int,
    implementations: Sequence[str] = IMPLEMENTATIONS,
    memory: bool = True,
    log: Callable[[str], None] = print,
    memory_jobs: int = 1,
) -> list[dict[str, Any]]:
    """Measure one shape: a row per workload (forward, train)."""
    import torch

    dtype = getattr(torch, dtype_name)
    impls = [i for i in implementations if i != "oracle" or shape.oracle_samples > 0]
    log(f"[{shape.name}] d={shape.n_embd} L={shape.n_layer} H={shape.n_head} V={shape.vocab_size}"
        f", batch {shape.batch} x seq {shape.seq}: building {', '.join(impls)}")  # fmt: skip
    ids = token_ids(shape).to(device)
    reference = build_reference(shape, device, dtype)
    config = reference.config
    state = {k: v.detach().cpu() for k, v in reference.state_dict().items()}
    models: dict[str, Any] = {}
    attn_impl = None
    if "reference" in impls:
        models["reference"] = reference
    if "transformers" in impls:
        models["transformers"] = build_transformers(state, shape, device, dtype)
        attn_impl = attn_implementation(models["transformers"])
    if "oracle" in impls:
        from gpt2_reference.checkpoint import to_numpy_params

        models["oracle"] = to_numpy_params(state)
    del state

    rows = []
    for workload in WORKLOADS:
        row_impls = [i for i in impls if workload == "forward" or i != "oracle"]
        calls = {}
        for impl in row_impls:
            if workload == "forward":
                calls[impl] = forward_call(impl, models[impl], ids, config)
            else:
                calls[impl] = train_call(impl, models[impl], ids)
        gemms = model_gemms(shape, workload)
        ceiling = Ceiling(gemms, device, dtype)
        ceiling.calibrate(shape.min_sample_s / max(len(gemms), 1))
        log(f"  {workload}: {shape.warmup} warm-up + {shape.rounds} measured rounds")
        times = interleaved_rounds(calls, ceiling, shape, device, log)
        del ceiling, calls
        gc.collect()
        flops = model_flops(shape, workload)
        tokens = shape.batch * shape.seq
        results: dict[str, Any] = {}
        ceiling_times = times[CEILING]
        for impl in row_impls:
            t = times[impl]
            s = summarize(t)
            fraction = None
            if (
                impl != "oracle"
            ):  # the oracle is float64 NumPy: a float32 torch ceiling says nothing
                fraction = summarize(paired_ratios(ceiling_times[: len(t)], t))
            results[impl] = {
                "times_s": t,
                "time_s": s,
                "tokens_per_s": tokens / s["median"],
                "gflops_per_s": flops / s["median"] / 1e9,
                "ceiling_fraction": fraction,
                "memory": None,
                "dtype": "float64" if impl == "oracle" else dtype_name,
            }
        c = summarize(ceiling_times)
        row: dict[str, Any] = {
            "shape": shape.name,
            "workload": workload,
            "config": shape.config_dict(),
            "batch": shape.batch,
            "seq": shape.seq,
            "tokens": tokens,
            "flops": flops,
            "gemms": [dataclasses.asdict(g) for g in gemms],
            "results": results,
            "ceiling": {
                "times_s": ceiling_times,
                "time_s": c,
                "gflops_per_s": flops / c["median"] / 1e9,
            },
            "transformers_attn_implementation": attn_impl,
        }
        rows.append(row)
    del models, reference
    gc.collect()

    # The timing is over: the memory processes may run side by side (each measures only itself).
    jobs = [(row, impl) for row in rows if memory for impl in row["results"]]
    log(f"  memory: {len(jobs)} fresh processes, {memory_jobs} at a time")
    with concurrent.futures.ThreadPoolExecutor(max_workers=memory_jobs) as pool:
        futures = [
            pool.submit(measure_memory, shape, impl, row["workload"], device, dtype_name, threads)
            for row, impl in jobs
        ]
        for (row, impl), future in zip(jobs, futures, strict=True):
            row["results"][impl]["memory"] = future.result()
    for row in rows:
        row["ratios"] = row_ratios(row)
    return rows


def run(
    plan: Sequence[Shape],
    *,
    mode: str,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 1,
    implementations: Sequence[str] = IMPLEMENTATIONS,
    memory: bool = True,
    log: Callable[[str], None] = print,
    memory_jobs: int = 1,
) -> dict[str, Any]:
    """Measure every shape of ``plan``; return the JSON-ready results."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available())")
    torch.set_num_threads(threads)
    if "transformers" in implementations:
        try:
            import transformers  # noqa: F401
        except ImportError:
            log("transformers is not installed: measuring without it (pip install transformers)")
            implementations = [i for i in implementations if i != "transformers"]
    started = time.perf_counter()
    rows = []
    for shape in plan:
        rows.extend(
            run_shape(shape, device, dtype, threads, implementations, memory, log, memory_jobs)
        )
    return {
        "schema": SCHEMA,
        "mode": mode,
        "device": device,
        "dtype": dtype,
        "provenance": provenance.collect(device=device),
        "threads": threads,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "memory_method": MEMORY_METHOD[device] if memory else None,
        "optimizer": optimizer_kind(device),
        "wall_s": time.perf_counter() - started,
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# Output


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt_spread(s: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    median, q1, q3 = (f"{s[k] * scale:.{digits}g}" for k in ("median", "q1", "q3"))
    return f"{median} [{q1}, {q3}]"


def _shape_label(row: dict[str, Any]) -> str:
    c = row["config"]
    return (
        f"{row['shape']}: d={c['n_embd']}, L={c['n_layer']}, H={c['n_head']}, "
        f"V={c['vocab_size']}; batch {row['batch']} x sequence {row['seq']}"
    )


def render_markdown(data: dict[str, Any]) -> str:
    """The docs tables of a benchmark JSON: per implementation, then the ratios."""
    if not data or not data.get("rows"):
        return "_No benchmark results recorded yet: run `python -m gpt2_benchmarks --mode full`._\n"
    origin = provenance.read(data)
    m, software = origin["machine"], origin["software"]
    # records written before the shared provenance layout kept the threads in "machine"
    threads = data.get("threads", data.get("machine", {}).get("torch_threads"))
    where = m["gpu"] or f"{m['cpu']}, {m['cores']} cores"
    lines = [
        f"Measured {provenance.when(origin)} on {where}; device {data['device']}, "
        f"{data['dtype']}, threads: {threads}; torch {software['torch']}, transformers "
        f"{software['transformers']}, Python {software['python']}; `--mode {data['mode']}`; "
        f"{data.get('optimizer', 'AdamW')}. Shapes:",
        "",
    ]
    seen = set()
    for row in data["rows"]:
        if row["shape"] not in seen:
            seen.add(row["shape"])
            lines.append(f"- {_shape_label(row)}")
    lines += [
        "",
        "| row | implementation | time per call, median [IQR] | tokens/s | GFLOP/s | "
        "of matmul ceiling, median [IQR] | memory: working / peak (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        label = f"{row['shape']}, {row['workload']}"
        for impl, res in row["results"].items():
            t = res["time_s"]
            spread = f"{_fmt_time(t['median'])} [{_fmt_time(t['q1'])}, {_fmt_time(t['q3'])}]"
            frac = res["ceiling_fraction"]
            frac_text = "n/a (float64)" if frac is None else _fmt_spread(frac, 100, 3) + " %"
            mem = res["memory"]
            mem_text = "-" if not mem else f"{mem['working_mb']:.1f} / {mem['peak_mb']:.0f}"
            name = impl if impl != "oracle" else "oracle (NumPy, float64)"
            lines.append(
                f"| {label} | {name} | {spread} (n={t['n']}) | {res['tokens_per_s']:,.0f} | "
                f"{res['gflops_per_s']:.1f} | {frac_text} | {mem_text} |"
            )
        c = row["ceiling"]
        lines.append(
            f"| {label} | {CEILING} (torch.matmul) | {_fmt_time(c['time_s']['median'])} | - | "
            f"{c['gflops_per_s']:.1f} | 100 % | - |"
        )
    lines += [
        "",
        "Ratios reference / transformers (speed: transformers' time over the reference's, per "
        "round; > 1 means the reference is faster. Memory: the reference's over transformers', "
        "working memory and the process's peak; < 1 means the reference needs less):",
        "",
        "| row | speed, median [IQR] (min-max) | memory, working | memory, peak |",
        "| --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        r = row["ratios"]
        if r["speed"] is None:
            continue
        s = r["speed"]
        mem_working = "-" if r["memory_working"] is None else f"{r['memory_working']:.2f}"
        mem_peak = "-" if r["memory_peak"] is None else f"{r['memory_peak']:.2f}"
        lines.append(
            f"| {row['shape']}, {row['workload']} | {_fmt_spread(s)} "
            f"({s['min']:.3g}-{s['max']:.3g}) | {mem_working} | {mem_peak} |"
        )
    return "\n".join(lines) + "\n"


def print_summary(data: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """Per-row figures, then the reference/transformers ratios last."""
    out("")
    for row in data["rows"]:
        out(f"{_shape_label(row)}, {row['workload']} ({row['flops'] / 1e9:.2f} GFLOP per call)")
        for impl, res in row["results"].items():
            frac = res["ceiling_fraction"]
            mem = res["memory"]
            out(
                f"  {impl:13s} {_fmt_time(res['time_s']['median']):>10s}  "
                f"{res['tokens_per_s']:>10,.0f} tok/s  {res['gflops_per_s']:7.1f} GFLOP/s  "
                + ("" if frac is None else f"{frac['median'] * 100:5.1f}% of ceiling  ")
                + (
                    ""
                    if not mem
                    else f"working {mem['working_mb']:.1f} MB, peak {mem['peak_mb']:.0f} MB"
                )
            )
        c = row["ceiling"]
        out(f"  {CEILING:13s} {_fmt_time(c['time_s']['median']):>10s}  "
            f"{'':>16s}  {c['gflops_per_s']:7.1f} GFLOP/s")  # fmt: skip
    out("")
    out("reference / transformers ratios (speed > 1: reference faster; memory < 1: less)")
    for row in data["rows"]:
        r = row["ratios"]
        if r["speed"] is None:
            continue
        s = r["speed"]
        mem = "" if r["memory_working"] is None else (
            f"  memory working {r['memory_working']:.2f}, peak {r['memory_peak']:.2f}"
        )  # fmt: skip
        ref_frac = row["results"]["reference"]["ceiling_fraction"]["median"]
        out(
            f"  {row['shape']:14s} {row['workload']:8s} speed {s['median']:.3f} "
            f"[IQR {s['q1']:.3f}-{s['q3']:.3f}, min {s['min']:.3f}, max {s['max']:.3f}]{mem}"
            f"  reference at {ref_frac * 100:.1f}% of the matmul ceiling"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the reference GPT-2 against transformers and the NumPy oracle."
    )
    parser.add_argument(
        "--mode",
        choices=["quick", "full"],
        default="quick",
        help="quick: about a minute on a 2-core CPU; full: several minutes",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and BLAS threads (default: 1 on cpu, all cores on cuda)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--memory-jobs",
        type=int,
        default=None,
        help="memory subprocesses run side by side after the timing (default: 2 on cpu, 1 on cuda)",
    )
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_worker is not None:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    for option in ("threads", "memory_jobs"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    memory_jobs = args.memory_jobs or (2 if args.device == "cpu" else 1)
    # 1 on the CPU: on this project's 2 shared cores, two threads wait on each other whenever
    # another process takes one core (measured there: a GPT-2 small forward took 2-5x as long
    # with 2 threads as with 1, and varied far more). On a GPU machine the CPU launches kernels.
    threads = args.threads or (1 if args.device == "cpu" else os.cpu_count() or 1)
    # The oracle's BLAS gets the same number of threads as torch (set before NumPy loads it).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    data = run(PLANS[(args.mode, args.device)], mode=args.mode, device=args.device,
               dtype=args.dtype, threads=threads, memory_jobs=memory_jobs)  # fmt: skip
    print_summary(data)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
