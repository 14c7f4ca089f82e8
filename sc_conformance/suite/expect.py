"""Assertions shared by the bundled checks, worded for a conformance report.

A failed check names the requirement's expectation and what the server actually said,
so the report line is readable without the traceback.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import ServerClient
from sc_conformance.client import json_message
from sc_conformance.client import trim
from sc_conformance.session import ConformanceSession
from sc_conformance.session import SubmittedJob

BODY_IN_MESSAGE = 300


def answer(response: requests.Response) -> str:
    """The status and start of the body, for a failure message."""
    content = response.content
    if content[:2] == b"\x1f\x8b":
        shown = f"({len(content)} bytes of gzip data)"
    else:
        shown = trim(content.decode("utf-8", "replace").strip(), BODY_IN_MESSAGE)
    return f"{response.status_code} {shown!r}"


def status(response: requests.Response, *expected: int, what: str) -> None:
    """Fail unless the response status is one of *expected*."""
    if response.status_code not in expected:
        wanted = " or ".join(str(code) for code in expected)
        pytest.fail(f"{what}: expected {wanted}, got {answer(response)}", pytrace=False)


def client_error(response: requests.Response, *, what: str) -> None:
    """Fail unless the response is a 4xx."""
    if not 400 <= response.status_code < 500:
        pytest.fail(f"{what}: expected a 4xx, got {answer(response)}", pytrace=False)


def error_body(response: requests.Response, *, what: str) -> None:
    """Fail unless an error response carries ``{"message": "<string>"}``."""
    if json_message(response) is None:
        pytest.fail(
            f"{what}: expected a JSON object with a string 'message', got "
            f"{answer(response)}",
            pytrace=False,
        )


def unknown_job_hash() -> str:
    """A job hash no server has seen."""
    return uuid.uuid4().hex


def call_endpoint(
    endpoint: str, client: ServerClient, session: ConformanceSession
) -> requests.Response:
    """Call one endpoint about a job nobody owns, as *client*'s account.

    Uploads go through the session so that a server which wrongly accepts one still
    gets the job deleted at the end.
    """
    job_hash = unknown_job_hash()
    if endpoint == "remote_run":
        job = session.submit(client, session.template.new_upload(job_hash))
        assert job.response is not None
        return job.response
    if endpoint == "check_progress":
        return client.check_progress(job_hash, session.template.job_id)
    if endpoint == "get_results":
        return client.get_results(job_hash)
    if endpoint == "delete_job":
        return client.delete_job(job_hash)
    return client.check_user()


def is_running(response: requests.Response) -> bool:
    return response.status_code == 200 and response.text.strip() != FINISHED_TEXT


def running_job(session: ConformanceSession, client: ServerClient) -> SubmittedJob:
    """Submit a job and confirm it is running; skip when that cannot be observed.

    The reference server runs a job to completion before it answers anything else,
    so the running state is unobservable there: that is a skip, not a failure.
    """
    job = session.submit(client)
    if not job.accepted:
        assert job.response is not None
        pytest.skip(
            f"the job was not accepted: remote_run answered {answer(job.response)}"
        )
    progress = client.check_progress(job.upload.job_hash, job.upload.job_id)
    if not is_running(progress):
        pytest.skip(
            "the job had no running steps by the first progress poll "
            f"({answer(progress)}); the server may run jobs synchronously"
        )
    return job
