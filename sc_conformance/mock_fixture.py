"""The ``sc_mock_server`` fixture: the mock job server as a client developer's tool.

Any project that installed ``sc-conformance`` gets it, with or without ``--sc-mock``.
One mock per test session (per xdist worker) starts the first time a test asks for
it, on loopback with a temporary storage root, and is reset before every test that
uses it: no job, no fault, an empty journal, authentication off.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest

if TYPE_CHECKING:
    from mock_server import MockServer
    from mock_server.control import NodeRun
    from mock_server.faults import ScheduledFault
    from mock_server.harness import Harness
    from mock_server.journal import JournalEntry

FIXTURE_NODE_SECONDS = 0.01
"""Node duration of the fixture's mock: client tests should not wait on jobs."""


class ScMockServer:
    """A running mock server and its controls, as the ``sc_mock_server`` fixture."""

    def __init__(self, server: MockServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        """The base URL, ending with ``/``: give it to the client under test."""
        return self.server.url

    @property
    def root(self) -> Path:
        return self.server.root

    @property
    def harness(self) -> Harness:
        return self.server.harness

    def reset(self) -> None:
        """No job, no fault, no added account, an empty journal, auth off."""
        self.harness.reset()

    # -- the journal -------------------------------------------------------------

    @property
    def journal(self) -> list[JournalEntry]:
        """Every request received since the last reset, in arrival order."""
        return self.harness.journal.entries()

    def calls(self, endpoint: str | None = None) -> list[JournalEntry]:
        """The requests to one endpoint (``remote_run``, ``get_results``, ...)."""
        return self.harness.journal.entries(endpoint)

    def assert_called(
        self, endpoint: str, times: int | None = None, status: int | None = None
    ) -> list[JournalEntry]:
        """Assert *endpoint* was called (exactly *times* times, if given), counting
        only answers with *status* when given; return the matching calls."""
        calls = [
            entry
            for entry in self.calls(endpoint)
            if status is None or entry.status == status
        ]
        what = endpoint if status is None else f"{endpoint} answered {status}"
        if times is None and not calls:
            raise AssertionError(f"{what} was never called\n{self._listing()}")
        if times is not None and len(calls) != times:
            raise AssertionError(
                f"{what} was called {len(calls)} times, expected {times}\n"
                f"{self._listing()}"
            )
        return calls

    def assert_not_called(self, endpoint: str) -> None:
        self.assert_called(endpoint, times=0)

    def _listing(self) -> str:
        lines = [
            f"  {entry.method} {entry.path} -> {entry.status}"
            + (f" (fault: {entry.fault})" if entry.fault else "")
            for entry in self.journal
        ]
        return "requests received:\n" + ("\n".join(lines) or "  none")

    # -- faults ------------------------------------------------------------------

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int | None = 1,
        probability: float = 1.0,
        **options: Any,
    ) -> int:
        """Schedule a fault (see ``mock_server.faults.Fault`` for *options*):
        ``add_fault("remote_run", "status", status=503, times=2)``. Returns its id."""
        from mock_server.faults import Fault

        fault = Fault(
            kind=kind,  # type: ignore[arg-type]
            endpoint=endpoint,
            times=times,
            probability=probability,
            **options,
        )
        return self.harness.faults.add(fault)

    @property
    def faults(self) -> list[ScheduledFault]:
        """Scheduled faults with what is left of them and how often they fired."""
        return self.harness.faults.scheduled()

    def clear_faults(self) -> None:
        self.harness.faults.clear()

    # -- accounts ----------------------------------------------------------------

    def add_account(
        self,
        username: str,
        password: str,
        *,
        compute_time: int | None = None,
        bandwidth: int | None = None,
    ) -> dict[str, str]:
        """Add an account (quota defaults: plenty); returns the credential fields
        a client sends, ``{"username", "key"}``. Turn on ``require_auth()`` too."""
        from mock_server.scenario import AccountSpec

        quotas = {
            name: value
            for name, value in (
                ("compute_time", compute_time),
                ("bandwidth", bandwidth),
            )
            if value is not None
        }
        self.harness.add_account(AccountSpec(username, password, **quotas))
        return {"username": username, "key": password}

    def remove_account(self, username: str) -> None:
        self.harness.remove_account(username)

    def require_auth(self, enabled: bool = True) -> None:
        """Make every call need ``username`` and ``key`` (off after each reset)."""
        self.harness.set_auth(enabled)

    def quota(self, username: str) -> Mapping[str, float]:
        quota = self.server.app.store.quota(username)
        return {"compute_time": quota.compute_time, "bandwidth_kb": quota.bandwidth_kb}

    # -- jobs --------------------------------------------------------------------

    def script_jobs(
        self,
        progress: str = "time",
        *,
        node_seconds: float | None = None,
        node_durations: Mapping[str, float] | None = None,
        fail_nodes: Iterable[str] = (),
        polls_per_node: int = 1,
    ) -> None:
        """Say how the jobs accepted from now on run: ``progress`` ``time`` (nodes
        take their durations), ``polls`` (every *polls_per_node* ``check_progress``
        calls finish a node) or ``manual`` (nodes finish on ``advance()``)."""
        from mock_server.control import JobScript

        self.harness.jobs.set_default_script(
            JobScript(
                progress=progress,  # type: ignore[arg-type]
                node_seconds=node_seconds,
                node_durations=dict(node_durations or {}),
                fail_nodes=frozenset(fail_nodes),
                polls_per_node=polls_per_node,
            )
        )

    def advance(self, job_hash: str | None = None, nodes: int = 1) -> list[str]:
        """Finish the running node(s) of one job, or of every running job; returns
        once each job runs its next node or has ended."""
        jobs = [job_hash] if job_hash is not None else self.harness.jobs.running_jobs()
        for job in jobs:
            self.harness.jobs.advance(job, nodes)
        return jobs

    def node_runs(self, job_hash: str | None = None) -> list[NodeRun]:
        """Which nodes ran, in which process, with which outcome."""
        return self.harness.jobs.node_runs(job_hash)

    def uploaded_manifest(self, job_hash: str) -> dict[str, Any]:
        """The manifest (``chip_cfg``) the client uploaded with a job."""
        configs = self.root / "jobs" / job_hash / "configs"
        manifests = sorted(configs.glob("chip*.json"))
        if not manifests:
            raise LookupError(f"no job {job_hash} on the mock server")
        return json.loads(manifests[0].read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def _sc_mock_server_thread(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MockServer]:
    """The session's mock server; started only when a test asks for it."""
    from mock_server import MockConfig
    from mock_server import MockServer

    root = tmp_path_factory.mktemp("sc-mock-server")
    config = MockConfig(root=root, node_seconds=FIXTURE_NODE_SECONDS)
    with MockServer(config) as server:
        yield server


@pytest.fixture
def sc_mock_server(_sc_mock_server_thread: MockServer) -> ScMockServer:
    """A mock SiliconCompiler job server on loopback, reset for this test.

    ``url`` for the client, ``journal``/``assert_called`` for what it sent,
    ``add_fault`` for a misbehaving server, ``script_jobs``/``advance`` for job
    progress, ``add_account``/``require_auth`` for accounts.
    """
    handle = ScMockServer(_sc_mock_server_thread)
    handle.reset()
    return handle
