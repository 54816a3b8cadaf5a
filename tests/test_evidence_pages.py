"""Evidence pages never contradict their data or each other: what a page's hand-written prose
says about the false-alarm campaign, the kill matrix and the benchmarks is checked against the
committed data the generated parts of the same pages come from; and no committed data holds a
development machine's paths."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt2_evidence import false_alarm_campaign as campaign

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DATA = DOCS / "data"
sys.path.insert(0, str(DOCS / "hooks"))
import generated  # noqa: E402  (docs/hooks/generated.py: the site's generated blocks)

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
WORDS = {w: i for i, w in enumerate(_NUMBERS)}


def _number(text: str) -> int:
    return int(text) if text.isdigit() else WORDS[text.lower()]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("path", sorted(DATA.rglob("*.json")), ids=lambda p: p.name)
def test_committed_data_holds_no_machine_paths(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    found = [s for s in _strings(data) if campaign.strip_machine_paths(s) != s]
    assert not found, f"{path}: absolute paths to project files: {found[0][:300]}"


def test_machine_path_check_can_fail() -> None:
    assert campaign.strip_machine_paths("/tmp/wt/conformance/test_x.py:3") != (
        "/tmp/wt/conformance/test_x.py:3"
    )


def test_false_alarm_prose_matches_its_data() -> None:
    page = (DOCS / "evidence" / "false-alarms.md").read_text(encoding="utf-8")
    rows = campaign.summarize(campaign.load_data(DATA / "false-alarms.json"))
    failures = [f for r in rows for f in r["failures"]]
    still_open = sum(f["cleared_by"] is None for f in failures)

    stated = re.search(r"(\w+) recorded failures", page)
    assert stated, "the page must say how many failures the data records"
    assert _number(stated.group(1)) == len(failures)
    says_uncleared = "not yet cleared in the data" in page
    assert says_uncleared == (still_open > 0)

    # What ran is told by the generated tables only: the prose types no seed count.
    assert "<!-- generated: false-alarms -->" in page
    typed = re.findall(r"\b\d+ (?:thorough )?seeds (?:per|for|of) ", page)
    aims = [t for t in typed if t.startswith(("200 ", "20 "))]  # the aims, old and new
    assert typed == aims, f"hand-typed seed counts: {typed}"
    assert rows, "the campaign data holds no session"


def test_kill_matrix_method_is_its_data() -> None:
    page = (DOCS / "evidence" / "mutant-zoo.md").read_text(encoding="utf-8")
    data = json.loads((DATA / "kill-matrix.json").read_text(encoding="utf-8"))
    assert "<!-- generated: kill-matrix-method -->" in page
    method = generated.render("kill-matrix-method")
    assert data["command"] in method
    assert f"{len(data['seeds'])} hypothesis seed" in method
    # no hand-typed command that claims to have made the published matrix
    typed = re.findall(r"python -m gpt2_evidence\.kill_matrix[^\n`]*kill-matrix\.json", page)
    assert not typed, f"hand-typed commands for the published matrix: {typed}"
    if len(data["seeds"]) == 1:
        claim = re.search(r"(several|many|multiple|five) (random |hypothesis )?seeds", page)
        assert claim is None, f"the page claims {claim.group(0)!r}; the matrix ran one seed"


def test_benchmarks_prose_quotes_no_gpu_without_gpu_data() -> None:
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    gpu = generated.REGISTRY["benchmarks-gpu"]
    if gpu.data_missing():
        cards = re.findall(r"\b(?:H100|H200|A100|A10G|V100|L4|T4|RTX ?\d+)\b", page)
        assert not cards, f"{gpu.data} is missing, yet the page quotes {cards}"


def test_readme_benchmark_figures_are_the_committed_benchmarks() -> None:
    """The README's benchmark sentence quotes docs/data/benchmarks.json as the benchmarks page
    renders it: the speed ratios and the share of the matmul ceiling at GPT-2 small."""
    from gpt2_benchmarks import run

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    rendered = run.render_markdown(json.loads((DATA / "benchmarks.json").read_text()))
    said = re.search(
        r"the reference is ([\d.]+)× / ([\d.]+)× as fast at a tiny config \(forward / training "
        r"step\) and ([\d.]+)× / ([\d.]+)× at GPT-2 small's shape \(batch (\d+) × (\d+)\), and "
        r"its GPT-2 small forward reaches (\d+)% of the measured matmul ceiling "
        r"\(transformers (\d+)%\)",
        readme,
    )
    assert said, "the README's benchmark sentence was reworded: update this test"

    def ratio(row: str) -> float:
        found = re.search(rf"^\| {row} \| ([\d.]+) \[", rendered, re.MULTILINE)
        assert found, row
        return float(found.group(1))

    def ceiling(implementation: str) -> float:
        found = re.search(
            rf"^\| small, forward \| {implementation} \|[^|]+\|[^|]+\|[^|]+\| ([\d.]+) \[",
            rendered,
            re.MULTILINE,
        )
        assert found, implementation
        return float(found.group(1))

    rows = ("tiny, forward", "tiny, train", "small, forward", "small, train")
    assert [float(said.group(i)) for i in range(1, 5)] == [ratio(r) for r in rows]
    assert (
        f"small: d=768, L=12, H=12, V=50257; batch {said.group(5)} x sequence {said.group(6)}"
        in (rendered)
    )
    assert int(said.group(7)) == round(ceiling("reference"))
    assert int(said.group(8)) == round(ceiling("transformers"))


def _table_after(section: str, header: str) -> dict[str, str]:
    """The rows of the Markdown table whose header row starts with ``header``, by the
    implementation in their first cell."""
    lines = section[section.index(header) :].splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))]
    return {
        match.group(1): match.group(0)
        for match in (re.match(r"^\| `(\w+)` \|.*$", line) for line in table[2:])
        if match
    }


def test_benchmarks_strategy_table_is_the_committed_runs() -> None:
    """The side-by-side tables of "Strategies made once per set of arguments" quote
    docs/data/suite-speed-strategies.json: per implementation, the after / before ratio of each
    pass's wall time and the seconds in tests of both runs (first version, then final)."""
    data = json.loads((DATA / "suite-speed-strategies.json").read_text(encoding="utf-8"))
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    section = page[page.index("**Strategies made once per set of arguments") :]
    for header, passes in (
        ("| `--impl` | after / before", data["passes"]),
        ("| `--impl` | final / before", data["final"]["passes"]),
    ):
        rows = _table_after(section, header)
        impls = sorted({name.split()[0] for run in passes for name in run})
        assert sorted(rows) == impls
        for impl in impls:
            runs = [(run[f"{impl} this"], run[f"{impl} other"]) for run in passes]
            ratios = ", ".join(f"{new['wall_s'] / old['wall_s']:.2f}" for new, old in runs)
            tests = ", ".join(
                f"{new['timing']['tests_s']:.1f} / {old['timing']['tests_s']:.1f}"
                for new, old in runs
            )
            assert rows[impl] == f"| `{impl}` | {ratios} | {tests} |", (impl, ratios, tests)
