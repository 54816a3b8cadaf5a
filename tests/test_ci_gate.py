"""The CI-gate guide's jobs, run as printed (docs/guides/ci-gate.md).

The ``run:`` steps of the guide's two YAML blocks (the gate job, and the sharded matrix job with
its merge job) are read from the page, not retyped, and run in a fresh virtual environment
against a user project whose ``my_package/gpt2_adapter.py`` is the reference adapter. Two
substitutions, which the guide states: the suite is installed from a wheel of this checkout
instead of ``git+https://github.com/OWNER/...``, and torch is not downloaded: the fresh
environment sees this environment's packages (torch, numpy, hypothesis, ...) through a ``.pth``
file, all but this project, pytest and pytest-xdist, so the guide's install lines must bring
those from the package index (pytest-xdist through the ``xdist`` extra).

The sharded job runs both slices and the merge, and the merged report must give every
requirement the status of the unsharded run. That test is marked ``slow`` (deselect it with
``-m "not slow"``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guides" / "ci-gate.md"
SUITE_URL = re.compile(r"git\+https://github\.com/OWNER/gpt2-conformance@\S+?(?=\")")
#: What the fresh environment must install itself (the rest it borrows from this one): this
#: project, pytest-xdist, and pytest (whose ``pytest`` command the job runs).
NOT_BORROWED = re.compile(
    r"^(gpt2_conformance|__editable__|xdist|pytest_xdist|execnet|_?pytest$|pytest-\d|py\.py$)",
    re.IGNORECASE,
)


def guide_block(name: str) -> dict[str, Any]:
    """The YAML block after ``<!-- ci-gate: NAME -->`` in the guide."""
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(rf"<!-- ci-gate: {name} -->\n```yaml\n(.*?)\n```", text, re.DOTALL)
    assert found, f"{GUIDE}: no YAML block marked <!-- ci-gate: {name} -->"
    return yaml.safe_load(found.group(1))


def run_steps(job: dict[str, Any]) -> dict[str, str]:
    """A job's steps that run commands: name -> the command."""
    return {step["name"]: step["run"] for step in job["steps"] if "run" in step}


def test_guide_blocks_are_the_jobs_this_test_runs() -> None:
    """The parsing below can fail: the blocks are there, with the steps the tests run."""
    job = guide_block("job")["jobs"]["gpt2-conformance"]
    assert list(run_steps(job)) == ["Install", "Conformance suite", "Verdict"]
    sharded = guide_block("sharded")["jobs"]
    assert sharded["shard"]["strategy"]["matrix"]["shard"] == [1, 2]
    assert list(run_steps(sharded["merge"])) == ["Install", "Merge and check"]
    extras = _pyproject()["project"]["optional-dependencies"]
    assert any(r.startswith("pytest-xdist") for r in extras["xdist"])
    assert "gpt2-conformance[xdist] @" in run_steps(job)["Install"]


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


class Sandbox:
    """A fresh virtual environment and a user project to run the guide's steps in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = root / "project"
        self.venv = root / "venv"
        self.wheel = self._build_wheel()
        self._make_venv()
        self._make_project()

    def _build_wheel(self) -> Path:
        out = self.root / "wheels"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(out),
                str(ROOT),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        [wheel] = out.glob("gpt2_conformance-*.whl")
        return wheel

    def _make_venv(self) -> None:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(self.venv)], check=True)
        borrowed = self.root / "borrowed"
        borrowed.mkdir()
        here = Path(sysconfig.get_paths()["purelib"])
        for entry in here.iterdir():
            if not NOT_BORROWED.match(entry.name) and not entry.name.endswith(".pth"):
                (borrowed / entry.name).symlink_to(entry)
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(purelib) / "borrowed.pth").write_text(f"{borrowed}\n", encoding="utf-8")

    def _make_project(self) -> None:
        package = self.project / "my_package"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("", encoding="utf-8")
        (package / "gpt2_adapter.py").write_text(
            '"""The user\'s GPT-2: here the reference, which conforms."""\n\n'
            "from gpt2_conformance.loading import load_adapter\n\n"
            'adapter = load_adapter("reference")\n',
            encoding="utf-8",
        )
        (self.project / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            '[project]\nname = "my-package"\nversion = "0.0.1"\n\n'
            '[tool.setuptools]\npackages = ["my_package"]\n',
            encoding="utf-8",
        )

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """One ``run:`` step, as GitHub runs it (bash -e), with the guide's substitutions."""
        lines = []
        for line in script.splitlines():
            if line.strip().startswith("pip install torch "):
                continue  # torch is borrowed from this environment
            lines.append(SUITE_URL.sub(self.wheel.as_uri(), line))
        environment = {
            **os.environ,
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(self.venv),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **env,
        }
        environment.pop("PYTHONPATH", None)
        return subprocess.run(
            ["bash", "-e", "-c", "\n".join(lines)],
            cwd=self.project,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )


