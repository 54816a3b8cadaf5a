"""mkdocs hook: publish the Markdown chapters of spec/ under spec/ in the site.

The spec lives once, in the repository's spec/ folder (its single source of truth); this hook
adds those files to the build instead of keeping a copy under docs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(SPEC_DIR.glob("*.md")):
        files.append(File.generated(config, f"spec/{path.name}", abs_src_path=str(path)))
    return files
