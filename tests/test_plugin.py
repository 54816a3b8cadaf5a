"""The conformance suite's pytest plugin and its report (gpt2_conformance.plugin, .report).

Most tests run pytest inside pytest (pytester) on tiny fake adapters and tiny fake property
modules written into a temporary folder, so they exercise the plugin without the real suite's
cost. Runs that need a fresh process (xdist, signals, hypothesis' global seed, the environment)
use a subprocess. One smoke run checks a real property against the reference.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import NOT_CLAIMED

from gpt2_conformance import SUITE_VERSION, report
from gpt2_conformance.options import PROFILES
from gpt2_spec import SPEC_VERSION, GPT2Config, load_requirements

pytest_plugins = ["pytester"]

USAGE_ERROR = pytest.ExitCode.USAGE_ERROR

FAKE_ADAPTERS = """
import time

import numpy as np

from gpt2_conformance.adapter import Adapter, Implementation


class Impl(Implementation):
    def __init__(self, config, mode):
        self.config, self.mode = config, mode

    def logits(self, tokens, *, attention_mask=None, position_ids=None):
        B, T = np.shape(tokens)
        V = self.config.vocab_size
        if self.mode == "raise":
            raise RuntimeError("kernel exploded")
        if self.mode == "hang":
            time.sleep(120)
        if self.mode == "nan":
            out = np.zeros((B, T, V))
            out[0, T - 1, 3] = np.nan
            return out
        if self.mode == "shape":
            return np.zeros((B, T + 1, V))
        return np.zeros((B, T, V))


class Fake(Adapter):
    name = "fake"
    version = "9.9"
    capabilities = frozenset({"loss", "hidden-states"})
    label_convention = "shifted"
    tied_head = False
    dtypes = ("float32", "float16")
    mode = "ok"

    def build(self, config, *, params, seed, device, dtype):
        if self.mode == "build":
            raise ValueError("cannot build that")
        return Impl(config, self.mode)


class Raising(Fake):
    mode = "raise"


class NaN(Fake):
    mode = "nan"


class Shape(Fake):
    mode = "shape"


class Hang(Fake):
    mode = "hang"


class BuildFails(Fake):
    mode = "build"


class Deviating(Fake):
    declared_deviations = {"objective.loss-in-float32": "computes its loss in float16"}


class NoCpu(Fake):
    devices = ("cuda",)


class NoBuild(Adapter):
    name = "nobuild"


class NotAnAdapter:
    pass


adapter = Fake()
not_an_adapter = 42


def make_fake():
    return Fake()
"""

# Three properties that call the implementation, one with two ids, one needing a capability
# the fake does not claim, one MUST and one SHOULD property that always fail, one expected
# failure (listed in the xfails file of the tests that use it).
PROPERTIES = (
    """
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gpt2_conformance import checks
from gpt2_spec import GPT2Config

CONFIG = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)


def logits(suite, rid, length):
    impl, _ = suite.build(CONFIG, requirement=rid)
    tokens = np.zeros((2, length), dtype=np.int64)
    out = checks.call(rid, "computing logits", impl.logits, tokens)
    return checks.array(rid, out, what="logits", shape=(2, length, 11))


@pytest.mark.requirement("objective.one-row-per-position")
@given(length=st.integers(1, 8))
def test_rows(suite, length):
    logits(suite, "objective.one-row-per-position", length)


@pytest.mark.requirement("causality.future-invisible", "causality.prefix-consistency")
def test_two_ids(suite):
    assert suite.adapter.name

"""
    + NOT_CLAIMED
    + """

@pytest.mark.requirement("objective.ignore-index")
def test_must_fails(suite):
    checks.fail("objective.ignore-index", "an ignored target still counted (sum 3.0, expected 2.0)")


@pytest.mark.requirement("objective.loss-in-float32")
def test_should_fails(suite):
    checks.fail("objective.loss-in-float32", "the loss was computed in float16")


@pytest.mark.requirement("objective.mean-over-counted-targets")
def test_expected_failure(suite):
    checks.fail("objective.mean-over-counted-targets", "a mean of per-sequence means")
"""
)

# Only properties that pass against the fake adapter.
PASSING = """
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gpt2_conformance import checks
from gpt2_spec import GPT2Config

CONFIG = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)


@pytest.mark.requirement("objective.one-row-per-position")
@given(length=st.integers(1, 8))
def test_rows(suite, length):
    rid = "objective.one-row-per-position"
    impl, _ = suite.build(CONFIG, requirement=rid)
    out = checks.call(rid, "computing logits", impl.logits, np.zeros((2, length), np.int64))
    checks.array(rid, out, what="logits", shape=(2, length, 11))


@pytest.mark.requirement("causality.future-invisible", "causality.prefix-consistency")
def test_two_ids(suite):
    assert suite.adapter.name
"""


@pytest.fixture
def fake(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder with the fake adapters importable as ``fake_gpt2``."""
    pytester.makepyfile(fake_gpt2=FAKE_ADAPTERS)
    pytester.syspathinsert()
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    monkeypatch.delenv("GPT2_CONFORMANCE_IMPL", raising=False)
    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    return pytester


