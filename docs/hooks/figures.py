"""mkdocs hook: draw the site's figures with matplotlib while the site is built.

Nothing is committed: each figure is computed from the project's code (the reference model, a
broken implementation of the zoo, the spec's configuration) and added to the build as
``figures/NAME.png``, which pages link like any image (``![...](figures/NAME.png)`` from the docs
root). Pages show them in ``docs/illustrations.md``.

- ``causal-jacobian.png``: |d logits_i / d embedding_j| of the reference beside the leaky mutant
  ``CausalLeak`` of the zoo (``gpt2_zoo.sequence_bugs``, ``zoo/sequence_bugs.py``).
- ``loss-terms.png``: the per-position loss terms of one sequence, with the shift drawn.
- ``shapes.png``: the shapes of wte, wpe and the tied head.

Run ``python docs/hooks/figures.py OUT_DIR`` to write them to a folder without building the site.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DPI = 110
# Sizes for the page they are shown on: at a 1400 px window the site's content column is about
# 870 px wide (docs/stylesheets/extra.css), 840 px inside an admonition. A figure drawn at most
# WIDTH_IN inches wide is shown at its own size there, so a FONT_MIN_PT label is
# FONT_MIN_PT * DPI / 72 (about 12) px on screen. tests/test_docs_site.py checks both in a browser.
WIDTH_IN = 7.4
FONT_PT = 9.0
FONT_MIN_PT = 8.0
STYLE = {"font.size": FONT_PT, "axes.titlesize": FONT_PT + 1, "axes.labelsize": FONT_PT}


def _check_fonts(fig: Any) -> None:
    """Every visible label of the figure is at least FONT_MIN_PT, and TeX-like markup is
    typeset (inside ``$...$``): a figure that would be unreadable on the page, or show raw
    ``x_{t+1}``, fails the build instead."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        label = text.get_text()
        if not (text.get_visible() and label.strip()):
            continue
        if text.get_fontsize() < FONT_MIN_PT:
            raise ValueError(
                f"figure label {label!r} is {text.get_fontsize():g} pt, "
                f"below FONT_MIN_PT = {FONT_MIN_PT:g} pt"
            )
        if re.search(r"[_^]\{", label) and "$" not in label:
            raise ValueError(f"figure label {label!r} has TeX markup outside $...$ (mathtext)")


def _png(fig: Any) -> bytes:
    _check_fonts(fig)
    buffer = io.BytesIO()
    # No timestamp or software tag in the file, so a rebuild gives the same bytes.
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _load_causal_leak() -> type:
    from gpt2_zoo.sequence_bugs import CausalLeak

    return CausalLeak


# The figures' model: small enough to draw, large enough to be a real GPT-2 forward.
FIGURE_CONFIG = {"vocab_size": 48, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4}


def causal_jacobian() -> tuple[np.ndarray, np.ndarray, float]:
    """Frobenius norms ||d logits_i / d e_j|| over [V, d] for the reference and for CausalLeak,
    where e_j is the input embedding of position j (token plus position), in float64."""
    import torch

    from gpt2_conformance.adapters.reference import ReferenceAdapter
    from gpt2_spec import GPT2Config

    config = GPT2Config(**FIGURE_CONFIG)
    T = 12
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, config.vocab_size, (1, T)))
    leak_class = _load_causal_leak()
    maps = []
    for adapter in (ReferenceAdapter(), leak_class()):
        model = adapter.build(config, params=None, seed=0, device="cpu", dtype="float32").model
        model = model.double().eval()
        embedding = (model.transformer.wte(ids) + model.transformer.wpe(torch.arange(T)))[0]
        zero = torch.zeros((1, T), dtype=torch.long)

        def logits(e: torch.Tensor, model: Any = model, zero: torch.Tensor = zero) -> torch.Tensor:
            # Feed e as the token embedding and zero out the position embedding's share, so
            # that block 0 receives exactly e.
            wpe = model.transformer.wpe.weight
            hook = model.transformer.wte.register_forward_hook(
                lambda module, args, out: e.unsqueeze(0) - wpe[:T].unsqueeze(0)
            )
            try:
                out: torch.Tensor = model(zero).logits[0]
            finally:
                hook.remove()
            return out

        jacobian = torch.autograd.functional.jacobian(logits, embedding.detach())  # [T,V,T,d]
        maps.append(jacobian.pow(2).sum(dim=(1, 3)).sqrt().numpy())
    return maps[0], maps[1], float(leak_class.scale)


