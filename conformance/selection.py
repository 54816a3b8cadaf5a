"""Which conformance properties a run runs, and how each is expected to end.

From the collected items: the markers' requirement ids (checked against the spec), the shard
(``--conformance-shard``), the requirements profile (``--conformance-requirements``), the
adapter's declared deviations and the xfails file (expected failures), and the reasons a property
is not claimed (a capability the adapter lacks; a tied-only requirement of an untied head).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import pytest

from .adapter import CAPABILITIES, Adapter
from .options import OptionError, without_shrinking
from .recording import REQUIREMENT_PROPERTY

#: The requirement ids a collected conformance property checks (set during collection).
REQUIREMENT_IDS = pytest.StashKey[tuple[str, ...]]()
#: The fixture that repeats each property once per seed (``--conformance-seeds``).
SEED_FIXTURE = "gpt2_conformance_seed"


class ConformanceWarning(pytest.PytestWarning):
    """Something about the run's configuration of the conformance suite looks wrong."""


@functools.cache
def known_requirements() -> dict[str, Any]:
    """The spec's requirements by id."""
    from gpt2_spec import load_requirements

    return {r.id: r for r in load_requirements()}


def marker_args(item: pytest.Item, name: str) -> tuple[str, ...]:
    """The arguments of every ``name`` marker of ``item``, in order, without repeats."""
    values: list[str] = []
    for marker in item.iter_markers(name):
        values.extend(marker.args)
    return tuple(dict.fromkeys(values))


def is_property(item: pytest.Item) -> bool:
    return item.get_closest_marker("requirement") is not None


def marker_error(item: pytest.Item) -> str | None:
    """What is wrong with a test's ``requirement`` and ``capability`` markers (None: nothing)."""
    markers = list(item.iter_markers("requirement"))
    if not markers:
        return None
    known = known_requirements()
    for marker in markers:
        if not marker.args:
            return f"{item.nodeid}: @pytest.mark.requirement needs at least one requirement id"
        for rid in marker.args:
            if rid not in known:
                return (
                    f"{item.nodeid}: requirement marker names {rid!r}, which is not a "
                    f"requirement of the spec (see gpt2_spec.load_requirements())"
                )
    for cap in marker_args(item, "capability"):
        if cap not in CAPABILITIES:
            return (
                f"{item.nodeid}: capability marker names {cap!r}, which is not a capability; "
                f"known: {', '.join(CAPABILITIES)}"
            )
    return None


def _deselect(config: pytest.Config, items: list[pytest.Item], keep: list[pytest.Item]) -> None:
    kept = {id(item) for item in keep}
    dropped = [item for item in items if id(item) not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def apply_shard(config: pytest.Config, items: list[pytest.Item], shard: tuple[int, int]) -> None:
    """``--conformance-shard=K/N``: keep every N-th test (by sorted node id) from the K-th on."""
    k, n = shard
    order = {nodeid: i for i, nodeid in enumerate(sorted(item.nodeid for item in items))}
    _deselect(config, items, [item for item in items if order[item.nodeid] % n == k - 1])


def apply_requirements_profile(
    config: pytest.Config, items: list[pytest.Item], profile: Any
) -> None:
    """Deselect the properties that check no requirement of the run's requirements profile
    (the report shows those requirements as not-in-profile)."""
    keep = []
    for item in items:
        ids = marker_args(item, "requirement")
        if not ids or any(rid in profile.requirements for rid in ids):
            keep.append(item)
    _deselect(config, items, keep)


def mark_properties(properties: Sequence[pytest.Item], timeout_s: float | None) -> None:
    """Note on each property the requirement ids of its markers (in its stash, and in its
    reports' ``user_properties``, where the report reads them) and give it the run's timeout
    (``timeout_s``; None: none), unless it has a ``timeout`` marker of its own."""
    for item in properties:
        ids = marker_args(item, "requirement")
        item.stash[REQUIREMENT_IDS] = ids
        for rid in ids:
            item.user_properties.append((REQUIREMENT_PROPERTY, rid))
        if timeout_s is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(timeout_s))


def unclaimed_reason(item: pytest.Item, profile: Any, adapter: Adapter) -> str | None:
    """Why the adapter does not claim the property (None: it claims it): a tied-only requirement
    of an untied head (:func:`tied_only_reason`), or a capability it lacks."""
    return tied_only_reason(item, profile, adapter) or capability_reason(item, adapter)


def tied_only_reason(item: pytest.Item, profile: Any, adapter: Adapter) -> str | None:
    """In a profile whose head.tied-* requirements apply to declared-tied heads only, why a
    model that declares an untied head does not claim them (None: it does, or no such profile)."""
    ids = item.stash.get(REQUIREMENT_IDS, ())
    if profile is None or not ids or not all(rid in profile.tied_only for rid in ids):
        return None
    if adapter.tied_head:
        return None
    return (
        f"the adapter declares an untied head (tied_head=False); in the {profile.name} profile "
        f"{', '.join(ids)} apply to a head declared tied"
    )


