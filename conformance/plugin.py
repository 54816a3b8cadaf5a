"""The pytest plugin of the conformance suite (registered through the ``pytest11`` entry point).

It chooses the implementation under test (``--impl`` or ``$GPT2_CONFORMANCE_IMPL``) and the run's
device, dtype and checkpoint; provides the ``suite`` fixture; registers the ``requirement`` and
``capability`` markers and rejects ids the spec does not define; gives the suite's properties the
run's hypothesis profile and a per-property timeout; marks the tests named in an xfails file; and
at the end of the run tells, per requirement of the spec, what happened, with a verdict and
optional JSON and Markdown reports.

This module holds only pytest's hooks and fixtures; each job is done in a module of its own:
:mod:`~gpt2_conformance.options` (options, profiles, option values),
:mod:`~gpt2_conformance.loading` (adapter, checkpoint, xfails file),
:mod:`~gpt2_conformance.state` (the run's state), :mod:`~gpt2_conformance.selection` (which
properties run and how each is expected to end), :mod:`~gpt2_conformance.timeouts` (the
per-property timer), :mod:`~gpt2_conformance.recording` (outcomes, the run's report) and
:mod:`~gpt2_conformance.report` (statuses, verdict, files).

The plugin is installed with the package, so it is loaded by every pytest run in the environment.
It stays inert (no header, no profile, no summary) in runs that collect no conformance property,
such as the project's own tests. See docs/running-the-suite.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from . import SUITE_VERSION, options, selection
from . import report as reports
from .adapter import Adapter
from .checks import MARGINS
from .loading import LoadError, missing_xfails, read_xfails
from .options import ENV_IMPL, OptionError
from .properties import requirement  # noqa: F401  (the properties' fixture, registered here)
from .recording import (
    MESSAGE_LIMIT,
    NOT_CLAIMED,
    REQUIREMENT_PROPERTY,
    STATUS_PROPERTY,
    FailureBlock,
    HeadedFailure,
    failure_site,
    find_failure,
    hypothesis_notes,
    run_report,
)
from .selection import REQUIREMENT_IDS
from .state import RunState
from .suite import SHAPES, Suite
from .timeouts import can_time, start_timer

_RUN = pytest.StashKey[RunState]()
#: This phase's seconds inside the implementation and the oracle.
_PHASE_TIMES = pytest.StashKey[dict[str, float]]()
#: The outcome the plugin decided for a property it skips (e.g. not-claimed).
_STATUS = pytest.StashKey[str]()
_CANCEL = pytest.StashKey[Callable[[], None]]()
#: ``--conformance-replay``: the hypothesis version and blob of the example to replay.
_REPLAY = pytest.StashKey["tuple[str, bytes] | None"]()
_RECORDER = "gpt2-conformance-recorder"
_PHASES = "gpt2-conformance-phases"
SEED_FIXTURE = "gpt2_conformance_seed"


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Report the suite's own errors about its options and inputs as pytest usage errors."""
    try:
        yield
    except (OptionError, LoadError) as error:
        raise pytest.UsageError(str(error)) from error


def _run(config: pytest.Config) -> RunState:
    return config.stash[_RUN]


def _require_adapter(run: RunState) -> Adapter:
    with _usage_errors():
        return run.require_adapter()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# --------------------------------------------------------------------------------------------