def figure_causal_jacobian() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    reference, leaky, scale = causal_jacobian()
    positive = np.concatenate([reference[reference > 0], leaky[leaky > 0]])
    norm = LogNorm(vmin=positive.min(), vmax=positive.max())
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 3.9), constrained_layout=True)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("white")
    for ax, values, title in (
        (axes[0], reference, "reference:\nexactly 0 above the diagonal"),
        (axes[1], leaky, f"CausalLeak (leak scale {scale:g}):\nthe future leaks in"),
    ):
        shown = np.ma.masked_where(values == 0, values)
        image = ax.imshow(shown, cmap=cmap, norm=norm)
        ax.set_title(title)
        ax.set_xlabel("input embedding position $j$")
        ax.set_ylabel("logits row $i$")
        T = values.shape[0]
        ax.plot([-0.5, T - 0.5], [-0.5, T - 0.5], color="red", lw=0.8, ls="--")
        ax.set_xticks(range(0, T, 2))
        ax.set_yticks(range(0, T, 2))
    fig.colorbar(
        image,
        ax=axes,
        shrink=0.85,
        label=r"$\Vert\partial\,\mathrm{logits}_i \,/\, \partial e_j\Vert$  (log scale; white = 0)",
    )
    return _png(fig)


def loss_terms() -> dict[str, Any]:
    """A tiny reference model, trained a few SGD steps on one sentence, scores that sentence."""
    import torch

    from gpt2_reference import GPT2
    from gpt2_spec import GPT2Config

    sentence = "the cat sat on the mat and the dog sat on the log"
    words = sentence.split(" ")
    vocab = sorted(set(words))
    ids = torch.tensor([[vocab.index(w) for w in words]])
    labels = ids.clone()
    ignored = 6  # one target is ignored (ignore_index = -100), to show that it is not counted
    labels[0, ignored] = -100
    config = GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    model = GPT2(config, seed=0).double()
    steps, lr = 40, 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model(ids, labels=labels).loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = model(ids, labels=labels, reduction="sum")
        logp = torch.log_softmax(out.logits[0], dim=-1).numpy()
    T = len(words)
    terms = np.full(T, np.nan)
    for t in range(T - 1):
        if int(labels[0, t + 1]) != -100:
            terms[t] = -logp[t, int(ids[0, t + 1])]
    counted = int(np.isfinite(terms).sum())
    total = float(np.nansum(terms))
    assert abs(total - float(out.loss)) < 1e-9 * max(1.0, total), "terms do not add up to the sum"
    return {
        "words": words,
        "terms": terms,
        "ignored_row": ignored - 1,
        "counted": counted,
        "total": total,
        "steps": steps,
        "lr": lr,
        "config": config,
    }


