"""mkdocs hook: pages whose tables are rebuilt from the code and from committed data at build time.

A docs page asks for generated content with a line of its own::

    <!-- generated: NAME -->

and the hook replaces that line with Markdown produced while the site is built. ``NAME`` is one of
:data:`REGISTRY`:

- ``traceability`` is built here from the code itself: every conformance property
  (``conformance/test_*.py``) and the requirement ids it is tagged with.
- Every other name has a producer: a module of the installed project (``gpt2_evidence.NAME``,
  ``gpt2_benchmarks.run``) with a function ``render_markdown(data: dict) -> str``, and the JSON
  data it committed (``docs/data/NAME.json``; for ``adapters``, the reports in
  ``docs/data/reports/``). The module is imported by name; it must not run anything when
  imported.

When a producer's data has not been committed yet, the line becomes a visible warning box that says
which command creates it (the project's test ``tests/test_docs_site.py`` fails in that case, so a
release cannot ship one). An unknown name, a producer that cannot be imported, or a renderer that
raises stops the build with a message that says which.

Links in the Markdown a renderer returns may be written relative to the docs folder
(``spec/02-objective.md#objective.ignore-index``) or relative to the page; the hook rewrites the
former to fit the page they land on.
"""

from __future__ import annotations

import importlib
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

if TYPE_CHECKING:
    from gpt2_conformance.properties import Property

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"

MARKER = re.compile(r"^<!-- generated: (?P<name>[A-Za-z0-9_.-]+) -->[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Generator:
    """Where the Markdown for one ``<!-- generated: NAME -->`` comes from."""

    name: str
    #: the producer's import name (e.g. ``gpt2_evidence.kill_matrix``), or None when built here
    module: str | None
    #: the committed data (relative to the repository root); a folder for ``adapters``
    data: str | None
    #: the command that (re)creates the data
    command: str
    #: why the data may legitimately be absent (e.g. it needs a GPU); None: it must exist
    optional: str | None = None

    def data_path(self) -> Path | None:
        return None if self.data is None else ROOT / self.data

    def data_missing(self) -> bool:
        path = self.data_path()
        if path is None:
            return False
        if path.is_dir():
            return not any(path.glob("*.json"))
        return not path.exists()


REGISTRY: dict[str, Generator] = {
    g.name: g
    for g in (
        Generator("traceability", None, None, "(built from conformance/test_*.py)"),
        Generator(
            "adapters",
            "gpt2_evidence.refresh_reports",
            "docs/data/reports",
            "python -m gpt2_evidence.refresh_reports",
        ),
        Generator(
            "kill-matrix",
            "gpt2_evidence.kill_matrix",
            "docs/data/kill-matrix.json",
            "python -m gpt2_evidence.kill_matrix",
        ),
        Generator(
            "kill-matrix-method",
            None,
            "docs/data/kill-matrix.json",
            "python -m gpt2_evidence.kill_matrix",
        ),
        Generator(
            "false-alarms",
            "gpt2_evidence.false_alarm_campaign",
            "docs/data/false-alarms.json",
            "python -m gpt2_evidence.false_alarm_campaign",
        ),
        Generator(
            "trained-checkpoint",
            "gpt2_evidence.train_checkpoint",
            "docs/data/trained-checkpoint.json",
            "python -m gpt2_evidence.train_checkpoint --statistics",
        ),
        Generator(
            "peers",
            "gpt2_evidence.peers_matrix",
            "docs/data/peers.json",
            "python -m gpt2_evidence.peers_matrix",
        ),
        Generator(
            "benchmarks",
            "gpt2_benchmarks.run",
            "docs/data/benchmarks.json",
            "python -m gpt2_benchmarks --mode full --out docs/data/benchmarks.json",
        ),
        Generator(
            "benchmarks-gpu",
            "gpt2_benchmarks.run",
            "docs/data/benchmarks-gpu.json",
            "scripts/gpu_check.sh (or python -m gpt2_benchmarks --mode full --device cuda "
            "--out docs/data/benchmarks-gpu.json)",
            optional="it needs a CUDA machine, and no GPU run has been recorded yet",
        ),
    )
}


# ---- traceability: requirement -> the properties that check it, from the code -------------------


def conformance_properties() -> list[tuple[str, Callable[..., Any]]]:
    """Every conformance property as ``(module.function, function)``, sorted by module and name
    (the suite's one discovery: :func:`gpt2_conformance.properties.discover`)."""
    return [(p.qualname, p.function) for p in _properties()]


def _properties() -> list[Property]:
    from gpt2_conformance.properties import discover

    return sorted(discover(), key=lambda p: (p.module, p.name))


def _chapter_title(chapter: str) -> str:
    """The chapter's own heading, e.g. "3. Causality" for 03-causality.md."""
    from gpt2_spec.registry import SPEC_DIR

    text = (SPEC_DIR / chapter).read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), chapter)
    number = chapter.split("-", 1)[0].lstrip("0")
    return f"{number}. {title}" if number.isdigit() else title


