"""Schema checks: every endpoint's field rules, bodies, methods and error shape.

The invalid requests are derived from the request schemas in ``sc_conformance.spec``
(required fields, property types, patterns, closed objects, username/key dependency),
so a rule added to a schema is checked without touching this module.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import re
import tarfile
from collections.abc import Callable
from typing import Any

import pytest
import requests

from sc_conformance import spec
from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import ServerClient
from sc_conformance.session import ConformanceSession
from sc_conformance.session import SubmittedJob
from sc_conformance.suite import expect

pytestmark = pytest.mark.schema

JSON_ENDPOINTS = ("check_progress", "get_results", "delete_job", "check_user")
ENDPOINTS = ("remote_run", *JSON_ENDPOINTS)

INVALID_JOB_HASHES = (
    "",
    "0123456789ABCDEF0123456789ABCDEF",
    "0" * 31,
    "0" * 33,
    "g" * 32,
    "../" + "0" * 29,
    "0" * 32 + "\n",
)
INVALID_USERNAMES = ("bad user", "bad;user", "tab\tuser", "line\nuser", " ")
WRONG_TYPE_VALUES: tuple[Any, ...] = (7, None, ["x"], {"x": "y"}, True)
NON_OBJECT_BODIES = (b"", b"{", b"[]", b'"text"', b"42", b"null", b'{"job_hash": ')
WRONG_METHODS = ("GET", "PUT", "DELETE", "PATCH")
UNKNOWN_PATHS = ("not_an_endpoint/", "api/remote_run/", "check_progress/extra/")


def endpoint_path(endpoint: str, job_hash: str) -> str:
    if endpoint == "get_results":
        return f"get_results/{job_hash}.tar.gz"
    return f"{endpoint}/"


def schema_name(endpoint: str) -> str:
    return endpoint


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One way to break a valid request body, named for the test id."""

    endpoint: str
    name: str
    change: Callable[[dict[str, Any]], dict[str, Any]]

    def __str__(self) -> str:
        return f"{self.endpoint}-{self.name}"


