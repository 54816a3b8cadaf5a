"""Hypothesis strategies of the suite, gathered in one place.

Configurations are small (so a property can afford many examples) and varied (vocabularies that
are not powers of two, one to four heads, one to three layers); weights come from the oracle at the
scales the spec's tolerance domain covers for the run's dtype (GPT-2's initialisation and larger
scales that exercise GELU, softmax and LayerNorm); token batches, perturbation positions, label
masks and micro-batch splits are drawn against a configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from hypothesis import strategies as st

from gpt2_spec import GPT2Config, spec_definitions

from .adapter import Implementation, Params
from .checks import label_convention
from .suite import WIDE_MODEL_LENGTH, Suite

S = spec_definitions()
IGNORE_INDEX = int(S.IGNORE_INDEX)
MAX_POSITIONS = int(S.DOMAIN["max_positions"])

F = TypeVar("F", bound=Callable[..., Any])
#: Strategies :func:`reused` keeps per suite (and once for the factories without one); past this
#: many the oldest half is dropped.
REUSED_KEPT = 2048
_KEPT: dict[Any, Any] = {}


def reused(factory: F) -> F:
    """``factory`` (a function returning a strategy) memoised on its arguments.

    A strategy is an immutable description of what to draw, so equal arguments give strategies
    that draw alike, and one object can serve every example. Hypothesis validates each new
    strategy object on its first draw (its emptiness and caching properties, computed
    recursively); the properties ask for a few strategies per example, so making them afresh
    cost about 3% of a ``ci`` run. Strategies made for a :class:`Suite` are kept on that suite
    (they go with it); arguments are compared with their types (``1``, ``1.0`` and ``True``
    are different arguments); unhashable arguments skip the memo.
    """

    @functools.wraps(factory)
    def memoised(*args: Any, **kwargs: Any) -> Any:
        suite = next((a for a in (*args, *kwargs.values()) if isinstance(a, Suite)), None)
        kept = _KEPT if suite is None else suite._strategies
        key = (factory, _typed(args), _typed(tuple(sorted(kwargs.items()))))
        try:
            return kept[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable argument (a list, an array): a new strategy
            return factory(*args, **kwargs)
        if len(kept) >= REUSED_KEPT:
            for old in list(kept)[: REUSED_KEPT // 2]:
                del kept[old]
        strategy = kept[key] = factory(*args, **kwargs)
        return strategy

    return memoised  # type: ignore[return-value]


def _typed(value: Any) -> Any:
    """``value`` as a memo key: tuples item by item, a suite as a mark (its strategies are kept
    on it), anything else with its type."""
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    if isinstance(value, Suite):
        return "suite"
    return (type(value), value)


@reused
def sampled(values: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """``st.sampled_from(values)``, one object per tuple of values."""
    return st.sampled_from(values)


def longest_row(config: GPT2Config, max_length: int | None = None, min_length: int = 1) -> int:
    """The longest row to draw for ``config``: its context, ``max_length`` if shorter, and for
    models wider than the spec's measured domain at most :data:`WIDE_MODEL_LENGTH` (or
    ``min_length``, when a property needs more)."""
    longest = min(config.n_positions, max_length or config.n_positions)
    if config.n_embd > int(S.DOMAIN["max_n_embd"]):
        longest = min(longest, max(WIDE_MODEL_LENGTH, min_length))
    return longest


#: Weight seeds per configuration and scale for an adapter that asks for copies
#: (``reuse = "copy"``) when the configurations come from a fixed set (its ``supported_configs``,
#: or the ``ci`` profile's pool): its models are then built once each and copied after.
SEEDS_PER_CONFIG = 4


def _seed(draw: st.DrawFn, suite: Suite) -> int:
    """The weight seed: drawn; 0 at a fixed shape (its weights are drawn once per scale); one of
    :data:`SEEDS_PER_CONFIG` for fixed configurations whose models are copied."""
    if suite.shape is not None:
        return 0
    copied = getattr(suite.adapter, "reuse", "rebuild") == "copy"
    fixed = suite.adapter.supported_configs is not None or suite.pool is not None
    if copied and fixed:
        return draw(st.integers(0, SEEDS_PER_CONFIG - 1))
    return draw(st.integers(0, 2**31 - 1))


@reused
@st.composite
def configs(draw: st.DrawFn, suite: Suite, *, min_positions: int = 4) -> GPT2Config:
    """A configuration the implementation supports: the checkpoint's, one the adapter declares,
    the fixed shape, one of the run's pool (``ci``), or any small one drawn (``dev``,
    ``thorough``)."""
    if suite.checkpoint is not None:
        return suite.checkpoint[0]
    if suite.adapter.supported_configs is not None:
        return draw(st.sampled_from(list(suite.adapter.supported_configs)))
    if suite.shape is not None:
        return suite.shape
    if suite.pool is not None:
        return draw(sampled(_pooled(suite.pool, min_positions)))
    n_head = draw(sampled((1, 2, 4)))
    return GPT2Config(
        vocab_size=draw(st.integers(5, 97)),
        n_positions=draw(st.integers(max(min_positions, 8), MAX_POSITIONS)),
        n_embd=n_head * draw(sampled((4, 8, 16))),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
    )


def _pooled(pool: tuple[GPT2Config, ...], min_positions: int) -> tuple[GPT2Config, ...]:
    """The pool's configurations with at least ``min_positions`` positions (in the pool's order,
    smallest first: hypothesis shrinks towards the first)."""
    usable = tuple(config for config in pool if config.n_positions >= min_positions)
    if not usable:
        raise ValueError(
            f"no configuration of the pool has {min_positions} positions or more: "
            f"{[str(config) for config in pool]}"
        )
    return usable


@dataclasses.dataclass(frozen=True)
class Draw:
    """A model to check: configuration, weight scale and seed (weights come from the oracle)."""

    config: GPT2Config
    scale: float | None
    seed: int
    params: Params | None = None  # set when a checkpoint supplies the weights

    def __repr__(self) -> str:  # shown in hypothesis' falsifying example
        scale = "gpt2-init" if self.scale is None else self.scale
        return f"Draw({self.config}, scale={scale}, seed={self.seed})"


@reused
@st.composite
def models(draw: st.DrawFn, suite: Suite) -> Draw:
    """A configuration plus weights: drawn, or the checkpoint's when --checkpoint is given."""
    return _model(draw, suite, suite.weight_scales)


