"""Authentication checks: missing, wrong and unknown credentials on every endpoint,
the check_user quota answer, and isolation of one account's jobs from another's.

Checks that need authentication on, an account, or a second account skip with the
reason when the run was not given them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest
import requests

from sc_conformance.client import Credentials
from sc_conformance.client import ServerClient
from sc_conformance.session import ConformanceSession
from sc_conformance.session import SubmittedJob
from sc_conformance.suite import expect

pytestmark = pytest.mark.auth

ENDPOINTS = ("remote_run", "check_progress", "get_results", "delete_job", "check_user")
JOB_ENDPOINTS = ("check_progress", "get_results", "delete_job")


def _stranger() -> Credentials:
    return Credentials(f"nobody-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex)


@pytest.mark.requirement("AUTH-01")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.usefixtures("sc_auth_required")
def test_call_without_credentials_is_400(
    endpoint: str, sc_anonymous_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = expect.call_endpoint(endpoint, sc_anonymous_client, sc_session)
    expect.status(response, 400, what=f"{endpoint} without username and key")


@pytest.mark.requirement("AUTH-02")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.usefixtures("sc_auth_required")
def test_call_with_a_wrong_key_is_403(
    endpoint: str,
    sc_credentials: Credentials,
    sc_anonymous_client: ServerClient,
    sc_session: ConformanceSession,
) -> None:
    wrong = Credentials(sc_credentials.username, f"wrong-{uuid.uuid4().hex}")
    response = expect.call_endpoint(
        endpoint, sc_anonymous_client.with_credentials(wrong), sc_session
    )
    expect.status(response, 403, what=f"{endpoint} with a wrong key")


@pytest.mark.requirement("AUTH-03")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.usefixtures("sc_auth_required")
def test_call_as_an_unknown_user_is_403(
    endpoint: str, sc_anonymous_client: ServerClient, sc_session: ConformanceSession
) -> None:
    client = sc_anonymous_client.with_credentials(_stranger())
    response = expect.call_endpoint(endpoint, client, sc_session)
    expect.status(response, 403, what=f"{endpoint} as an unknown user")


def _shape(response: requests.Response, username: str) -> tuple[int, str]:
    """Status and body with the username masked: what a prober could compare."""
    return response.status_code, response.text.replace(username, "<username>")


@pytest.mark.requirement("AUTH-04")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.usefixtures("sc_auth_required")
def test_unknown_user_and_wrong_key_get_the_same_answer(
    endpoint: str,
    sc_credentials: Credentials,
    sc_anonymous_client: ServerClient,
    sc_session: ConformanceSession,
) -> None:
    stranger = _stranger()
    wrong = Credentials(sc_credentials.username, stranger.key)
    unknown_answer = expect.call_endpoint(
        endpoint, sc_anonymous_client.with_credentials(stranger), sc_session
    )
    wrong_answer = expect.call_endpoint(
        endpoint, sc_anonymous_client.with_credentials(wrong), sc_session
    )
    assert _shape(unknown_answer, stranger.username) == _shape(
        wrong_answer, sc_credentials.username
    ), (
        f"unknown user: {expect.answer(unknown_answer)}; wrong key: "
        f"{expect.answer(wrong_answer)}"
    )


@pytest.mark.requirement("TR-03")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.usefixtures("sc_auth_required")
def test_authentication_errors_carry_a_message(
    endpoint: str, sc_anonymous_client: ServerClient, sc_session: ConformanceSession
) -> None:
    client = sc_anonymous_client.with_credentials(_stranger())
    response = expect.call_endpoint(endpoint, client, sc_session)
    expect.client_error(response, what=f"{endpoint} as an unknown user")
    expect.error_body(response, what=f"{endpoint} as an unknown user")


@pytest.mark.requirement("AUTH-06")
@pytest.mark.parametrize("endpoint", ("remote_run", "check_progress"))
@pytest.mark.usefixtures("sc_auth_off")
def test_calls_without_credentials_are_served_when_auth_is_off(
    endpoint: str,
    sc_anonymous_client: ServerClient,
    sc_session: ConformanceSession,
) -> None:
    if endpoint == "remote_run":
        job = sc_session.submit(sc_anonymous_client)
        assert job.response is not None
        expect.status(job.response, 200, what="remote_run without credentials")
        return
    response = sc_anonymous_client.check_progress(expect.unknown_job_hash(), "job0")
    expect.status(response, 200, 404, what="check_progress without credentials")


@pytest.mark.requirement("USR-01")
@pytest.mark.usefixtures("sc_auth_required", "sc_credentials")
def test_check_user_reports_remaining_quota(sc_client: ServerClient) -> None:
    response = sc_client.check_user()
    expect.status(response, 200, what="check_user with valid credentials")
    try:
        quota = response.json()
    except ValueError:
        pytest.fail(f"check_user answered no JSON: {expect.answer(response)}")
    assert isinstance(quota, dict), f"expected a JSON object, got {quota!r}"
    for field in ("compute_time", "bandwidth_kb"):
        value = quota.get(field)
        assert type(value) is int, f"{field} should be an integer, got {value!r}"


@pytest.mark.requirement("USR-02")
@pytest.mark.parametrize("who", ("wrong key", "unknown user"))
@pytest.mark.usefixtures("sc_auth_required")
def test_check_user_with_bad_credentials_is_403(
    who: str, sc_credentials: Credentials, sc_anonymous_client: ServerClient
) -> None:
    stranger = _stranger()
    credentials = (
        Credentials(sc_credentials.username, stranger.key)
        if who == "wrong key"
        else stranger
    )
    response = sc_anonymous_client.with_credentials(credentials).check_user()
    expect.status(response, 403, what=f"check_user with a {who}")


@pytest.mark.requirement("USR-03")
@pytest.mark.parametrize("missing", ("username", "key", "both"))
@pytest.mark.usefixtures("sc_auth_required")
def test_check_user_missing_a_field_is_400(
    missing: str, sc_credentials: Credentials, sc_anonymous_client: ServerClient
) -> None:
    body = {
        name: value
        for name, value in sc_credentials.as_fields().items()
        if missing not in (name, "both")
    }
    response = sc_anonymous_client.post_json("check_user/", body)
    expect.status(response, 400, what=f"check_user without {missing}")


@pytest.mark.requirement("USR-04")
@pytest.mark.usefixtures("sc_auth_off")
def test_check_user_without_accounts_is_400_or_404(
    sc_anonymous_client: ServerClient,
) -> None:
    response = sc_anonymous_client.with_credentials(_stranger()).check_user()
    expect.status(response, 400, 404, what="check_user on a server without accounts")


@dataclasses.dataclass
class OwnedJob:
    """A finished job of the primary account, for another account to try to touch."""

    job: SubmittedJob


@pytest.fixture(scope="module")
def owned_job(
    sc_session: ConformanceSession,
    sc_client: ServerClient,
    sc_other_client: ServerClient,
) -> OwnedJob:
    del sc_other_client
    job = sc_session.submit(sc_client)
    if not job.accepted:
        pytest.skip("the job was not accepted (see RUN-01)")
    wait = sc_session.wait_for(sc_client, job.upload)
    if not wait.finished:
        pytest.skip(f"the job did not finish (see PRG-04): {wait.problem}")
    return OwnedJob(job)


@pytest.mark.requirement("AUTH-05")
@pytest.mark.parametrize("endpoint", JOB_ENDPOINTS)
def test_another_account_cannot_touch_a_job(
    endpoint: str,
    owned_job: OwnedJob,
    sc_other_client: ServerClient,
    sc_client: ServerClient,
) -> None:
    upload = owned_job.job.upload
    calls: dict[str, Callable[[], requests.Response]] = {
        "check_progress": lambda: sc_other_client.check_progress(
            upload.job_hash, upload.job_id
        ),
        "get_results": lambda: sc_other_client.get_results(upload.job_hash),
        "delete_job": lambda: sc_other_client.delete_job(upload.job_hash),
    }
    response = calls[endpoint]()
    expect.status(response, 403, 404, what=f"{endpoint} of another account's job")
    if endpoint == "delete_job":
        owner_view = sc_client.check_progress(upload.job_hash, upload.job_id)
        assert owner_view.status_code == 200, (
            "the job is gone for its owner after another account's refused delete: "
            f"{expect.answer(owner_view)}"
        )
