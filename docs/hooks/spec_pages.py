"""mkdocs hook: publish the Markdown chapters of spec/ under spec/ in the site, and stamp every
page with the spec's version.

The spec lives once, in the repository's spec/ folder (its single source of truth); this hook
adds those files to the build instead of keeping a copy under docs/. The spec and suite versions
come from the packages (``gpt2_spec.SPEC_VERSION``, ``gpt2_conformance.SUITE_VERSION``) and are
shown in the bar above every page's header (``docs/overrides/main.html``) and in the footer.

Each requirement heading ``### Title {#family.id}`` becomes an HTML element with ``id="family.id"``
(the attr_list extension), so a requirement's URL is its chapter's page plus ``#`` plus its id,
e.g. ``spec/02-objective/#objective.ignore-index``; the conformance reports' ``anchor`` field
(``spec/02-objective.md#objective.ignore-index``) names the same place by source file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"


def on_config(config: Any) -> Any:
    from gpt2_conformance import SUITE_VERSION
    from gpt2_spec import SPEC_VERSION

    config.extra["spec_version"] = SPEC_VERSION
    config.extra["suite_version"] = SUITE_VERSION
    config.copyright = f"Specification version {SPEC_VERSION} · conformance suite {SUITE_VERSION}"
    return config


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(SPEC_DIR.glob("*.md")):
        files.append(File.generated(config, f"spec/{path.name}", abs_src_path=str(path)))
    return files