def _model(draw: st.DrawFn, suite: Suite, scales: tuple[float | None, ...]) -> Draw:
    """What :func:`models` and :func:`gradient_models` draw, the weight scale from ``scales``."""
    config = draw(configs(suite))
    if suite.checkpoint is not None:
        return Draw(config, None, 0, suite.checkpoint[1])
    scale = draw(sampled(tuple(scales)))
    return Draw(config, scale, _seed(draw, suite))


@reused
@st.composite
def tokens(
    draw: st.DrawFn,
    config: GPT2Config,
    *,
    min_batch: int = 1,
    max_batch: int = 3,
    min_length: int = 1,
    max_length: int | None = None,
) -> np.ndarray:
    """An int64 ``[B, T]`` batch of valid token ids."""
    longest = longest_row(config, max_length, min_length)
    batch = draw(st.integers(min_batch, max_batch))
    length = draw(st.integers(min(min_length, longest), longest))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length))


@reused
@st.composite
def ignore_masks(draw: st.DrawFn, shape: tuple[int, ...], *, p_max: float = 0.5) -> np.ndarray:
    """A boolean mask of label positions to replace by ignore_index (possibly none, never all
    positions unless the batch is tiny)."""
    p = draw(st.floats(0.0, p_max))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).random(shape) < p


def with_ignored(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, IGNORE_INDEX, labels)


@reused
@st.composite
def splits(draw: st.DrawFn, size: int) -> list[int]:
    """Sorted cut points that split ``range(size)`` into at least two non-empty parts."""
    if size < 2:
        return []
    cuts = draw(st.sets(st.integers(1, size - 1), min_size=1, max_size=min(3, size - 1)))
    return sorted(cuts)


