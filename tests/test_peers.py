"""The causal-lm requirements profile and the peer architectures (docs/evidence/peers.md).

The profile is defined in spec/README.md, the requirements it holds say so on their level lines
(`` · profile `causal-lm` ``), and ``gpt2_spec.load_profiles`` reads both; selecting it
(``--conformance-requirements=causal-lm``) deselects GPT-2's own requirements, which the report
shows as not-in-profile, and judges the rest on any causal LM: here one peer architecture passes
and a peer that lies about its head fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpt2_conformance.properties import discover
from gpt2_spec import SpecFormatError, load_profiles, load_requirements
from gpt2_spec.registry import SPEC_DIR

ROOT = Path(__file__).resolve().parent.parent
IDS = [r.id for r in load_requirements()]
GPT2_ONLY = {
    "model.canonical-names",
    "model.canonical-layout",
    "embedding.shapes",
    "embedding.input-sum",
    "numerics.log-probs-match-oracle",
    "numerics.loss-matches-oracle",
    "numerics.gradients-match-oracle",
    "numerics.tolerance-table",
    "forward.pre-layernorm",
    "forward.initialisation",
}


# ---- the spec's profiles ---------------------------------------------------------------------


def test_the_gpt2_profile_is_every_requirement():
    profiles = load_profiles()
    assert set(profiles) == {"gpt2", "causal-lm"}
    assert list(profiles["gpt2"].requirements) == IDS
    assert not profiles["gpt2"].tied_only


def test_the_causal_lm_profile_names_real_ids_and_leaves_gpt2s_own_out():
    profile = load_profiles()["causal-lm"]
    assert set(profile.requirements) <= set(IDS)
    assert list(profile.requirements) == [i for i in IDS if i in profile.requirements]
    assert not GPT2_ONLY & set(profile.requirements)
    assert not any(i.startswith(("forward.", "model.")) for i in profile.requirements)
    for family in ("objective.", "causality.", "inference.", "input."):
        assert {i for i in IDS if i.startswith(family)} <= set(profile.requirements), family
    assert profile.tied_only == {i for i in IDS if i.startswith("head.tied-")}
    assert {"head.linear-no-bias", "head.untied-is-declared"} <= set(profile.requirements)


#: Capabilities that only a GPT-2 has: canonical weights, their gradients, canonical checkpoints.
GPT2_CAPABILITIES = {"params", "gradients", "checkpoint"}


def test_every_causal_lm_requirement_has_a_property_that_needs_no_gpt2_weights():
    """The profile is checkable on any causal LM: each requirement has a property that needs
    none of the capabilities only a GPT-2 with canonical weights can offer."""
    generic = {
        rid
        for prop in discover()
        if not set(prop.capabilities) & GPT2_CAPABILITIES
        for rid in prop.requirements
    }
    missing = sorted(set(load_profiles()["causal-lm"].requirements) - generic)
    assert not missing, f"causal-lm requirements checked only through GPT-2's weights: {missing}"


def _spec_copy(
    tmp_path: Path, profiles_text: str, level_lines: dict[str, str] | None = None
) -> Path:
    """The spec's chapters and README in ``tmp_path``, the README's profiles section replaced by
    ``profiles_text`` and each level line of ``level_lines`` (by id) replaced by its value."""
    for chapter in SPEC_DIR.glob("[0-9][0-9]-*.md"):
        text = chapter.read_text(encoding="utf-8")
        for rid, line in (level_lines or {}).items():
            text = re.sub(rf"^\*\*Requirement `{re.escape(rid)}`\*\*.*$", line, text, flags=re.M)
        (tmp_path / chapter.name).write_text(text, encoding="utf-8")
    readme = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    head = readme.split("## Profiles", 1)[0]
    (tmp_path / "README.md").write_text(head + profiles_text, encoding="utf-8")
    return tmp_path


SUM_IN_X = "**Requirement `objective.sum-of-terms`** · MUST · profile `x`"
PROFILES = "## Profiles\n\n### Profile `gpt2`\n\n### Profile `causal-lm`\n"


@pytest.mark.parametrize(
    ("text", "level_lines", "message"),
    [
        (
            PROFILES,
            {"objective.sum-of-terms": SUM_IN_X},
            r"02-objective.md:\d+: requirement objective.sum-of-terms names the profile x, which "
            "the spec's README does not define",
        ),
        ("## Profiles\n\n### Profile `causal-lm`\n", {}, "no '### Profile `gpt2`'"),
        (PROFILES + "\n### Profile `x`\n", {}, "profile x holds no requirement"),
        (PROFILES + "\n### Profile `gpt2`\n", {}, "profile gpt2 defined twice"),
    ],
)
def test_a_malformed_profile_is_rejected(
    tmp_path: Path, text: str, level_lines: dict[str, str], message: str
):
    with pytest.raises(SpecFormatError, match=message):
        load_profiles(_spec_copy(tmp_path, text, level_lines))


def test_a_level_line_puts_its_requirement_in_a_profile(tmp_path: Path):
    """The profiles are read from the level lines: adding one puts the requirement in, in spec
    order, and ``(declared tied only)`` makes it conditional; the README's list is not read."""
    rid = "forward.final-layernorm"
    line = f"**Requirement `{rid}`** · MUST · profile `causal-lm` (declared tied only)"
    profiles = load_profiles(_spec_copy(tmp_path, PROFILES, {rid: line}))
    before = load_profiles()["causal-lm"]
    assert profiles["causal-lm"].requirements == tuple(
        i for i in IDS if i in before.requirements or i == rid
    )
    assert profiles["causal-lm"].tied_only == before.tied_only | {rid}
    assert profiles["gpt2"] == load_profiles()["gpt2"]