def capability_reason(item: pytest.Item, adapter: Adapter) -> str | None:
    """Why the adapter does not claim what the property needs (None: it claims all of it)."""
    marker = item.get_closest_marker("capability")
    if marker is None:
        return None
    missing = [c for c in marker.args if c not in adapter.capabilities]
    return f"the adapter does not claim {', '.join(missing)}" if missing else None


def apply_declared_deviations(adapter: Adapter, items: Sequence[pytest.Item]) -> set[str]:
    """A requirement the adapter declares it deviates from is expected to fail (reported xfail,
    with the declaration as the reason); a declared MUST deviation still means no conformance.
    Returns the node ids so marked."""
    declared = dict(getattr(adapter, "declared_deviations", {}) or {})
    if not adapter.tied_head:
        from .tied import TIED_TO_EMBEDDING

        # An untied head is one declared deviation; the other head.tied-* failures follow from it
        # (spec/diagnosis.md) and are reported as its consequences.
        declared.setdefault(
            TIED_TO_EMBEDDING, "the adapter declares an untied head (tied_head=False)"
        )
    unknown = sorted(set(declared) - set(known_requirements()))
    if unknown:
        raise OptionError(
            f"adapter {adapter.name!r} declares deviations from unknown requirements {unknown}"
        )
    marked: set[str] = set()
    for item in items:
        reasons = [
            f"{rid}: {declared[rid]}" for rid in item.stash[REQUIREMENT_IDS] if rid in declared
        ]
        if reasons:
            reason = "declared deviation: " + "; ".join(reasons)
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
            marked.add(item.nodeid)
    return marked


def _xfail_matches(entry: str, item: pytest.Item) -> bool:
    nodeid = item.nodeid
    return (
        entry in item.stash[REQUIREMENT_IDS]
        or entry == nodeid
        or entry == item.name
        or entry == getattr(item, "originalname", None)
        or nodeid.endswith("/" + entry)
        or nodeid.endswith("::" + entry)
    )


def apply_xfails(entries: Sequence[str], path: str, items: Sequence[pytest.Item]) -> list[str]:
    """Mark the properties an xfails file lists as expected failures; warns about, and returns,
    the entries that match none."""
    used: set[str] = set()
    for item in items:
        hits = [e for e in entries if _xfail_matches(e, item)]
        if hits:
            used.update(hits)
            item.add_marker(pytest.mark.xfail(reason=f"listed in {path}", strict=False))
    unmatched = [e for e in entries if e not in used]
    for entry in unmatched:
        warnings.warn(
            ConformanceWarning(f"{path}: entry {entry!r} matches no collected conformance test"),
            stacklevel=1,
        )
    return unmatched


def function_of(item: pytest.Item) -> Any:
    return getattr(item, "function", None)


def apply_run_settings(items: Sequence[pytest.Item], chosen: Any, deviating: set[str]) -> None:
    """Give the properties the run's hypothesis settings ``chosen``; those expected to fail (the
    node ids ``deviating``) without shrinking."""
    # A declared deviation is expected to fail: its first counterexample is enough, so it is
    # not shrunk or explained. Settings belong to the test function, shared by its
    # parametrizations: only a function all of whose items deviate is left unshrunk.
    shrunk = {function_of(i) for i in items if i.nodeid not in deviating}
    expected_to_fail = without_shrinking(chosen)
    for item in items:
        apply_settings(item, chosen if function_of(item) in shrunk else expected_to_fail)


def replay_example(items: Sequence[pytest.Item], replay: tuple[str, bytes]) -> None:
    """``--conformance-replay``: the one property left in ``items`` (once ``-k`` and node ids
    have chosen) runs the given example and nothing else."""
    functions = {function_of(i): i for i in items if is_property(i)}
    if len(functions) != 1:
        raise OptionError(
            f"--conformance-replay replays the example of one property; {len(functions)} are "
            "selected: select the property by its node id (as the failure printed it) or -k NAME"
        )
    from hypothesis import reproduce_failure

    (item,) = functions.values()
    reproduce_failure(*replay)(item.obj)  # type: ignore[attr-defined]


def seed_property(item: pytest.Item) -> None:
    """Give a property repeated by ``--conformance-seeds`` its repetition's hypothesis seed."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and SEED_FIXTURE in callspec.params:
        from hypothesis import seed

        seed(callspec.params[SEED_FIXTURE])(item.obj)  # type: ignore[attr-defined]


def apply_settings(item: pytest.Item, chosen: Any) -> None:
    """Give a property the run's hypothesis settings, unless it carries its own @settings."""
    function = function_of(item)
    if function is None or not getattr(function, "is_hypothesis_test", False):
        return
    if getattr(function, "_hypothesis_internal_settings_applied", False):
        return  # ours already (a parametrized property), or the property's own
    chosen(function)