def figure_loss_terms() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = loss_terms()
    words, terms = d["words"], d["terms"]
    T = len(words)
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(WIDTH_IN, 4.9),
        gridspec_kw={"height_ratios": [1.2, 2]},
        constrained_layout=True,
    )
    top.set_xlim(-0.7, T - 0.3)
    top.set_ylim(-0.3, 2.0)
    top.axis("off")
    for t, word in enumerate(words):
        top.text(t, 1.6, f"$x_{{{t}}}$\n{word}", ha="center", va="center", fontsize=FONT_MIN_PT,
                 bbox={"boxstyle": "round,pad=0.25", "fc": "#e8eef7", "ec": "#4a6fa5"})  # fmt: skip
        top.text(t, 0.1, f"{t}", ha="center", va="center", fontsize=FONT_MIN_PT,
                 bbox={"boxstyle": "round,pad=0.25", "fc": "#fff4e0", "ec": "#c98a1a"})  # fmt: skip
        if t + 1 < T:
            style = "dotted" if t == d["ignored_row"] else "solid"
            top.annotate("", xy=(t + 1, 1.25), xytext=(t, 0.42),
                         arrowprops={"arrowstyle": "->", "color": "#555", "ls": style})  # fmt: skip
    top.text(-0.7, 0.1, "row", ha="right", va="center", fontsize=FONT_MIN_PT)
    top.text(-0.7, 1.6, "token", ha="right", va="center", fontsize=FONT_MIN_PT)
    top.set_title("row $t$ of the logits is scored against token $t+1$ (the shift)")
    colors = ["#c98a1a" if np.isfinite(v) else "#bbbbbb" for v in terms]
    heights = np.nan_to_num(terms, nan=0.0)
    bottom.bar(range(T), heights, color=colors)
    for t in range(T):
        if t == T - 1:
            bottom.text(t, 0.05, "no target:\nlast row", ha="center", fontsize=FONT_MIN_PT,
                        rotation=90)  # fmt: skip
        elif not np.isfinite(terms[t]):
            bottom.text(t, 0.05, "target ignored\n(−100)", ha="center", fontsize=FONT_MIN_PT,
                        rotation=90)  # fmt: skip
    bottom.set_xticks(range(T), [f"{t}→{t + 1}" if t + 1 < T else f"{t}" for t in range(T)])
    bottom.tick_params(axis="x", labelsize=FONT_MIN_PT)
    bottom.set_xlim(-0.7, T - 0.3)
    bottom.set_xlabel("row $t$ → target position $t+1$")
    bottom.set_ylabel(r"loss term $-\log p(x_{t+1} \mid x_0 \ldots x_t)$")
    bottom.set_title(
        f"{d['counted']} counted terms: sum = {d['total']:.2f}, "
        f"mean = sum / {d['counted']} = {d['total'] / d['counted']:.2f}"
    )
    return _png(fig)


def figure_shapes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    from gpt2_spec import GPT2Config

    c = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.6))
    ax.set_xlim(0, 22)
    ax.set_ylim(-1, 11)
    ax.axis("off")
    wte_color, wpe_color, act_color = "#4a6fa5", "#6aa56a", "#d9d9d9"

    def box(x: float, y: float, w: float, h: float, color: str, label: str, shape: str) -> None:
        ax.add_patch(Rectangle((x, y), w, h, fc=color, ec="black", alpha=0.85))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=FONT_MIN_PT,
                color="white" if color != act_color else "black", weight="bold")  # fmt: skip
        ax.text(x + w / 2, y - 0.35, shape, ha="center", va="top", fontsize=FONT_MIN_PT)

    def arrow(a: tuple[float, float], b: tuple[float, float], **kw: Any) -> None:
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, **kw))

    box(0.3, 3.0, 2.4, 6.5, wte_color, f"wte\n\n[V, d]\n[{c.vocab_size},\n{c.n_embd}]", "")
    box(3.3, 3.0, 2.4, 3.5, wpe_color, f"wpe\n\n[n_ctx, d]\n[{c.n_positions},\n{c.n_embd}]", "")
    box(6.4, 6.5, 3.6, 2.0, act_color, "x = wte[ids]\n+ wpe[0..T−1]", "[T, d]")
    box(10.8, 6.5, 2.8, 2.0, act_color, f"{c.n_layer} blocks\n+ ln_f", "h: [T, d]")
    box(10.8, 1.2, 7.6, 2.0, wte_color, "wteᵀ (the same tensor, no copy)", "[d, V]")
    box(18.6, 6.5, 3.2, 2.0, act_color, "logits\n= h wteᵀ", "[T, V]")
    arrow((2.7, 8.2), (6.4, 8.0), color="black")
    arrow((5.7, 5.5), (6.4, 7.0), color="black")
    arrow((10.0, 7.5), (10.8, 7.5), color="black")
    arrow((13.6, 7.5), (18.6, 7.5), color="black")
    arrow((14.6, 3.2), (16.0, 7.4), color=wte_color)
    arrow((2.7, 3.5), (10.8, 1.8), color=wte_color, ls="--", connectionstyle="arc3,rad=0.15")
    ax.text(0.3, -0.6, "tied: the head multiplies by wte itself, transposed (spec chapter 5)",
            ha="left", color=wte_color)  # fmt: skip
    ax.text(4.0, 10.3, "rows looked up by token id and by position", ha="center")
    ax.text(15.5, 10.3, "row $t$ of the logits predicts token $t+1$", ha="center")
    ax.set_title(
        "GPT-2 (124M) shapes: the input embedding and the output head share one [V, d] matrix"
    )
    return _png(fig)


