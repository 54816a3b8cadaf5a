"""Every count the prose states is the count of the thing it counts.

README.md, spec/README.md and the docs say "56 requirements", "73 hypothesis properties", "68
broken GPT-2s", "13 architectures" and so on. :mod:`gpt2_evidence.counts` derives each such number
from where the fact lives (the spec's chapters and profiles, the suite's properties, the mutant
zoo, the built-in adapters' table, the committed evidence JSON), says where the prose states which
(its claims) and rewrites a stale one in place (``python -m gpt2_evidence.counts --write``). The
tests here fail on a stale count, with its file and line; on a "<number> requirements/properties/
mutants/..." that no claim checks, so that a new hand-typed count cannot slip in unchecked; and on
a claim that matches no prose. They check the rewriting itself, and run the command the "Writing
a requirement" guide prints.

The committed evidence (docs/data/) is checked for staleness here too: its reports, kill matrix
and peers matrix must cover exactly the spec's requirements, the zoo's mutants and the built-in
peers of today.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_conformance.adapters import PEER_NAMES, baselines
from gpt2_evidence import counts
from gpt2_evidence.counts import SWEEP, Claim, occurrences, truth
from gpt2_spec import load_profiles, load_requirements

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"
GUIDE = ROOT / "docs" / "guides" / "writing-a-requirement.md"


def test_the_counts_module_reads_this_checkout() -> None:
    assert ROOT == counts.REPOSITORY
    assert ROOT / "README.md" in counts.prose()
    assert ROOT / "spec" / "CHANGELOG.md" not in counts.prose()  # history, true when written
    assert not [p for p in counts.prose() if DATA in p.parents]


def test_every_count_in_the_prose_is_true() -> None:
    stale = [s.message() for s in counts.stale()]
    assert not stale, (
        "stale counts in the prose (python -m gpt2_evidence.counts --write):\n" + "\n".join(stale)
    )


def test_every_claim_is_found_in_the_prose() -> None:
    """A claim that matches nothing checks nothing: the prose was reworded, so is the claim."""
    unused = [f"{c.key}: {c.pattern}" for c in counts.unused_claims()]
    assert not unused, "claims that match no prose (update or remove them):\n" + "\n".join(unused)
    excuses = counts.unused_not_counts()
    assert not excuses, f"NOT_COUNTS entries that match no prose: {excuses}"


def test_every_claim_states_a_derived_count() -> None:
    keys = set(truth())
    assert not [c.key for c in counts.CLAIMS if c.key not in keys]
    assert not keys - {c.key for c in counts.CLAIMS}, "a derived count no claim states"


def test_no_count_escapes_the_claims() -> None:
    loose = [f"{f.where()}: {f.text!r}" for f in counts.unclaimed()]
    assert not loose, (
        "hand-typed counts no claim checks (add a Claim in gpt2_evidence.counts):\n"
        + "\n".join(loose)
    )


def test_the_check_finds_nothing() -> None:
    """What ``python -m gpt2_evidence.counts`` lists (all of the above, in one list)."""
    assert counts.problems() == []
    assert counts.main([]) == 0


def test_a_stale_count_is_reported_with_its_place(tmp_path: Path) -> None:
    """The checker itself: a wrong number is found, with file and line, and a word counts."""
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n\nThe spec has eight\nchapters and 700 hypothesis properties.\n"
        "The GPT-2 built-ins are not '2 built-ins'; version 1.2 adapters neither.\n"
    )
    (chapters,) = occurrences(Claim("chapters", r"\b{N} chapters\b").regex(), page)
    assert (chapters.line, chapters.value) == (3, 8)
    (props,) = occurrences(Claim("properties", r"\b{N} hypothesis properties").regex(), page)
    assert (props.line, props.value) == (4, 700)
    assert props.value != truth()["properties"]
    assert [f.value for f in occurrences(SWEEP, page)] == [8, 700, 2]  # the quoted one only


def test_numbers_are_written_back_in_their_style() -> None:
    assert [counts.spell(13, like) for like in ("12", "twelve", "Twelve", "TWELVE")] == [
        "13",
        "thirteen",
        "Thirteen",
        "THIRTEEN",
    ]
    assert counts.spell(21, "twenty") == "21"  # past the words: digits
    assert counts.spell(1, "2") == "1"
    assert [counts.value(w) for w in ("7", "seven", "Seven")] == [7, 7, 7]


def _checkout_copy(tmp_path: Path) -> dict[Path, bytes]:
    """A copy of the prose under tmp_path, as ``relative path -> bytes``."""
    pages = {p.relative_to(ROOT): p.read_bytes() for p in counts.prose()}
    for relative, content in pages.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    return pages


def _make_stale(tmp_path: Path, word: bool = True) -> list[str]:
    """Break a claimed count of the copy written in digits and, with ``word``, make another one a
    wrong number word; their places."""
    page = tmp_path / "README.md"
    text = page.read_text(encoding="utf-8")
    true = truth()["requirements"]
    (found,) = occurrences(
        Claim("requirements", r"\b{N} requirements with stable ids").regex(), page
    )
    assert found.number == str(true)
    text = text[: found.number_start] + str(true - 1) + text[found.number_end :]
    if not word:
        page.write_text(text, encoding="utf-8")
        return [f"README.md:{found.line}"]
    # a number word: what was written as digits is written as a word, and stays a word
    peers = Claim("peer architectures", r"\bOf {N} transformers architectures").regex()
    (word,) = occurrences(peers, page)
    text = text[: word.number_start] + counts.WORDS[3] + text[word.number_end :]
    page.write_text(text, encoding="utf-8")
    return [f"README.md:{found.line}", f"README.md:{word.line}"]


def test_write_rewrites_only_the_stale_numbers(tmp_path: Path) -> None:
    original = _checkout_copy(tmp_path)
    places = _make_stale(tmp_path)
    before = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert sorted(s.found.where(tmp_path) for s in counts.stale(tmp_path)) == sorted(places)
    fixed = counts.rewrite(tmp_path)
    assert len(fixed) == 2
    after = (tmp_path / "README.md").read_text(encoding="utf-8")
    # the digit is the original's again; the word is the true count written as a word
    true = truth()
    assert f"{true['requirements']} requirements with stable ids" in after
    assert f"Of {counts.spell(true['peer architectures'], 'three')} transformers" in after
    assert len(after.splitlines()) == len(before.splitlines())
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 2
    for relative, content in original.items():
        if relative != Path("README.md"):
            assert (tmp_path / relative).read_bytes() == content, relative
    assert counts.stale(tmp_path) == []
    assert counts.rewrite(tmp_path) == []  # nothing left to write


def _guide_commands() -> list[str]:
    """The ``python -m gpt2_evidence.counts ...`` lines of the guide's shell blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith("python -m gpt2_evidence.counts")
    ]