@reused
@st.composite
def labelled_batches(
    draw: st.DrawFn,
    config: GPT2Config,
    convention: str,
    *,
    min_batch: int = 1,
    max_batch: int = 3,
    min_length: int = 1,
    max_length: int | None = None,
    p_ignore_max: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``[B, T]`` and labels ``[B, T]`` cut from one token stream, in ``convention``:
    "inputs" labels are the tokens themselves (the loss shifts them); "shifted" labels are the
    stream's next tokens (nanoGPT's loader reads T+1 tokens). Some labels are ignored."""
    longest = longest_row(config, max_length, min_length)
    batch = draw(st.integers(min_batch, max_batch))
    length = draw(st.integers(min(min_length, longest), longest))
    seed = draw(st.integers(0, 2**31 - 1))
    stream = np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length + 1))
    tokens = stream[:, :length]
    labels = tokens.copy() if convention == "inputs" else stream[:, 1:].copy()
    mask = draw(ignore_masks(labels.shape, p_max=p_ignore_max))
    return tokens, with_ignored(labels, mask)


@reused
@st.composite
def chunk_sizes(draw: st.DrawFn, total: int) -> list[int]:
    """Positive sizes adding up to ``total``: how new tokens are fed to a cache, call by call."""
    if total <= 0:
        return []
    cuts = (
        set(draw(st.lists(st.integers(1, total - 1), max_size=total - 1))) if total > 1 else set()
    )
    edges = [0, *sorted(cuts), total]
    return [b - a for a, b in itertools.pairwise(edges)]


@reused
@st.composite
def left_padded(
    draw: st.DrawFn, config: GPT2Config, *, max_batch: int = 3, max_length: int = 32
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Sequences of different lengths, left-padded with random tokens into one batch.

    Returns ``(sequences, tokens [B, T], attention_mask [B, T])``: ``sequences[b]`` holds the
    real tokens of row b, which sit at its last ``len(sequences[b])`` indices (mask 1); at least
    one row is padded.
    """
    T = draw(st.integers(2, longest_row(config, max_length)))
    B = draw(st.integers(1, max_batch))
    lengths = [draw(st.integers(1, T)) for _ in range(B)]
    padded = draw(st.integers(0, B - 1))
    lengths[padded] = min(lengths[padded], T - 1)  # at least one row has padding
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    tokens = rng.integers(0, config.vocab_size, (B, T))  # pad tokens are random too
    mask = np.zeros((B, T), dtype=np.int64)
    for b, n in enumerate(lengths):
        mask[b, T - n :] = 1
    sequences = [tokens[b, T - n :].copy() for b, n in enumerate(lengths)]
    return sequences, tokens, mask


@reused
@st.composite
def gradient_models(draw: st.DrawFn, suite: Suite) -> Draw:
    """Like :func:`models`, on the weight scales where the spec promises gradient comparisons
    (``DOMAIN["gradient_weight_scales"]``: at reduced precision, GPT-2's init scale only)."""
    return _model(draw, suite, suite.gradient_weight_scales)


@reused
@st.composite
def models_at(draw: st.DrawFn, suite: Suite, prefer: tuple[float | None, ...]) -> Draw:
    """Like :func:`models`, with the weight scale drawn from ``prefer`` (the scales that expose a
    detail: the exact GELU shows at 0.1-0.3, not at init; LayerNorm's epsilon shows best at init)
    where the run's dtype domain has them, from the whole domain otherwise."""
    config = draw(configs(suite))
    if suite.checkpoint is not None:
        return Draw(config, None, 0, suite.checkpoint[1])
    scales = [s for s in suite.weight_scales if s in prefer] or list(suite.weight_scales)
    scale = draw(sampled(tuple(scales)))
    return Draw(config, scale, _seed(draw, suite))


@reused
@st.composite
def init_configs(draw: st.DrawFn, suite: Suite) -> GPT2Config:
    """Configurations wide enough for sample statistics of an initialisation (every weight matrix
    has at least 32 x 32 entries); the adapter's or the checkpoint's when those are fixed."""
    if (
        suite.checkpoint is not None
        or suite.adapter.supported_configs is not None
        or suite.shape is not None
    ):
        return draw(configs(suite))
    n_head = draw(sampled((1, 2, 4)))
    return GPT2Config(
        vocab_size=draw(st.integers(64, 97)),
        n_positions=draw(st.integers(32, MAX_POSITIONS)),
        n_embd=draw(sampled((32, 64))),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
    )


def build(suite: Suite, draw: Draw, requirement: str) -> tuple[Implementation, Params | None]:
    """Build the drawn model (its checkpoint weights, or oracle weights at its scale and seed);
    a failure to build fails ``requirement``."""
    return suite.build(
        draw.config, requirement=requirement, params=draw.params, seed=draw.seed, scale=draw.scale
    )


def draw_implementation(
    data: st.DataObject, suite: Suite, requirement: str
) -> tuple[GPT2Config, Implementation]:
    """Draw a model (:func:`models`) and build it; a failure to build fails ``requirement``."""
    draw = data.draw(models(suite), label="model")
    implementation, _ = build(suite, draw, requirement)
    return draw.config, implementation


def draw_labelled_implementation(
    data: st.DataObject,
    suite: Suite,
    requirement: str,
    *,
    label: str = "tokens, labels",
    **batches: Any,
) -> tuple[str, GPT2Config, Implementation, np.ndarray, np.ndarray]:
    """The adapter's label convention, a built model (:func:`draw_implementation`) and a
    labelled batch for it (:func:`labelled_batches` with ``batches``), drawn in that order:
    ``(convention, config, implementation, tokens, labels)``."""
    convention = label_convention(suite.adapter)
    config, implementation = draw_implementation(data, suite, requirement)
    tokens, labels = data.draw(labelled_batches(config, convention, **batches), label=label)
    return convention, config, implementation, tokens, labels
