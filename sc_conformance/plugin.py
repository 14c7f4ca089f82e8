"""The pytest plugin: options, the target server's session, fixtures and the report.

Installed through the ``pytest11`` entry point. It stays invisible unless a target
is given (``--server-url``, ``--sc-mock``, or their environment and ini forms): then it
adds the bundled suite when no test paths are given, starts or probes the target, maps
every check to the requirement ids it declares, cleans up the jobs it created and
reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import threading
from collections.abc import Callable
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from sc_conformance import mock_fixture
from sc_conformance import report
from sc_conformance import selftest
from sc_conformance import spec
from sc_conformance.client import BrokenResponse
from sc_conformance.client import Credentials
from sc_conformance.client import ServerClient
from sc_conformance.client import ServerUnreachable
from sc_conformance.fuzz_options import add_fuzz_options
from sc_conformance.fuzz_options import fuzz_settings
from sc_conformance.jobs import JobDefinitionError
from sc_conformance.jobs import JobTemplate
from sc_conformance.jobs import JobUpload
from sc_conformance.ledger import Leftover
from sc_conformance.session import ConformanceSession
from sc_conformance.session import JobWait
from sc_conformance.session import SubmittedJob
from sc_conformance.session import TargetUnusable
from sc_conformance.settings import Level
from sc_conformance.settings import Settings
from sc_conformance.settings import add_options
from sc_conformance.settings import resolve

logger = logging.getLogger(__name__)

SUITE_DIR = Path(__file__).parent / "suite"

CATEGORIES = {
    "schema": "request validation: field rules, types, patterns, bodies, methods",
    "auth": "authentication and account isolation",
    "lifecycle": "upload, progress, results, deletion of a real job",
    "fuzz": "schema-derived generated requests",
    "security": "hostile uploads, paths and resource limits",
}

NO_TARGET = "no target server: pass --server-url URL or --sc-mock"
NO_REQUIREMENT_EXERCISED = pytest.ExitCode.NO_TESTS_COLLECTED


@dataclasses.dataclass
class PluginState:
    """Everything the hooks share within one pytest process."""

    settings: Settings
    session: ConformanceSession | None = None
    recorder: report.Recorder = dataclasses.field(default_factory=report.Recorder)
    verdict_lines: list[str] = dataclasses.field(default_factory=list)
    matrix: report.Matrix | None = None
    report_paths: tuple[Path, ...] = ()
    worker_leftovers: list[Leftover] = dataclasses.field(default_factory=list)
    worker_targets: list[dict[str, Any]] = dataclasses.field(default_factory=list)


STATE = pytest.StashKey[PluginState]()


def _state(config: pytest.Config) -> PluginState | None:
    return config.stash.get(STATE, None)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("dsession")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# Configuration ------------------------------------------------------------------------


def pytest_addoption(
    parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager
) -> None:
    add_options(parser)
    add_fuzz_options(parser)
    selftest.add_selftest_options(parser)
    pluginmanager.register(selftest.SelfTestPlugin(), "sc-conformance-selftest")
    pluginmanager.register(mock_fixture, "sc-conformance-mock-fixture")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requirement(*ids): the requirement catalogue ids a conformance check judges",
    )
    for category, description in CATEGORIES.items():
        config.addinivalue_line(
            "markers", f"{category}: conformance check: {description}"
        )

    settings = resolve(config)
    state = PluginState(settings)
    config.stash[STATE] = state
    if settings.active:
        # A bad fuzz or limit option is a usage error now, not ten failing checks,
        # and a report that cannot be written is one before the run, not after it.
        fuzz_settings(config, embedded_mock=settings.mock)
        if settings.report is not None and not _is_xdist_worker(config):
            _check_report_path(settings.report)
        _add_suite_to_collection(config)
        config.pluginmanager.register(_ReportListener(state), "sc-conformance-reports")


def _check_report_path(path: Path) -> None:
    """Make the report's folder, or say in one line why the report cannot be written."""
    if path.suffix.lower() == ".md":
        raise pytest.UsageError(
            f"--sc-report: give the JSON path ({path.with_suffix('.json')}); the "
            "Markdown report is written beside it"
        )
    if path.is_dir():
        raise pytest.UsageError(f"--sc-report: {path} is a folder, not a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise pytest.UsageError(
            f"--sc-report: cannot make {path.parent}: {error.strerror}"
        ) from None
    for report_file in (path, path.with_suffix(".md")):
        _check_writable(report_file)


