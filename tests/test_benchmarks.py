"""The benchmarks (``python -m gpt2_benchmarks``, benchmarks/run.py): their statistics, FLOP
count, JSON and docs table.

No test here asserts anything about speed: timings on a shared machine are not test material.
The benchmark itself prints the figures; these tests check that the figures are computed right.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

import pytest

from gpt2_benchmarks import run as bench


def test_summarize_gives_median_quartiles_and_range() -> None:
    s = bench.summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0, "n": 5}
    assert bench.summarize([7.0]) == {
        "median": 7.0, "q1": 7.0, "q3": 7.0, "min": 7.0, "max": 7.0, "n": 1,
    }  # fmt: skip
    with pytest.raises(ValueError, match="at least one value"):
        bench.summarize([])


def test_paired_ratios_divide_round_by_round() -> None:
    assert bench.paired_ratios([2.0, 9.0, 1.0], [1.0, 3.0, 4.0]) == [2.0, 3.0, 0.25]
    with pytest.raises(ValueError, match="equal length"):
        bench.paired_ratios([1.0, 2.0], [1.0])


def test_row_ratios_are_transformers_over_reference_time_and_reference_over_memory() -> None:
    def result(times: list[float], working: float, peak: float) -> dict[str, Any]:
        return {"times_s": times, "memory": {"working_mb": working, "peak_mb": peak}}

    row = {
        "results": {
            "reference": result([1.0, 2.0, 4.0], working=50.0, peak=400.0),
            "transformers": result([2.0, 3.0, 4.0], working=100.0, peak=500.0),
        }
    }
    ratios = bench.row_ratios(row)
    assert ratios["speed"]["median"] == 1.5  # rounds: 2/1, 3/2, 4/4
    assert ratios["speed"]["min"] == 1.0
    assert ratios["speed"]["max"] == 2.0
    assert ratios["memory_working"] == 0.5
    assert ratios["memory_peak"] == 0.8
    alone = bench.row_ratios({"results": {"reference": row["results"]["reference"]}})
    assert alone == {"speed": None, "memory_working": None, "memory_peak": None}


def test_flop_count_matches_the_closed_form() -> None:
    shape = bench.Shape(
        "x", n_embd=48, n_layer=3, n_head=4, vocab_size=101, n_positions=32,
        batch=2, seq=10, rounds=1, warmup=0, min_sample_s=0.0, oracle_samples=0,
    )  # fmt: skip
    B, T, d, L, V = 2, 10, 48, 3, 101
    N = B * T
    # Per block: 2N(3d² + d² + 4d² + 4d²) for the four linear maps, 2·2·B·T²·d for attention.
    forward = L * (24 * N * d * d + 4 * B * T * T * d) + 2 * N * d * V
    assert bench.model_flops(shape, "forward") == forward
    assert bench.model_flops(shape, "train") == 3 * forward
    with pytest.raises(ValueError, match="workload"):
        bench.model_gemms(shape, "inference")


def test_render_markdown_is_importable_without_torch() -> None:
    code = (
        "import sys\n"
        "from gpt2_benchmarks import run\n"
        "print(run.render_markdown({}))\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "No benchmark results" in proc.stdout


@pytest.fixture(scope="module")
def micro_run() -> dict[str, Any]:
    """The real benchmark code on a minuscule model: a few seconds, memory subprocesses included."""
    shape = bench.Shape(
        "micro", n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=16,
        batch=2, seq=8, rounds=3, warmup=1, min_sample_s=0.0, oracle_samples=2,
    )  # fmt: skip
    data: dict[str, Any] = bench.run(
        [shape], mode="test", threads=1, log=lambda _: None, memory_jobs=5
    )
    return data


def test_micro_run_json_structure(micro_run: dict[str, Any]) -> None:
    data = json.loads(json.dumps(micro_run))  # what is written is plain JSON
    assert data["schema"] == bench.SCHEMA
    assert (data["mode"], data["device"], data["dtype"]) == ("test", "cpu", "float32")
    origin = data["provenance"]
    for key in ("cpu", "cores", "platform"):
        assert origin["machine"][key], key
    for key in ("python", "torch", "transformers", "numpy"):
        assert origin["software"][key], key
    assert origin["date"]
    assert data["threads"] == 1
    assert data["float32_matmul_precision"]
    rows = data["rows"]
    assert [(r["shape"], r["workload"]) for r in rows] == [("micro", "forward"), ("micro", "train")]
    forward, train = rows
    assert set(forward["results"]) == {"reference", "transformers", "oracle"}
    assert set(train["results"]) == {"reference", "transformers"}  # the oracle: forward only
    assert forward["transformers_attn_implementation"] == "sdpa"
    for row in rows:
        assert row["tokens"] == 2 * 8
        assert len(row["ceiling"]["times_s"]) == 3
        for impl, res in row["results"].items():
            n = 2 if impl == "oracle" else 3
            assert len(res["times_s"]) == n, impl
            assert all(t > 0 for t in res["times_s"])
            assert res["time_s"]["median"] == statistics.median(res["times_s"])
            assert res["tokens_per_s"] == pytest.approx(16 / res["time_s"]["median"])
            assert res["gflops_per_s"] == pytest.approx(
                row["flops"] / res["time_s"]["median"] / 1e9
            )
            mem = res["memory"]
            assert mem["peak_mb"] > 0
            assert mem["step_mb"] == pytest.approx(mem["peak_mb"] - mem["before_mb"])
            assert mem["working_mb"] == pytest.approx(mem["step_mb"] + mem["persistent_mb"])
            assert mem["peak_mb"] >= mem["before_mb"]
            if impl == "oracle":
                assert res["ceiling_fraction"] is None
                assert res["dtype"] == "float64"
            else:
                fractions = [
                    c / t for c, t in zip(row["ceiling"]["times_s"], res["times_s"], strict=False)
                ]
                assert res["ceiling_fraction"]["median"] == pytest.approx(
                    statistics.median(fractions)
                )


def test_micro_run_ratios_are_recomputable_from_the_times(micro_run: dict[str, Any]) -> None:
    for row in micro_run["rows"]:
        ref, hf = row["results"]["reference"], row["results"]["transformers"]
        per_round = [h / r for h, r in zip(hf["times_s"], ref["times_s"], strict=True)]
        assert row["ratios"]["speed"]["median"] == pytest.approx(statistics.median(per_round))
        assert row["ratios"]["speed"]["min"] == pytest.approx(min(per_round))
        ref_mem, hf_mem = ref["memory"], hf["memory"]
        working = ref_mem["working_mb"] / hf_mem["working_mb"] if hf_mem["working_mb"] > 0 else None
        assert row["ratios"]["memory_working"] == pytest.approx(working)
        assert row["ratios"]["memory_peak"] == pytest.approx(ref_mem["peak_mb"] / hf_mem["peak_mb"])


def test_micro_run_renders_and_prints_ratios_last(micro_run: dict[str, Any]) -> None:
    text = bench.render_markdown(micro_run)
    assert "- micro: d=16, L=1, H=2, V=64; batch 2 x sequence 8" in text
    assert text.count("| micro, forward |") == 3 + 1 + 1  # implementations, ceiling, ratio
    assert "oracle (NumPy, float64)" in text
    lines: list[str] = []
    bench.print_summary(micro_run, out=lines.append)
    ratio_header = next(i for i, line in enumerate(lines) if line.startswith("reference / transf"))
    assert all("speed" in line for line in lines[ratio_header + 1 :])
    assert len(lines[ratio_header + 1 :]) == 2


def test_the_machine_line_reads_either_provenance_layout(micro_run: dict[str, Any]) -> None:
    """A record written before the shared provenance layout (the threads, the versions and the
    date inside ``machine``, as docs/data/benchmarks.json has them) renders the same line."""
    origin = micro_run["provenance"]
    old = {key: value for key, value in micro_run.items() if key != "provenance"}
    del old["threads"], old["float32_matmul_precision"]
    old["machine"] = {
        "cpu_model": origin["machine"]["cpu"],
        "cpu_cores": origin["machine"]["cores"],
        "torch_threads": micro_run["threads"],
        "python": origin["software"]["python"],
        "torch": origin["software"]["torch"],
        "transformers": origin["software"]["transformers"],
        "date_utc": origin["date"][:10] + " " + origin["date"][11:16] + " UTC",
        "gpu": None,
    }
    new_line = bench.render_markdown(micro_run).splitlines()[0]
    assert new_line.startswith(f"Measured {old['machine']['date_utc']} on ")
    assert "threads: 1; torch " in new_line
    assert bench.render_markdown(old).splitlines()[0] == new_line


def test_command_line_refuses_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_benchmarks", "--mode", "fast"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice: 'fast'" in proc.stderr


# ---- the suite's own speed (benchmarks/suite_speed.py) ----------------------------------------


def test_suite_speed_ratio_summary_is_median_and_max() -> None:
    from gpt2_benchmarks import suite_speed

    assert suite_speed.ratio_summary([1.5, 3.0, 1.0]) == {"median": 1.5, "max": 3.0}
    with pytest.raises(ValueError, match="at least one ratio"):
        suite_speed.ratio_summary([])


def test_suite_speed_runs_the_default_ci_suite_with_a_report() -> None:
    from pathlib import Path

    from gpt2_benchmarks import suite_speed

    command = suite_speed.suite_command("reference", Path("r.json"), ["--max-examples=2"])
    assert command[1:5] == ["-m", "pytest", "--pyargs", "gpt2_conformance"]
    assert "--impl=reference" in command
    assert "--conformance-report=r.json" in command
    assert command[-1] == "--max-examples=2"
    assert not any(c.startswith("--conformance-profile") for c in command)  # the default: ci


def test_suite_speed_mutants_pair_each_with_its_baseline() -> None:
    from gpt2_benchmarks import suite_speed
    from gpt2_zoo import zoo

    chosen = suite_speed.mutant_impls(["CausalLeak", "AlwaysRaises"])
    assert chosen == [
        ("CausalLeak", "gpt2_zoo.sequence_bugs:CausalLeak", "reference"),
        ("AlwaysRaises", "speed_adapters:AlwaysRaises", "reference"),
    ]
    assert len(suite_speed.mutant_impls(None)) == len(zoo()) + 1
    with pytest.raises(SystemExit, match="unknown mutants: NoSuchBug"):
        suite_speed.mutant_impls(["NoSuchBug"])


def test_suite_speed_prints_the_builds_from_the_report() -> None:
    from gpt2_benchmarks import suite_speed

    run = {
        "wall_s": 20.0,
        "exit": 0,
        "timing": {
            "tests_s": 18.0, "implementation_share": 0.44, "suite_share": 0.56,
            "oracle_share": 0.15, "builds": 1919, "build_s": 3.6, "configs": 1031, "shapes": 1606,
        },
    }  # fmt: skip
    line = suite_speed.builds_line("reference", run)
    assert "20.0 s wall" in line
    assert "1919 builds in 3.6 s, 1031 configurations, 1606 shapes" in line
    no_report = {"wall_s": 1.0, "exit": 4, "timing": {}}
    assert "no report: exit 4" in suite_speed.builds_line("x", no_report)


def test_speed_adapters_sleep_per_build_and_raise_on_logits() -> None:
    import time

    import numpy as np

    from gpt2_benchmarks import suite_speed

    sys.path.insert(0, str(suite_speed.ADAPTERS))
    try:
        import speed_adapters
    finally:
        sys.path.remove(str(suite_speed.ADAPTERS))
    from gpt2_spec import GPT2Config

    config = GPT2Config(vocab_size=7, n_positions=4, n_embd=4, n_layer=1, n_head=1)
    started = time.perf_counter()
    built = speed_adapters.SlowBuild().build(
        config, params=None, seed=0, device="cpu", dtype="float32"
    )
    assert time.perf_counter() - started >= speed_adapters.SLOW_BUILD_S
    assert built.logits(np.zeros((1, 2), dtype=np.int64)).shape == (1, 2, 7)
    assert speed_adapters.SlowBuildCopies.reuse == "copy"
    raising = speed_adapters.AlwaysRaises().build(
        config, params=None, seed=0, device="cpu", dtype="float32"
    )
    with pytest.raises(RuntimeError, match="cannot compute logits"):
        raising.logits(np.zeros((1, 2), dtype=np.int64))


def test_suite_speed_refuses_unknown_implementations() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_benchmarks.suite_speed", "builds", "--impls", "nope"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "unknown implementations: nope" in proc.stderr
