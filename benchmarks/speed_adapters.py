"""Implementations only the suite-speed benchmark uses (benchmarks/suite_speed.py), importable as
the top-level module ``speed_adapters`` from this folder, so that another checkout's interpreter
can run them too (``--compare``): ``--impl=speed_adapters:SlowBuild``.
"""

from __future__ import annotations

import time
from typing import Any

from gpt2_conformance.adapters.reference import ReferenceAdapter, ReferenceImplementation
from gpt2_spec import GPT2Config

#: Seconds every build of :class:`SlowBuild` sleeps: a model whose construction is slow (a JIT
#: compile, a heavy framework's initialisation).
SLOW_BUILD_S = 0.3


class SlowBuild(ReferenceAdapter):
    """The reference, each build sleeping :data:`SLOW_BUILD_S` first."""

    name = "reference-slow-build"

    def build(self, config: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_BUILD_S)
        return super().build(config, **kwargs)


class _Raising(ReferenceImplementation):
    def logits(self, tokens: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this model cannot compute logits")


class AlwaysRaises(ReferenceAdapter):
    """The reference whose ``logits()`` always raises (its other calls work)."""

    name = "broken-always-raises"

    def implementation(self, module: Any, config: Any, device: str, dtype: str) -> Any:
        return _Raising(module, device, dtype, adapter=self)


class SlowBuildCopies(SlowBuild):
    """:class:`SlowBuild` that lets the suite copy a model it built instead of building it
    again (``reuse = "copy"``)."""

    name = "reference-slow-build-copies"
    reuse = "copy"


class ReferenceCopies(ReferenceAdapter):
    """The reference, copied instead of rebuilt (``reuse = "copy"``)."""

    name = "reference-copies"
    reuse = "copy"


class SlowBuildFixed(SlowBuildCopies):
    """:class:`SlowBuildCopies` at three fixed configurations (``supported_configs``): the
    suite draws a few weight seeds per configuration, so it builds a few dozen models."""

    name = "reference-slow-build-fixed"
    reuse = "copy"
    supported_configs = (
        GPT2Config(vocab_size=61, n_positions=24, n_embd=16, n_layer=2, n_head=2),
        GPT2Config(vocab_size=37, n_positions=16, n_embd=16, n_layer=1, n_head=4),
        GPT2Config(vocab_size=97, n_positions=32, n_embd=8, n_layer=3, n_head=1),
    )
