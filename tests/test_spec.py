"""The spec is machine-checked: requirement format, ids, version, and executable definitions."""

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gpt2_spec
from gpt2_spec.definitions import code_blocks, execute
from gpt2_spec.registry import (
    LEVELS,
    LIST_END,
    LIST_START,
    SPEC_DIR,
    SpecFormatError,
    load_requirements,
    profile_list,
    with_profile_lists,
)

REQUIREMENTS = load_requirements()
CHAPTER_FAMILIES = {
    "01-notation-and-model.md": {"model"},
    "02-objective.md": {"objective"},
    "03-causality.md": {"causality"},
    "04-inference.md": {"inference"},
    "05-embedding-and-head.md": {"embedding", "head"},
    "06-forward.md": {"forward"},
    "07-numerical-agreement.md": {"numerics"},
    "08-input-validation.md": {"input"},
}


def test_all_eight_chapters_exist_in_order():
    names = [p.name for p in gpt2_spec.chapter_paths()]
    assert names == list(CHAPTER_FAMILIES)


def test_every_chapter_states_requirements():
    chapters = {r.chapter for r in REQUIREMENTS}
    assert chapters == set(CHAPTER_FAMILIES)


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.id)
def test_requirement_is_complete(requirement):
    assert requirement.family in CHAPTER_FAMILIES[requirement.chapter], (
        f"{requirement.id} is in {requirement.chapter}, which holds "
        f"{CHAPTER_FAMILIES[requirement.chapter]} requirements"
    )
    assert requirement.level in LEVELS
    body = requirement.text.split("\n", 1)[1] if "\n" in requirement.text else ""
    # The level line names the strongest keyword; the normative text must use it.
    assert re.search(rf"\b{requirement.level}\b", body), (
        f"{requirement.id}: level {requirement.level} but the text never says it"
    )
    assert requirement.has_rationale, f"{requirement.id} lacks a *Rationale.* paragraph"
    assert requirement.has_sources, f"{requirement.id} lacks a *Sources.* paragraph"


def test_ids_are_unique_and_read_as_words():
    ids = [r.id for r in REQUIREMENTS]
    assert len(ids) == len(set(ids))
    for rid in ids:
        assert not re.search(r"\d+\.\d+", rid), f"{rid} looks like a section number"


def test_version_is_consistent():
    version = gpt2_spec.SPEC_VERSION
    assert version in (SPEC_DIR / "README.md").read_text()
    assert f"## {version}" in (SPEC_DIR / "CHANGELOG.md").read_text()


def test_every_python_block_executes_and_defines_something():
    blocks = code_blocks()
    assert blocks, "the spec has no executable definitions"
    namespace = vars(execute())
    for block in blocks:
        defined = re.findall(r"^(?:def|class) (\w+)|^([A-Z_]+) =", block.source, re.M)
        names = [a or b for a, b in defined]
        for name in names:
            assert name in namespace, f"{block.chapter.name}:{block.line}: {name} not defined"


def test_a_failing_definition_reports_its_markdown_line(tmp_path: Path):
    (tmp_path / "01-x.md").write_text("# x\n\ntext\n\n```python\nx = 1\ny = 1 / 0\n```\n")
    with pytest.raises(ZeroDivisionError) as info:
        execute(tmp_path)
    frame = info.traceback[-1]
    assert frame.path == tmp_path / "01-x.md"
    assert frame.lineno + 1 == 7  # pytest's lineno is 0-based


@pytest.mark.parametrize(
    ("chapter", "message"),
    [
        ("### Title {#a.b}\n\nno level line\n", "must be followed by the line"),
        (
            "### T {#a.b}\n\n**Requirement `a.b`** · MUST\n\n### U {#a.b}\n\n"
            "**Requirement `a.b`** · MUST\n",
            "already used",
        ),
        ("### T {#A.B}\n\n**Requirement `A.B`** · MUST\n", "malformed requirement heading"),
        ("### T {#a.b}\n\n**Requirement `a.c`** · MUST\n", "must be followed by the line"),
        ("### T {#a.b}\n\n**Requirement `a.b`** · MUST · profile x\n", "' · profile `name`'"),
        (
            "### T {#a.b}\n\n**Requirement `a.b`** · MUST · profile `x` (tied only)\n",
            "after the level, only ' · profile `name`' marks may follow.*got ' · profile `x` "
            "\\(tied only\\)'",
        ),
        (
            "### T {#a.b}\n\n**Requirement `a.b`** · MUST · profile `causal_lm`\n",
            "a name of lowercase letters, digits and '-'.*got ' · profile `causal_lm`'",
        ),
        (
            "### T {#a.b}\n\n**Requirement `a.b`** · MUST · profile `gpt2`\n",
            "names the profile gpt2, which holds every requirement",
        ),
        (
            "### T {#a.b}\n\n**Requirement `a.b`** · MUST · profile `x` · profile `x`\n",
            "names the profile x twice",
        ),
    ],
)
def test_malformed_requirements_are_rejected(tmp_path: Path, chapter: str, message: str):
    (tmp_path / "01-x.md").write_text(textwrap.dedent(chapter))
    with pytest.raises(SpecFormatError, match=message):
        load_requirements(tmp_path)


def test_the_level_line_names_the_profiles_that_hold_the_requirement(tmp_path: Path):
    (tmp_path / "01-x.md").write_text(
        "### T {#a.b}\n\n**Requirement `a.b`** · SHOULD\n\n"
        "### U {#a.c}\n\n**Requirement `a.c`** · MUST · profile `y` · profile `x` (declared "
        "tied only)\n"
    )
    plain, marked = load_requirements(tmp_path)
    assert (plain.level, plain.profiles, plain.tied_only_in) == ("SHOULD", (), frozenset())
    assert (marked.level, marked.profiles, marked.tied_only_in) == ("MUST", ("y", "x"), {"x"})


