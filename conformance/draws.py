"""What a property's examples depend on: the run's seed and the suite's strategies, nothing else.

Hypothesis (since 6.131) now and then draws a literal it found in the *local* modules imported so
far (each integer, float or string choice, with probability 0.05): modules outside site-packages
and the standard library. Those include the implementation under test when it lives in its
author's checkout, its adapter, and this package itself when it is installed editable. Left on,
the examples that judge an implementation would depend on its source (a number changed anywhere
in it changes the derandomized ``ci`` examples of every property), and two installations of the
same suite (editable, or from a wheel) would draw different examples at the same seed.

:func:`suite_draws_only` turns that pool off while a conformance property runs (the plugin wraps
each property's call in it). Hypothesis' own constants (boundary values, special floats) are
still drawn. On a hypothesis without local constants it does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _providers() -> Any:
    """hypothesis' provider module when it has a local-constant pool, else None."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - hypothesis always has it
        return None
    if not hasattr(providers, "_get_local_constants") or not hasattr(providers, "CONSTANTS_CACHE"):
        return None
    return providers


def local_constants_supported() -> bool:
    """Whether the installed hypothesis draws constants from local modules (and so whether
    :func:`suite_draws_only` has anything to turn off)."""
    return _providers() is not None


@contextlib.contextmanager
def suite_draws_only() -> Iterator[None]:
    """Inside: hypothesis draws no constant from local modules (its cache of the constants that
    each kind of choice permits is emptied on the way in and out, so nothing computed outside
    leaks in, nor the other way)."""
    providers = _providers()
    if providers is None:
        yield
        return
    from hypothesis.internal.constants_ast import Constants

    empty = Constants()
    original = providers._get_local_constants
    providers._get_local_constants = lambda: empty
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        providers.CONSTANTS_CACHE.cache.clear()
