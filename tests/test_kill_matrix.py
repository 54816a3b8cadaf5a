"""``scripts/kill_matrix.py``: its renderer, on a small made-up matrix (the real one takes tens of
minutes to compute; ``tests/test_mutant_zoo.py`` is the fast gate on the zoo itself)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kill_matrix.py"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("_kill_matrix", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data() -> dict[str, Any]:
    def row(name: str, origin: str, caught: dict[str, int], also: dict[str, int]) -> dict[str, Any]:
        return {
            "name": name,
            "origin": origin,
            "story": "A | in the story.",
            "declared": list(caught),
            "caught_seeds": caught,
            "caught_every_seed": all(n == 2 for n in caught.values()),
            "also_fails": also,
        }

    return {
        "command": "python scripts/kill_matrix.py --seeds 2",
        "date": "2026-01-01 00:00 UTC",
        "machine": {"cpu": "a CPU", "cores": 2, "torch": "2.13", "transformers": "5.24"},
        "profile": {"name": "ci", "max_examples": 25, "ci_max_examples": 25, "properties": "all"},
        "seeds": [0, 1],
        "workers": 2,
        "wall_s": 120.0,
        "families": ["objective", "causality", "head"],
        "baselines": [
            {
                "impl": "reference",
                "dtype": "float32",
                "fails": {},
                "statuses": {"objective.sum-of-terms": ["pass"]},
                "outcomes": {"objective.sum-of-terms": "pass/pass"},
            }
        ],
        "mutants": [
            row("Caught", "reference", {"objective.sum-of-terms": 2}, {"head.linear-no-bias": 1}),
            row("Missed", "transformers", {"causality.future-invisible": 1}, {}),
        ],
        "summary": {
            "mutants": 2,
            "by_origin": {"reference": 1, "transformers": 1},
            "caught_every_seed": 1,
            "kill_rate": 0.5,
            "baselines_clean": True,
        },
    }


def test_the_markdown_says_what_was_caught_and_what_was_missed() -> None:
    text = _script().render_markdown(_data())
    lines = text.splitlines()
    assert lines[0].startswith("**2 mutants** (1 built on the reference, 1 on transformers'")
    assert "1 of 2 caught on every declared requirement under all 2 seeds (50%)" in lines[0]
    caught = next(line for line in lines if line.startswith("| `Caught`"))
    assert "| 2/2 |" in caught
    assert "`head.linear-no-bias` (1/2)" in caught
    assert "A \\| in the story." in caught  # a pipe in a story does not break the table
    missed = next(line for line in lines if line.startswith("| `Missed`"))
    assert "**missed**" in missed
    assert "`causality.future-invisible` 1/2" in missed
    matrix = [line for line in lines if line.startswith("| `Caught` | ")][-1]
    assert matrix == "| `Caught` | **1** | · | 1 |"
    assert "Unmodified `reference` at float32: 1 requirements pass per seed" in text


def test_the_renderer_imports_without_torch() -> None:
    import subprocess

    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('k', {str(SCRIPT)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert 'torch' not in sys.modules, 'the renderer imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
