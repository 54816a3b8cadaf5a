"""Execute the spec's NumPy definitions.

Every fenced ```` ```python ```` block in the numbered chapters is a normative definition. They are
run in reading order in one namespace (a later chapter may use an earlier chapter's names), and the
oracle in ``gpt2_reference.oracle`` is built from exactly these functions, so the spec's code is
executed by every test that touches the oracle and cannot go stale.

Tracebacks point into the Markdown: a failing line is reported as ``spec/06-forward.md:123``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from pathlib import Path

from .registry import SPEC_DIR, chapter_paths

_OPEN = re.compile(r"^```python\s*$")
_CLOSE = re.compile(r"^```\s*$")


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    """One executable block: its chapter, the line of its first code line, and its source."""

    chapter: Path
    line: int
    source: str


def code_blocks(spec_dir: Path = SPEC_DIR) -> list[CodeBlock]:
    """All ```` ```python ```` blocks of the numbered chapters, in reading order."""
    blocks: list[CodeBlock] = []
    for path in chapter_paths(spec_dir):
        lines = path.read_text(encoding="utf-8").splitlines()
        start: int | None = None
        for number, line in enumerate(lines, start=1):
            if start is None and _OPEN.match(line):
                start = number + 1
            elif start is not None and _CLOSE.match(line):
                blocks.append(CodeBlock(path, start, "\n".join(lines[start - 1 : number - 1])))
                start = None
        if start is not None:
            raise SyntaxError(f"{path.name}:{start - 1}: unclosed ```python block")
    return blocks


def execute(spec_dir: Path = SPEC_DIR) -> types.SimpleNamespace:
    """Run every block in one fresh namespace and return it (functions and constants)."""
    namespace: dict[str, object] = {"__name__": "gpt2_spec.executed"}
    for block in code_blocks(spec_dir):
        # Pad with blank lines so that line numbers in tracebacks are the Markdown's.
        padded = "\n" * (block.line - 1) + block.source
        exec(compile(padded, str(block.chapter), "exec", dont_inherit=True), namespace)
    public = {k: v for k, v in namespace.items() if not k.startswith("__")}
    return types.SimpleNamespace(**public)


@functools.cache
def spec_definitions() -> types.SimpleNamespace:
    """The executed definitions of the installed spec (cached; treat as read-only)."""
    return execute(SPEC_DIR)
