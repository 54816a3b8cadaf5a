"""Built-in adapters, selectable by name with ``--impl``.

:data:`TABLE` is the one list of them: what each is called, where it lives, what it needs
installed, whether it is a conformant baseline, and the capabilities it leaves out. The plugin's
name lookup (:data:`BUILTINS`), the project's tests of the adapters, the report and false-alarm
scripts and the mutant zoo all derive their lists from it, so adding a built-in adapter is one
record here plus its module.

The modules are imported only when their adapter is chosen: ``--impl=reference`` never imports
transformers.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Builtin:
    """One built-in adapter."""

    #: The ``--impl`` value.
    name: str
    #: ``"module:attribute"`` of an Adapter instance, class or zero-argument factory.
    target: str
    #: The ``name`` the adapter reports (in reports and failure messages); differs from
    #: :attr:`name` for an alias.
    reports_as: str
    #: The pip extra it needs (``pip install gpt2-conformance[EXTRA]``), or None.
    extra: str | None = None
    #: Top-level modules it imports beyond the core dependencies (the extra installs them).
    requires: tuple[str, ...] = ()
    #: A GPT-2 that conforms: the docs show its report (``scripts/refresh_reports.py``) and the
    #: false-alarm campaign runs it by default. Aliases and peers are not baselines.
    baseline: bool = False
    #: The mutant zoo's origin (``tests/broken``) whose mutants modify this implementation; this
    #: name is then their unmodified baseline.
    zoo_origin: str | None = None
    #: Capabilities (``gpt2_conformance.adapter.CAPABILITIES``) it does not claim; the
    #: project's tests check the adapter claims exactly the others.
    not_claimed: frozenset[str] = frozenset()
    #: Another architecture transformers ships, as a tiny random model (:mod:`.peers`).
    peer: bool = False


#: The model's own embedding matrix and its gradients: the causal-lm profile's generic paths,
#: which the torch adapters claim and the oracle (which claims ``params``) leaves out.
_OWN_MATRICES = frozenset({"embedding-matrix", "embedding-gradients"})

#: Other causal-LM architectures transformers ships, as tiny random models (``hf:NAME``; see
#: :mod:`.peers` and the causal-lm requirements profile). Kept in step with ``peers.PEERS``.
PEER_NAMES: tuple[str, ...] = (
    "gpt-neo",
    "gpt-j",
    "gpt-neox",
    "opt",
    "llama",
    "qwen2",
    "qwen3",
    "mistral",
    "phi",
    "gemma",
    "bloom",
    "falcon",
    "gpt-bigcode",
)


def _transformers_gpt2(
    name: str, attention: str, *, baseline: bool, zoo_origin: str | None = None
) -> Builtin:
    """A built-in of transformers' GPT2LMHeadModel with ``attention`` ("SDPA" or "Eager"): the
    transformers extra, and every capability but ``input-validation``."""
    return Builtin(
        name,
        f"gpt2_conformance.adapters.transformers_gpt2:Transformers{attention}Adapter",
        reports_as=f"transformers-{attention.lower()}",
        baseline=baseline,
        zoo_origin=zoo_origin,
        not_claimed=frozenset({"input-validation"}),
        extra="transformers",
        requires=("transformers",),
    )


#: Every built-in adapter, GPT-2s first, in the order listings show them.
TABLE: tuple[Builtin, ...] = (
    Builtin(
        "reference",
        "gpt2_conformance.adapters.reference:ReferenceAdapter",
        reports_as="reference",
        baseline=True,
        zoo_origin="reference",
    ),
    Builtin(
        "numpy",
        "gpt2_conformance.adapters.numpy_oracle:NumpyOracleAdapter",
        reports_as="numpy",
        baseline=True,
        not_claimed=frozenset({"kv-cache"}) | _OWN_MATRICES,
    ),
    _transformers_gpt2("transformers", "SDPA", baseline=False, zoo_origin="transformers"),
    _transformers_gpt2("transformers-eager", "Eager", baseline=True),
    _transformers_gpt2("transformers-sdpa", "SDPA", baseline=True),
    *(
        Builtin(
            f"hf:{n}",
            f"gpt2_conformance.adapters.peers:{n.replace('-', '_')}",
            reports_as=f"hf:{n}",
            peer=True,
            extra="transformers",
            requires=("transformers",),
        )
        for n in PEER_NAMES
    ),
)

#: name -> "module:attribute": the view ``--impl`` resolution reads.
BUILTINS: dict[str, str] = {b.name: b.target for b in TABLE}


def builtin(name: str) -> Builtin:
    """The record of the built-in adapter ``name``.

    Raises:
        KeyError: no built-in has that name; the message lists the built-ins.
    """
    for record in TABLE:
        if record.name == name:
            return record
    raise KeyError(f"no built-in adapter {name!r}; the built-ins are {', '.join(BUILTINS)}")


def baselines() -> tuple[str, ...]:
    """The conformant GPT-2 built-ins, in table order: the columns of the docs' report matrix
    and the false-alarm campaign's default implementations."""
    return tuple(b.name for b in TABLE if b.baseline)


def zoo_baselines() -> dict[str, str]:
    """The mutant zoo's origin -> the ``--impl`` value of the unmodified implementation."""
    return {b.zoo_origin: b.name for b in TABLE if b.zoo_origin is not None}