def _check_writable(path: Path) -> None:
    """Open *path* for appending, as the report will; remove it again if new."""
    existed = path.exists()
    if existed and not path.is_file():
        raise pytest.UsageError(f"--sc-report: {path} exists and is not a file")
    try:
        with open(path, "ab"):
            pass
    except OSError as error:
        raise pytest.UsageError(
            f"--sc-report: cannot write {path}: {error.strerror}"
        ) from None
    if not existed:
        path.unlink()


def _add_suite_to_collection(config: pytest.Config) -> None:
    """Collect the bundled suite when the user named no test paths.

    Without paths pytest would collect the current directory, or an ini file's
    ``testpaths``: a target given on the command line or in the environment replaces
    that with the suite alone, so ``pytest --server-url=URL`` judges a server from
    any directory. A target set in an ini file adds the suite to its ``testpaths``
    (a project that runs the suite beside its own tests), unless they cover it.
    """
    source = config.args_source
    if source is pytest.Config.ArgsSource.ARGS:
        return
    suite = str(SUITE_DIR)
    state = _state(config)
    explicit = state is not None and state.settings.explicit_target
    if source is pytest.Config.ArgsSource.INVOCATION_DIR or explicit:
        config.args[:] = [suite]
        return
    covered = any(
        SUITE_DIR == Path(arg) or SUITE_DIR.is_relative_to(Path(arg).resolve())
        for arg in config.args
    )
    if not covered:
        config.args.append(suite)


def _progress_writer(config: pytest.Config) -> Callable[[str], None]:
    """Show a line on the terminal even while pytest captures output."""

    def write(message: str) -> None:
        logger.info(message)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        disabled = (
            capture.global_and_fixture_disabled()
            if capture is not None
            else contextlib.nullcontext()
        )
        with disabled:
            if reporter._tw.width_of_current_line:
                reporter._tw.line()
            reporter.write_line(f"sc-conformance: {message}")

    return write


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Start or probe the target; one line and exit status 4 if it cannot be used."""
    config = session.config
    state = _state(config)
    if state is None or not state.settings.active:
        return
    if _is_xdist_controller(config) or config.option.collectonly:
        return
    conformance = ConformanceSession(state.settings, _progress_writer(config))
    conformance.mock_settings = selftest.mock_settings(config)
    state.session = conformance
    try:
        conformance.start()
        conformance.template  # noqa: B018 - a broken job file is a usage error
    except (TargetUnusable, JobDefinitionError) as error:
        conformance.stop()
        state.session = None
        raise pytest.UsageError(f"sc-conformance: {error}") from None
    logger.info("judging %s", conformance.describe_target())
    _treat_sigterm_as_interrupt(config)


def _treat_sigterm_as_interrupt(config: pytest.Config) -> None:
    """CI timeouts send SIGTERM: let it end the run like Ctrl-C, so the jobs created
    so far are still deleted. A handler someone else installed is left alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = _state(config)
    if state is not None and state.session is not None:
        state.session.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _state(config)
    if state is None or not state.settings.active:
        return []
    settings = state.settings
    target = "embedded mock server" if settings.mock else settings.server_url
    if state.session is not None:
        described = state.session.describe_target()
        target = f"{described['url']} ({described['kind']}, auth {described['auth']})"
    return [f"sc-conformance: target {target}, level {settings.level.value}"]


# Collection ---------------------------------------------------------------------------