def render_traceability() -> str:
    """One section per spec chapter, one table row per requirement and property."""
    from gpt2_spec import load_requirements

    requirements = load_requirements()
    by_id: dict[str, list[Property]] = {r.id: [] for r in requirements}
    unknown: list[str] = []
    for prop in _properties():
        for rid in prop.requirements:
            if rid in by_id:
                by_id[rid].append(prop)
            else:
                unknown.append(f"{prop.qualname} -> {rid}")
    if unknown:
        raise PluginError(f"properties name requirements the spec lacks: {unknown}")
    total = sum(len(v) for v in by_id.values())
    lines = [
        f"{len(requirements)} requirements, {len({p.qualname for v in by_id.values() for p in v})} "
        f"properties ({total} requirement–property links), read from the code when this page "
        "was built.",
    ]
    chapter = None
    for r in requirements:
        if r.chapter != chapter:
            chapter = r.chapter
            lines += [
                "",
                f"### [{_chapter_title(chapter)}](spec/{chapter})",
                "",
                "| requirement | level | property (`conformance/…`) | needs | what it checks |",
                "| --- | --- | --- | --- | --- |",
            ]
        req, level = f"[`{r.id}`](spec/{r.anchor})", r.level
        if not by_id[r.id]:
            lines.append(f"| {req} | {level} | **no property** | | |")
        for prop in by_id[r.id]:
            needs = ", ".join(f"`{c}`" for c in prop.capabilities) or "—"
            summary = prop.summary.replace("|", "\\|")
            lines.append(
                f"| {req} | {level} | `{prop.module}.py::{prop.name}` | {needs} | {summary} |"
            )
            req = level = ""
    return "\n".join(lines) + "\n"


# ---- producers ---------------------------------------------------------------------------------


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def render_kill_matrix_method(data: dict[str, Any]) -> str:
    """What the published kill matrix ran, from its data: the command, the seeds, the examples
    per property (so that the page's method is the method its data came from)."""
    seeds = data["seeds"]
    profile = data["profile"]
    examples = profile["max_examples"]
    own = profile.get("ci_max_examples", examples)
    count = (
        f"{examples} examples per property"
        if examples == own
        else f"{examples} examples per property (the `{profile['name']}` profile's own count is "
        f"{own})"
    )
    return (
        "```bash\n"
        f"{data['command']}\n"
        "```\n\n"
        f"is the command the published matrix below came from (its data, "
        "[`kill-matrix.json`](../data/kill-matrix.json), records it): "
        f"{_count(len(seeds), 'hypothesis seed')} ({', '.join(str(s) for s in seeds)}) and "
        f"{count}, on {data['provenance']['machine'].get('label', 'an unnamed machine')}. "
        "A stricter run gives more seeds and the profile's own count "
        "(`--seeds 5`, no `--max-examples`).\n"
    )