FIGURES: dict[str, Callable[[], bytes]] = {
    "causal-jacobian.png": figure_causal_jacobian,
    "loss-terms.png": figure_loss_terms,
    "shapes.png": figure_shapes,
}

_CACHE: dict[str, bytes] = {}

#: Requirements whose section in the spec's page shows a figure (added at build time only: the
#: Markdown in spec/ stays as it is, readable on its own).
SPEC_FIGURES: dict[str, tuple[str, str]] = {
    "objective.one-term-per-target": (
        "loss-terms.png",
        "Row t scored against token t+1: one term per counted target, none for the last row or "
        "an ignored target.",
    ),
    "causality.jacobian-lower-triangular": (
        "causal-jacobian.png",
        "‖∂ logits_i / ∂ e_j‖ of the reference (left: exactly 0 above the diagonal) and of a "
        "mutant that leaks the future (right).",
    ),
    "head.tied-to-embedding": (
        "shapes.png",
        "wte [V, d], wpe [n_ctx, d], and the head: the logits are h wteᵀ, with wte itself.",
    ),
}


def _illustration(name: str, caption: str) -> str:
    return (
        '!!! example "Illustration (not normative)"\n\n'
        f"    ![{caption}](../figures/{name})\n\n"
        f"    {caption} More in [Illustrations](../illustrations.md).\n"
    )


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Show the figures beside the requirements they illustrate, in the spec's chapters."""
    uri = page.file.src_uri
    if not uri.startswith("spec/0"):
        return markdown
    for rid, (name, caption) in SPEC_FIGURES.items():
        level_line = re.compile(rf"^\*\*Requirement `{re.escape(rid)}`\*\* · [A-Z]+\b.*$", re.M)
        markdown = level_line.sub(
            lambda m, n=name, c=caption: f"{m.group(0)}\n\n{_illustration(n, c)}", markdown, count=1
        )
    return markdown


def draw_all() -> dict[str, bytes]:
    """Every figure as PNG bytes. The models are tiny: torch runs them on one thread (more only
    spin, and on a busy machine that costs far more than it gains)."""
    import matplotlib
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with matplotlib.rc_context(STYLE):
            return {name: draw() for name, draw in FIGURES.items()}
    finally:
        torch.set_num_threads(threads)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    if not _CACHE:  # `mkdocs serve` rebuilds: draw once per process
        _CACHE.update(draw_all())
    for name in FIGURES:
        files.append(File.generated(config, f"figures/{name}", content=_CACHE[name]))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "figures")
    out.mkdir(parents=True, exist_ok=True)
    for figure_name, png in draw_all().items():
        (out / figure_name).write_bytes(png)
        print("wrote", out / figure_name)
