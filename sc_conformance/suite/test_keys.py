"""Key account checks: the private key proves the account, another key is refused,
text that is no key is a bad request, and encryption at rest changes no results.

They need a key account (``--sc-key-username``/``--sc-key-file``; the embedded mock
makes its own) and skip with the reason without one.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid

import pytest
import requests

from sc_conformance import keys
from sc_conformance.client import Credentials
from sc_conformance.client import ServerClient
from sc_conformance.jobs import results_fingerprint
from sc_conformance.session import ConformanceSession
from sc_conformance.session import SubmittedJob
from sc_conformance.suite import expect

pytestmark = pytest.mark.auth

ENDPOINTS = ("remote_run", "check_progress", "get_results", "check_user", "delete_job")
"""Every endpoint, delete_job last: a server that wrongly obeys it loses the job
the other checks of the module read."""

NOT_KEYS = {
    "password": uuid.uuid4().hex,
    "broken-pem": base64.b64encode(
        b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    ).decode("ascii"),
}
"""Keys that are no private key: a password, and PEM armour around nothing."""

DIFFERENCES_SHOWN = 10


@dataclasses.dataclass
class KeyJob:
    """A finished job of the key account."""

    job: SubmittedJob


@pytest.fixture(scope="module")
def key_job(sc_session: ConformanceSession, sc_key_client: ServerClient) -> KeyJob:
    job = sc_session.submit(sc_key_client)
    if not job.accepted:
        assert job.response is not None
        pytest.skip(
            "the key account's job was not accepted: remote_run answered "
            f"{expect.answer(job.response)}"
        )
    wait = sc_session.wait_for(sc_key_client, job.upload)
    if not wait.finished:
        pytest.skip(f"the key account's job did not finish: {wait.problem}")
    return KeyJob(job)


@pytest.fixture(scope="module")
def foreign_key_client(
    sc_session: ConformanceSession, sc_key_client: ServerClient
) -> ServerClient:
    """The key account's name with a well-formed private key of nobody's."""
    assert sc_key_client.credentials is not None
    foreign_key, _ = keys.new_private_key()
    sc_session.redactor.add(foreign_key, "SC_FOREIGN_KEY")
    foreign = Credentials(
        sc_key_client.credentials.username, foreign_key, key_variable="SC_FOREIGN_KEY"
    )
    return sc_key_client.with_credentials(foreign)


@pytest.mark.requirement("KEY-01")
def test_key_account_is_accepted_with_its_private_key(
    sc_key_client: ServerClient,
) -> None:
    response = sc_key_client.check_user()
    expect.status(response, 200, what="check_user of a key account with its key")


@pytest.mark.requirement("KEY-02")
def test_key_account_results_equal_password_account_results(
    key_job: KeyJob,
    sc_key_client: ServerClient,
    sc_results: requests.Response,
    sc_finished_job: SubmittedJob,
) -> None:
    """Both jobs are uploads of the same job template, so only the job hash differs.

    Member names and kinds must match exactly, and so must every file's bytes with
    the job hash masked, except what records the run rather than the job: logs are
    compared by name only, manifests without their ``record`` section (see
    ``jobs.results_fingerprint``).
    """
    if sc_results.status_code != 200:
        pytest.skip(
            "the password account's results are not served (see RES-01): "
            f"{expect.answer(sc_results)}"
        )
    try:
        expected = results_fingerprint(
            sc_results.content, sc_finished_job.upload.job_hash
        )
    except ValueError as error:
        pytest.skip(f"the password account's results are unreadable: {error}")
    response = sc_key_client.get_results(key_job.job.upload.job_hash)
    expect.status(response, 200, what="get_results of the key account's job")
    try:
        found = results_fingerprint(response.content, key_job.job.upload.job_hash)
    except ValueError as error:
        pytest.fail(f"the key account's results are unreadable: {error}")

    differences = [
        *(f"missing {path}" for path in sorted(expected.keys() - found.keys())),
        *(f"extra {path}" for path in sorted(found.keys() - expected.keys())),
        *(
            f"{path}: {found[path]}, expected {expected[path]}"
            for path in sorted(expected.keys() & found.keys())
            if found[path] != expected[path]
        ),
    ]
    assert not differences, (
        f"{len(differences)} difference(s) from a password account's results of "
        "the same upload: " + "; ".join(differences[:DIFFERENCES_SHOWN])
    )


def _call(
    endpoint: str,
    client: ServerClient,
    session: ConformanceSession,
    job: SubmittedJob,
) -> requests.Response:
    """Call *endpoint* about the key account's *job* (a new upload for remote_run)."""
    if endpoint == "remote_run":
        upload = session.submit(client)
        assert upload.response is not None
        return upload.response
    if endpoint == "check_progress":
        return client.check_progress(job.upload.job_hash, job.upload.job_id)
    if endpoint == "get_results":
        return client.get_results(job.upload.job_hash)
    if endpoint == "delete_job":
        return client.delete_job(job.upload.job_hash)
    return client.check_user()


@pytest.mark.requirement("KEY-01")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_another_private_key_is_403(
    endpoint: str,
    key_job: KeyJob,
    foreign_key_client: ServerClient,
    sc_key_client: ServerClient,
    sc_session: ConformanceSession,
) -> None:
    response = _call(endpoint, foreign_key_client, sc_session, key_job.job)
    expect.status(
        response, 403, what=f"{endpoint} of a key account with another private key"
    )
    if endpoint == "delete_job":
        upload = key_job.job.upload
        owner_view = sc_key_client.check_progress(upload.job_hash, upload.job_id)
        assert owner_view.status_code == 200, (
            "the job is gone for its owner after a refused delete with another "
            f"private key: {expect.answer(owner_view)}"
        )


@pytest.mark.requirement("KEY-03")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("not_a_key", sorted(NOT_KEYS))
def test_a_key_that_is_no_private_key_is_400(
    endpoint: str,
    not_a_key: str,
    sc_key_client: ServerClient,
    sc_session: ConformanceSession,
) -> None:
    assert sc_key_client.credentials is not None
    client = sc_key_client.with_credentials(
        Credentials(sc_key_client.credentials.username, NOT_KEYS[not_a_key])
    )
    response = expect.call_endpoint(endpoint, client, sc_session)
    expect.status(
        response, 400, what=f"{endpoint} of a key account with a {not_a_key} as key"
    )