def load_data(generator: Generator) -> dict[str, Any]:
    path = generator.data_path()
    assert path is not None
    if path.is_dir():
        return {
            "reports": {
                p.stem: json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(path.glob("*.json"))
            }
        }
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _ordered_reports(module: ModuleType, data: dict[str, Any]) -> dict[str, Any]:
    """Keep the producer's column order when it declares one (``IMPLS``)."""
    order = list(getattr(module, "IMPLS", ()))
    reports = data.get("reports", {})
    ranked = sorted(reports, key=lambda k: (order.index(k) if k in order else len(order), k))
    return {"reports": {k: reports[k] for k in ranked}}


def missing_data_box(generator: Generator) -> str:
    if generator.optional is not None:
        return (
            f'!!! note "No data yet: {generator.name}"\n\n'
            f"    This part of the page is rebuilt from `{generator.data}`, which does not exist: "
            f"{generator.optional}. To record it, run `{generator.command}` on such a machine, "
            "commit the data and rebuild the site.\n"
        )
    return (
        f'!!! warning "Data not generated yet: {generator.name}"\n\n'
        f"    This part of the page is rebuilt from `{generator.data}`, which does not exist "
        f"yet. Run `{generator.command}` from the repository root, commit the data and rebuild "
        "the site.\n"
    )


def render(name: str) -> str:
    """The Markdown that replaces ``<!-- generated: name -->``."""
    generator = REGISTRY.get(name)
    if generator is None:
        raise PluginError(
            f"unknown generated block {name!r}; known names: {', '.join(sorted(REGISTRY))} "
            "(docs/hooks/generated.py)"
        )
    if generator.module is None:
        if generator.data is None:
            return render_traceability()
        if generator.data_missing():
            return missing_data_box(generator)
        return render_kill_matrix_method(load_data(generator))
    if generator.data_missing():
        return missing_data_box(generator)
    try:
        module = importlib.import_module(generator.module)
    except ImportError as error:
        raise PluginError(
            f"{generator.data} exists but its renderer {generator.module} cannot be imported "
            f"({error}): the <!-- generated: {name} --> block cannot be rendered"
        ) from error
    renderer = getattr(module, "render_markdown", None)
    if not callable(renderer):
        raise PluginError(f"{generator.module} has no function render_markdown(data) -> str")
    data = load_data(generator)
    if generator.name == "adapters":
        data = _ordered_reports(module, data)
    try:
        markdown = renderer(data)
    except Exception as error:
        raise PluginError(
            f"{generator.module}: render_markdown failed on {generator.data}: {error!r}"
        ) from error
    if not isinstance(markdown, str):
        raise PluginError(f"{generator.module}: render_markdown returned {type(markdown)}")
    return markdown


# ---- links ---------------------------------------------------------------------------------------

_LINK = re.compile(r"(?<=\]\()(?P<target>[^)\s#]+)(?P<rest>#[^)\s]*)?(?=\))")


def relink(markdown: str, page_uri: str, files: Files) -> str:
    """Rewrite links written relative to the docs folder so that they work from ``page_uri``."""
    page_dir = posixpath.dirname(page_uri)

    def fix(m: re.Match[str]) -> str:
        target, rest = m.group("target"), m.group("rest") or ""
        if "://" in target or target.startswith(("/", "mailto:")):
            return m.group(0)
        if files.get_file_from_path(posixpath.normpath(posixpath.join(page_dir, target))):
            return m.group(0)  # already relative to the page
        if files.get_file_from_path(posixpath.normpath(target)):
            return posixpath.relpath(target, page_dir or ".") + rest
        return m.group(0)  # let mkdocs' link validation report it

    return _LINK.sub(fix, markdown)


_CACHE: dict[str, str] = {}


def on_pre_build(config: Any) -> None:
    _CACHE.clear()


def on_page_markdown(markdown: str, page: Page, config: Any, files: Files) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in _CACHE:
            _CACHE[name] = render(name)
        return relink(_CACHE[name], page.file.src_uri, files).rstrip("\n")

    return MARKER.sub(replace, markdown)


def generator_names_in(markdown: str) -> list[str]:
    """The generated blocks a page asks for (used by the project's tests)."""
    return [m.group("name") for m in MARKER.finditer(markdown)]