# ---- running the profile -----------------------------------------------------------------------


def _suite(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            *args,
            f"--conformance-report={report}",
            "--max-examples=3",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(report.read_text(encoding="utf-8"))


def test_a_peer_conforms_to_the_causal_lm_profile_and_gpt2s_own_requirements_are_deselected(
    tmp_path: Path,
):
    done, report = _suite(
        tmp_path, "gpt2_conformance", "--impl=hf:llama", "--conformance-requirements=causal-lm"
    )
    profile = load_profiles()["causal-lm"]
    statuses = {r["id"]: r["status"] for r in report["requirements"]}
    assert {i for i, s in statuses.items() if s == "not-in-profile"} == set(IDS) - set(
        profile.requirements
    )
    outside = [r for r in report["requirements"] if r["status"] == "not-in-profile"]
    assert all(r["tests"] == [] for r in outside)  # deselected: nothing ran for them
    assert report["summary"]["not-in-profile"] == len(IDS) - len(profile.requirements)
    assert report["requirements_profile"] == "causal-lm"
    # Llama unties its head by default: declared, so the tied-only requirements are not claimed.
    assert report["implementation"]["tied_head"] is False
    assert all(statuses[i] == "not-claimed" for i in profile.tied_only)
    assert statuses["head.untied-is-declared"] == "pass"
    assert statuses["causality.jacobian-lower-triangular"] == "pass"  # the generic path ran
    assert statuses["objective.logits-gradient"] == "pass"
    assert report["conforms"] is True, report["verdict"]
    assert (
        ", causal-lm profile: function CONFORMS; validated input not claimed (" in report["verdict"]
    )
    header = f"requirements: the causal-lm profile ({len(profile.requirements)} of {len(IDS)}"
    assert header in done.stdout
    assert "deselected" in done.stdout


def test_the_default_profile_judges_every_requirement(tmp_path: Path):
    done, report = _suite(
        tmp_path, "gpt2_conformance.test_objective", "--impl=hf:llama", "-k", "one_row"
    )
    assert report["requirements_profile"] == "gpt2"
    assert "not-in-profile" not in report["summary"]
    assert "profile (" not in report["verdict"]
    assert "requirements: the" not in done.stdout


def test_an_unknown_profile_is_a_usage_error(tmp_path: Path, installed_suite: Any):
    done = installed_suite(
        "--impl=hf:llama",
        "--conformance-requirements=llama",
        "-p",
        "no:cacheprovider",
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 4
    assert "--conformance-requirements=llama: the spec defines the profiles gpt2, causal-lm" in (
        done.stderr
    )


LYING_PEER = """
from gpt2_conformance.adapters.peers import PEERS, PeerAdapter

# Llama's configuration unties the head, but this adapter declares it tied.
adapter = PeerAdapter(PEERS["llama"], tied=True)
"""

# A failing property shrinks its example for minutes; the first failure is enough here.
NO_SHRINK = """
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "peers-no-shrink",
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
"""


def test_the_profile_fails_a_peer_that_declares_a_tied_head_it_does_not_have(tmp_path: Path):
    (tmp_path / "lying_llama.py").write_text(LYING_PEER, encoding="utf-8")
    (tmp_path / "no_shrink.py").write_text(NO_SHRINK, encoding="utf-8")
    _, report = _suite(
        tmp_path,
        "gpt2_conformance.test_causal_lm",
        "--impl=lying_llama",
        "--conformance-requirements=causal-lm",
        "-p",
        "no_shrink",
        "--hypothesis-profile=peers-no-shrink",
    )
    by_id = {r["id"]: r for r in report["requirements"]}
    assert by_id["head.untied-is-declared"]["status"] == "fail"
    assert "the head is a separate tensor" in by_id["head.untied-is-declared"]["message"]
    assert by_id["head.tied-to-embedding"]["status"] == "fail"
    assert "not the embedding tensor" in by_id["head.tied-to-embedding"]["message"]
    assert by_id["head.tied-gradient"]["status"] == "fail"
    assert "lookup's contribution alone" in by_id["head.tied-gradient"]["message"]
    assert report["conforms"] is False


# ---- the published matrix ----------------------------------------------------------------------


def _matrix_script():
    from gpt2_evidence import peers_matrix

    return peers_matrix


def test_the_published_matrix_renders_and_explains_every_failure():
    data = json.loads((ROOT / "docs/data/peers.json").read_text(encoding="utf-8"))
    peers = [a for a in data["architectures"] if a["impl"].startswith("hf:")]
    assert sum(bool(a["conforms"]) for a in peers) >= 8
    assert data["requirements"] == list(load_profiles()["causal-lm"].requirements)
    assert not data["unexplained"]
    for arch in data["architectures"]:
        assert set(arch["failures"]) == set(arch["explanations"]), arch["name"]
    text = _matrix_script().render_markdown(data)
    for arch in data["architectures"]:
        assert f"| {arch['name']} |" in text
    assert "| `causality.future-invisible` |" in text


def test_every_peer_is_a_builtin_and_declares_its_familys_tying():
    from gpt2_conformance.adapters import BUILTINS, PEER_NAMES
    from gpt2_conformance.adapters.peers import PEERS
    from gpt2_conformance.loading import load_adapter

    assert list(PEER_NAMES) == list(PEERS)
    for name, peer in PEERS.items():
        adapter = load_adapter(f"hf:{name}")
        assert BUILTINS[f"hf:{name}"].endswith(f":{name.replace('-', '_')}")
        assert adapter.name == f"transformers-{name}"
        assert adapter.tied_head is peer.tied_by_default
        assert {"embedding-matrix", "embedding-gradients", "kv-cache"} <= adapter.capabilities
    assert {n for n, p in PEERS.items() if p.tied_by_default} == {
        "gpt-neo", "opt", "gemma", "bloom", "falcon", "gpt-bigcode",
    }  # fmt: skip
