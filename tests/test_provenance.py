"""``gpt2_evidence.provenance``: one layout for where and with what evidence was produced, and the
committed records of the older layouts read into it."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from gpt2_evidence import provenance

DATA = Path(__file__).resolve().parents[1] / "docs" / "data"


def _committed(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return record


def test_a_new_record_has_the_one_layout() -> None:
    origin = provenance.collect(label="a box", note="shared")
    assert set(origin) == {"date", "machine", "software"}
    assert set(origin["machine"]) == {"label", "cpu", "cores", "arch", "platform", "gpu", "note"}
    assert (origin["machine"]["label"], origin["machine"]["note"]) == ("a box", "shared")
    assert origin["machine"]["cores"] == os.cpu_count()
    assert origin["machine"]["arch"] == platform.machine()
    assert origin["machine"]["gpu"] is None  # a CPU record names no GPU
    software = origin["software"]
    assert set(software) == {"python", *provenance.PACKAGES, "spec", "cuda", "commit"}
    assert software["python"] == platform.python_version()
    import torch

    assert software["torch"] == torch.__version__
    date = datetime.datetime.fromisoformat(origin["date"])
    assert date.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.timezone.utc) - date).total_seconds()) < 60
    assert provenance.read({"provenance": origin}) == origin
    assert provenance.collect(revision="abc123")["software"]["commit"] == "abc123"
    assert provenance.when({"date": "2026-11-28T04:33:09+00:00"}) == "2026-11-28 04:33 UTC"


#: Records in the old layouts whose committed files have since been rewritten in the one layout.
OLD = json.loads((Path(__file__).parent / "data" / "old-provenance-layouts.json").read_text())


def _reports() -> dict[str, Any]:
    report: dict[str, Any] = OLD["adapter-report"]
    return report


@pytest.mark.parametrize(
    ("record", "date", "cpu", "cores"),
    [
        (lambda: OLD["kill-matrix"], "2026-11-28T04:33:00+00:00", "AMD EPYC", 2),
        (lambda: _committed("peers.json"), "2026-11-28T01:38:29+00:00", "AMD EPYC", 2),
        (lambda: _committed("benchmarks.json"), "2026-11-28T02:10:00+00:00", "AMD EPYC", 2),
        (
            lambda: _committed("false-alarms.json")["sessions"][0],
            "2026-11-28T01:12:42+00:00",
            "AMD EPYC",
            2,
        ),
        (_reports, "2026-11-28T01:25:34+00:00", None, 2),
    ],
    ids=["kill-matrix", "peers", "benchmarks", "campaign-session", "adapter-report"],
)
def test_every_committed_layout_reads_into_the_one_layout(
    record: Any, date: str, cpu: str | None, cores: int
) -> None:
    """The five layouts the producers wrote before they shared one (docs/data/ keeps three of
    them; tests/data/ the two whose files were rewritten since)."""
    origin = provenance.read(record())
    assert set(origin) == {"date", "machine", "software"}
    assert origin["date"] == date
    assert (origin["machine"]["cpu"], origin["machine"]["cores"]) == (cpu, cores)
    assert origin["machine"]["platform"].startswith("Linux-")
    assert origin["software"]["torch"] == "2.13.0+cpu"
    assert origin["software"]["transformers"] == "5.24.0"
    assert provenance.when(origin)[:10] == date[:10]


@pytest.mark.parametrize("name", ["kill-matrix.json", "reports/reference.json"])
def test_a_rewritten_record_is_in_the_one_layout(name: str) -> None:
    origin = provenance.read(_committed(name))
    assert set(origin) == {"date", "machine", "software"}
    assert origin["software"]["torch"]
