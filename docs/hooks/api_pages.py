"""mkdocs hook: tidy the docstrings' Sphinx cross-reference roles on the API reference pages.

The project's docstrings name other objects the Sphinx way, ``:func:`load_checkpoint``` or
``:class:`~gpt2_reference.model.GPT2```. mkdocstrings renders the name as code and leaves the
role in front of it; this hook drops the role (and the ``~`` that asks for the last component
only), so the page reads "``load_checkpoint``" and "``GPT2``".
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>"
)


def tidy_roles(html: str) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)
        return f"<code>{name}</code>"

    return _ROLE.sub(replace, html)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return tidy_roles(html) if page.file.src_uri.startswith("api/") else html
