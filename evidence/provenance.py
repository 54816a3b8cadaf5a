"""Where and with what a piece of evidence was produced, in one layout for every producer.

Every record the evidence producers and the benchmarks write (``docs/data/*.json``, the adapter
reports, a campaign session) carries a ``"provenance"`` object made by :func:`collect`::

    {
      "date": "2026-11-28T04:33:00+00:00",          # UTC, ISO 8601, to the second
      "machine": {
        "label": "2-core x86_64 Linux",             # how the docs name it (--machine-label)
        "cpu": "AMD EPYC", "cores": 2, "arch": "x86_64",
        "platform": "Linux-6.18-...-x86_64-with-glibc2.36",
        "gpu": null,                                 # the CUDA device's name, when one was used
        "note": null                                 # anything else worth saying (--machine-note)
      },
      "software": {
        "python": "3.11.7", "numpy": "2.4.6", "torch": "2.13.0+cpu", "transformers": "5.24.0",
        "hypothesis": "6.170.17", "pytest": "9.2.0", "pytest-xdist": "3.8.0",
        "gpt2-conformance": "0.1.0", "spec": "1.0.0-draft", "cuda": null,
        "commit": "3fe1a43"                          # git's short hash, "-dirty" if modified
      }
    }

Records committed before this module existed wrote the same facts in five layouts of their own;
:func:`read` turns any of them into this one, so every renderer reads one layout and the committed
evidence stays readable without being regenerated.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: The repository checkout this package lives in (the evidence is written into its docs/data/).
REPOSITORY = Path(__file__).resolve().parents[1]
DATA = REPOSITORY / "docs" / "data"

#: The distributions whose versions every record names ("not installed" when absent).
PACKAGES = (
    "numpy",
    "torch",
    "transformers",
    "hypothesis",
    "pytest",
    "pytest-xdist",
    "gpt2-conformance",
)


def require_checkout() -> Path:
    """The repository root, or a clear exit when this package runs from an installed wheel."""
    if not (REPOSITORY / "pyproject.toml").is_file() or not DATA.is_dir():
        raise SystemExit(
            "gpt2_evidence writes the evidence of a checkout of the gpt2-conformance repository "
            f"(its docs/data/), and {REPOSITORY} is not one: clone the repository and install it "
            "with `pip install -e .`, or pass explicit output paths"
        )
    return REPOSITORY


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, check=False
    )


def commit() -> str | None:
    """The checkout's short commit hash, ``-dirty`` when tracked files are modified; None outside
    a git checkout."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect(
    *,
    device: str = "cpu",
    label: str | None = None,
    note: str | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """The provenance of a record produced now, on this machine (imports torch only when
    ``device`` is ``"cuda"``, to name the GPU). ``revision`` replaces the commit git reports
    (for a checkout with changes that have no commit yet)."""
    from gpt2_spec import SPEC_VERSION

    cores = os.cpu_count()
    gpu = cuda = None
    if device == "cuda":
        import torch

        gpu, cuda = torch.cuda.get_device_name(0), torch.version.cuda
    software: dict[str, Any] = {"python": platform.python_version()}
    software.update({package: _version(package) for package in PACKAGES})
    software.update({"spec": SPEC_VERSION, "cuda": cuda, "commit": revision or commit()})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "label": label or f"{cores}-core {platform.machine()} {platform.system()}",
            "cpu": cpu_model(),
            "cores": cores,
            "arch": platform.machine(),
            "platform": platform.platform(),
            "gpu": gpu,
            "note": note,
        },
        "software": software,
    }


def when(provenance: Mapping[str, Any]) -> str:
    """The record's date as the docs print it: ``2026-11-28 04:33 UTC``."""
    date = datetime.datetime.fromisoformat(provenance["date"]).astimezone(datetime.timezone.utc)
    return date.strftime("%Y-%m-%d %H:%M UTC")


# ---- reading: the one layout, from any record ------------------------------------------------

_SOFTWARE_KEYS = ("python", "torch", "transformers", "hypothesis", "numpy")


def _iso(date: str | None) -> str | None:
    """An old record's date (``2026-11-28 04:33 UTC`` or ISO 8601) as ISO 8601."""
    if not date:
        return None
    if date.endswith(" UTC"):
        parsed = datetime.datetime.strptime(date, "%Y-%m-%d %H:%M UTC")
        return parsed.replace(tzinfo=datetime.timezone.utc).isoformat(timespec="seconds")
    return date


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def read(record: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of ``record`` in :func:`collect`'s layout.

    ``record`` is a whole record (kill matrix, peers matrix, benchmarks, an adapter report) or one
    false-alarm campaign session. Records written before the layout was shared are converted:
    the kill matrix's ``date`` and ``machine`` (with the versions inside), the peers matrix's
    ``machine`` (``system``) and ``versions``, the benchmarks' ``machine`` (``cpu_model``,
    ``date_utc``, ``gpu``, ``cuda``), a campaign session's ``machine`` (``label``, ``cpus``) and
    ``software`` with its ``started``, and an adapter report's ``environment`` with its
    ``created``. Facts an old layout did not record are None."""
    if "provenance" in record:
        found: dict[str, Any] = record["provenance"]
        return found
    old_machine: Mapping[str, Any] = record.get("machine") or {}
    env: Mapping[str, Any] = record.get("environment") or {}
    software: dict[str, Any] = {}
    if "software" in record:  # a campaign session: its software as it was recorded
        software = dict(record["software"])
    else:
        for source in (env, old_machine, record.get("versions") or {}):
            for key, value in source.items():
                if key in (*_SOFTWARE_KEYS, "suite", "spec", "cuda") and value is not None:
                    software[key] = value
    date = _iso(
        record.get("date")
        or old_machine.get("date_utc")
        or record.get("started")
        or record.get("created")
    )
    machine = {
        "label": old_machine.get("label"),
        "cpu": old_machine.get("cpu") or old_machine.get("cpu_model") or None,
        "cores": _first(
            old_machine.get("cores"),
            old_machine.get("cpu_cores"),
            old_machine.get("cpus"),
            env.get("cpu_count"),
        ),
        "arch": env.get("machine"),
        "platform": old_machine.get("platform") or old_machine.get("system") or env.get("platform"),
        "gpu": old_machine.get("gpu"),
        "note": old_machine.get("note"),
    }
    return {"date": date, "machine": machine, "software": software}