def test_the_guides_commands_restore_the_counts(tmp_path: Path) -> None:
    """The commands "Writing a requirement" prints, run as printed (on a copy of the prose, with
    ``--root``): the check lists the stale places and fails; ``--write`` puts every file back
    byte for byte."""
    commands = _guide_commands()
    assert any("--write" in c.split() for c in commands), (
        f"{GUIDE.relative_to(ROOT)} prints no `python -m gpt2_evidence.counts --write`"
    )
    original = _checkout_copy(tmp_path)
    places = _make_stale(tmp_path, word=False)  # so that --write restores the copy byte for byte
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "python", command
        run = subprocess.run(
            [sys.executable, *argv[1:], "--root", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )
        restored = all((tmp_path / r).read_bytes() == c for r, c in original.items())
        if "--write" in argv:
            assert run.returncode == 0, run.stdout + run.stderr
            assert restored
        elif restored:
            assert run.returncode == 0, run.stdout + run.stderr
        else:
            assert run.returncode == 1, run.stdout + run.stderr
            assert all(place in run.stdout for place in places), run.stdout
    assert all((tmp_path / r).read_bytes() == c for r, c in original.items())


def test_the_command_refuses_a_root_that_is_no_checkout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        counts.main(["--root", str(tmp_path)])
    assert exit_.value.code == 2


# ---- the committed evidence covers today's spec, zoo and peers -----------------------------


@pytest.mark.parametrize("name", baselines())
def test_each_report_covers_the_spec(name: str) -> None:
    """A built-in's committed report judges exactly the spec's requirements, in spec order:
    after a requirement is added, removed or renamed, rerun
    `python -m gpt2_evidence.refresh_reports`."""
    ids = [r.id for r in load_requirements()]
    assert [e["id"] for e in counts.report(name)["requirements"]] == ids, (
        f"docs/data/reports/{name}.json is stale: "
        f"python -m gpt2_evidence.refresh_reports --impl {name}"
    )


def test_the_kill_matrix_covers_the_spec_and_the_zoo() -> None:
    matrix = json.loads((DATA / "kill-matrix.json").read_text())
    assert matrix["requirements"] == [r.id for r in load_requirements()], (
        "docs/data/kill-matrix.json is stale (requirements): "
        "rerun `python -m gpt2_evidence.kill_matrix`"
    )
    assert sorted(m["name"] for m in matrix["mutants"]) == sorted(m.name for m in counts.zoo()), (
        "docs/data/kill-matrix.json is stale (mutants): rerun `python -m gpt2_evidence.kill_matrix`"
    )


def test_the_peers_matrix_covers_the_profile_and_the_peers() -> None:
    matrix = counts.peers_matrix()
    causal = load_profiles()["causal-lm"]
    assert set(matrix["requirements"]) == set(causal.requirements), (
        "docs/data/peers.json is stale (causal-lm profile): "
        "rerun `python -m gpt2_evidence.peers_matrix`"
    )
    peers = [a["impl"] for a in matrix["architectures"] if a["impl"].startswith("hf:")]
    assert peers == [f"hf:{n}" for n in PEER_NAMES], (
        "docs/data/peers.json is stale (peers): rerun `python -m gpt2_evidence.peers_matrix`"
    )


# --- the README's table of suite runs, against the committed reports ------------------------------


def test_the_readme_run_table_is_the_reports() -> None:
    """Each row's wall time and implementation share are the committed report's, rounded."""
    assert counts.run_table(ROOT) == []
    rows = [
        line for line in (ROOT / "README.md").read_text().splitlines() if counts.RUN_ROW.match(line)
    ]
    assert len(rows) >= 3, "the README's table of suite runs was not found"


def test_write_puts_the_reports_timings_in_the_run_table(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in original.splitlines() if line.startswith("| `reference` |"))
    stale_row = counts.RUN_ROW.sub(lambda m: f"{m['head']}999 s | 1% |", row)
    readme.write_text(original.replace(row, stale_row), encoding="utf-8")
    (found,) = counts.run_table(tmp_path)
    assert "999 s, 1%" in found
    assert found.startswith("README.md:")
    assert counts.run_table(tmp_path, write=True) == [found]
    assert readme.read_text(encoding="utf-8") == original
    assert counts.run_table(tmp_path) == []