# Options and configuration
# --------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requirement(*ids): the spec requirement ids this property checks"
    )
    config.addinivalue_line(
        "markers", "capability(*names): adapter capabilities the property needs"
    )
    options.register_profiles()
    run = RunState(
        profile=config.getoption("conformance_profile"),
        hypothesis_profile=config.getoption("hypothesis_profile", None),
        max_examples=config.getoption("max_examples"),
        seed=options.parse_seed(config.getoption("hypothesis_seed", None)),
        timeout_s=config.getoption("conformance_timeout"),
        xfails_path=config.getoption("xfails_file"),
        shape=config.getoption("conformance_shape"),
    )
    option = config.getoption("impl")
    run.impl = option or os.environ.get(ENV_IMPL) or None
    config.stash[_RUN] = run
    config.pluginmanager.register(_PhaseTracker(run), _PHASES)
    if not _is_worker(config):
        recorder = _Recorder(config)
        config.pluginmanager.register(recorder, _RECORDER)
        if not config.option.collectonly:
            # Before anything can fail: a run that ends early (a usage error, a crash, an
            # implementation that exits the process) must not leave the previous run's verdict.
            recorder.write_placeholder(
                "the run started and did not finish (it stopped on an error, or was killed, "
                "exited or crashed before writing its report)"
            )
    with _usage_errors():
        run.shard = options.parse_shard(config.getoption("conformance_shard"))
        if run.max_examples is not None and run.max_examples < 1:
            raise OptionError(f"--max-examples={run.max_examples}: give a positive count")
        if run.timeout_s < 0:
            raise OptionError(f"--conformance-timeout={run.timeout_s:g}: give 0 or more seconds")
        run.seeds = options.parse_seeds(config.getoption("conformance_seeds"))
        if run.seeds is not None and run.seed is not None:
            raise OptionError(
                "--conformance-seeds and --hypothesis-seed both choose the seed: give only one "
                "(--conformance-seeds=N:N+1 is one seed)"
            )
        run.requirements_profile = options.requirements_profile(
            config.getoption("conformance_requirements")
        )
        require = config.getoption("conformance_require")
        if require is not None:
            try:
                reports.parse_require(require)
            except ValueError as error:
                raise OptionError(str(error)) from None
        if run.xfails_path:
            run.xfails = read_xfails(run.xfails_path)
            missing = missing_xfails(run.xfails_path)
            if missing is not None and not _is_worker(config):
                config.issue_config_time_warning(pytest.PytestConfigWarning(missing), 2)
        config.stash[_REPLAY] = options.parse_replay(config.getoption("conformance_replay"))
    if run.impl is None:
        return
    try:
        run.load_implementation(
            device=config.getoption("device"),
            dtype=config.getoption("dtype"),
            checkpoint=config.getoption("checkpoint"),
        )
    except (OptionError, LoadError) as error:
        if option:
            raise pytest.UsageError(str(error)) from error
        # Chosen only by the environment: do not break runs that collect no property (the
        # project's own tests); the error is raised if conformance properties are collected.
        run.deferred_error = OptionError(f"{ENV_IMPL}={run.impl}: {error}")
        run.adapter = None


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in (_RECORDER, _PHASES):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = _run(config)
    if run.adapter is None:
        return None
    return run.header_lines(len(selection.known_requirements()))


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Reject, as a collection error of the module, markers naming ids the spec lacks."""
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Item):
            error = selection.marker_error(item)
            if error is not None:
                raise pytest.Collector.CollectError(error)
    return result


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With ``--conformance-seeds``, repeat each property once per seed (seed-major order)."""
    run = metafunc.config.stash.get(_RUN, None)
    if run is None or run.seeds is None:
        return
    if metafunc.definition.get_closest_marker("requirement") is None:
        return
    metafunc.fixturenames.append(SEED_FIXTURE)
    metafunc.parametrize(
        SEED_FIXTURE, list(run.seeds), indirect=True, ids=lambda s: f"seed={s}", scope="session"
    )


