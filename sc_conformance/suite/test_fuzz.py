"""Fuzz checks: generated requests, derived from the request schemas, never crash
the server; valid ones are answered or refused for a reason, broken ones get 4xx.

Each check draws ``--sc-fuzz-examples`` requests with seed ``--sc-fuzz-seed`` at no
more than ``--sc-fuzz-rate`` requests per second; a failure shows the shrunk request
and a curl line that replays it.
"""

from __future__ import annotations

import pytest
import requests

from sc_conformance import strategies
from sc_conformance.client import json_message
from sc_conformance.fuzzing import FuzzRun
from sc_conformance.fuzzing import fuzz_run
from sc_conformance.session import ConformanceSession
from sc_conformance.strategies import FuzzRequest

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def fuzz(request: pytest.FixtureRequest, sc_session: ConformanceSession) -> FuzzRun:
    return fuzz_run(request.config, sc_session)


def _credential_fields(session: ConformanceSession) -> dict[str, str] | None:
    return None if session.credentials is None else session.credentials.as_fields()


def _refusal_states_a_reason(
    fuzz: FuzzRun, request: FuzzRequest, response: requests.Response
) -> None:
    if response.status_code >= 500:
        fuzz.fail(request, "no 5xx", response)
    if response.status_code >= 400 and json_message(response) is None:
        fuzz.fail(request, 'a refusal with a JSON {"message": ...} reason', response)


@pytest.mark.requirement("FUZ-01", "TR-04")
@pytest.mark.parametrize("endpoint", strategies.JSON_ENDPOINTS)
def test_valid_bodies_are_answered_without_5xx(
    endpoint: str, fuzz: FuzzRun, sc_session: ConformanceSession
) -> None:
    def judge(request: FuzzRequest) -> None:
        _refusal_states_a_reason(fuzz, request, fuzz.send(request))

    fuzz.run(strategies.valid_requests(endpoint, _credential_fields(sc_session)), judge)


@pytest.mark.requirement("FUZ-02")
@pytest.mark.parametrize("endpoint", strategies.JSON_ENDPOINTS)
def test_schema_breaking_bodies_get_4xx(endpoint: str, fuzz: FuzzRun) -> None:
    def judge(request: FuzzRequest) -> None:
        response = fuzz.send(request)
        if not 400 <= response.status_code < 500:
            fuzz.fail(request, "a 4xx for a body that breaks the schema", response)

    fuzz.run(strategies.invalid_requests(endpoint), judge)


@pytest.mark.requirement("FUZ-03")
def test_malformed_uploads_get_4xx_and_create_no_job(
    fuzz: FuzzRun, sc_session: ConformanceSession
) -> None:
    template = sc_session.template
    credentials = sc_session.credentials

    def judge(request: FuzzRequest) -> None:
        assert request.job_hash is not None
        entry = sc_session.ledger.record(request.job_hash, template.job_id, credentials)
        response = fuzz.send(request)
        entry.accepted = response.status_code == 200
        if not 400 <= response.status_code < 500:
            fuzz.fail(request, "a 4xx for a malformed upload", response)
        if fuzz.job_exists(request.job_hash, template.job_id):
            fuzz.fail(request, "no job after a refused upload", response)

    fuzz.run(
        strategies.remote_run_uploads(
            template.manifest, template.import_archive, _credential_fields(sc_session)
        ),
        judge,
    )