def statuses(path: Path) -> dict[str, str]:
    report = json.loads(path.read_text(encoding="utf-8"))
    return {r["id"]: r["status"] for r in report["requirements"]}


def _matrix(command: str, shard: int) -> str:
    return command.replace("${{ matrix.shard }}", str(shard))


@pytest.mark.slow
def test_the_ci_gate_jobs_run_as_printed(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    job = run_steps(guide_block("job")["jobs"]["gpt2-conformance"])
    out = []

    installed = box.run(job["Install"])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    summary = tmp_path / "summary.md"
    suite = box.run(job["Conformance suite"], GITHUB_STEP_SUMMARY=str(summary))
    out.append(suite.stdout)
    assert "created: 2/2 workers" in suite.stdout, suite.stdout[-3000:] + suite.stderr
    assert "--xfails-file=conformance-xfails.txt: no such file" in suite.stdout, suite.stdout
    verdict = box.run(job["Verdict"])
    assert verdict.returncode == 0, suite.stdout[-3000:] + verdict.stdout + verdict.stderr
    assert (box.project / "conformance.xml").is_file()
    markdown = summary.read_text(encoding="utf-8")
    assert "CONFORMS" in markdown
    assert "](spec/02-objective.md#objective." in markdown  # OWNER unset: relative links
    leftovers = {p.name for p in box.project.iterdir()} - {
        "my_package",
        "pyproject.toml",
        "conformance.json",
        "conformance.xml",
        "my_package.egg-info",  # pip install -e . of the user's own package
        "build",
    }
    assert not leftovers, f"the job left {leftovers} in the user's checkout"

    # The sharded job: both slices, then the merge job in a folder with the two reports only.
    sharded = guide_block("sharded")["jobs"]
    slice_steps = run_steps(sharded["shard"])
    for shard in (1, 2):
        done = box.run(_matrix(slice_steps["Conformance suite, one slice"], shard))
        assert f"shard: {shard}/2 of the properties" in done.stdout, done.stdout[-3000:]
    merge_dir = box.project / "merge"
    merge_dir.mkdir()
    for shard in (1, 2):
        (box.project / f"conformance-{shard}.json").rename(merge_dir / f"conformance-{shard}.json")
    merge_steps = run_steps(sharded["merge"])
    installed = box.run(merge_steps["Install"])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    merged_summary = tmp_path / "merged.md"
    merged = box.run(
        f"cd {shlex.quote(str(merge_dir))}\n" + merge_steps["Merge and check"],
        GITHUB_STEP_SUMMARY=str(merged_summary),
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    whole = statuses(box.project / "conformance.json")
    assert statuses(merge_dir / "conformance.json") == whole
    assert set(whole.values()) == {"pass"}
    assert "CONFORMS" in merged_summary.read_text(encoding="utf-8")


def test_markdown_links_are_absolute_when_a_site_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpt2_conformance import report

    data = json.loads((ROOT / "docs" / "data" / "reports" / "reference.json").read_text())
    first = data["requirements"][0]
    site = "https://example.org/gpt2-conformance/"
    page, _, rid = first["anchor"].partition("#")
    absolute = f"({site}{page.removesuffix('.md')}/#{rid})"
    assert absolute in report.to_markdown(data, base_url=site)
    assert f"({first['anchor']})" in report.to_markdown(data, base_url="")
    monkeypatch.setenv(report.ENV_DOCS_URL, site)
    assert absolute in report.to_markdown(data)
    monkeypatch.delenv(report.ENV_DOCS_URL)
    # the package's Documentation URL still holds the OWNER placeholder: no site yet
    documentation = _pyproject()["project"]["urls"]["Documentation"]
    assert ("OWNER" in documentation) == (report.docs_url() is None)