@pytest.fixture(scope="session")
def gpt2_conformance_seed(request: pytest.FixtureRequest) -> int:
    """The hypothesis seed of a property repeated by ``--conformance-seeds``."""
    return int(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    run = _run(config)
    if run.shard is not None:
        selection.apply_shard(config, items, run.shard)
    if run.requirements_profile is not None:
        selection.apply_requirements_profile(config, items, run.requirements_profile)
    properties = [i for i in items if selection.is_property(i)]
    if not properties:
        return
    run.collected = True
    options.use_hypothesis_storage()  # not .hypothesis/ in the user's directory
    adapter = _require_adapter(run)
    chosen = run.settings()
    with_timeout = run.timeout_s > 0 and config.pluginmanager.hasplugin("timeout")
    for item in properties:
        ids = selection.marker_args(item, "requirement")
        item.stash[REQUIREMENT_IDS] = ids
        for rid in ids:
            item.user_properties.append((REQUIREMENT_PROPERTY, rid))
        if with_timeout and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(run.timeout_s))
    with _usage_errors():
        deviating = selection.apply_declared_deviations(adapter, properties)
    # A declared deviation is expected to fail: its first counterexample is enough, so it is
    # not shrunk or explained. Settings belong to the test function, shared by its
    # parametrizations: only a function all of whose items deviate is left unshrunk.
    function_of = selection.function_of
    shrunk = {function_of(i) for i in properties if i.nodeid not in deviating}
    expected_to_fail = options.without_shrinking(chosen)
    for item in properties:
        selection.apply_settings(item, chosen if function_of(item) in shrunk else expected_to_fail)
    if run.xfails:
        assert run.xfails_path is not None
        run.unmatched_xfails = selection.apply_xfails(run.xfails, run.xfails_path, properties)


