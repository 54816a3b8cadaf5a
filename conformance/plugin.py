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

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from . import options, selection
from .adapter import Adapter
from .checks import MARGINS
from .draws import suite_draws_only
from .loading import LoadError
from .options import OptionError
from .properties import requirement  # noqa: F401  (the properties' fixture, registered here)
from .recording import (
    NOT_CLAIMED,
    STATUS_PROPERTY,
    describe_failure,
    fold_explained_failures,
    hypothesis_notes,
)
from .selection import REQUIREMENT_IDS, SEED_FIXTURE
from .state import RunState
from .suite import Suite
from .timeouts import can_time, start_timer

_RUN = pytest.StashKey[RunState]()
#: This phase's seconds inside the implementation and the oracle.
_PHASE_TIMES = pytest.StashKey[dict[str, float]]()
#: The outcome the plugin decided for a property it skips (e.g. not-claimed).
_STATUS = pytest.StashKey[str]()
_CANCEL = pytest.StashKey[Callable[[], None]]()
_RECORDER = "gpt2-conformance-recorder"
_PHASES = "gpt2-conformance-phases"


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
    run = config.stash[_RUN] = RunState.from_options(config.getoption)
    config.pluginmanager.register(_PhaseTracker(run), _PHASES)
    if not _is_worker(config):
        config.pluginmanager.register(_Recorder(config), _RECORDER)
        if not config.option.collectonly:
            # Before anything can fail: a run that ends early (a usage error, a crash, an
            # implementation that exits the process) must not leave the previous run's verdict.
            _write_placeholder(
                run,
                "the run started and did not finish (it stopped on an error, or was killed, "
                "exited or crashed before writing its report)",
            )

    def warn(message: str) -> None:
        config.issue_config_time_warning(pytest.PytestConfigWarning(message), 2)

    with _usage_errors():
        run.check_options(None if _is_worker(config) else warn)
        run.load_chosen()


def _write_placeholder(run: RunState, reason: str) -> None:
    try:
        run.write_placeholder(reason)
    except OSError as error:
        raise pytest.UsageError(
            f"cannot write the conformance report ({error}): give a writable "
            "--conformance-report / --conformance-markdown path"
        ) from error


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
    with_timeout = run.timeout_s > 0 and config.pluginmanager.hasplugin("timeout")
    selection.mark_properties(properties, run.timeout_s if with_timeout else None)
    with _usage_errors():
        deviating = selection.apply_declared_deviations(adapter, properties)
    selection.apply_run_settings(properties, run.settings(), deviating)
    if run.xfails:
        assert run.xfails_path is not None
        run.unmatched_xfails = selection.apply_xfails(run.xfails, run.xfails_path, properties)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the properties this run will run (those that never report are ``not-run``)."""
    run = _run(session.config)
    if run.replay is not None:
        with _usage_errors():
            selection.replay_example(session.items, run.replay)
    for item in session.items:
        ids = item.stash.get(REQUIREMENT_IDS, None)
        if ids is not None:
            run.recording.select(item.nodeid, ids)
    if _is_worker(session.config) and run.collected:
        session.config.workeroutput["gpt2_conformance"] = run.worker_output()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> Suite:
    """The run's :class:`~gpt2_conformance.suite.Suite`: the adapter and the run's options."""
    run = _run(pytestconfig)
    _require_adapter(run)
    with _usage_errors():
        return run.suite()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Seed the property's hypothesis run (``--conformance-seeds``); skip a property the adapter
    does not claim, reporting it ``not-claimed``."""
    selection.seed_property(item)
    if REQUIREMENT_IDS not in item.stash:
        return
    run = _run(item.config)
    reason = selection.unclaimed_reason(item, run.requirements_profile, _require_adapter(run))
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
            with suite_draws_only():  # examples from the seed and the strategies alone
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
    if item.stash.get(REQUIREMENT_IDS, None) is None:
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
    module = getattr(item, "module", None)
    replay = None
    if module is not None:
        replay = _run(item.config).replay_command(
            module.__name__.rpartition(".")[2],
            getattr(item, "originalname", item.name),
            hypothesis_notes(error),
        )
    block = item.config.option.tbstyle == "auto" and report.when == "call"
    describe_failure(report, error, path=str(item.path), replay=replay, block=block)
    return report


class _Recorder:
    """Per-session plugin object gathering test outcomes and writing the reports (on the xdist
    controller when distributed: it receives the workers' reports)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run = _run(config)

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
        if output:
            self.run.add_worker_output(output)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run = self.run
        if self.config.option.collectonly or not (run.recording.tests or run.collected):
            if run.placeholder:
                _write_placeholder(run, "the run collected no conformance property")
            return
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        required = run.finish(interrupted=interrupted, pytest_status=int(exitstatus))
        if required is not None:
            session.exitstatus = required
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        verbose = self.config.option.verbose >= 1
        failed = terminal.stats.get("failed") if terminal is not None else None
        if (
            failed
            and run.report is not None
            and self.config.option.tbstyle == "auto"
            and not verbose
        ):
            # The failures that show a primary cause first; what the triage explains, folded.
            failed[:] = fold_explained_failures(failed, run.report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.run.report is None:
            return
        terminalreporter.write_sep("=", "gpt2-conformance: requirements")
        for text, markup in self.run.summary(verbose=self.config.option.verbose >= 1):
            terminalreporter.write_line(text, **markup)