def _requirement_ids(item: pytest.Item) -> tuple[str, ...]:
    ids: list[str] = []
    for marker in item.iter_markers("requirement"):
        ids.extend(str(requirement_id) for requirement_id in marker.args)
    return tuple(dict.fromkeys(ids))


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Check every requirement id against the catalogue and attach the ids to reports.

    An unknown id, or a bundled check without an id or category, is a collection
    error: a check whose verdict lands nowhere in the report would be misleading.
    """
    known = {requirement.id for requirement in spec.requirements()}
    problems: list[str] = []
    for item in items:
        ids = _requirement_ids(item)
        in_suite = item.path.is_relative_to(SUITE_DIR)
        unknown = [
            requirement_id for requirement_id in ids if requirement_id not in known
        ]
        if unknown:
            problems.append(f"{item.nodeid}: unknown requirement id(s) {unknown}")
        if in_suite and not ids:
            problems.append(f"{item.nodeid}: no requirement marker")
        if in_suite and not any(item.get_closest_marker(name) for name in CATEGORIES):
            problems.append(
                f"{item.nodeid}: no category marker ({', '.join(CATEGORIES)})"
            )
        item.user_properties.extend(
            (report.REQUIREMENT_PROPERTY, requirement_id) for requirement_id in ids
        )
    if problems:
        raise pytest.UsageError(
            "sc-conformance: invalid requirement markers:\n  " + "\n  ".join(problems)
        )


# Running ------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = _state(item.config)
    if state is not None and state.session is not None:
        state.session.exchanges.clear()


def _tolerance(state: PluginState, ids: tuple[str, ...]) -> str | None:
    """Why a failure of a check judging *ids* must not fail the run, if it must not."""
    reasons: list[str] = []
    for requirement_id in ids:
        if requirement_id in state.settings.baseline:
            why = state.settings.baseline[requirement_id]
            reasons.append(
                f"{requirement_id} in baseline" + (f" ({why})" if why else "")
            )
        elif (
            state.settings.level is Level.MUST
            and spec.requirement(requirement_id).level == "SHOULD"
        ):
            reasons.append(f"{requirement_id} is SHOULD (--sc-level must)")
        else:
            return None
    return "; ".join(reasons) or None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the deciding exchange; turn tolerated failures into xfail outcomes."""
    test_report = yield
    state = _state(item.config)
    ids = _requirement_ids(item)
    if state is None or not ids:
        return test_report

    failure = call.excinfo.value if call.excinfo is not None else None
    if isinstance(failure, ServerUnreachable) and not isinstance(
        failure, BrokenResponse
    ):
        message = f"the server stopped answering: {failure}"
        test_report.longrepr = message
        item.session.shouldstop = f"sc-conformance: {message}"
    elif isinstance(failure, BrokenResponse):
        test_report.longrepr = f"the server broke the exchange: {failure}"

    conformance = state.session
    if conformance is not None and conformance.exchanges and call.when != "teardown":
        exchange = json.dumps(conformance.exchanges[-1].to_dict())
        item.user_properties.append((report.EXCHANGE_PROPERTY, exchange))
        test_report.user_properties.append((report.EXCHANGE_PROPERTY, exchange))
        conformance.exchanges.clear()
        if test_report.failed:
            test_report.sections.append(
                (
                    "sc-conformance deciding exchange",
                    conformance_exchange_text(exchange),
                )
            )

    if call.when == "call" and test_report.failed:
        tolerated = _tolerance(state, ids)
        if tolerated is not None:
            test_report.outcome = "skipped"
            test_report.wasxfail = f"tolerated failure: {tolerated}"  # type: ignore[attr-defined]
            item.user_properties.append((report.TOLERATED_PROPERTY, tolerated))
            test_report.user_properties.append((report.TOLERATED_PROPERTY, tolerated))
    return test_report


def conformance_exchange_text(exchange_json: str) -> str:
    exchange = json.loads(exchange_json)
    answer = (
        str(exchange["status"])
        if exchange["error"] is None
        else f"no answer: {exchange['error']}"
    )
    lines = [
        f"request:   {exchange['method']} {exchange['url']}",
        f"           {exchange['request_summary']}",
        f"response:  {answer}",
    ]
    if exchange["response_body"]:
        lines.append(f"           {exchange['response_body']}")
    lines.append(f"reproduce: {exchange['curl']}")
    return "\n".join(lines)


