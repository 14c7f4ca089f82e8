"""Lifecycle checks: a real job through upload, progress, results and deletion.

One shared job serves every read-only check, so a run against a real server submits
few jobs; checks that change a job's state submit their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import requests

from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import ServerClient
from sc_conformance.client import json_message
from sc_conformance.jobs import ResultsInspection
from sc_conformance.jobs import final_manifest_path
from sc_conformance.jobs import inspect_results
from sc_conformance.plugin import SharedJob
from sc_conformance.session import ConformanceSession
from sc_conformance.session import JobWait
from sc_conformance.session import SubmittedJob
from sc_conformance.suite import expect

pytestmark = pytest.mark.lifecycle

STILL_RUNNING_MESSAGE = "Error: job is still running."
JOB_DELETED_TEXT = "Job deleted."


@pytest.mark.requirement("RUN-01")
def test_upload_is_accepted_and_names_the_job_hash(sc_shared_job: SharedJob) -> None:
    response = sc_shared_job.job.response
    assert response is not None
    expect.status(response, 200, what="remote_run of a valid job")
    job_hash = sc_shared_job.job.upload.job_hash
    assert job_hash in response.text, (
        "remote_run answered 200 without naming the job hash: "
        f"{expect.answer(response)}"
    )


@pytest.mark.requirement("RUN-02")
def test_params_sent_as_form_field_are_accepted(
    sc_session: ConformanceSession, sc_client: ServerClient
) -> None:
    job = sc_session.submit(sc_client, params_as_file=False)
    assert job.response is not None
    expect.status(job.response, 200, what="remote_run with params as a form field")


@pytest.mark.requirement("PRG-04")
def test_job_finishes_within_the_job_timeout(sc_shared_job: SharedJob) -> None:
    if not sc_shared_job.job.accepted:
        pytest.skip("the shared job was not accepted (see RUN-01)")
    wait = sc_shared_job.wait
    assert wait is not None
    assert wait.finished, f"the job did not finish: {wait.problem}"


@pytest.mark.requirement("PRG-01")
def test_progress_of_a_running_job_is_200_with_a_running_text(
    sc_shared_job: SharedJob,
) -> None:
    if not sc_shared_job.job.accepted:
        pytest.skip("the shared job was not accepted (see RUN-01)")
    wait = sc_shared_job.wait
    assert wait is not None
    if not wait.finished and wait.last_status != 200:
        pytest.fail(
            f"check_progress of a running job answered {wait.last_status} "
            f"{wait.last_text[:200]!r}",
            pytrace=False,
        )
    if not wait.running_seen:
        pytest.skip(
            "the job had no running steps by the first progress poll; the server may "
            "run jobs synchronously"
        )


@pytest.mark.requirement("PRG-02")
def test_progress_of_a_finished_job_is_exactly_the_finished_text(
    sc_finished_job: SubmittedJob, sc_client: ServerClient
) -> None:
    upload = sc_finished_job.upload
    response = sc_client.check_progress(upload.job_hash, upload.job_id)
    expect.status(response, 200, what="check_progress of a finished job")
    assert response.text == FINISHED_TEXT, (
        f"expected exactly {FINISHED_TEXT!r}, got {response.text[:200]!r}"
    )


@pytest.mark.requirement("PRG-03")
def test_progress_of_an_unknown_job_is_404(sc_client: ServerClient) -> None:
    response = sc_client.check_progress(expect.unknown_job_hash(), "job0")
    expect.status(response, 404, what="check_progress of an unknown job hash")


@pytest.mark.requirement("RES-01")
def test_results_of_a_finished_job_are_a_gzip_tar(
    sc_results: requests.Response, sc_finished_job: SubmittedJob
) -> None:
    expect.status(sc_results, 200, what="get_results of a finished job")
    inspection = inspect_results(sc_results.content, sc_finished_job.upload)
    assert inspection.error is None, (
        f"the results archive is unreadable: {inspection.error}"
    )


@pytest.mark.requirement("RES-02")
def test_results_response_names_the_archive(
    sc_results: requests.Response, sc_finished_job: SubmittedJob
) -> None:
    expect.status(sc_results, 200, what="get_results of a finished job")
    content_type = sc_results.headers.get("Content-Type", "").split(";")[0].strip()
    assert content_type in ("application/x-tar", "application/gzip"), (
        f"Content-Type is {content_type!r}"
    )
    disposition = sc_results.headers.get("Content-Disposition", "")
    filename = f"{sc_finished_job.upload.job_hash}.tar.gz"
    assert "attachment" in disposition and filename in disposition, (
        f"Content-Disposition is {disposition!r}, "
        f"expected an attachment named {filename}"
    )


def _readable_results(
    results: requests.Response, job: SubmittedJob
) -> ResultsInspection:
    """Inspect a finished job's results; an unreadable archive is RES-01's failure,
    so the checks of what it holds skip instead of failing twice."""
    expect.status(results, 200, what="get_results of a finished job")
    inspection = inspect_results(results.content, job.upload)
    if inspection.error is not None:
        pytest.skip(
            f"the results archive is unreadable (see RES-01): {inspection.error}"
        )
    return inspection


@pytest.mark.requirement("RES-03")
def test_results_are_confined_under_the_job_hash(
    sc_results: requests.Response, sc_finished_job: SubmittedJob
) -> None:
    inspection = _readable_results(sc_results, sc_finished_job)
    assert not inspection.confinement_problems, "; ".join(
        inspection.confinement_problems[:10]
    )


@pytest.mark.requirement("RES-04")
def test_results_hold_a_manifest_for_every_node(
    sc_results: requests.Response, sc_finished_job: SubmittedJob
) -> None:
    inspection = _readable_results(sc_results, sc_finished_job)
    assert not inspection.missing_node_manifests, (
        f"missing node manifests: {', '.join(inspection.missing_node_manifests)}"
    )


@pytest.mark.requirement("RES-09")
def test_results_hold_the_final_manifest(
    sc_results: requests.Response, sc_finished_job: SubmittedJob
) -> None:
    inspection = _readable_results(sc_results, sc_finished_job)
    assert inspection.has_final_manifest, (
        f"no final manifest {final_manifest_path(sc_finished_job.upload)}: the real "
        "client reads it to learn that the job succeeded"
    )


@pytest.mark.requirement("RES-05")
def test_results_of_an_unknown_job_are_404(sc_client: ServerClient) -> None:
    response = sc_client.get_results(expect.unknown_job_hash())
    expect.status(response, 404, what="get_results of an unknown job hash")


@pytest.mark.requirement("RES-06")
def test_results_of_a_running_job_are_refused(
    sc_session: ConformanceSession, sc_client: ServerClient
) -> None:
    job = expect.running_job(sc_session, sc_client)
    upload = job.upload
    response = sc_client.get_results(upload.job_hash)
    if 400 <= response.status_code < 500:
        return
    if response.status_code != 200:
        pytest.fail(
            f"get_results of a running job answered {expect.answer(response)}",
            pytrace=False,
        )
    progress = sc_client.check_progress(upload.job_hash, upload.job_id)
    if expect.is_running(progress):
        pytest.fail("get_results served an archive while the job was still running")
    inspection = inspect_results(response.content, upload)
    if inspection.error is not None or inspection.missing_node_manifests:
        pytest.fail("get_results served an incomplete archive of a job then running")
    pytest.skip("the job finished between the progress poll and the results request")


@pytest.mark.requirement("DEL-02")
def test_deleting_a_running_job_is_refused(
    sc_session: ConformanceSession, sc_client: ServerClient
) -> None:
    job = expect.running_job(sc_session, sc_client)
    response = sc_client.delete_job(job.upload.job_hash)
    expect.status(response, 400, what="delete_job of a running job")
    message = json_message(response)
    assert message == STILL_RUNNING_MESSAGE, (
        f"expected message {STILL_RUNNING_MESSAGE!r}, got {expect.answer(response)}"
    )


@pytest.mark.requirement("DEL-03")
def test_deleting_an_unknown_job_is_404(sc_client: ServerClient) -> None:
    response = sc_client.delete_job(expect.unknown_job_hash())
    expect.status(response, 404, what="delete_job of an unknown job hash")


@dataclasses.dataclass
class DeletedJob:
    """A job run to completion and deleted, with the answers around the deletion."""

    job: SubmittedJob
    wait: JobWait
    deletion: requests.Response


@pytest.fixture(scope="module")
def deleted_job(sc_session: ConformanceSession, sc_client: ServerClient) -> DeletedJob:
    job = sc_session.submit(sc_client)
    if not job.accepted:
        pytest.skip("the job was not accepted (see RUN-01)")
    wait = sc_session.wait_for(sc_client, job.upload)
    if not wait.finished:
        pytest.skip(f"the job did not finish (see PRG-04): {wait.problem}")
    return DeletedJob(job, wait, sc_session.delete(sc_client, job.upload.job_hash))


@pytest.mark.requirement("DEL-01")
def test_deleting_a_finished_job_answers_job_deleted_and_removes_results(
    deleted_job: DeletedJob, sc_client: ServerClient
) -> None:
    expect.status(deleted_job.deletion, 200, what="delete_job of a finished job")
    assert deleted_job.deletion.text.strip() == JOB_DELETED_TEXT, (
        f"expected {JOB_DELETED_TEXT!r}, got {expect.answer(deleted_job.deletion)}"
    )
    results = sc_client.get_results(deleted_job.job.upload.job_hash)
    assert results.status_code != 200, "get_results still serves the deleted job"


def _after_deletion(
    deleted_job: DeletedJob,
) -> None:
    if deleted_job.deletion.status_code != 200:
        pytest.skip("the job was not deleted (see DEL-01)")


@pytest.mark.requirement("RES-05")
def test_results_of_a_deleted_job_are_404(
    deleted_job: DeletedJob, sc_client: ServerClient
) -> None:
    _after_deletion(deleted_job)
    response = sc_client.get_results(deleted_job.job.upload.job_hash)
    expect.status(response, 404, what="get_results of a deleted job")


@pytest.mark.requirement("DEL-04")
def test_progress_of_a_deleted_job_is_404(
    deleted_job: DeletedJob, sc_client: ServerClient
) -> None:
    _after_deletion(deleted_job)
    upload = deleted_job.job.upload
    response = sc_client.check_progress(upload.job_hash, upload.job_id)
    expect.status(response, 404, what="check_progress of a deleted job")


@pytest.mark.requirement("DEL-03")
def test_deleting_a_deleted_job_again_is_404(
    deleted_job: DeletedJob, sc_client: ServerClient
) -> None:
    _after_deletion(deleted_job)
    response = sc_client.delete_job(deleted_job.job.upload.job_hash)
    expect.status(response, 404, what="a second delete_job of a deleted job")


@pytest.mark.requirement("RUN-06")
def test_reusing_a_job_hash_in_use_is_409(
    sc_session: ConformanceSession,
    sc_client: ServerClient,
    sc_submit: Callable[..., SubmittedJob],
) -> None:
    first = sc_submit()
    if not first.accepted:
        pytest.skip("the job was not accepted (see RUN-01)")
    second = sc_session.submit(sc_client, first.upload)
    assert second.response is not None
    expect.status(second.response, 409, what="remote_run with a job hash in use")
