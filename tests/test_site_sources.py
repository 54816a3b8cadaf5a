"""The site builds from plain Markdown and assets, without MkDocs hooks: ``docs/generate.py OUT``
writes the sources, and both MkDocs (``--strict``) and Zensical (``--strict``, then
``docs/generate.py --finish`` for the math and the API pages' roles) build the same pages from
them, with every generated block, figure and formula."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATE = ROOT / "docs" / "generate.py"


def _pages(site: Path) -> dict[str, str]:
    return {
        p.relative_to(site).as_posix(): p.read_text(encoding="utf-8")
        for p in site.rglob("index.html")
    }


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sources")
    _run([sys.executable, str(GENERATE), str(out)], ROOT)
    return out


def test_the_sources_need_no_generation_hook(sources: Path) -> None:
    config = (sources / "mkdocs.yml").read_text(encoding="utf-8")
    hooks = re.findall(r"^  - (\S+/hooks/\S+)$", config, re.MULTILINE)
    assert [Path(h).name for h in hooks] == ["mathml.py", "api_pages.py"]
    markdown = "".join(p.read_text(encoding="utf-8") for p in (sources / "docs").rglob("*.md"))
    assert not re.search(r"^<!-- generated: ", markdown, re.MULTILINE)
    assert (sources / "docs" / "spec" / "02-objective.md").is_file()
    assert sorted(p.name for p in (sources / "docs" / "figures").iterdir())


def test_mkdocs_and_zensical_build_the_same_pages(sources: Path, tmp_path: Path) -> None:
    mkdocs_site = tmp_path / "mkdocs"
    _run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            "mkdocs.yml",
            "--site-dir",
            str(mkdocs_site),
        ],
        sources,
    )
    assert importlib.util.find_spec("zensical"), (
        "zensical is in the dev extra: pip install -e '.[dev]'"
    )
    _run([sys.executable, "-m", "zensical", "build", "--strict", "-f", "mkdocs.yml"], sources)
    zensical_site = sources / "site"
    _run([sys.executable, str(GENERATE), "--finish", str(zensical_site)], ROOT)

    built = _pages(mkdocs_site)
    zensical = _pages(zensical_site)
    assert len(built) >= 30
    assert sorted(zensical) == sorted(built)
    for uri, html in zensical.items():
        assert 'class="arithmatex"' not in html, f"{uri}: math left as TeX"
        assert html.count("<math ") == built[uri].count("<math "), uri
        assert ":func:<code>" not in html, uri
    chapter = zensical["spec/03-causality/index.html"]
    assert "Illustration (not normative)" in chapter
    assert 'id="causality.future-invisible"' in chapter
    assert "Failures recorded" in zensical["evidence/false-alarms/index.html"]