class _ReportListener:
    """Receives every test report, including those xdist forwards from its workers.

    Registered per config (not module-level) so nested pytester runs stay apart.
    """

    def __init__(self, state: PluginState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.state.recorder.add(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Collect what an xdist worker could not delete and what it ran against."""
        del error
        output = getattr(node, "workeroutput", None) or {}
        if "sc_conformance" not in output:
            return
        payload = json.loads(output["sc_conformance"])
        self.state.worker_leftovers += [
            Leftover(**entry) for entry in payload["leftovers"]
        ]
        self.state.worker_targets.append(payload["target"])


# Finishing ----------------------------------------------------------------------------


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the session's jobs, judge the run as a whole, and write the report.

    Runs after fixture teardown and also after Ctrl-C, so cleanup always happens.
    """
    config = session.config
    state = _state(config)
    if state is None or not state.settings.active or config.option.collectonly:
        return

    leftovers = list(state.worker_leftovers)
    conformance = state.session
    if conformance is not None:
        leftovers += conformance.clean_up()
    if not (state.settings.explicit_target or state.recorder.checks or leftovers):
        return
    if _is_xdist_worker(config):
        target = conformance.describe_target() if conformance else {}
        config.workeroutput["sc_conformance"] = json.dumps(  # type: ignore[attr-defined]
            {"leftovers": [entry.to_dict() for entry in leftovers], "target": target}
        )
        return

    matrix = report.Matrix.build(
        state.recorder.checks.values(), state.settings.baseline
    )
    state.matrix = matrix
    status = int(session.exitstatus)
    for result in matrix.fixed_baseline_entries():
        state.verdict_lines.append(
            f"{result.requirement.id} is in the baseline but now passes: remove it"
        )
    if matrix.fixed_baseline_entries() and status == 0:
        status = int(pytest.ExitCode.TESTS_FAILED)
    asked_for_checks = state.settings.explicit_target or bool(state.recorder.checks)
    if not matrix.exercised and status == 0 and asked_for_checks:
        state.verdict_lines.append(
            "no requirement was exercised (every check was skipped or deselected)"
        )
        status = int(NO_REQUIREMENT_EXERCISED)
    if leftovers:
        state.verdict_lines.append(
            f"{len(leftovers)} job(s) may remain on the server (see below)"
        )
    session.exitstatus = status
    state.worker_leftovers = leftovers

    if state.settings.report is not None:
        document = report.to_document(
            matrix,
            _target_description(state),
            _profile(state),
            (entry.to_dict() for entry in leftovers),
            status,
        )
        markdown = report.write(state.settings.report, document)
        state.report_paths = (state.settings.report, markdown)


def _target_description(state: PluginState) -> dict[str, Any]:
    if state.session is not None:
        return state.session.describe_target()
    if state.worker_targets:
        return state.worker_targets[0]
    return {
        "url": state.settings.server_url or "embedded mock",
        "kind": "embedded mock" if state.settings.mock else "server",
        "auth": "unknown",
        "auth_source": "",
        "account": None,
        "second_account": None,
        "key_account": None,
    }


def _profile(state: PluginState) -> dict[str, Any]:
    settings = state.settings
    conformance = state.session
    return {
        "level": settings.level.value,
        "auth option": settings.auth.value,
        "job": conformance.template.source if conformance else "shipped job",
        "job timeout (s)": settings.job_timeout,
        "request timeout (s)": settings.request_timeout,
        "TLS verification": (
            "off"
            if settings.verify is False
            else ("CA bundle" if settings.verify is not True else "on")
        ),
        "baseline entries": len(settings.baseline),
    }


def pytest_terminal_summary(
    terminalreporter: Any, exitstatus: int, config: pytest.Config
) -> None:
    """Print the requirement totals, verdict notes, leftover jobs and report paths."""
    del exitstatus
    state = _state(config)
    if state is None or state.matrix is None:
        return
    terminalreporter.section("sc-conformance")
    target = _target_description(state)
    terminalreporter.write_line(
        f"target {target['url']} ({target['kind']}, auth {target['auth']}), "
        f"level {state.settings.level.value}"
    )
    for level, counts in state.matrix.totals().items():
        terminalreporter.write_line(
            f"{level:<6} "
            + ", ".join(f"{counts[name]} {name}" for name in report.OUTCOMES)
        )
    failing = state.matrix.with_outcome("fail", "error")
    if failing:
        terminalreporter.write_line(
            "failing requirements: "
            + ", ".join(
                result.requirement.id
                + (" (baseline)" if result.baseline is not None else "")
                for result in failing
            )
        )
    for line in state.verdict_lines:
        terminalreporter.write_line(line, bold=True)
    if state.worker_leftovers:
        terminalreporter.write_line("jobs that could not be deleted:", red=True)
        for leftover in state.worker_leftovers:
            terminalreporter.write_line(
                f"  {leftover.job_hash} (account {leftover.account}): {leftover.reason}"
            )
    for path in state.report_paths:
        terminalreporter.write_line(f"report: {path}")


# Fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sc_session(request: pytest.FixtureRequest) -> ConformanceSession:
    """The conformance session: target URL, accounts, ledger, job template.

    Skips when no target was given, so the bundled checks never fail for lack of one.
    """
    state = _state(request.config)
    if state is None or state.session is None:
        pytest.skip(NO_TARGET)
    return state.session


@pytest.fixture(scope="session")
def sc_auth_required(sc_session: ConformanceSession) -> None:
    """Skip unless the server enforces authentication (detected, or ``--sc-auth``)."""
    if not sc_session.auth_required:
        pytest.skip(
            f"the server does not enforce authentication ({sc_session.auth_source})"
        )


@pytest.fixture(scope="session")
def sc_auth_off(sc_session: ConformanceSession) -> None:
    """Skip unless the server runs without authentication."""
    if sc_session.auth_required:
        pytest.skip(f"the server enforces authentication ({sc_session.auth_source})")


@pytest.fixture(scope="session")
def sc_credentials(sc_session: ConformanceSession) -> Credentials:
    """The primary account; skips when none was given."""
    if sc_session.credentials is None:
        pytest.skip("no account given (--sc-username/--sc-key or --sc-credentials)")
    return sc_session.credentials


@pytest.fixture(scope="session")
def sc_client(sc_session: ConformanceSession) -> ServerClient:
    """A client for the primary account: the one that creates the suite's jobs.

    Skips when the server requires authentication and no account was given.
    """
    if sc_session.auth_required and sc_session.credentials is None:
        pytest.skip(
            "the server requires authentication and no account was given "
            "(--sc-username/--sc-key or --sc-credentials)"
        )
    return sc_session.client()


@pytest.fixture(scope="session")
def sc_anonymous_client(sc_session: ConformanceSession) -> ServerClient:
    """A client that sends no credentials at all."""
    return sc_session.client(None)


@pytest.fixture(scope="session")
def sc_other_client(
    sc_session: ConformanceSession, sc_auth_required: None
) -> ServerClient:
    """A client for a second account, for isolation checks.

    Skips without a second account, and when the server has no authentication (then
    accounts are not expected to be isolated at all).
    """
    del sc_auth_required
    if sc_session.other_credentials is None:
        pytest.skip("no second account given (--sc-other-username/--sc-other-key)")
    return sc_session.client(sc_session.other_credentials)


@pytest.fixture(scope="session")
def sc_key_client(
    sc_session: ConformanceSession, sc_auth_required: None
) -> ServerClient:
    """A client for the key account, which proves itself with its private key.

    Skips without a key account, and when the server has no authentication.
    """
    del sc_auth_required
    if sc_session.key_credentials is None:
        pytest.skip("no key account given (--sc-key-username/--sc-key-file)")
    return sc_session.client(sc_session.key_credentials)


@pytest.fixture(scope="session")
def sc_job_template(sc_session: ConformanceSession) -> JobTemplate:
    """The job definition the suite submits (shipped, or --sc-job-manifest/-archive)."""
    return sc_session.template


@pytest.fixture
def sc_submit(
    sc_session: ConformanceSession, sc_client: ServerClient
) -> Callable[..., SubmittedJob]:
    """Submit a job: ``sc_submit(client=None, upload=None, params_as_file=True)``.

    Every job is recorded in the cleanup ledger before it is sent and deleted at the
    end of the session whatever happens.
    """

    def submit(
        client: ServerClient | None = None,
        upload: JobUpload | None = None,
        *,
        params_as_file: bool = True,
    ) -> SubmittedJob:
        return sc_session.submit(
            client if client is not None else sc_client,
            upload,
            params_as_file=params_as_file,
        )

    return submit


@pytest.fixture
def sc_wait(
    sc_session: ConformanceSession,
) -> Callable[[ServerClient, JobUpload], JobWait]:
    """Wait for a job to finish (``--sc-job-timeout``), showing progress."""
    return sc_session.wait_for


@dataclasses.dataclass
class SharedJob:
    """One job run to completion once per session and shared by read-only checks."""

    job: SubmittedJob
    wait: JobWait | None


@pytest.fixture(scope="session")
def sc_shared_job(sc_session: ConformanceSession, sc_client: ServerClient) -> SharedJob:
    """Submit the shared job and wait for it; never fails, checks judge the outcome."""
    job = sc_session.submit(sc_client)
    wait = sc_session.wait_for(sc_client, job.upload) if job.accepted else None
    return SharedJob(job, wait)


@pytest.fixture(scope="session")
def sc_finished_job(sc_shared_job: SharedJob) -> SubmittedJob:
    """The shared job once finished; skips (with the reason) when it did not finish."""
    job, wait = sc_shared_job.job, sc_shared_job.wait
    if not job.accepted:
        status = job.response.status_code if job.response is not None else "none"
        pytest.skip(f"the shared job was not accepted (remote_run answered {status})")
    assert wait is not None
    if not wait.finished:
        pytest.skip(f"the shared job did not finish: {wait.problem}")
    return job


@pytest.fixture(scope="session")
def sc_results(sc_finished_job: SubmittedJob, sc_client: ServerClient) -> Any:
    """The shared job's ``get_results`` response, fetched once."""
    return sc_client.get_results(sc_finished_job.upload.job_hash)
