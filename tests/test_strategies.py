"""Fuzz strategies produce what they promise, and their curl lines replay the bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import urllib.parse
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from sc_conformance import strategies
from sc_conformance.fuzz_options import parse_seed
from sc_conformance.hostile import shipped_import_path
from sc_conformance.pacing import TokenBucket
from sc_conformance.spec import JOB_HASH_PATTERN
from sc_conformance.spec import first_error

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

CREDENTIALS = {"username": "alice", "key": "alice-secret-key"}

MANIFEST: dict[str, Any] = {"design": {}, "option": {}, "flowgraph": {}}


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


@pytest.mark.parametrize("endpoint", strategies.JSON_ENDPOINTS)
def test_valid_requests_pass_the_schema_and_name_an_unknown_job(endpoint: str) -> None:
    @FUZZ
    @given(strategies.valid_requests(endpoint, CREDENTIALS))
    def check(request: strategies.FuzzRequest) -> None:
        document = json.loads(request.body)
        assert first_error(endpoint, document) is None
        assert request.job_hash is not None
        assert request.job_hash[12] == "4"
        named = {document.get("job_hash"), request.path.split("/")[1][:32]}
        assert endpoint == "check_user" or request.job_hash in named

    check()


@pytest.mark.parametrize("endpoint", strategies.JSON_ENDPOINTS)
def test_invalid_requests_never_pass_the_schema(endpoint: str) -> None:
    @FUZZ
    @given(strategies.invalid_requests(endpoint))
    def check(request: strategies.FuzzRequest) -> None:
        document = _json_or_none(request.body)
        if isinstance(document, dict):
            assert first_error(endpoint, document) is not None, request.flaw

    check()


@pytest.mark.parametrize("flaw", strategies.body_flaws("delete_job"))
def test_each_body_flaw_yields_refusable_requests(flaw: str) -> None:
    @settings(FUZZ, max_examples=10)
    @given(strategies.invalid_requests("delete_job", flaws=[flaw]))
    def check(request: strategies.FuzzRequest) -> None:
        assert request.flaw == flaw
        document = _json_or_none(request.body)
        assert not isinstance(document, dict) or first_error("delete_job", document)

    check()


def test_get_results_has_no_missing_required_flaw() -> None:
    assert "missing-required" not in strategies.body_flaws("get_results")


def _parse_upload(request: strategies.FuzzRequest) -> Request:
    environ = EnvironBuilder(
        method="POST",
        path="/remote_run/",
        data=request.body,
        content_type=request.headers.get("Content-Type"),
    ).get_environ()
    return Request(environ)


def _archive_is_gzip_tar(archive: bytes) -> bool:
    try:
        with tarfile.open(fileobj=BytesIO(archive), mode="r:gz") as opened:
            opened.getmembers()
    except (tarfile.TarError, EOFError, OSError):
        return False
    return True


def _upload_is_acceptable(request: strategies.FuzzRequest) -> bool:
    """What a strict server would accept: both parts, valid params, a gzip tar."""
    upload = _parse_upload(request)
    imports = upload.files.getlist("import")
    params = [part.read() for part in upload.files.getlist("params")]
    params += [field.encode("utf-8") for field in upload.form.getlist("params")]
    if not imports or not params:
        return False
    envelope = _json_or_none(params[0])
    if not isinstance(envelope, dict):
        return False
    if first_error("remote_run_envelope", envelope) is not None:
        return False
    if first_error("remote_run", envelope["params"]) is not None:
        return False
    return _archive_is_gzip_tar(imports[0].read())


def test_remote_run_uploads_are_all_refusable() -> None:
    archive = shipped_import_path().read_bytes()

    @FUZZ
    @given(strategies.remote_run_uploads(MANIFEST, archive, CREDENTIALS))
    def check(request: strategies.FuzzRequest) -> None:
        assert not _upload_is_acceptable(request), request.flaw

    check()


def test_well_formed_upload_is_acceptable_to_the_judge() -> None:
    archive = shipped_import_path().read_bytes()
    envelope = {"chip_cfg": MANIFEST, "params": {"job_hash": "a" * 32}}
    body = strategies.multipart_body(
        [
            strategies.Part("import", archive, "import.tar.gz"),
            strategies.Part("params", json.dumps(envelope).encode(), "params.json"),
        ]
    )
    content_type = f"multipart/form-data; boundary={strategies.BOUNDARY}"
    request = strategies.FuzzRequest(
        "POST", "remote_run/", body, "none", {"Content-Type": content_type}
    )

    assert _upload_is_acceptable(request)


def test_url_hash_attacks_never_name_the_job_itself() -> None:
    known = "0123456789abcdef0123456789abcdef"

    for name, segment in strategies.url_hash_attacks(known):
        assert urllib.parse.unquote(segment) != f"{known}.tar.gz", name


def test_url_hash_segments_never_decode_to_a_job_hash() -> None:
    @FUZZ
    @given(strategies.url_hash_segments())
    def check(segment: str) -> None:
        name = urllib.parse.unquote(segment).removesuffix(".tar.gz")
        assert not strategies._JOB_HASH.fullmatch(name)

    check()


def test_lookalike_hash_does_not_match_the_job_hash_pattern() -> None:
    import re

    for table in strategies.LOOKALIKES:
        assert not re.fullmatch(
            JOB_HASH_PATTERN,
            strategies.lookalike("0a1c2e3a4c5e6a7c8e9a0c1e2a3c4e5a", table),
        )


def test_curl_line_redacts_key_values() -> None:
    body = json.dumps({"username": "alice", "key": CREDENTIALS["key"]}).encode()

    line = strategies.curl_line("POST", "http://127.0.0.1:1/check_user/", body)

    assert CREDENTIALS["key"] not in line
    assert "${SC_KEY}" in line


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to run printf")
def test_curl_line_replays_every_byte() -> None:
    body = b'{"key": "k3y", "x": "it\'s 100% \\\\ \x00\xff\n\t"}'
    line = strategies.curl_line("POST", "http://127.0.0.1:1/x/", body)
    printf = line.split(" | curl ", 1)[0]

    replayed = subprocess.run(
        ["bash", "-c", printf], capture_output=True, env={"SC_KEY": "k3y"}, check=True
    ).stdout

    assert replayed == body


def test_curl_line_points_long_bodies_at_a_file() -> None:
    body = b"x" * (strategies.INLINE_BODY_LIMIT + 1)

    line = strategies.curl_line("POST", "http://127.0.0.1:1/x/", body)

    assert "@request-body.bin" in line
    assert "xxxx" not in line


def test_token_bucket_spaces_requests_at_the_rate() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(5.0, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(11):
        bucket.acquire()

    assert now[0] == pytest.approx(2.0)
    assert len(waits) == 10


def test_unlimited_token_bucket_never_waits() -> None:
    bucket = TokenBucket(None, sleep=lambda seconds: pytest.fail("slept"))

    assert sum(bucket.acquire() for _ in range(100)) == 0.0


def test_seed_is_read_back_as_printed() -> None:
    assert parse_seed("123456") == 123456


def test_random_seed_agrees_between_workers_of_one_run() -> None:
    first = parse_seed("random", shared_entropy="run-uid-1")

    assert parse_seed("random", shared_entropy="run-uid-1") == first


def test_malformed_seed_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError):
        parse_seed("twelve")