# --- the README's profile lists, generated from the level lines ----------------------------------


def test_the_readmes_profile_lists_are_the_level_lines():
    """spec/README.md lists each profile's requirements (besides gpt2's); the list is generated
    from the chapters' level lines, which ``load_profiles`` reads, and must not go stale."""
    readme = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    profiles = gpt2_spec.load_profiles()
    assert with_profile_lists(readme, profiles) == readme, (
        "spec/README.md: a profile's list is not the chapters' level lines: run "
        "`python -m gpt2_evidence.counts --write` (and put a requirement in a profile on its "
        "level line, not in the list)"
    )
    listed = [
        line
        for name in profiles
        if name != "gpt2"
        for line in readme.split(LIST_START.format(name=name), 1)[1]
        .split(LIST_END, 1)[0]
        .splitlines()
        if line
    ]
    assert listed == [
        line for p in profiles.values() if p.name != "gpt2" for line in profile_list(p)
    ]
    assert len(listed) == sum(len(r.profiles) for r in REQUIREMENTS)


def test_a_stale_profile_list_is_rewritten_and_nothing_else(tmp_path: Path):
    readme = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    profiles = gpt2_spec.load_profiles()
    first = profile_list(profiles["causal-lm"])[0] + "\n"
    stale = readme.replace(first, "").replace(LIST_END, "- `made.up`\n" + LIST_END)
    assert stale != readme
    assert with_profile_lists(stale, profiles) == readme
    crlf = readme.replace("\n", "\r\n")
    assert with_profile_lists(stale.replace("\n", "\r\n"), profiles) == crlf


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace(LIST_END, ""), "has no"),
        (lambda t: t.replace(LIST_START.format(name="causal-lm"), ""), "no generated list of"),
        (
            lambda t: t + "\n" + LIST_START.format(name="nope") + "\n" + LIST_END + "\n",
            "a generated list of nope, which is no profile",
        ),
        (
            lambda t: t + "\n" + LIST_START.format(name="causal-lm") + "\n" + LIST_END + "\n",
            "a second generated list of profile causal-lm",
        ),
    ],
)
def test_a_malformed_profile_list_is_refused(change, message: str):
    readme = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    with pytest.raises(SpecFormatError, match=message):
        with_profile_lists(change(readme), gpt2_spec.load_profiles())


def test_headings_inside_code_fences_are_not_requirements(tmp_path: Path):
    (tmp_path / "01-x.md").write_text("```text\n### Title {#a.b}\n```\n")
    assert load_requirements(tmp_path) == []


# --- the definitions themselves, on hand-checkable cases -------------------------------------

S = gpt2_spec.spec_definitions()


def test_shift_labels_scores_row_i_against_label_i_plus_1():
    labels = np.array([[5, 6, 7, 8]])
    assert S.shift_labels(labels).tolist() == [[6, 7, 8, S.IGNORE_INDEX]]


def test_loss_has_one_term_per_counted_target_and_mean_is_over_the_batch():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 5))
    labels = np.array([[1, 2, 3, 4], [0, 1, S.IGNORE_INDEX, 3]])
    targets = S.shift_labels(labels)
    terms, counted = S.loss_terms(logits, targets)
    # T-1 = 3 for the first sequence; the second also loses the row whose target is ignored
    assert counted.sum() == 3 + 2
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    by_hand = -(logp[0, 0, 2] + logp[0, 1, 3] + logp[0, 2, 4] + logp[1, 0, 1] + logp[1, 2, 3])
    assert S.causal_lm_loss(logits, targets, "sum") == pytest.approx(by_hand, rel=1e-12)
    assert S.causal_lm_loss(logits, targets, "mean") == pytest.approx(by_hand / 5, rel=1e-12)
    per_sequence_means = (terms[0].sum() / 3 + terms[1].sum() / 2) / 2
    assert S.causal_lm_loss(logits, targets, "mean") != pytest.approx(per_sequence_means)


def test_no_counted_target_gives_zero_sum_and_nan_mean():
    logits = np.zeros((1, 3, 4))
    targets = np.full((1, 3), S.IGNORE_INDEX)
    assert S.causal_lm_loss(logits, targets, "sum") == 0.0
    assert np.isnan(S.causal_lm_loss(logits, targets, "mean"))
    assert not S.logits_gradient(logits, targets, "mean").any()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_logits_gradient_matches_finite_differences(reduction):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4))
    targets = np.array([[1, S.IGNORE_INDEX, 3], [0, 2, S.IGNORE_INDEX]])
    grad = S.logits_gradient(logits, targets, reduction)
    eps = 1e-6
    numeric = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        step = np.zeros_like(logits)
        step[index] = eps
        up = S.causal_lm_loss(logits + step, targets, reduction)
        down = S.causal_lm_loss(logits - step, targets, reduction)
        numeric[index] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)
    # ignored rows get exactly zero
    assert not grad[0, 1].any()
    assert not grad[1, 2].any()


def test_position_ids_from_mask_count_real_tokens_from_zero():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert S.position_ids_from_mask(mask)[:, 2:].tolist() == [[0, 1, 2], [2, 3, 4]]


def test_canonical_shapes_are_transformers_gpt2_small_parameters():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = gpt2_spec.GPT2Config.gpt2_small()
    shapes = S.canonical_shapes(
        config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    )
    with torch.device("meta"):  # shapes only, no memory
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config.to_hf_dict()))
    theirs = {name: tuple(p.shape) for name, p in model.named_parameters()}  # tied: listed once
    assert theirs == shapes
    assert sum(int(np.prod(s)) for s in shapes.values()) == model.num_parameters()
