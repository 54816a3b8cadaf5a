"""mkdocs hook: typeset the math at build time, as MathML that the browser draws itself.

``pymdownx.arithmatex`` (generic mode) protects the TeX of ``$…$`` and ``$$…$$`` from Markdown
and leaves it in ``<span class="arithmatex">\\(…\\)</span>`` and
``<div class="arithmatex">\\[…\\]</div>``.
This hook converts each of those to a ``<math>`` element with latex2mathml, so the built site needs
no JavaScript and no font or script from a CDN to show the math: every current browser renders
MathML Core natively. The TeX source stays in the element's ``alttext`` (read by screen readers,
and shown by the tests when a formula fails to convert).

A formula latex2mathml cannot read stops the build with the page and the TeX.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError
from mkdocs.structure.pages import Page

_ARITHMATEX = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.DOTALL
)
_DELIMITERS = {"span": ("\\(", "\\)"), "div": ("\\[", "\\]")}
# Inside \text{} and \texttt{} an escaped underscore is a plain one (latex2mathml keeps the "\").
_TEXT_ARG = re.compile(r"\\(?:text|texttt|mathrm|textrm)\{[^{}]*\}")


def _unescape_text(tex: str) -> str:
    return _TEXT_ARG.sub(lambda m: m.group(0).replace("\\_", "_"), tex)


def tex_to_mathml(tex: str, *, display: bool) -> str:
    """One formula as a ``<math>`` element (``display="block"`` for displayed equations)."""
    mathml = convert(_unescape_text(tex), display="block" if display else "inline")
    alt = html.escape(tex, quote=True)
    return mathml.replace("<math ", f'<math alttext="{alt}" ', 1)


def convert_page(content: str, where: str = "") -> str:
    """Replace every arithmatex span and div of a rendered page with MathML."""

    def replace(m: re.Match[str]) -> str:
        tag, raw = m.group("tag"), html.unescape(m.group("tex")).strip()
        start, end = _DELIMITERS[tag]
        if not (raw.startswith(start) and raw.endswith(end)):
            raise PluginError(f"{where}: unexpected arithmatex output {m.group(0)[:120]!r}")
        tex = raw[len(start) : -len(end)].strip()
        try:
            mathml = tex_to_mathml(tex, display=tag == "div")
        except Exception as error:  # latex2mathml raises its own exception types
            raise PluginError(f"{where}: cannot typeset {tex!r}: {error!r}") from error
        return f'<div class="math-display">{mathml}</div>' if tag == "div" else mathml

    return _ARITHMATEX.sub(replace, content)


def on_page_content(html_content: str, page: Page, config: Any, files: Any) -> str:
    return convert_page(html_content, page.file.src_uri)