def _apply_replay(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--conformance-replay``: once ``-k`` and node ids have chosen, the one property left
    runs the given example and nothing else."""
    replay = config.stash.get(_REPLAY, None)
    if replay is None:
        return
    functions = {selection.function_of(i): i for i in items if selection.is_property(i)}
    if len(functions) != 1:
        raise pytest.UsageError(
            f"--conformance-replay replays the example of one property; {len(functions)} are "
            "selected: select the property by its node id (as the failure printed it) or -k NAME"
        )
    from hypothesis import reproduce_failure

    (item,) = functions.values()
    reproduce_failure(*replay)(item.obj)  # type: ignore[attr-defined]


def _replay_command(item: pytest.Item, details: str) -> str | None:
    """The command that replays the example hypothesis printed in ``details``, if it did."""
    replaying = item.config.stash.get(_REPLAY, None)  # hypothesis prints no blob then
    blob = options.printed_blob(details) or (replaying[1] if replaying else None)
    module = getattr(item, "module", None)
    if blob is None or module is None:
        return None
    run = _run(item.config)
    package = __name__.rpartition(".")[0]  # the properties run from the installed package
    nodeid = options.installed_nodeid(
        f"{package}.{module.__name__.rpartition('.')[2]}",
        getattr(item, "originalname", item.name),
    )
    changed = {
        "device": run.device if run.device != "cpu" else None,
        "dtype": run.dtype if run.dtype != "float32" else None,
        "checkpoint": item.config.getoption("checkpoint"),
        "conformance-shape": run.shape if run.shape != "tiny" else None,
        # the profile decides which configurations are drawn (the ci pool, or any)
        "conformance-profile": run.profile
        if options.profile_pool(run.profile) != options.profile_pool(options.DEFAULT_PROFILE)
        else None,
        "conformance-requirements": item.config.getoption("conformance_requirements")
        if run.requirements_profile is not None
        else None,
    }
    return options.replay_command(
        nodeid, blob, impl=run.impl, options={k: str(v) for k, v in changed.items() if v}
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the properties this run will run (those that never report are ``not-run``)."""
    _apply_replay(session.config, session.items)
    run = _run(session.config)
    for item in session.items:
        ids = item.stash.get(REQUIREMENT_IDS, None)
        if ids is not None:
            run.recording.select(item.nodeid, ids)
    if _is_worker(session.config) and run.collected:
        session.config.workeroutput["gpt2_conformance"] = {  # type: ignore[attr-defined]
            "unmatched_xfails": run.unmatched_xfails,
            "selected": [[nodeid, list(ids)] for nodeid, ids in run.recording.selected.items()],
        }


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> Suite:
    """The run's :class:`~gpt2_conformance.suite.Suite`: the adapter and the run's options."""
    run = _run(pytestconfig)
    adapter = _require_adapter(run)
    with _usage_errors():
        threads = options.torch_threads(
            pytestconfig.getoption("torch_threads"),
            checkpoint=run.checkpoint is not None,
            shape=run.shape,
            device=run.device,
        )
    torch = sys.modules.get("torch")  # only when the implementation uses torch (imported it)
    if threads is not None and torch is not None:
        torch.set_num_threads(threads)
    return Suite(
        adapter,
        device=run.device,
        dtype=run.dtype,
        checkpoint=run.checkpoint,
        checkpoint_path=run.checkpoint_path,
        shape=SHAPES[run.shape],
        pool=options.profile_pool(run.profile),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Seed the property's hypothesis run (``--conformance-seeds``); skip a property the adapter
    does not claim, reporting it ``not-claimed``."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and SEED_FIXTURE in callspec.params:
        from hypothesis import seed

        seed(callspec.params[SEED_FIXTURE])(item.obj)  # type: ignore[attr-defined]
    if REQUIREMENT_IDS not in item.stash:
        return
    run = _run(item.config)
    adapter = _require_adapter(run)
    reason = selection.tied_only_reason(
        item, run.requirements_profile, adapter
    ) or selection.capability_reason(item, adapter)
    if reason is not None:
        item.stash[_STATUS] = NOT_CLAIMED
        pytest.skip(f"{NOT_CLAIMED}: {reason}")


class _PhaseTracker:
    """Notes when a conformance test is inside a runtest phase (setup, call, teardown): the
    timeout may interrupt only then, and the phase's time is split by where it went."""

    def __init__(self, run: RunState) -> None:
        self.clock = run.clock

    def _track(self, item: pytest.Item, when: str) -> Iterator[None]:
        if REQUIREMENT_IDS not in item.stash:
            return (yield)
        self.clock.enter(when)
        try:
            return (yield)
        finally:
            item.stash[_PHASE_TIMES] = self.clock.leave()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._track(item, "setup"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._track(item, "call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._track(item, "teardown"))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Time a conformance property with :func:`~gpt2_conformance.timeouts.start_timer`
    (pytest-timeout's own timer would be intercepted by hypothesis). Other tests, and
    platforms or threads without SIGALRM, keep pytest-timeout's behaviour."""
    ids = item.stash.get(REQUIREMENT_IDS, None)
    if ids is None or not can_time(settings.method):
        return None
    item.stash[_CANCEL] = start_timer(_run(item.config).clock, ids, float(settings.timeout))
    return True


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    cancel = item.stash.get(_CANCEL, None)
    if cancel is None:
        return None
    del item.stash[_CANCEL]
    cancel()
    return True


# ---- reports -------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    ids = item.stash.get(REQUIREMENT_IDS, None)
    if ids is None:
        return report
    # Plain floats: they travel with the report from an xdist worker to the controller.
    report.conformance_timing = item.stash.get(_PHASE_TIMES, {})
    item.stash[_PHASE_TIMES] = {}
    report.conformance_margin = MARGINS.take()  # worst error/bound of this phase's comparisons
    if report.skipped and _STATUS in item.stash:
        report.user_properties.append((STATUS_PROPERTY, item.stash[_STATUS]))
    if call.excinfo is None or call.excinfo.errisinstance(pytest.skip.Exception):
        return report
    error = call.excinfo.value
    failure = find_failure(error)
    details = hypothesis_notes(error)
    replay = _replay_command(item, details)
    block = False
    if failure is not None:
        message = str(failure)
        if item.config.option.tbstyle == "auto" and report.when == "call":
            report.longrepr = FailureBlock(
                message,
                failure_site(failure, str(item.path)),
                details,
                getattr(report.longrepr, "reprcrash", None),
                replay=replay,
            )
            block = True
        elif hasattr(report.longrepr, "toterminal"):
            report.longrepr = HeadedFailure(message, report.longrepr)
        # What the failure names, for the report's triage (plain strings: they travel to the
        # xdist controller).
        report.conformance_observed = str(getattr(failure, "requirement", "") or "")
        report.conformance_hint = str(getattr(failure, "hint", "") or "")
        report.conformance_hint_requirements = list(getattr(failure, "hint_requirements", ()))
        report.conformance_hint_matched = bool(getattr(failure, "hint_matched", False))
    else:
        message = f"{type(error).__name__}: {error}"
    report.conformance_message = message[:MESSAGE_LIMIT]
    if replay is None:
        report.conformance_details = details[:MESSAGE_LIMIT]
    else:
        if not block:  # the failure block shows it already
            report.sections.append(("gpt2-conformance: replay this example", replay))
        line = f"\nReplay this example: {replay}"
        report.conformance_details = details[: max(0, MESSAGE_LIMIT - len(line))] + line
    return report


class _Recorder:
    """Per-session plugin object gathering test outcomes and writing the reports (on the xdist
    controller when distributed: it receives the workers' reports)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run = _run(config)
        self.placeholder = False

    def _paths(self) -> tuple[str | None, str | None]:
        return (
            self.config.getoption("conformance_report"),
            self.config.getoption("conformance_markdown"),
        )

    def write_placeholder(self, reason: str) -> None:
        from gpt2_spec import SPEC_VERSION

        json_path, markdown_path = self._paths()
        placeholder = reports.incomplete_report(
            reason,
            implementation=self.run.implementation_info(),
            suite_version=SUITE_VERSION,
            spec_version=SPEC_VERSION,
        )
        try:
            reports.write_incomplete(placeholder, json_path=json_path, markdown_path=markdown_path)
        except OSError as error:
            raise pytest.UsageError(
                f"cannot write the conformance report ({error}): give a writable "
                "--conformance-report / --conformance-markdown path"
            ) from error
        self.placeholder = bool(json_path or markdown_path)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.run.recording.started = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.run.recording.add(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.run.recording.add_collection_error(report.nodeid, report.longreprtext)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Gather what an xdist worker learned while collecting."""
        output = getattr(node, "workeroutput", {}).get("gpt2_conformance")
        if not output:
            return
        self.run.collected = True
        for entry in output.get("unmatched_xfails", []):
            if entry not in self.run.unmatched_xfails:
                self.run.unmatched_xfails.append(entry)
        for nodeid, ids in output.get("selected", []):
            self.run.recording.select(nodeid, ids)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run = self.run
        if self.config.option.collectonly or not (run.recording.tests or run.collected):
            if self.placeholder:
                self.write_placeholder("the run collected no conformance property")
            return
        run.report = run_report(
            run.recording,
            implementation=run.implementation_info(),
            hypothesis=run.hypothesis_info(),
            shard=run.shard,
            requirements_profile=run.requirements_profile,
            interrupted=exitstatus == pytest.ExitCode.INTERRUPTED,
        )
        require = self.config.getoption("conformance_require")
        if require is not None:
            run.required_status = reports.exit_status(
                run.report, require=require, pytest_status=int(exitstatus)
            )
            session.exitstatus = run.required_status
        json_path, markdown_path = self._paths()
        if json_path:
            run.written.append(reports.write_json(run.report, json_path))
        if markdown_path:
            run.written.append(reports.write_markdown(run.report, markdown_path))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        run = self.run
        if run.report is None:
            return
        tr = terminalreporter
        tr.write_sep("=", "gpt2-conformance: requirements")
        lines = reports.summary_lines(run.report, verbose=self.config.option.verbose >= 1)
        for line in lines[:-1]:
            tr.write_line(line)
        for entry in run.unmatched_xfails:
            tr.write_line(
                f"warning: {run.xfails_path}: entry {entry!r} matches no collected conformance "
                "test",
                yellow=True,
            )
        timing = reports.timing_line(run.report)
        if timing:
            tr.write_line(timing)
        for path in run.written:
            tr.write_line(f"conformance report written to {path}")
        colour = {True: "green", False: "red", None: "yellow"}[run.report["conforms"]]
        tr.write_line(lines[-1], **{colour: True, "bold": True})
        if run.required_status is not None:
            status = run.required_status
            meaning = {0: "met", 1: "not met: it does not conform", 6: "not established"}
            tr.write_line(
                f"--conformance-require={self.config.getoption('conformance_require')}: "
                f"{meaning.get(status, 'not met')} (exit status {status})"
            )
