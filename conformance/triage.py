"""Which failures are causes and which are consequences (spec: diagnosis.md).

One bug usually fails several requirements: a causal leak also moves every comparison of full
logits with the oracle, a loss that divides by the wrong count also moves every gradient. The
report separates the *primary* failures, the ones to fix first, from the *consequences*, each
explained by a primary, with the reason. Two kinds of evidence explain a failure:

* **observed**: a test of requirement A failed on the observable of requirement B (its failure
  names B: the implementation wrote into its input array, the log-probabilities disagree with the
  oracle and no known deviation of A explains it, ...). A's failure is explained by B's violation,
  even where B's own tests happened to pass.
* **presupposes**: the spec says A can be judged only where B holds (``spec/diagnosis.md``; e.g.
  a comparison of full logits with the oracle presupposes causality). When both fail, A's failure
  is explained by B's.

The failing requirements and these edges form a directed graph. A requirement is primary when
nothing outside its own cycle explains it (it lies in a *sink* strongly connected component);
inside a cycle the members that presuppose no other member are primary (the most fundamental),
and the spec's order breaks what is left. Everything else is a consequence, explained by the
primaries it reaches. No pytest or hypothesis here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

PRIMARY = "primary"
CONSEQUENCE = "consequence"
#: Why a consequence is explained: its test observed the other requirement's violation, or the
#: spec says it presupposes it.
OBSERVED, PRESUPPOSES = "observed", "presupposes"


@dataclasses.dataclass(frozen=True)
class Finding:
    """The triage of one failing (or observed-violated) requirement.

    Attributes:
        role: :data:`PRIMARY` or :data:`CONSEQUENCE`.
        explained_by: for a consequence, the primaries it is explained by, in the spec's order.
        reason: for a consequence, one sentence that says why (the first link of the chain).
        observed_only: the requirement's own tests did not fail; a test of another requirement
            observed its violation.
    """

    role: str
    explained_by: tuple[str, ...] = ()
    reason: str = ""
    observed_only: bool = False

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"role": self.role}
        if self.explained_by:
            out["explained_by"] = list(self.explained_by)
            out["reason"] = self.reason
        if self.observed_only:
            out["observed_only"] = True
        return out


def triage(
    order: Sequence[str],
    failures: Mapping[str, Iterable[str | None]],
    presupposes: Mapping[str, Iterable[str]],
) -> dict[str, Finding]:
    """Triage the failures of a run.

    Args:
        order: every requirement id, in the spec's order (breaks ties).
        failures: per failing (or expected-to-fail) requirement, what each of its failing tests
            names as violated: its own id or None (the test saw the requirement itself fail), or
            another requirement's id (the test observed that requirement's violation).
        presupposes: per requirement, what it presupposes (transitively closed, see
            ``gpt2_spec.load_presuppositions``).

    Returns:
        A :class:`Finding` per requirement that fails or whose violation was observed.
    """
    rank = {rid: i for i, rid in enumerate(order)}
    failing = set(failures)
    observed = {
        r: {o for o in names if o is not None and o != r and o in rank}
        for r, names in failures.items()
    }
    # Evidence that a requirement itself is violated: a failure that names it (or nothing
    # else), or another requirement's test that observed it.
    evidenced = {r for r, names in failures.items() if any(o in (None, r) for o in names)}
    evidenced |= {o for names in observed.values() for o in names}
    nodes = sorted(failing | evidenced, key=lambda r: rank.get(r, len(rank)))
    node_set = set(nodes)
    edges: dict[str, dict[str, str]] = {r: {} for r in nodes}
    for r in nodes:
        for p in presupposes.get(r, ()):
            if p in node_set and p != r:
                edges[r][p] = PRESUPPOSES
        for o in observed.get(r, ()):
            edges[r][o] = OBSERVED  # the stronger evidence wins over a presupposition
    reach = _reachability(nodes, edges)
    primaries: set[str] = set()
    for r in nodes:
        component = {x for x in reach[r] if r in reach[x]} | {r}
        if any(x not in component for x in reach[r]):
            continue  # something outside its cycle explains it
        # Inside a cycle: of the members with evidence of their own, those that presuppose no
        # other such member; the spec's order decides what is left.
        candidates = [x for x in component if x in evidenced] or list(component)
        fundamental = [
            x
            for x in candidates
            if not any(edges[x].get(y) == PRESUPPOSES for y in candidates if y != x)
        ] or [min(candidates, key=lambda x: rank.get(x, len(rank)))]
        if r in fundamental:
            primaries.add(r)
    findings: dict[str, Finding] = {}
    for r in nodes:
        only_observed = r not in failing
        if r in primaries:
            findings[r] = Finding(PRIMARY, observed_only=only_observed)
            continue
        causes = tuple(
            sorted((p for p in primaries if p in reach[r]), key=lambda x: rank.get(x, 0))
        )
        findings[r] = Finding(
            CONSEQUENCE,
            explained_by=causes,
            reason=_reason(r, causes, edges, reach),
            observed_only=only_observed,
        )
    return findings


def _reachability(nodes: Sequence[str], edges: Mapping[str, Mapping[str, str]]) -> dict[str, set]:
    reach: dict[str, set[str]] = {}
    for start in nodes:
        seen: set[str] = set()
        stack = list(edges[start])
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            stack.extend(edges[x])
        seen.discard(start)
        reach[start] = seen
    return reach


def _reason(
    r: str,
    causes: Sequence[str],
    edges: Mapping[str, Mapping[str, str]],
    reach: Mapping[str, set[str]],
) -> str:
    """The first link from ``r`` towards its first cause, in words."""
    if not causes:
        return ""
    target = causes[0]
    steps = [
        (step, kind) for step, kind in edges[r].items() if step == target or target in reach[step]
    ]
    # The plainest link first: straight to the cause, then what the test itself observed.
    steps.sort(key=lambda sk: (sk[0] != target, sk[1] != OBSERVED))
    if not steps:
        return ""
    step, kind = steps[0]
    if kind == OBSERVED:
        link = f"its test observed a violation of {step}"
    else:
        link = f"it presupposes {step} (spec/diagnosis.md)"
    if step != target:
        link += f", which is explained by {target}"
    return link


def summary(
    findings: Mapping[str, Finding], order: Sequence[str], expected: Iterable[str] = ()
) -> dict[str, list[str]]:
    """The report's ``triage``: the ``primary`` failures, the ``declared`` ones (primaries whose
    failure was expected: ``expected``), and the ``consequence`` ids, each in the spec's order."""
    rank = {rid: i for i, rid in enumerate(order)}
    expected = set(expected)
    ids = sorted(findings, key=lambda r: rank.get(r, len(rank)))
    return {
        "primary": [r for r in ids if findings[r].role == PRIMARY and r not in expected],
        "declared": [r for r in ids if findings[r].role == PRIMARY and r in expected],
        "consequence": [r for r in ids if findings[r].role == CONSEQUENCE],
    }