def _without(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {name: value for name, value in body.items() if name != field}


def _with(field: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {**body, field: value}


def _only(field: str, value: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        kept = {name: v for name, v in body.items() if name not in ("username", "key")}
        return {**kept, field: value}

    return change


def _properties(endpoint: str) -> dict[str, Any]:
    return spec.load_schema(schema_name(endpoint))["properties"]


def missing_field_mutations() -> list[Mutation]:
    """Each required field left out (the username/key pair is checked by auth)."""
    return [
        Mutation(endpoint, f"no-{field}", _without(field))
        for endpoint in ENDPOINTS
        for field in spec.load_schema(schema_name(endpoint)).get("required", [])
        if field not in ("username", "key")
    ]


def wrong_type_mutations() -> list[Mutation]:
    return [
        Mutation(endpoint, f"{field}-{type(value).__name__}", _with(field, value))
        for endpoint in ENDPOINTS
        for field in _properties(endpoint)
        for value in WRONG_TYPE_VALUES
    ]


def pattern_mutations(field: str, values: tuple[str, ...]) -> list[Mutation]:
    return [
        Mutation(endpoint, f"{field}-{position}", _with(field, value))
        for endpoint in ENDPOINTS
        if field in _properties(endpoint)
        for position, value in enumerate(values)
        if not _matches_pattern(_properties(endpoint)[field]["pattern"], value)
    ]


def _matches_pattern(pattern: str, value: str) -> bool:
    """JSON Schema's (ECMA 262) reading of *pattern*: its ``$`` is the very end.

    Python's ``$`` also matches before a final newline, which would wrongly count
    a job hash with a trailing newline as valid and drop that case.
    """
    ecma = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)
    return re.search(ecma, value) is not None


def unknown_property_mutations() -> list[Mutation]:
    return [
        Mutation(endpoint, "unknown-property", _with("unexpected", "value"))
        for endpoint in ENDPOINTS
    ]


def dependency_mutations() -> list[Mutation]:
    return [
        Mutation(endpoint, f"{field}-alone", _only(field, value))
        for endpoint in ENDPOINTS
        if "dependentRequired" in spec.load_schema(schema_name(endpoint))
        for field, value in (("username", "someone"), ("key", "secret-key"))
    ]


def valid_body(endpoint: str, client: ServerClient, job_hash: str) -> dict[str, Any]:
    """The body a correct client sends, with the run's credentials when it has any."""
    fields: dict[str, Any] = {}
    if endpoint in ("check_progress", "delete_job", "remote_run"):
        fields["job_hash"] = job_hash
    if endpoint == "check_progress":
        fields["job_id"] = "job0"
    if client.credentials is not None:
        fields.update(client.credentials.as_fields())
    elif endpoint == "check_user":
        fields.update({"username": "someone", "key": "secret-key"})
    return fields


def send(
    endpoint: str,
    body: dict[str, Any],
    client: ServerClient,
    session: ConformanceSession,
    job_hash: str,
) -> requests.Response:
    """Send *body* to *endpoint*; remote_run bodies go as the params of an upload."""
    if endpoint != "remote_run":
        return client.post_json(endpoint_path(endpoint, job_hash), body)
    submitted_hash = body.get("job_hash")
    if isinstance(submitted_hash, str) and re.fullmatch(
        r"[0-9a-f]{32}", submitted_hash
    ):
        session.ledger.record(
            submitted_hash, session.template.job_id, client.credentials
        )
    return client.remote_run_parts(
        import_archive=session.template.import_archive,
        params={"chip_cfg": session.template.manifest, "params": body},
    )


def check_mutation(
    mutation: Mutation, client: ServerClient, session: ConformanceSession
) -> requests.Response:
    job_hash = expect.unknown_job_hash()
    body = mutation.change(valid_body(mutation.endpoint, client, job_hash))
    assert spec.first_error(schema_name(mutation.endpoint), body) is not None, (
        f"the suite's own mutation {mutation} left a valid body"
    )
    return send(mutation.endpoint, body, client, session, job_hash)


@pytest.mark.requirement("FLD-06")
@pytest.mark.parametrize("mutation", missing_field_mutations(), ids=str)
def test_missing_required_field_is_400(
    mutation: Mutation, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = check_mutation(mutation, sc_client, sc_session)
    expect.status(response, 400, what=f"{mutation.endpoint} {mutation.name}")


@pytest.mark.requirement("FLD-03")
@pytest.mark.parametrize("mutation", wrong_type_mutations(), ids=str)
def test_field_of_wrong_type_is_400(
    mutation: Mutation, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = check_mutation(mutation, sc_client, sc_session)
    expect.status(response, 400, what=f"{mutation.endpoint} with {mutation.name}")


@pytest.mark.requirement("FLD-01")
@pytest.mark.parametrize(
    "mutation", pattern_mutations("job_hash", INVALID_JOB_HASHES), ids=str
)
def test_malformed_job_hash_is_400(
    mutation: Mutation, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = check_mutation(mutation, sc_client, sc_session)
    expect.status(response, 400, what=f"{mutation.endpoint} with a malformed job hash")


@pytest.mark.requirement("FLD-02")
@pytest.mark.parametrize(
    "mutation", pattern_mutations("username", INVALID_USERNAMES), ids=str
)
def test_malformed_username_is_400(
    mutation: Mutation, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = check_mutation(mutation, sc_client, sc_session)
    expect.status(response, 400, what=f"{mutation.endpoint} with a malformed username")


@pytest.mark.requirement("FLD-04")
@pytest.mark.parametrize("mutation", unknown_property_mutations(), ids=str)
def test_unknown_property_is_400(
    mutation: Mutation, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = check_mutation(mutation, sc_client, sc_session)
    expect.status(response, 400, what=f"{mutation.endpoint} with an unknown property")


@pytest.mark.requirement("FLD-04")
def test_unknown_property_in_upload_envelope_is_400(
    sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    upload = sc_session.template.new_upload()
    sc_session.ledger.record(upload.job_hash, upload.job_id, sc_client.credentials)
    envelope = {
        "chip_cfg": upload.manifest,
        "params": valid_body("remote_run", sc_client, upload.job_hash),
        "unexpected": "value",
    }
    response = sc_client.remote_run_parts(
        import_archive=upload.import_archive, params=envelope
    )
    expect.status(response, 400, what="remote_run envelope with an unknown property")


@pytest.mark.requirement("FLD-05")
@pytest.mark.parametrize("mutation", dependency_mutations(), ids=str)
def test_username_and_key_come_together(
    mutation: Mutation, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = check_mutation(mutation, sc_client, sc_session)
    expect.status(response, 400, what=f"{mutation.endpoint} with {mutation.name}")


@pytest.mark.requirement("TR-07")
@pytest.mark.parametrize("payload", NON_OBJECT_BODIES, ids=repr)
@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_body_that_is_not_a_json_object_is_400(
    endpoint: str, payload: bytes, sc_client: ServerClient
) -> None:
    path = endpoint_path(endpoint, expect.unknown_job_hash())
    response = sc_client.post_bytes(path, payload)
    expect.status(response, 400, what=f"{endpoint} with body {payload!r}")


HOSTILE_BODIES = (
    *NON_OBJECT_BODIES,
    b"\xff\xfe\x00invalid utf-8",
    b"[" * 5000 + b"]" * 5000,
    b'{"job_hash": 1e400, "job_id": 1e400}',
    b'{"job_hash": {"$gt": ""}, "job_id": ["job0"]}',
    b'{"username": "\\u0000", "key": "\\ud800"}',
)


@pytest.mark.requirement("TR-04")
@pytest.mark.parametrize("payload", HOSTILE_BODIES, ids=lambda body: repr(body[:24]))
@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_malformed_input_never_gets_a_5xx(
    endpoint: str, payload: bytes, sc_client: ServerClient
) -> None:
    path = endpoint_path(endpoint, expect.unknown_job_hash())
    response = sc_client.post_bytes(path, payload)
    assert response.status_code < 500, f"{endpoint} answered {expect.answer(response)}"


@pytest.mark.requirement("TR-02")
@pytest.mark.parametrize(
    "content_type",
    (
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ),
)
def test_json_body_is_read_whatever_the_content_type(
    content_type: str, sc_finished_job: SubmittedJob, sc_client: ServerClient
) -> None:
    upload = sc_finished_job.upload
    body = valid_body("check_progress", sc_client, upload.job_hash)
    body["job_id"] = upload.job_id
    response = sc_client.post_json(
        "check_progress/", body, headers={"Content-Type": content_type}
    )
    expect.status(response, 200, what=f"check_progress sent as {content_type}")
    assert response.text == FINISHED_TEXT, f"got {expect.answer(response)}"


@pytest.mark.requirement("TR-01")
@pytest.mark.parametrize("endpoint", ("remote_run", "delete_job", "check_user"))
def test_endpoint_answers_post_at_its_path(
    endpoint: str, sc_client: ServerClient
) -> None:
    if endpoint == "remote_run":
        response = sc_client.remote_run_parts()
    else:
        response = sc_client.post_json(endpoint_path(endpoint, ""), {})
    assert response.status_code not in (404, 405), (
        f"POST {endpoint_path(endpoint, '')} answered {expect.answer(response)}"
    )


@pytest.mark.requirement("TR-01")
@pytest.mark.parametrize("endpoint", ("check_progress", "get_results"))
def test_job_endpoint_answers_post_at_its_path(
    endpoint: str, sc_finished_job: SubmittedJob, sc_client: ServerClient
) -> None:
    upload = sc_finished_job.upload
    body = valid_body(endpoint, sc_client, upload.job_hash)
    if endpoint == "check_progress":
        body["job_id"] = upload.job_id
    response = sc_client.post_json(endpoint_path(endpoint, upload.job_hash), body)
    expect.status(response, 200, what=f"POST {endpoint} of a finished job")


@pytest.mark.requirement("TR-05")
@pytest.mark.parametrize("method", WRONG_METHODS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_other_methods_than_post_are_405(
    endpoint: str, method: str, sc_client: ServerClient
) -> None:
    path = endpoint_path(endpoint, expect.unknown_job_hash())
    response = sc_client.request(method, path)
    expect.status(response, 405, what=f"{method} {path}")


@pytest.mark.requirement("TR-06")
@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_unknown_path_is_404(path: str, sc_client: ServerClient) -> None:
    response = sc_client.post_json(path, {})
    expect.status(response, 404, what=f"POST {path}")


def _error_requests(
    client: ServerClient,
) -> dict[str, Callable[[], requests.Response]]:
    job_hash = expect.unknown_job_hash()
    requests_by_name: dict[str, Callable[[], requests.Response]] = {
        f"{endpoint}-unknown-property": (
            lambda endpoint=endpoint: client.post_json(
                endpoint_path(endpoint, job_hash),
                {**valid_body(endpoint, client, job_hash), "unexpected": 1},
            )
        )
        for endpoint in JSON_ENDPOINTS
    }
    requests_by_name["remote_run-no-parts"] = client.remote_run_parts
    requests_by_name["wrong-method"] = lambda: client.request("GET", "check_progress/")
    requests_by_name["unknown-path"] = lambda: client.post_json(UNKNOWN_PATHS[0], {})
    return requests_by_name


ERROR_CASES = (
    *(f"{endpoint}-unknown-property" for endpoint in JSON_ENDPOINTS),
    "remote_run-no-parts",
    "wrong-method",
    "unknown-path",
)


@pytest.mark.requirement("TR-03")
@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_responses_carry_a_json_message(
    case: str, sc_client: ServerClient
) -> None:
    response = _error_requests(sc_client)[case]()
    expect.client_error(response, what=case)
    expect.error_body(response, what=case)


def _upload_parts(
    session: ConformanceSession, client: ServerClient, **parts: Any
) -> requests.Response:
    upload = session.template.new_upload()
    session.ledger.record(upload.job_hash, upload.job_id, client.credentials)
    params = {
        "chip_cfg": upload.manifest,
        "params": valid_body("remote_run", client, upload.job_hash),
    }
    arguments: dict[str, Any] = {
        "import_archive": upload.import_archive,
        "params": params,
    }
    arguments.update(parts)
    if "params_text" in parts:
        arguments["params"] = None
    return client.remote_run_parts(**arguments)


@pytest.mark.requirement("RUN-03")
@pytest.mark.parametrize("missing", ("import", "params"))
def test_upload_missing_a_part_is_400(
    missing: str, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    part = {"import": "import_archive", "params": "params"}[missing]
    response = _upload_parts(sc_session, sc_client, **{part: None})
    expect.status(response, 400, what=f"remote_run without the {missing} part")


def _envelope_without_manifest(
    session: ConformanceSession, client: ServerClient
) -> dict[str, Any]:
    upload = session.template.new_upload()
    session.ledger.record(upload.job_hash, upload.job_id, client.credentials)
    return {"params": valid_body("remote_run", client, upload.job_hash)}


@pytest.mark.requirement("RUN-04")
@pytest.mark.parametrize(
    "case",
    ("not-json", "not-an-object", "no-chip_cfg", "chip_cfg-list", "chip_cfg-string"),
)
def test_upload_with_broken_params_is_400(
    case: str, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    if case == "not-json":
        response = _upload_parts(sc_session, sc_client, params_text="{not json")
    elif case == "not-an-object":
        response = _upload_parts(sc_session, sc_client, params_text="[]")
    else:
        envelope = _envelope_without_manifest(sc_session, sc_client)
        if case != "no-chip_cfg":
            envelope["chip_cfg"] = [] if case == "chip_cfg-list" else "manifest"
        response = _upload_parts(sc_session, sc_client, params=envelope)
    expect.status(response, 400, what=f"remote_run with params {case}")


def _plain_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("import/0/inputs/readme.txt")
        member.size = 5
        tar.addfile(member, io.BytesIO(b"hello"))
    return buffer.getvalue()


NOT_GZIP_TARS = {
    "text": b"this is not an archive",
    "gzip-of-text": gzip.compress(b"this is not a tar archive"),
    "uncompressed-tar": _plain_tar(),
    "empty": b"",
    "truncated-gzip": gzip.compress(_plain_tar())[:40],
}


@pytest.mark.requirement("RUN-05")
@pytest.mark.parametrize("case", tuple(NOT_GZIP_TARS))
def test_upload_whose_import_is_not_a_gzip_tar_is_400(
    case: str, sc_client: ServerClient, sc_session: ConformanceSession
) -> None:
    response = _upload_parts(sc_session, sc_client, import_archive=NOT_GZIP_TARS[case])
    expect.status(response, 400, what=f"remote_run with an import archive of {case}")


MALFORMED_RESULT_PATHS = (
    "ABCDEF",
    "0" * 31,
    "0123456789ABCDEF0123456789ABCDEF",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2f..%2f..%2fusers.json%00",
    "%2e%2e",
)


@pytest.mark.requirement("RES-07")
@pytest.mark.parametrize("name", MALFORMED_RESULT_PATHS)
def test_malformed_job_hash_in_results_path_is_400_or_404(
    name: str, sc_client: ServerClient
) -> None:
    body = valid_body("get_results", sc_client, "")
    response = sc_client.post_json(f"get_results/{name}.tar.gz", body)
    expect.status(response, 400, 404, what=f"get_results/{name}.tar.gz")
    assert response.content[:2] != b"\x1f\x8b", "the answer is a gzip stream"
