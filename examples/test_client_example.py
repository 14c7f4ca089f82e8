"""Testing a client against the mock with the ``sc_mock_server`` fixture.

Copy this file next to your client and swap ``sc_client`` for it: each test makes
the mock misbehave in one way, drives the client, and checks what the client did
through its results and through the mock's journal of the requests it received.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sc_client import Job
from sc_client import JobNotFound
from sc_client import RedirectRefused
from sc_client import ResultsArchiveError
from sc_client import RetryPolicy
from sc_client import ScClient
from sc_client import ServerBusy
from werkzeug.serving import make_server
from werkzeug.utils import redirect
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from mock_server.journal import REDACTED
from sc_conformance.hostile import shipped_import_path
from sc_conformance.jobs import load_job
from sc_conformance.mock_fixture import ScMockServer

POLL_SECONDS = 2.0
NODES_TO_RUN = 3
"""The shipped job's nodes the server runs: work0, work1, merge0 (the client ran
import0 itself; its outputs came in the import archive)."""


@pytest.fixture
def job() -> Job:
    """The job shipped with sc-conformance: no SiliconCompiler needed to submit it."""
    template = load_job()
    return Job(
        manifest=template.manifest,
        import_archive=shipped_import_path(),
        design=template.design,
        job_id=template.job_id,
        flow=template.flow,
    )


@pytest.fixture(autouse=True)
def one_node_per_poll(sc_mock_server: ScMockServer) -> None:
    """Every ``check_progress`` finishes one node: the number of polls a job takes
    is known, and no test depends on how fast the machine is."""
    sc_mock_server.script_jobs("polls")


@pytest.fixture
def waits() -> list[float]:
    """The seconds the client chose to wait, in order (it is given no real sleep)."""
    return []


@pytest.fixture
def client(sc_mock_server: ScMockServer, waits: list[float]) -> Iterator[ScClient]:
    with ScClient(
        sc_mock_server.url, poll_seconds=POLL_SECONDS, sleep=waits.append
    ) as client:
        yield client


def finished_job(client: ScClient, job: Job) -> str:
    job_hash = client.submit(job)
    client.wait_for_job(job_hash, job.job_id)
    return job_hash


# -- busy servers --------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_submit_is_retried_after_the_wait_retry_after_asks_for(
    sc_mock_server: ScMockServer,
    client: ScClient,
    job: Job,
    waits: list[float],
    status: int,
) -> None:
    sc_mock_server.add_fault(
        "remote_run", "status", status=status, times=2, retry_after=7
    )

    job_hash = client.submit(job)

    assert waits == [7, 7]
    sc_mock_server.assert_called("remote_run", times=2, status=status)
    accepted = sc_mock_server.assert_called("remote_run", times=1, status=200)[0]
    assert accepted.job_hash == job_hash
    assert accepted.fields is not None
    assert accepted.fields["import"]["bytes"] == job.import_archive.stat().st_size


def test_client_gives_up_when_the_server_stays_busy(
    sc_mock_server: ScMockServer, job: Job, waits: list[float]
) -> None:
    sc_mock_server.add_fault("remote_run", "status", status=503, times=None)
    policy = RetryPolicy(attempts=3)

    with ScClient(sc_mock_server.url, retry=policy, sleep=waits.append) as client:
        with pytest.raises(ServerBusy, match="remote_run: HTTP 503") as refused:
            client.submit(job)

    assert refused.value.status == 503
    assert waits == [1, 1]  # the mock's Retry-After when a fault names none
    sc_mock_server.assert_called("remote_run", times=3, status=503)


# -- redirects -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [307, 308])
def test_redirected_upload_is_sent_again_in_full(
    sc_mock_server: ScMockServer, client: ScClient, job: Job, status: int
) -> None:
    sc_mock_server.add_fault("remote_run", "redirect", status=status)

    job_hash = client.submit(job)

    redirected, resent = sc_mock_server.assert_called("remote_run", times=2)
    assert (redirected.path, redirected.status) == ("/remote_run/", status)
    assert (resent.path, resent.status) == ("/_moved/remote_run/", 200)
    assert resent.body_bytes == redirected.body_bytes
    assert resent.fields is not None
    assert resent.fields["import"]["bytes"] == job.import_archive.stat().st_size
    assert resent.job_hash == job_hash
    client.wait_for_job(job_hash, job.job_id)


@pytest.fixture
def other_origin(sc_mock_server: ScMockServer) -> Iterator[str]:
    """A second server on loopback (another port: another origin) that answers
    every request with a 307 to the mock."""

    @Request.application
    def send_to_mock(request: Request) -> Response:
        request.get_data()  # read the upload, so closing does not reset the client
        return redirect(sc_mock_server.url + request.path.lstrip("/"), code=307)

    server = make_server("127.0.0.1", 0, send_to_mock, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join()
    server.server_close()


def test_redirect_to_another_origin_is_not_followed(
    sc_mock_server: ScMockServer, other_origin: str, job: Job
) -> None:
    credentials = sc_mock_server.add_account("alice", "alice-secret")

    with ScClient(other_origin, credentials) as client:
        with pytest.raises(RedirectRefused, match="another origin"):
            client.submit(job)

    sc_mock_server.assert_not_called("remote_run")


# -- jobs that fail ------------------------------------------------------------------


def test_failed_node_finishes_the_job_and_shows_error_in_the_results(
    sc_mock_server: ScMockServer,
    client: ScClient,
    job: Job,
    waits: list[float],
    tmp_path: Path,
) -> None:
    sc_mock_server.script_jobs("polls", fail_nodes=["work1"])

    job_hash = client.submit(job)
    client.wait_for_job(job_hash, job.job_id)
    results = client.download_results(job_hash, tmp_path / "results.tar.gz")

    sc_mock_server.assert_called("check_progress", times=2, status=200)
    assert waits == [POLL_SECONDS]
    assert results.node_status(job, "work", "0") == "success"
    assert results.node_status(job, "work", "1") == "error"
    assert results.node_status(job, "merge", "0") is None  # skipped: no outputs
    assert [(run.node, run.outcome) for run in sc_mock_server.node_runs(job_hash)] == [
        ("work0", "success"),
        ("work1", "error"),
    ]


# -- broken downloads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_length", "complaint"),
    [
        ("full", "was cut off after"),
        ("truncated", "is broken: not a valid gzip tar"),
    ],
)
def test_truncated_results_archive_raises_a_clear_error(
    sc_mock_server: ScMockServer,
    client: ScClient,
    job: Job,
    tmp_path: Path,
    content_length: str,
    complaint: str,
) -> None:
    job_hash = finished_job(client, job)
    destination = tmp_path / "results.tar.gz"
    sc_mock_server.add_fault("get_results", "truncate", content_length=content_length)

    with pytest.raises(ResultsArchiveError, match=f"job {job_hash} {complaint}"):
        client.download_results(job_hash, destination)

    assert list(tmp_path.iterdir()) == []
    assert sc_mock_server.calls("get_results")[0].fault == "truncate"
    results = client.download_results(job_hash, destination)
    assert results.node_status(job, "merge", "0") == "success"


# -- what the client sent ------------------------------------------------------------


def test_a_job_calls_each_endpoint_once_and_polls_once_per_node(
    sc_mock_server: ScMockServer, client: ScClient, job: Job, tmp_path: Path
) -> None:
    job_hash = finished_job(client, job)
    client.download_results(job_hash, tmp_path / "results.tar.gz")
    client.delete_job(job_hash)

    assert [entry.endpoint for entry in sc_mock_server.journal] == [
        "remote_run",
        *["check_progress"] * NODES_TO_RUN,
        "get_results",
        "delete_job",
    ]
    sc_mock_server.assert_called("remote_run", times=1, status=200)
    polls = sc_mock_server.assert_called(
        "check_progress", times=NODES_TO_RUN, status=200
    )
    assert {(poll.job_hash, poll.json["job_id"]) for poll in polls} == {
        (job_hash, job.job_id)
    }
    download = sc_mock_server.assert_called("get_results", times=1, status=200)[0]
    assert download.path == f"/get_results/{job_hash}.tar.gz"
    sc_mock_server.assert_called("delete_job", times=1, status=200)
    sc_mock_server.assert_not_called("check_user")


def test_every_call_carries_the_account_and_the_journal_hides_its_key(
    sc_mock_server: ScMockServer, job: Job, tmp_path: Path
) -> None:
    credentials = sc_mock_server.add_account("alice", "alice-secret", bandwidth=500)
    sc_mock_server.require_auth()

    with ScClient(sc_mock_server.url, credentials, sleep=lambda _: None) as client:
        quota = client.check_user()
        job_hash = finished_job(client, job)
        client.download_results(job_hash, tmp_path / "results.tar.gz")

    assert quota["bandwidth_kb"] == 500
    upload = sc_mock_server.assert_called("remote_run", times=1, status=200)[0]
    assert upload.json["params"] == {
        "job_hash": job_hash,
        "username": "alice",
        "key": REDACTED,
    }
    json_calls = [
        entry for entry in sc_mock_server.journal if entry.endpoint != "remote_run"
    ]
    assert [entry.endpoint for entry in json_calls] == [
        "check_user",
        *["check_progress"] * NODES_TO_RUN,
        "get_results",
    ]
    assert all(
        (entry.json["username"], entry.json["key"]) == ("alice", REDACTED)
        for entry in json_calls
    )
    assert all(entry.status == 200 for entry in sc_mock_server.journal)


def test_results_of_a_deleted_job_are_not_found(
    sc_mock_server: ScMockServer, client: ScClient, job: Job, tmp_path: Path
) -> None:
    job_hash = finished_job(client, job)
    client.delete_job(job_hash)

    with pytest.raises(JobNotFound):
        client.download_results(job_hash, tmp_path / "results.tar.gz")

    with pytest.raises(JobNotFound):
        client.progress(job_hash, job.job_id)

    sc_mock_server.assert_called("get_results", times=1, status=404)
    sc_mock_server.assert_called("check_progress", status=404)
