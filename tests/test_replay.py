"""Replaying a failure as printed: the suite prints, under a failing property, the command that
replays its example (``--pyargs 'gpt2_conformance.MODULE::NAME' ... --conformance-replay=BLOB``);
run as printed, from an empty directory and without editing any installed file, it fails the same
way. Also the option's own errors."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2_conformance import options

MUTANT = "gpt2_zoo.sequence_bugs:CausalLeak"
PROPERTY = "test_changing_future_tokens_changes_no_earlier_row"
# The failure block indents the command under "replay this example:".
REPLAY = re.compile(r"^ *(python -m pytest --pyargs .*--conformance-replay=\S+)$", re.MULTILINE)


def _pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _conformance_message(report: dict) -> str:
    (failed,) = [r for r in report["requirements"] if r["status"] == "fail"]
    return failed["message"]


def test_printed_replay_command_reproduces_the_failure(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    found = _pytest(
        [
            "--pyargs",
            "gpt2_conformance",
            f"--impl={MUTANT}",
            "-k",
            PROPERTY,
            "--conformance-profile=dev",  # random: the replay must not depend on derandomizing
            "--conformance-report=report.json",
            "-p",
            "no:cacheprovider",
        ],
        first,
    )
    assert found.returncode == 1, found.stdout[-3000:]
    printed = REPLAY.findall(found.stdout)
    assert len(printed) == 1, found.stdout[-3000:]
    command = printed[0]
    assert f"'gpt2_conformance.test_causality::{PROPERTY}'" in command or (
        f"gpt2_conformance.test_causality::{PROPERTY}" in shlex.split(command)
    )
    report = json.loads((first / "report.json").read_text())
    (entry,) = [t for r in report["requirements"] for t in r["tests"] if t["outcome"] == "failed"]
    assert f"Replay this example: {command}" in entry["hypothesis"]

    again = tmp_path / "again"  # an empty directory: nothing from the first run helps
    again.mkdir()
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pytest"]
    replayed = _pytest([*argv[3:], "--conformance-report=report.json"], again)
    assert replayed.returncode == 1, replayed.stdout[-3000:]
    assert re.search(r"\b1 failed\b", replayed.stdout), replayed.stdout[-3000:]
    again_report = json.loads((again / "report.json").read_text())
    assert _conformance_message(again_report) == _conformance_message(report)
    # the replay runs that one example: the same command is printed again
    assert REPLAY.findall(replayed.stdout) == [command]


def test_replay_needs_exactly_one_property(tmp_path: Path) -> None:
    done = _pytest(
        [
            "--pyargs",
            "gpt2_conformance.test_causality",
            f"--impl={MUTANT}",
            "--conformance-replay=AEEAQQVBCEEAQQFBAEEAQQJBAEEE",
            "-p",
            "no:cacheprovider",
        ],
        tmp_path,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "select the property by its node id" in done.stderr


def test_parse_replay_reads_the_line_or_the_blob() -> None:
    from hypothesis import __version__

    blob = "AEEAQQVBCEEAQQFBAEEAQQJBAEEE"
    line = f"You can reproduce this by adding @reproduce_failure('{__version__}', b'{blob}') as"
    expected = (__version__, blob.encode())
    assert options.parse_replay(line) == expected
    assert options.parse_replay(blob) == expected
    assert options.parse_replay(f"b'{blob}'") == expected
    assert options.parse_replay(None) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("@reproduce_failure('0.0.1', b'AEEA')", "pip install 'hypothesis==0.0.1'"),
        ("not a blob!", "the whole @reproduce_failure(...) line"),
    ],
)
def test_parse_replay_rejects_what_cannot_replay(text: str, says: str) -> None:
    with pytest.raises(options.OptionError, match=re.escape(says)):
        options.parse_replay(text)