def run(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    args = ("-p", "no:cacheprovider", *args)
    if subprocess:
        return pytester.runpytest_subprocess(*args, timeout=120)
    return pytester.runpytest_inprocess(*args)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def statuses(data: dict) -> dict[str, str]:
    return {r["id"]: r["status"] for r in data["requirements"]}


# --------------------------------------------------------------------------------------------
# Choosing the implementation
# --------------------------------------------------------------------------------------------


def test_header_describes_the_run(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    result = run(fake, "--impl=fake_gpt2:Fake", "--dtype=float16", "--co")
    header = result.stdout.str()
    assert f"gpt2-conformance {SUITE_VERSION}, spec {SPEC_VERSION}" in header
    assert "implementation: fake 9.9 (--impl=fake_gpt2:Fake) on cpu, float16" in header
    assert "claimed capabilities: hidden-states, loss" in header
    assert "label convention: shifted; tied head: no" in header
    ci = PROFILES["ci"]["max_examples"]
    assert f"hypothesis profile: ci, seed: derandomized, max_examples: {ci}" in header
    assert "conformance timeout: 300 s per property" in header


@pytest.mark.parametrize(
    "impl", ["fake_gpt2", "fake_gpt2:adapter", "fake_gpt2:Fake", "fake_gpt2:make_fake"]
)
def test_impl_accepts_module_instance_class_and_factory(fake: pytest.Pytester, impl: str) -> None:
    fake.makepyfile(test_props=PASSING)
    result = run(fake, f"--impl={impl}", "--co")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["implementation: fake 9.9*"])


def test_builtin_name_selects_the_reference(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    result = run(fake, "--impl=reference", "--co")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["implementation: reference * on cpu, float32"])


def test_environment_variable_selects_the_implementation(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.makepyfile(test_props=PASSING)
    monkeypatch.setenv("GPT2_CONFORMANCE_IMPL", "fake_gpt2:Fake")
    result = run(fake)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["implementation: fake 9.9*"])


def _usage_error(fake: pytest.Pytester, *args: str, says: str) -> None:
    """Run the passing properties with ``args``: pytest's usage-error exit, ``says`` on stderr."""
    fake.makepyfile(test_props=PASSING)
    result = run(fake, *args)
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines([says])


def test_properties_without_an_implementation_are_a_usage_error(fake: pytest.Pytester) -> None:
    _usage_error(fake, says="*choose the implementation to check: --impl=NAME or*")


@pytest.mark.parametrize(
    ("impl", "message"),
    [
        ("no_such_gpt2", "*cannot import module 'no_such_gpt2'*Install the package*PYTHONPATH*"),
        ("fake_gpt2:missing", "*module 'fake_gpt2' has no attribute 'missing'*"),
        ("fake_gpt2:not_an_adapter", "*not_an_adapter is of type int, not a *Adapter*"),
        ("fake_gpt2:NotAnAdapter", "*NotAnAdapter is a class but not a subclass of*Adapter*"),
        ("fake_gpt2:NoBuild", "*NoBuild is missing required method build*"),
    ],
)
def test_a_bad_adapter_is_a_usage_error(fake: pytest.Pytester, impl: str, message: str) -> None:
    _usage_error(fake, f"--impl={impl}", says=f"ERROR: --impl={impl}: {message}")


@pytest.mark.parametrize(
    ("impl", "option", "message"),
    [
        ("Fake", "--dtype=bfloat16", "the adapter 'fake' supports float32, float16 (its `dtypes`)"),
        ("NoCpu", "--device=cpu", "the adapter 'fake' supports cuda (its `devices`); choose one"),
    ],
)
def test_an_option_value_the_adapter_does_not_declare_is_a_usage_error(
    fake: pytest.Pytester, impl: str, option: str, message: str
) -> None:
    _usage_error(fake, f"--impl=fake_gpt2:{impl}", option, says=f"*{option}: {message}*")


def test_cuda_without_cuda_is_a_usage_error(fake: pytest.Pytester) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _usage_error(
        fake,
        "--impl=fake_gpt2:Fake",
        "--device=cuda",
        says="*--device=cuda: CUDA is not available here*--device=cpu*",
    )
    auto = run(fake, "--impl=fake_gpt2:Fake", "--device=auto", "--co")
    auto.stdout.fnmatch_lines(["implementation: fake 9.9 * on cpu, float32"])


def test_an_adapter_that_fails_to_build_fails_each_test(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    result = run(fake, "--impl=fake_gpt2:BuildFails")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*objective.one-row-per-position: the adapter could not build*cannot build that*"]
    )


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


def test_an_unknown_requirement_id_is_a_collection_error(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.requirement("objective.one-row-per-positon")
        def test_typo(suite):
            pass
        """
    )
    result = run(fake, "--impl=fake_gpt2:Fake")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_bad.py*",
            "*test_typo: requirement marker names 'objective.one-row-per-positon', which is not "
            "a requirement of the spec*",
        ]
    )


def test_an_unknown_capability_is_a_collection_error(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.requirement("objective.sum-of-terms")
        @pytest.mark.capability("gradient")
        def test_typo(suite):
            pass
        """
    )
    result = run(fake, "--impl=fake_gpt2:Fake")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*capability marker names 'gradient', which is not a capability*"])


def test_the_projects_own_tests_are_unaffected(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No properties collected: no header, no summary, the project's own hypothesis profile
    (registered in its conftest, like tests/conftest.py), and a broken $GPT2_CONFORMANCE_IMPL does
    not matter."""
    fake.makeconftest(
        """
        from hypothesis import settings

        settings.register_profile("project", max_examples=7, deadline=None)
        settings.load_profile("project")
        """
    )
    fake.makepyfile(
        test_plain="""
        from hypothesis import given, settings, strategies as st

        def test_profile_untouched():
            assert settings.get_current_profile_name() == "project"

        @given(st.integers())
        def test_property(x):
            with open("examples.txt", "a") as f:
                f.write(f"{x}\\n")
        """
    )
    monkeypatch.setenv("GPT2_CONFORMANCE_IMPL", "no_such_module_anywhere")
    result = run(fake, subprocess=True)
    result.assert_outcomes(passed=2)
    assert len((fake.path / "examples.txt").read_text().split()) == 7
    out = result.stdout.str()
    assert "implementation:" not in out
    assert "gpt2-conformance: requirements" not in out
    assert not re.search(r"^gpt2-conformance", out, re.MULTILINE)


# --------------------------------------------------------------------------------------------
# Hypothesis profiles and examples
# --------------------------------------------------------------------------------------------

COUNTING = """
import os

import pytest
from hypothesis import given, strategies as st


@pytest.mark.requirement("objective.sum-of-terms")
@given(x=st.integers(0, 10**9))
def test_counts(suite, x):
    with open(os.environ["EXAMPLES_FILE"], "a") as f:
        f.write(f"{x}\\n")
"""


def examples(fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> list[str]:
    target = fake.path / f"examples-{time.monotonic_ns()}.txt"
    monkeypatch.setenv("EXAMPLES_FILE", str(target))
    result = run(fake, "--impl=fake_gpt2:Fake", *args)
    result.assert_outcomes(passed=1)
    return target.read_text().split()


def test_profiles_and_max_examples_set_the_number_of_examples(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.makepyfile(test_counting=COUNTING)
    ci = examples(fake, monkeypatch)
    assert len(ci) == PROFILES["ci"]["max_examples"]
    assert ci == examples(fake, monkeypatch), "the ci profile is derandomized"
    dev = examples(fake, monkeypatch, "--conformance-profile=dev")
    assert len(dev) == PROFILES["dev"]["max_examples"]
    assert len(examples(fake, monkeypatch, "--max-examples=4")) == 4
    assert len(examples(fake, monkeypatch, "--conformance-profile=dev", "--max-examples=6")) == 6


def test_thorough_profile_and_seed_in_header_and_report(
    fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.makepyfile(test_counting=COUNTING)
    monkeypatch.setenv("EXAMPLES_FILE", str(fake.path / "seeded.txt"))
    result = run(
        fake,
        "--impl=fake_gpt2:Fake",
        "--conformance-profile=thorough",
        "--max-examples=2",
        "--hypothesis-seed=1234",
        "--conformance-report=r.json",
        subprocess=True,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["hypothesis profile: thorough, seed: 1234, max_examples: 2"])
    assert load(fake.path / "r.json")["hypothesis"] == {
        "profile": "thorough",
        "seed": 1234,
        "max_examples": 2,
    }
    first = (fake.path / "seeded.txt").read_text()
    (fake.path / "seeded.txt").unlink()
    again = ("--impl=fake_gpt2:Fake", "--max-examples=2", "--hypothesis-seed=1234")
    run(fake, *again, subprocess=True)
    assert (fake.path / "seeded.txt").read_text() == first, "the same seed draws the same examples"


def test_bad_option_values_are_usage_errors(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    assert run(fake, "--impl=fake_gpt2:Fake", "--max-examples=0").ret == USAGE_ERROR
    assert run(fake, "--impl=fake_gpt2:Fake", "--conformance-profile=fast").ret == USAGE_ERROR
    fake.mkdir("a_folder")
    unreadable = run(fake, "--impl=fake_gpt2:Fake", "--xfails-file=a_folder")
    assert unreadable.ret == USAGE_ERROR
    unreadable.stderr.fnmatch_lines(["*--xfails-file=a_folder: cannot read it*"])


def test_a_missing_xfails_file_expects_no_failure_and_says_how_to_create_it(
    fake: pytest.Pytester,
) -> None:
    fake.makepyfile(test_props=PASSING)
    missing = run(fake, "--impl=fake_gpt2:Fake", "--xfails-file=nope.txt", "-W", "always")
    assert missing.ret == 0
    missing.stdout.fnmatch_lines(["*--xfails-file=nope.txt: no such file*create it*"])


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def test_json_report_has_a_status_for_every_requirement(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PROPERTIES)
    fake.path.joinpath("xfails.txt").write_text("objective.mean-over-counted-targets\n")
    result = run(
        fake,
        "--impl=fake_gpt2:Fake",
        "--xfails-file=xfails.txt",
        "--conformance-report=out/report.json",
    )
    result.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1)
    data = load(fake.path / "out" / "report.json")

    assert data["suite"] == SUITE_VERSION
    assert data["spec_version"] == SPEC_VERSION
    impl = data["implementation"]
    assert (impl["name"], impl["version"], impl["device"], impl["dtype"]) == (
        "fake",
        "9.9",
        "cpu",
        "float32",
    )
    assert impl["capabilities"] == ["hidden-states", "loss"]
    assert (impl["label_convention"], impl["tied_head"]) == ("shifted", False)
    assert data["hypothesis"] == {
        "profile": "ci",
        "seed": "derandomized",
        "max_examples": PROFILES["ci"]["max_examples"],
    }
    assert [r["id"] for r in data["requirements"]] == [r.id for r in load_requirements()]

    got = statuses(data)
    expected = {
        "objective.one-row-per-position": "pass",
        "causality.future-invisible": "pass",
        "causality.prefix-consistency": "pass",
        "objective.sum-of-terms": "not-claimed",
        "objective.ignore-index": "fail",
        "objective.loss-in-float32": "fail",
        "objective.mean-over-counted-targets": "xfail",
    }
    assert {k: got[k] for k in expected} == expected
    assert {v for k, v in got.items() if k not in expected} == {"not-run"}
    assert data["summary"] == {
        "pass": 3,
        "fail": 2,
        "xfail": 1,
        "not-claimed": 1,
        "skipped": 0,
        "not-run": len(got) - 7,
    }

    by_id = {r["id"]: r for r in data["requirements"]}
    failing = by_id["objective.ignore-index"]
    assert failing["level"] == "MUST"
    assert failing["chapter"] == "02-objective.md"
    assert failing["anchor"] == "spec/02-objective.md#objective.ignore-index"
    assert failing["message"] == (
        "objective.ignore-index: an ignored target still counted (sum 3.0, expected 2.0)"
    )
    (test,) = failing["tests"]
    assert test["nodeid"] == "test_props.py::test_must_fails"
    assert test["outcome"] == "failed"
    assert test["duration_s"] >= 0
    assert by_id["objective.sum-of-terms"]["message"].startswith(
        "not-claimed: the adapter does not claim gradients"
    )
    assert by_id["objective.mean-over-counted-targets"]["message"] == (
        "listed in xfails.txt: objective.mean-over-counted-targets: a mean of per-sequence means"
    )
    # One test with two ids counts for both.
    assert (
        by_id["causality.future-invisible"]["tests"]
        == by_id["causality.prefix-consistency"]["tests"]
    )
    assert data["verdict"].startswith(
        f"gpt2-conformance: fake, spec {SPEC_VERSION}: function DOES NOT CONFORM "
        "(1 MUST requirement fail, following from objective.mean-over-counted-targets: "
        "objective.ignore-index; 1 MUST requirement fail as listed in the xfails file: "
        "objective.mean-over-counted-targets); validated input INCOMPLETE "
        "(7 requirements not checked; no MUST failure among the rest)"
    )
    assert "SHOULD/MAY deviations: objective.loss-in-float32" in data["verdict"]
    assert data["conforms"] is False
    assert data["duration_s"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", data["created"])

    result.stdout.fnmatch_lines(
        [
            "*= gpt2-conformance: requirements =*",
            "expected to fail (declared or listed):",
            "*objective.mean-over-counted-targets * MUST * xfail",
            "consequences (2; each still fails, see the report):",
            "*explained by objective.mean-over-counted-targets: objective.ignore-index, "
            "objective.loss-in-float32",
            "3 pass, 2 fail, 1 xfail, 1 not-claimed, 0 skipped, * not-run",
            "conformance report written to out?report.json",
            "gpt2-conformance: fake, spec *: function DOES NOT CONFORM*",
        ]
    )


def test_markdown_report(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PROPERTIES)
    run(fake, "--impl=fake_gpt2:Fake", "--conformance-markdown=summary.md")
    text = (fake.path / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("## GPT-2 conformance: fake 9.9\n")
    assert "**gpt2-conformance: fake, spec " in text
    assert ": function DOES NOT CONFORM (" in text
    assert (
        "| [`objective.ignore-index`](spec/02-objective.md#objective.ignore-index) "
        "Ignored targets count nowhere | MUST | ❌ fail (follows from "
        "`objective.mean-over-counted-targets`) | objective.ignore-index: an ignored "
        "target still counted (sum 3.0, expected 2.0) |"
    ) in text
    ci = PROFILES["ci"]["max_examples"]
    assert f"| Hypothesis | profile ci, seed derandomized, max_examples {ci} |" in text
    assert "- `test_props.py::test_must_fails`: objective.ignore-index: an ignored" in text


def test_junit_xml_carries_the_requirement_ids(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    run(fake, "--impl=fake_gpt2:Fake", "--junitxml=junit.xml")
    xml = (fake.path / "junit.xml").read_text()
    assert '<property name="requirement" value="objective.one-row-per-position" />' in xml
    assert '<property name="requirement" value="causality.future-invisible" />' in xml
    assert '<property name="requirement" value="causality.prefix-consistency" />' in xml


def test_report_is_written_when_everything_fails(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    result = run(fake, "--impl=fake_gpt2:Raising", "-k", "rows", "--conformance-report=r.json")
    result.assert_outcomes(failed=1, deselected=1)
    data = load(fake.path / "r.json")
    assert statuses(data)["objective.one-row-per-position"] == "fail"
    assert data["conforms"] is False


def test_report_is_written_when_the_run_is_interrupted(fake: pytest.Pytester) -> None:
    fake.makepyfile(
        test_props=PASSING
        + """

@pytest.mark.requirement("objective.sum-of-terms")
def test_zz_interrupt(suite):
    raise KeyboardInterrupt
"""
    )
    result = run(fake, "--impl=fake_gpt2:Fake", "--conformance-report=r.json", subprocess=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = load(fake.path / "r.json")
    assert data["interrupted"] is True
    assert statuses(data)["objective.one-row-per-position"] == "pass"
    assert data["conforms"] is None


# --------------------------------------------------------------------------------------------
# Failures of the implementation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("impl", "message"),
    [
        (
            "Raising",
            "objective.one-row-per-position: the implementation raised RuntimeError while "
            "computing logits: kernel exploded",
        ),
        ("NaN", "numerics.finite: logits contains nan at index (0, 0, 3); outputs must be finite*"),
        (
            "Shape",
            "objective.one-row-per-position: logits has shape (2, 2, 11), expected (2, 1, 11)",
        ),
    ],
)
def test_a_broken_implementation_fails_its_requirement_and_the_run_goes_on(
    fake: pytest.Pytester, impl: str, message: str
) -> None:
    fake.makepyfile(test_props=PASSING)
    result = run(fake, f"--impl=fake_gpt2:{impl}", "--conformance-report=r.json")
    result.assert_outcomes(failed=1, passed=1)
    # One block: the message once, the property's line that made the failing check (a caret
    # under it), hypothesis' minimal example without the fixtures, and the reproduce line.
    result.stdout.fnmatch_lines(
        [
            "*_ test_rows _*",
            message,
            "",
            "*test_props.py:*: in test_rows",
            "    *",
            "    ^^^*",
            "",
            "counterexample (shrunk by hypothesis):",
            "    *test_rows(",  # hypothesis' failing example (its wording varies by version)
            "        length=1,*",
            "    )",
            "",
            "replay this example:",
            "    python -m pytest --pyargs *::test_rows *--conformance-replay=*",
            "FAILED test_props.py::test_rows - gpt2_conformance.checks.*",
        ]
    )
    # The block says it once; the requirements summary ("start here") says it again. pytest's
    # own short summary may say it a third time, cut to the terminal's width: not counted.
    out = result.stdout.str()
    block = out[out.index("_ test_rows _") : out.index("gpt2-conformance: requirements")]
    assert block.count(message.rstrip("*")) == 1
    start_here = out[out.index("start here") : out.index("short test summary")]
    assert message.rstrip("*") in start_here
    data = load(fake.path / "r.json")
    (test,) = next(r for r in data["requirements"] if r["id"] == "objective.one-row-per-position")[
        "tests"
    ]
    assert re.fullmatch(re.escape(message).replace(r"\*", ".*"), test["message"])
    assert "@reproduce_failure(" in test["hypothesis"]
    assert statuses(data)["causality.future-invisible"] == "pass"


def test_a_hanging_implementation_is_stopped_by_the_timeout(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    started = time.monotonic()
    result = run(
        fake,
        "--impl=fake_gpt2:Hang",
        "--conformance-timeout=1",
        "--conformance-report=r.json",
        subprocess=True,
    )
    assert time.monotonic() - started < 30
    result.assert_outcomes(failed=1, passed=1)
    message = (
        "objective.one-row-per-position: the implementation did not finish within 1 s and was "
        "stopped (--conformance-timeout)"
    )
    result.stdout.fnmatch_lines([message])
    data = load(fake.path / "r.json")
    assert statuses(data)["objective.one-row-per-position"] == "fail"
    assert statuses(data)["causality.future-invisible"] == "pass"


# --------------------------------------------------------------------------------------------
# The xfails file
# --------------------------------------------------------------------------------------------


def test_xfails_file_matches_ids_node_ids_and_names_and_warns_on_the_rest(
    fake: pytest.Pytester,
) -> None:
    fake.makepyfile(test_props=PROPERTIES)
    fake.path.joinpath("known.txt").write_text(
        textwrap.dedent(
            """\
            # known failures of the fake
            objective.ignore-index
            test_props.py::test_should_fails   # by node id

            test_expected_failure
            objective.kv-cache-typo
            """
        )
    )
    result = run(
        fake, "--impl=fake_gpt2:Fake", "--xfails-file=known.txt", "--conformance-report=r.json"
    )
    result.assert_outcomes(passed=2, skipped=1, xfailed=3)
    got = statuses(load(fake.path / "r.json"))
    assert got["objective.ignore-index"] == "xfail"
    assert got["objective.loss-in-float32"] == "xfail"
    assert got["objective.mean-over-counted-targets"] == "xfail"
    result.stdout.fnmatch_lines(
        [
            "*ConformanceWarning: known.txt: entry 'objective.kv-cache-typo' matches no collected "
            "conformance test*",
            "warning: known.txt: entry 'objective.kv-cache-typo' matches no collected conformance "
            "test",
            "gpt2-conformance: fake, spec *: function DOES NOT CONFORM (2 MUST requirements fail "
            "as listed in the xfails file; primary: objective.mean-over-counted-targets (1 other "
            "follows from it))*",
        ]
    )


def test_a_declared_deviation_is_expected_to_fail_and_is_not_shrunk(fake: pytest.Pytester) -> None:
    # Both properties fail for n >= 10 and log every n they fail on. The undeclared one is
    # shrunk (hypothesis replays smaller failing n until it reaches 10); the declared deviation
    # stops at its first counterexample, plus hypothesis' final replay of it.
    fake.makepyfile(
        test_props="""
        import pytest
        from hypothesis import given, strategies as st

        def log(name, n):
            if n >= 10:
                with open(name, "a") as f:
                    f.write(f"{n}\\n")
                raise AssertionError(f"n = {n}")

        @pytest.mark.requirement("objective.loss-in-float32")
        @given(n=st.integers(0, 10**6))
        def test_declared(suite, n):
            log("declared.txt", n)

        @pytest.mark.requirement("objective.ignore-index")
        @given(n=st.integers(0, 10**6))
        def test_other(suite, n):
            log("other.txt", n)
        """
    )
    result = run(fake, "--impl=fake_gpt2:Deviating", "--conformance-report=r.json")
    result.assert_outcomes(failed=1, xfailed=1)
    got = statuses(load(fake.path / "r.json"))
    assert got["objective.loss-in-float32"] == "xfail"
    assert got["objective.ignore-index"] == "fail"
    declared = (fake.path / "declared.txt").read_text().split()
    other = [int(n) for n in (fake.path / "other.txt").read_text().split()]
    assert 1 <= len(declared) <= 2
    assert len(other) > 2
    assert min(other) == 10


def test_xfails_file_entries_are_parsed(tmp_path: Path) -> None:
    from gpt2_conformance.loading import read_xfails

    path = tmp_path / "x.txt"
    path.write_text("# comment\n\n  a.b  \nt.py::test_x[1] # why\n#c.d\n")
    assert read_xfails(str(path)) == ["a.b", "t.py::test_x[1]"]


# --------------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------------


def test_checkpoint_option_loads_the_weights(fake: pytest.Pytester) -> None:
    from gpt2_reference import checkpoint, oracle
    from gpt2_spec import GPT2Config

    torch = pytest.importorskip("torch")
    config = GPT2Config(vocab_size=13, n_positions=6, n_embd=8, n_layer=1, n_head=2)
    params = oracle.random_params(config, seed=3)
    weights = {k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()}
    checkpoint.save_checkpoint(fake.path / "ckpt", config, weights)
    np.save(fake.path / "wte.npy", params["transformer.wte.weight"].astype(np.float32))
    fake.makepyfile(
        test_ckpt="""
        import numpy as np
        import pytest

        @pytest.mark.requirement("embedding.shapes")
        def test_sees_checkpoint(suite):
            config, params = suite.checkpoint
            assert config.vocab_size == 13 and config.n_embd == 8
            assert params["transformer.wte.weight"].dtype == np.float64
            np.testing.assert_array_equal(params["transformer.wte.weight"], np.load("wte.npy"))
            assert suite.checkpoint_path.name in ("ckpt", "model.safetensors")
        """
    )
    run(fake, "--impl=fake_gpt2:Fake", "--checkpoint=ckpt").assert_outcomes(passed=1)
    single = run(fake, "--impl=fake_gpt2:Fake", "--checkpoint=ckpt/model.safetensors")
    single.assert_outcomes(passed=1)
    single.stdout.fnmatch_lines(["checkpoint: *model.safetensors"])
    bad = run(fake, "--impl=fake_gpt2:Fake", "--checkpoint=nowhere")
    assert bad.ret == USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: --checkpoint=nowhere: checkpoint path 'nowhere' does not *"])


# --------------------------------------------------------------------------------------------
# xdist
# --------------------------------------------------------------------------------------------


def test_xdist_gives_the_same_verdicts_and_one_merged_report(fake: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    fake.makepyfile(test_props=PROPERTIES, test_more=PASSING)
    fake.path.joinpath("xfails.txt").write_text("objective.mean-over-counted-targets\nnot.an-id\n")
    common = ("--impl=fake_gpt2:Fake", "--xfails-file=xfails.txt")
    serial = run(fake, *common, "--conformance-report=serial.json", subprocess=True)
    parallel = run(fake, *common, "-n", "2", "--conformance-report=parallel.json", subprocess=True)
    serial.assert_outcomes(passed=4, failed=2, skipped=1, xfailed=1, warnings=1)
    parallel.assert_outcomes(passed=4, failed=2, skipped=1, xfailed=1, warnings=2)
    one, two = load(fake.path / "serial.json"), load(fake.path / "parallel.json")
    assert statuses(one) == statuses(two)
    assert one["verdict"] == two["verdict"]
    assert one["summary"] == two["summary"]

    def tests_of(data: dict) -> dict[str, set[tuple[str, str]]]:
        return {
            r["id"]: {(t["nodeid"], t["outcome"]) for t in r["tests"]} for r in data["requirements"]
        }

    assert tests_of(one) == tests_of(two)
    assert len(tests_of(two)["objective.one-row-per-position"]) == 2  # from both modules
    parallel.stdout.fnmatch_lines(
        ["*objective.ignore-index: an ignored target*", "warning: xfails.txt: entry 'not.an-id'*"]
    )
    assert parallel.stdout.str().count("function DOES NOT CONFORM") == 1


def _outcomes(data: dict) -> dict[str, tuple[str, set[tuple[str, str]]]]:
    """Per requirement: its status and its tests' (node id, outcome), timings left out."""
    return {
        r["id"]: (r["status"], {(t["nodeid"], t["outcome"]) for t in r["tests"]})
        for r in data["requirements"]
    }


# The fake spends 20 ms in each logits call, so its share of the time is clearly measurable.
SLOW_LOGITS = """
import time

import numpy as np

from fake_gpt2 import Fake, Impl


class SlowImpl(Impl):
    def logits(self, tokens, *, attention_mask=None, position_ids=None):
        time.sleep(0.02)
        return super().logits(tokens)


class Slow(Fake):
    def build(self, config, *, params, seed, device, dtype):
        return SlowImpl(config, "ok")
"""


def test_the_report_times_the_implementation_and_the_suite(fake: pytest.Pytester) -> None:
    fake.makepyfile(slow_gpt2=SLOW_LOGITS, test_props=PASSING)
    result = run(
        fake,
        "--impl=slow_gpt2:Slow",
        "--max-examples=5",
        "--conformance-report=r.json",
        "--conformance-markdown=r.md",
    )
    result.assert_outcomes(passed=2)
    data = load(fake.path / "r.json")
    timing = data["timing"]
    rows = next(r for r in data["requirements"] if r["id"] == "objective.one-row-per-position")
    test = rows["tests"][0]
    # Five examples, each one logits call sleeping 20 ms: at least 0.1 s inside the
    # implementation, and never more than the test took.
    assert 0.1 <= test["implementation_s"] <= test["duration_s"]
    assert rows["implementation_s"] == pytest.approx(test["implementation_s"], abs=1e-3)
    assert timing["implementation_s"] >= 0.1
    assert timing["tests_s"] == pytest.approx(
        timing["implementation_s"] + timing["suite_s"], abs=2e-3
    )
    assert timing["implementation_share"] + timing["suite_share"] == pytest.approx(1, abs=1e-3)
    # A test with two requirement ids shares its time between them.
    two = [r for r in data["requirements"] if r["id"].startswith("causality.") and r["tests"]]
    assert len(two) == 2
    assert two[0]["duration_s"] == pytest.approx(two[1]["duration_s"], abs=1e-4)
    assert two[0]["duration_s"] == pytest.approx(two[0]["tests"][0]["duration_s"] / 2, abs=1e-4)
    result.stdout.fnmatch_lines(["time: * s wall, * s in tests: *% inside the implementation, *"])
    markdown = (fake.path / "r.md").read_text(encoding="utf-8")
    assert "| Time | " in markdown
    assert "### Slowest properties" in markdown


def test_the_timed_implementation_forwards_and_times_every_protocol_method() -> None:
    from gpt2_conformance import timing
    from gpt2_conformance.adapter import Implementation

    calls = []

    class Inner(Implementation):
        def logits(self, tokens, *, attention_mask=None, position_ids=None):  # type: ignore[no-untyped-def]
            calls.append("logits")
            time.sleep(0.01)
            return np.zeros((1, 1, 3))

        def moved(self, device, dtype):  # type: ignore[no-untyped-def]
            calls.append("moved")
            return Inner()

    wrapped = timing.timed(Inner())
    assert timing.timed(wrapped) is wrapped
    public = {n for n, v in vars(Implementation).items() if callable(v) and not n.startswith("_")}
    assert set(timing.PROTOCOL) == public
    timing.STOPWATCH.take()
    wrapped.logits(np.zeros((1, 1), np.int64))
    again = wrapped.moved("cpu", "float32")
    assert isinstance(again, timing.TimedImplementation)  # what it returns is timed too
    with pytest.raises(NotImplementedError):
        wrapped.loss(np.zeros((1, 1)), np.zeros((1, 1)))  # not implemented: still raised
    # The oracle is timed as oracle, except inside the implementation (counted once, there).
    config = GPT2Config(vocab_size=7, n_positions=4, n_embd=4, n_layer=1, n_head=1)
    timing.STOPWATCH.call("implementation", timing.oracle.random_params, config, seed=1)
    seconds = timing.STOPWATCH.take()
    assert calls == ["logits", "moved"]
    assert seconds["implementation"] >= 0.01
    assert seconds["oracle"] == 0.0
    first = timing.oracle.random_params(config, seed=2)
    assert timing.STOPWATCH.take()["oracle"] > 0.0
    first["transformer.wte.weight"][:] = 0.0  # a caller's copy: the memoised weights stay
    second = timing.oracle.random_params(config, seed=2)
    assert np.abs(second["transformer.wte.weight"]).max() > 0.0


def test_xdist_merges_the_timings_of_its_workers(fake: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    fake.makepyfile(slow_gpt2=SLOW_LOGITS, test_props=PASSING)
    common = ("--impl=slow_gpt2:Slow", "--max-examples=5")
    run(fake, *common, "--conformance-report=serial.json", subprocess=True).assert_outcomes(
        passed=2
    )
    parallel = run(fake, *common, "-n", "2", "--conformance-report=parallel.json", subprocess=True)
    parallel.assert_outcomes(passed=2)
    one, two = load(fake.path / "serial.json"), load(fake.path / "parallel.json")
    assert _outcomes(one) == _outcomes(two)
    assert one["verdict"] == two["verdict"]
    assert two["timing"]["implementation_s"] >= 0.1  # measured on a worker, merged here
    parallel.stdout.fnmatch_lines(["time: * s wall, * s in tests: *"])


def test_shards_merge_into_the_report_of_one_run(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PROPERTIES, test_more=PASSING)
    fake.path.joinpath("xfails.txt").write_text("objective.mean-over-counted-targets\n")
    common = ("--impl=fake_gpt2:Fake", "--xfails-file=xfails.txt")
    run(fake, *common, "--conformance-report=all.json")
    first = run(fake, *common, "--conformance-shard=1/2", "--conformance-report=a.json")
    second = run(fake, *common, "--conformance-shard=2/2", "--conformance-report=b.json")
    first.stdout.fnmatch_lines(["shard: 1/2 of the properties"])
    ran = [r.parseoutcomes() for r in (first, second)]
    assert all(outcomes.get("deselected", 0) > 0 for outcomes in ran)
    a, b = load(fake.path / "a.json"), load(fake.path / "b.json")
    nodeids = [{t["nodeid"] for r in d["requirements"] for t in r["tests"]} for d in (a, b)]
    assert nodeids[0]
    assert nodeids[1]
    assert not nodeids[0] & nodeids[1]
    assert a["shard"] == "1/2"

    merged = report.merge_reports([a, b])
    whole = load(fake.path / "all.json")
    assert _outcomes(merged) == _outcomes(whole)
    assert merged["verdict"] == whole["verdict"]
    assert merged["summary"] == whole["summary"]
    assert merged["merged_shards"] == ["1/2", "2/2"]

    # The command line: same result, exit status 1 for a report that does not conform.
    cli = fake.run(
        sys.executable, "-m", "gpt2_conformance.report", "merge", "a.json", "b.json",
        "-o", "merged.json", "--markdown", "merged.md",
    )  # fmt: skip
    assert cli.ret == 1
    cli.stdout.fnmatch_lines(["merged 2 reports into merged.json", "*DOES NOT CONFORM*"])
    assert _outcomes(load(fake.path / "merged.json")) == _outcomes(whole)
    assert (fake.path / "merged.md").is_file()

    with pytest.raises(report.MergeError, match="ran in both"):
        report.merge_reports([a, a])
    other = dict(b, implementation={**b["implementation"], "dtype": "float16"})
    with pytest.raises(report.MergeError, match="different implementations"):
        report.merge_reports([a, other])
    bad = fake.run(
        sys.executable, "-m", "gpt2_conformance.report", "merge", "nowhere.json", "-o", "x"
    )
    assert bad.ret == 2
    bad.stderr.fnmatch_lines(["error: cannot read the report nowhere.json*"])


def test_a_bad_shard_or_shape_is_a_usage_error(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    for shard in ("3/2", "0/2", "half", "1-2"):
        bad = run(fake, "--impl=fake_gpt2:Fake", f"--conformance-shard={shard}")
        assert bad.ret == USAGE_ERROR
        bad.stderr.fnmatch_lines(
            [f"ERROR: --conformance-shard={shard}: give K/N with 1 <= K <= N*"]
        )
    shape = run(fake, "--impl=fake_gpt2:Fake", "--conformance-shape=gpt2-huge")
    assert shape.ret == USAGE_ERROR


def test_a_real_run_under_xdist_matches_the_serial_run(fake: pytest.Pytester) -> None:
    """Real properties (causality and inference) against the reference, serial and -n 2."""
    pytest.importorskip("xdist")
    common = (
        "--pyargs",
        "gpt2_conformance.test_causality",
        "gpt2_conformance.test_inference",
        "--impl=reference",
        "--max-examples=3",
    )
    serial = run(fake, *common, "--conformance-report=serial.json", subprocess=True)
    parallel = run(fake, *common, "-n", "2", "--conformance-report=parallel.json", subprocess=True)
    assert serial.ret == parallel.ret == 0
    one, two = load(fake.path / "serial.json"), load(fake.path / "parallel.json")
    assert _outcomes(one) == _outcomes(two)
    assert one["verdict"] == two["verdict"]
    assert set(one["timing"]) == set(two["timing"])


# --------------------------------------------------------------------------------------------
# Statuses as data, failure output, fixtures under hypothesis
# --------------------------------------------------------------------------------------------


def test_a_property_may_take_a_function_scoped_fixture(fake: pytest.Pytester) -> None:
    # The requirement id as a function-scoped fixture (an immutable string, the same for every
    # example): hypothesis' function_scoped_fixture health check must not stop the property.
    fake.makeconftest(
        """
import pytest


@pytest.fixture
def requirement(request):
    return request.node.get_closest_marker("requirement").args[0]
"""
    )
    fake.makepyfile(
        test_props="""
import pytest
from hypothesis import given, strategies as st


@pytest.mark.requirement("objective.one-row-per-position")
@given(length=st.integers(1, 8))
def test_rows(suite, requirement, length):
    assert requirement == "objective.one-row-per-position"
"""
    )
    result = run(fake, "--impl=fake_gpt2:Fake", "--conformance-report=r.json")
    assert "FailedHealthCheck" not in result.stdout.str()
    result.assert_outcomes(passed=1)
    assert statuses(load(fake.path / "r.json"))["objective.one-row-per-position"] == "pass"


def test_not_claimed_is_decided_by_the_plugin_not_read_from_skip_text(
    fake: pytest.Pytester,
) -> None:
    fake.makepyfile(
        test_props="""
import pytest
"""
        + NOT_CLAIMED
        + """

@pytest.mark.requirement("objective.ignore-index")
def test_skips_itself(suite):
    pytest.skip("not-claimed: a property's own skip whose text merely looks like a status")
"""
    )
    result = run(fake, "--impl=fake_gpt2:Fake", "--conformance-report=r.json", "-rs")
    result.assert_outcomes(skipped=2)
    found = statuses(load(fake.path / "r.json"))
    assert found["objective.sum-of-terms"] == "not-claimed"
    assert found["objective.ignore-index"] == "skipped"


def test_the_conformance_message_heads_the_failure_output(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=PASSING)
    expected = (
        "objective.one-row-per-position: the implementation raised RuntimeError while computing "
        "logits: kernel exploded"
    )
    for extra in ((), ("-n", "2")):
        result = run(fake, "--impl=fake_gpt2:Raising", "-k", "rows", *extra, subprocess=True)
        lines = result.stdout.lines
        header = next(
            i for i, line in enumerate(lines) if line.startswith("____") and "rows" in line
        )
        body = [line for line in lines[header + 1 :] if not line.startswith("[gw")]  # xdist's
        assert body[0] == expected, lines[header : header + 4]
        result.stdout.fnmatch_lines(["*kernel exploded", "*RuntimeError*"])


def test_the_package_imports_nothing_private_of_pytest() -> None:
    package = Path(report.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) _pytest", text, re.MULTILINE), path


def test_only_the_modules_that_handle_pytest_objects_import_pytest() -> None:
    package = Path(report.__file__).parent
    pure = ("options", "loading", "state", "timeouts", "recording", "report")
    for name in pure:
        text = (package / f"{name}.py").read_text(encoding="utf-8")
        assert not re.search(r"^(from|import) pytest", text, re.MULTILINE), name


# --------------------------------------------------------------------------------------------
# The real suite
# --------------------------------------------------------------------------------------------


def test_smoke_real_property_against_the_reference_via_pyargs(fake: pytest.Pytester) -> None:
    result = run(
        fake,
        "--pyargs",
        "gpt2_conformance.test_objective",
        "-k",
        "one_row_of_logits",
        "--impl=reference",
        "--max-examples=3",
        "--conformance-report=r.json",
        subprocess=True,
    )
    result.assert_outcomes(passed=1, deselected=result.parseoutcomes().get("deselected", 0))
    data = load(fake.path / "r.json")
    assert statuses(data)["objective.one-row-per-position"] == "pass"
    assert data["implementation"]["name"] == "reference"
    assert data["conforms"] is None  # only one requirement was checked


# --------------------------------------------------------------------------------------------
# report.py on its own
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([], "not-run"),
        (["passed"], "pass"),
        (["passed", "not-claimed"], "pass"),
        (["passed", "xpassed"], "pass"),
        (["passed", "failed"], "fail"),
        (["xfailed", "error"], "fail"),
        (["xfailed", "passed"], "xfail"),
        (["not-claimed", "not-claimed"], "not-claimed"),
        (["not-claimed", "skipped"], "skipped"),
        (["skipped"], "skipped"),
    ],
)
def test_requirement_status(outcomes: list[str], status: str) -> None:
    assert report.requirement_status(outcomes) == status


CASCADE = """
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gpt2_conformance import checks


@pytest.mark.requirement("objective.sum-of-terms")
@given(n=st.integers(1, 3))
def test_a_sum(suite, n):
    # Run first, but its failure is what the other one observed: it follows from it.
    checks.fail("objective.one-row-per-position", "two rows where one was expected")


@pytest.mark.requirement("objective.one-row-per-position")
@given(n=st.integers(1, 3))
def test_b_rows(suite, n):
    checks.fail("objective.one-row-per-position", "two rows where one was expected")
"""


def test_failures_the_triage_explains_are_folded_below_the_primary(fake: pytest.Pytester) -> None:
    fake.makepyfile(test_props=CASCADE)
    result = run(fake, "--impl=fake_gpt2:Fake", "--conformance-report=r.json")
    result.assert_outcomes(failed=2)
    triage = load(fake.path / "r.json")["triage"]
    assert triage["primary"] == ["objective.one-row-per-position"]
    assert triage["consequence"] == ["objective.sum-of-terms"]
    out = result.stdout.str()
    failures = out[out.index("= FAILURES =") : out.index("= gpt2-conformance: requirements")]
    failures = failures[: failures.rindex("\n")]
    # The primary comes first, in full, though it ran second; the consequence is two lines.
    assert failures.index("_ test_b_rows _") < failures.index("_ test_a_sum _")
    folded = failures[failures.index("_ test_a_sum _") :].splitlines()[1:]
    assert folded == [
        "the same message as above; follows from objective.one-row-per-position "
        "(-v shows it in full)"
    ]
    assert failures.count("replay this example:") == 1
    summary = out[out.index("short test summary") :]
    assert summary.index("test_b_rows") < summary.index("test_a_sum")

    verbose = run(fake, "--impl=fake_gpt2:Fake", "-v").stdout.str()
    assert verbose.count("replay this example:") == 2
    assert "follows from" not in verbose[: verbose.index("gpt2-conformance: requirements")]
