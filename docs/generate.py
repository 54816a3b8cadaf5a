"""Write the site's sources as plain Markdown and assets, for a site generator without hooks.

    python docs/generate.py OUT           # then: mkdocs build --strict -f OUT/mkdocs.yml
    cd OUT && zensical build --strict     #   or: Zensical, and then
    python docs/generate.py --finish OUT/site

The MkDocs build (``mkdocs.yml``) does its generation in hooks (``docs/hooks/``). This step does
the Markdown-level part of that work ahead of any build, with the same functions, and writes the
result to ``OUT``:

- ``OUT/docs/``: ``docs/`` without its hooks, with every ``<!-- generated: NAME -->`` block
  replaced by its Markdown (``hooks/generated.py``, links adjusted to the page);
- ``OUT/docs/spec/``: the spec's chapters (``spec/*.md``, ``hooks/spec_pages.py``), with the
  figures' "Illustration (not normative)" boxes under their requirements (``hooks/figures.py``);
- ``OUT/docs/figures/*.png``: the figures, drawn with matplotlib;
- ``OUT/overrides/``: the theme override (the version bar);
- ``OUT/mkdocs.yml``: ``mkdocs.yml`` with ``docs_dir`` and ``custom_dir`` pointing there, the
  spec and suite versions written into ``extra`` and ``copyright``, and only the two hooks that
  work on the rendered HTML (``mathml.py``: TeX to MathML; ``api_pages.py``: Sphinx roles).
  A generator without hooks skips them; ``--finish SITE`` then does their work on the built
  HTML (docs/about-this-site.md).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks"
#: Hooks that rewrite the rendered HTML: they stay hooks (nothing to write ahead of the build).
HTML_HOOKS = ("mathml.py", "api_pages.py")


class _Files:
    """What ``generated.relink`` asks of MkDocs' file list: does a source path exist?"""

    def __init__(self, docs: Path) -> None:
        self.docs = docs

    def get_file_from_path(self, path: str) -> bool:
        return (self.docs / path).is_file()


def _hooks() -> SimpleNamespace:
    sys.path.insert(0, str(HOOKS))
    import figures
    import generated

    return SimpleNamespace(figures=figures, generated=generated)


def write_sources(out: Path) -> dict[str, int]:
    """Write the Markdown, the assets and the config to ``out``; returns what it wrote."""
    hooks = _hooks()
    docs = out / "docs"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("hooks", "overrides", "generate.py"))
    shutil.copytree(DOCS / "overrides", out / "overrides")
    (docs / "spec").mkdir()
    for chapter in sorted((ROOT / "spec").glob("*.md")):
        shutil.copy(chapter, docs / "spec" / chapter.name)
    (docs / "figures").mkdir()
    figures = hooks.figures.draw_all()
    for name, png in figures.items():
        (docs / "figures" / name).write_bytes(png)

    files = _Files(docs)
    blocks = 0
    for page in sorted(docs.rglob("*.md")):
        uri = page.relative_to(docs).as_posix()
        markdown = page.read_text(encoding="utf-8")
        markdown = hooks.figures.on_page_markdown(
            markdown, SimpleNamespace(file=SimpleNamespace(src_uri=uri)), None, None
        )

        def expand(m: re.Match[str], uri: str = uri) -> str:
            rendered = hooks.generated.render(m.group("name"))
            return hooks.generated.relink(rendered, uri, files)

        markdown, count = hooks.generated.MARKER.subn(expand, markdown)
        blocks += count
        page.write_text(markdown, encoding="utf-8")

    _write_config(out)
    return {
        "pages": len(list(docs.rglob("*.md"))),
        "generated blocks": blocks,
        "figures": len(figures),
    }


def _write_config(out: Path) -> None:
    from gpt2_conformance import SUITE_VERSION
    from gpt2_spec import SPEC_VERSION

    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    hooks = "hooks:\n" + "".join(f"  - {HOOKS / name}\n" for name in HTML_HOOKS)
    text, replaced = re.subn(r"^hooks:\n(?:  - .*\n)+", hooks, text, flags=re.MULTILINE)
    assert replaced == 1, "mkdocs.yml: no hooks list to replace"
    # relative to OUT/mkdocs.yml (Zensical stops on an absolute docs_dir)
    assert re.search(r"^docs_dir: docs$", text, re.MULTILINE), "mkdocs.yml: docs_dir changed"
    text = text.replace("custom_dir: docs/overrides", "custom_dir: overrides")
    text = re.sub(r"^exclude_docs: \|\n(?:  .*\n)+", "", text, flags=re.MULTILINE)
    text += (
        f"\ncopyright: Specification version {SPEC_VERSION} · conformance suite {SUITE_VERSION}\n"
        f"extra:\n  spec_version: {SPEC_VERSION}\n  suite_version: {SUITE_VERSION}\n"
    )
    (out / "mkdocs.yml").write_text(text, encoding="utf-8")


def finish_site(site: Path) -> dict[str, int]:
    """Do on a built site what the two HTML hooks do during a MkDocs build: typeset the math as
    MathML and drop the Sphinx roles on the API pages. For a generator that runs no hooks
    (Zensical); a site MkDocs built with ``OUT/mkdocs.yml`` has nothing left to do."""
    sys.path.insert(0, str(HOOKS))
    import api_pages
    import mathml

    pages = formulas = 0
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        uri = page.relative_to(site).as_posix()
        done = mathml.convert_page(html, uri)
        if uri.startswith("api/"):
            done = api_pages.tidy_roles(done)
        if done != html:
            pages += 1
            formulas += done.count("<math ") - html.count("<math ")
            page.write_text(done, encoding="utf-8")
    return {"pages changed": pages, "formulas typeset": formulas}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--finish"] and len(argv) == 2:
        site = Path(argv[1]).resolve()
        done = finish_site(site)
    elif len(argv) == 1 and not argv[0].startswith("-"):
        site = Path(argv[0]).resolve()
        done = write_sources(site)
    else:
        raise SystemExit("usage: python docs/generate.py OUT | --finish SITE")
    print(f"{site}: " + ", ".join(f"{n} {what}" for what, n in done.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
