"""The README is the package's long description on a package index: every link in it must work
there, so each is absolute and points into this repository's Source URL (pyproject.toml) at a
file that exists; and it says how to install from the index and from a checkout."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _source() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["urls"]["Source"].rstrip("/") + "/blob/main/"


def test_readme_links_are_absolute_and_name_files_of_the_repository() -> None:
    targets = [m.group("target") for m in LINK.finditer(README)]
    assert len(targets) >= 10
    source = _source()
    for target in targets:
        assert target.startswith(("https://", "http://")), f"relative link: {target}"
        if target.startswith(source):
            path = target.removeprefix(source).partition("#")[0]
            assert (ROOT / path).exists(), f"{target}: no {path} in the repository"


def test_readme_says_how_to_install() -> None:
    assert "pip install gpt2-conformance" in README
    assert 'pip install -e ".[dev]"' in README
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    for extra in re.findall(r'pip install "gpt2-conformance\[(\w+)\]"', README):
        assert extra in extras, f"the README installs the extra {extra!r}, which is not defined"


def test_the_site_is_published_where_the_package_says() -> None:
    """mkdocs.yml's site_url is pyproject's Documentation URL, which reports link to."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    site = re.search(r"^site_url: (\S+)$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert site, "mkdocs.yml has no site_url"
    assert site.group(1) == project["urls"]["Documentation"]


def _layout_picture() -> list[tuple[str, str]]:
    """The README's picture of the layout: ``(folder, name)`` for each file or folder it names,
    a name on an indented line belonging to the last folder named at a line's start."""
    block = README.split("Where things live, as a picture", 1)[1].split("```text\n", 1)[1]
    named: list[tuple[str, str]] = []
    folder = ""
    for line in block.split("\n```", 1)[0].splitlines():
        if line[:1] not in ("", " "):
            folder = line.split()[0]
        for name in re.findall(
            r"(?<![\w/<…*-])[\w.-]+(?:/[\w.-]+)*(?:\.py|\.md|/)(?![\w<…*])", line
        ):
            if name != folder:
                named.append((folder, name))
    return named


def test_the_layout_picture_names_what_is_there() -> None:
    """Every file or folder the picture names exists (under its folder, or from the root for a
    path such as docs/data/), and it names every module of the suite's package."""
    named = _layout_picture()
    assert len(named) >= 30, named
    for folder, name in named:
        found = (ROOT / folder / name).exists() or (
            "/" in name.rstrip("/") and (ROOT / name).exists()
        )
        assert found, f"README's layout picture names {folder}{name}, which does not exist"
    shown = {name for folder, name in named if folder == "conformance/"}
    modules = {
        p.name
        for p in (ROOT / "conformance").glob("*.py")
        if p.name != "__init__.py" and not p.name.startswith("test_")
    }
    assert not modules - shown, f"README's layout picture leaves out conformance/{modules - shown}"
