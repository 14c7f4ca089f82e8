"""Security checks: path attacks on the results URL, stored files behind GET and
HEAD, hostile import archives, oversized uploads and job hash take-over.

Against the embedded mock the checks also look at the disk (no file written outside
the job, no job folder left behind); against a URL they judge by the API alone.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from sc_conformance import hostile
from sc_conformance import rawhttp
from sc_conformance import strategies
from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import ServerClient
from sc_conformance.fuzz_options import DEFAULT_MAX_EXTRACT_MB
from sc_conformance.fuzzing import FuzzRun
from sc_conformance.fuzzing import fuzz_run
from sc_conformance.session import ConformanceSession
from sc_conformance.session import SubmittedJob
from sc_conformance.strategies import FuzzRequest
from sc_conformance.suite import expect

pytestmark = pytest.mark.security

MIB = 1024 * 1024

URL_ATTACKS = strategies.url_hash_attacks("0" * 32)
"""The attacks by name; each check rebuilds its own around a real job hash."""

STORED_FILE_MARKERS = (b'"users"', b'"password"', b"root:x:0:0")
"""Bytes of files a server keeps (the account file, /etc/passwd) never to be served."""

LARGEST_FILE_COMPARED = 4 * MIB


@pytest.fixture(scope="module")
def fuzz(request: pytest.FixtureRequest, sc_session: ConformanceSession) -> FuzzRun:
    return fuzz_run(request.config, sc_session)


def _stored_files(fuzz: FuzzRun) -> Iterator[tuple[Path, bytes]]:
    if fuzz.storage_root is None:
        return
    for path in sorted(fuzz.storage_root.rglob("*")):
        if path.is_file() and path.stat().st_size <= LARGEST_FILE_COMPARED:
            yield path, path.read_bytes()


def _leaked_file(fuzz: FuzzRun, body: bytes) -> str | None:
    """Name what a response body gives away of the server's files, if anything."""
    if body[:2] == b"\x1f\x8b":
        return "a gzip stream"
    for marker in STORED_FILE_MARKERS:
        if marker in body:
            return f"bytes {marker!r} of a stored file"
    for path, content in _stored_files(fuzz):
        sample = content[:256]
        if len(sample) >= 16 and sample in body:
            return f"the contents of {path}"
    return None


def _credentials_body(sc_session: ConformanceSession) -> bytes:
    fields = (
        {} if sc_session.credentials is None else sc_session.credentials.as_fields()
    )
    return json.dumps(fields).encode("utf-8")


def _raw(
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    method: str,
    target: str,
    body: bytes = b"",
) -> rawhttp.RawResponse:
    fuzz.bucket.acquire()
    request = FuzzRequest(method, target, body, "path attack")
    try:
        return rawhttp.send(
            fuzz.base_url,
            method,
            target,
            body,
            timeout=sc_session.settings.request_timeout,
            verify=sc_session.settings.verify,
        )
    except rawhttp.NoAnswer as error:
        fuzz.fail(request, f"an answer, got none ({error})")


# Job hashes in the results URL ------------------------------------------------------


@pytest.mark.requirement("RES-07")
@pytest.mark.parametrize("attack", [name for name, _ in URL_ATTACKS])
def test_job_hash_attack_in_results_url_never_serves_a_file(
    attack: str,
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    sc_finished_job: SubmittedJob,
) -> None:
    known = sc_finished_job.upload.job_hash
    segment = dict(strategies.url_hash_attacks(known))[attack]
    target = f"get_results/{segment}"
    body = _credentials_body(sc_session)

    response = _raw(fuzz, sc_session, "POST", target, body)

    request = FuzzRequest("POST", target, body, "job hash attack")
    if not 400 <= response.status < 500:
        fuzz.fail(request, f"a 4xx, got {response.describe()}")
    leaked = _leaked_file(fuzz, response.body)
    if leaked is not None:
        fuzz.fail(request, f"no file contents, got {leaked}")


@pytest.mark.requirement("RES-07")
def test_generated_results_paths_never_serve_a_file(
    fuzz: FuzzRun, sc_session: ConformanceSession
) -> None:
    body = _credentials_body(sc_session)

    def judge(segment: str) -> None:
        target = f"get_results/{segment}"
        request = FuzzRequest("POST", target, body, "generated job hash")
        response = _raw(fuzz, sc_session, "POST", target, body)
        if not 400 <= response.status < 500:
            fuzz.fail(request, f"a 4xx, got {response.describe()}")
        leaked = _leaked_file(fuzz, response.body)
        if leaked is not None:
            fuzz.fail(request, f"no file contents, got {leaked}")

    fuzz.run(strategies.url_hash_segments(), judge)


# Stored files behind GET and HEAD -----------------------------------------------------


def _stored_paths(fuzz: FuzzRun, job: SubmittedJob) -> list[str]:
    """Paths where a careless server might serve what it stores."""
    job_hash = job.upload.job_hash
    design, job_id = job.upload.design, job.upload.job_id
    paths = [
        *strategies.STORED_FILE_NAMES,
        f"get_results/{job_hash}.tar.gz",
        f"{job_hash}.tar.gz",
        f"{job_hash}/",
        f"{job_hash}/{design}/{job_id}/",
        f"{job_hash}/{design}/{job_id}/import/0/inputs/{design}.pkg.json",
        f"results/{job_hash}.tar.gz",
        f"jobs/{job_hash}/",
        "remote_run/../users.json",
        "static/../users.json",
        "%2e%2e/users.json",
    ]
    if fuzz.storage_root is not None:
        for path, _ in _stored_files(fuzz):
            relative = path.relative_to(fuzz.storage_root).as_posix()
            paths.append(urllib.parse.quote(relative))
    return list(dict.fromkeys(paths))


@pytest.mark.requirement("RES-08")
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_stored_files_are_not_served_by_get_or_head(
    method: str,
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    sc_finished_job: SubmittedJob,
) -> None:
    exposed: list[str] = []
    for target in _stored_paths(fuzz, sc_finished_job):
        response = _raw(fuzz, sc_session, method, target)
        leaked = _leaked_file(fuzz, response.body)
        if response.status < 400 or leaked is not None:
            exposed.append(f"{method} /{target} -> {response.describe(120)}")

    assert not exposed, "stored files reachable:\n  " + "\n  ".join(exposed)


# Hostile import archives --------------------------------------------------------------


def _upload(
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    archive: Path,
    flaw: str,
    *,
    job_hash: str | None = None,
    client: ServerClient | None = None,
) -> tuple[FuzzRequest, int, str]:
    """Send *archive* as a job's import; return the request, status and body text."""
    template = sc_session.template
    upload = template.new_upload(job_hash)
    credentials = (client or fuzz.client).credentials
    params = {
        "chip_cfg": template.manifest,
        "params": {
            "job_hash": upload.job_hash,
            **(credentials.as_fields() if credentials else {}),
        },
    }
    import_archive = archive.read_bytes()
    body = strategies.multipart_body(
        [
            strategies.Part("import", import_archive, "import.tar.gz"),
            strategies.Part(
                "params", json.dumps(params).encode(), "params.json", "application/json"
            ),
        ]
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={strategies.BOUNDARY}"}
    request = FuzzRequest(
        "POST", "remote_run/", body, flaw, headers, job_hash=upload.job_hash
    )
    entry = sc_session.ledger.record(upload.job_hash, upload.job_id, credentials)
    fuzz.bucket.acquire()
    response = (client or fuzz.client).remote_run_parts(
        import_archive=import_archive, params=params
    )
    entry.accepted = response.status_code == 200
    return request, response.status_code, response.text


def _judge_refused(
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    request: FuzzRequest,
    status: int,
    text: str,
    *,
    expected: tuple[int, ...] | None = (400,),
) -> None:
    assert request.job_hash is not None
    got = f"{status} {text[:200]!r}"
    if expected is not None and status not in expected:
        wanted = " or ".join(str(code) for code in expected)
        fuzz.fail(request, f"{wanted} for a {request.flaw} import, got {got}")
    if expected is None and not 400 <= status < 500:
        fuzz.fail(request, f"a 4xx for a {request.flaw} import, got {got}")
    if fuzz.job_exists(request.job_hash, sc_session.template.job_id):
        fuzz.fail(request, f"no job after a {request.flaw} import")


@pytest.fixture
def outside(tmp_path: Path, sc_session: ConformanceSession) -> Path | None:
    """A directory outside the server's storage, watched for escaping writes.

    Only the embedded mock shares this machine's disk; for a URL it is None.
    """
    if not sc_session.settings.mock:
        return None
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


def _build_hostile(
    kind: hostile.HostileArchive, path: Path, outside: Path | None
) -> Path:
    if outside is None:
        return kind.build(path)
    if kind.name == "absolute-path":
        return hostile.write_absolute_path(
            path, target=str(outside / hostile.CANARY_NAME)
        )
    if kind.name == "symlink-escape":
        return hostile.write_symlink_escape(path, target=str(outside))
    if kind.name == "hardlink-escape":
        victim = outside / "victim.txt"
        victim.write_bytes(b"precious\n")
        return hostile.write_hardlink_escape(path, target=str(victim))
    return kind.build(path)


def _escaped_writes(fuzz: FuzzRun, outside: Path | None) -> list[str]:
    """Files a hostile archive managed to write or change outside the job."""
    if outside is None:
        return []
    found = [str(path) for path in outside.rglob(hostile.CANARY_NAME)]
    victim = outside / "victim.txt"
    if victim.exists() and victim.read_bytes() != b"precious\n":
        found.append(f"{victim} (overwritten)")
    if fuzz.storage_root is not None:
        escaped = fuzz.storage_root.parent / hostile.CANARY_NAME
        if escaped.exists():
            found.append(str(escaped))
    return found


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            kind, marks=pytest.mark.requirement(kind.requirement), id=kind.name
        )
        for kind in hostile.HOSTILE_ARCHIVES
    ],
)
def test_hostile_import_archive_is_refused_and_creates_no_job(
    kind: hostile.HostileArchive,
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    sc_client: ServerClient,
    tmp_path: Path,
    outside: Path | None,
) -> None:
    del sc_client
    archive = _build_hostile(kind, tmp_path / f"{kind.name}.tar.gz", outside)

    request, status, text = _upload(fuzz, sc_session, archive, kind.name)

    escaped = _escaped_writes(fuzz, outside)
    assert not escaped, f"the {kind.name} import wrote outside the job: {escaped}"
    _judge_refused(fuzz, sc_session, request, status, text)


def _bomb_bytes(fuzz: FuzzRun) -> int:
    """One MiB over the extraction limit: the user's, the mock's, or 1 GiB."""
    if fuzz.settings.max_extract_mb is not None:
        limit_mb = fuzz.settings.max_extract_mb
    elif fuzz.mock_config is not None:
        limit_mb = int(fuzz.mock_config.max_extract_mb)
    else:
        limit_mb = DEFAULT_MAX_EXTRACT_MB
    return (limit_mb + 1) * MIB


def _member_count(fuzz: FuzzRun) -> int:
    if fuzz.mock_config is not None:
        return int(fuzz.mock_config.max_archive_members) + 1
    return hostile.DEFAULT_MEMBER_COUNT


@pytest.mark.requirement("RUN-11")
def test_decompression_bomb_is_refused(
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    sc_client: ServerClient,
    tmp_path: Path,
) -> None:
    del sc_client
    expanded = _bomb_bytes(fuzz)
    archive = hostile.write_decompression_bomb(
        tmp_path / "bomb.tar.gz",
        expanded_bytes=expanded,
        compresslevel=9 if expanded <= 256 * MIB else 1,
    )

    request, status, text = _upload(
        fuzz, sc_session, archive, f"decompression bomb ({expanded // MIB} MiB)"
    )

    _judge_refused(fuzz, sc_session, request, status, text, expected=None)


@pytest.mark.requirement("RUN-11")
def test_archive_with_too_many_members_is_refused(
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    sc_client: ServerClient,
    tmp_path: Path,
) -> None:
    del sc_client
    members = _member_count(fuzz)
    archive = hostile.write_many_members(tmp_path / "many.tar.gz", members=members)

    request, status, text = _upload(
        fuzz, sc_session, archive, f"{members}-member archive"
    )

    _judge_refused(fuzz, sc_session, request, status, text, expected=None)


# Oversized uploads ------------------------------------------------------------------


def _upload_limit_mb(fuzz: FuzzRun) -> int:
    if fuzz.settings.max_upload_mb is not None:
        return fuzz.settings.max_upload_mb
    if fuzz.mock_config is not None:
        return int(fuzz.mock_config.max_upload_mb)
    pytest.skip("the server's upload limit is unknown: pass --sc-max-upload-mb")


@pytest.mark.requirement("RUN-07")
def test_upload_over_the_limit_is_413(
    fuzz: FuzzRun, sc_session: ConformanceSession, sc_client: ServerClient
) -> None:
    del sc_client
    limit = _upload_limit_mb(fuzz)
    head = (
        f"--{strategies.BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="import"; filename="import.tar.gz"\r\n'
        "\r\n"
    ).encode()
    tail = f"\r\n--{strategies.BOUNDARY}--\r\n".encode()
    padding = (limit + 1) * MIB
    chunk = bytes(MIB)

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(padding // MIB):
            yield chunk
        yield tail

    request = FuzzRequest(
        "POST", "remote_run/", head + b"<zeros>" + tail, f"{limit + 1} MiB upload"
    )
    fuzz.bucket.acquire()
    try:
        response = rawhttp.send_streamed(
            fuzz.base_url,
            "remote_run/",
            len(head) + padding + len(tail),
            chunks(),
            {"Content-Type": f"multipart/form-data; boundary={strategies.BOUNDARY}"},
            timeout=sc_session.settings.request_timeout,
            verify=sc_session.settings.verify,
        )
    except rawhttp.NoAnswer as error:
        fuzz.fail(
            request, f"413 for an upload over {limit} MiB, got no answer ({error})"
        )

    if response.status != 413:
        fuzz.fail(
            request, f"413 for an upload over {limit} MiB, got {response.describe()}"
        )


# Accounts ---------------------------------------------------------------------------


@pytest.mark.requirement("AUTH-05", "RUN-06")
def test_another_account_cannot_take_over_a_job_hash(
    fuzz: FuzzRun,
    sc_session: ConformanceSession,
    sc_client: ServerClient,
    sc_other_client: ServerClient,
    sc_finished_job: SubmittedJob,
    tmp_path: Path,
) -> None:
    upload = sc_finished_job.upload
    archive = tmp_path / "import.tar.gz"
    archive.write_bytes(upload.import_archive)

    request, status, text = _upload(
        fuzz,
        sc_session,
        archive,
        "existing job hash from another account",
        job_hash=upload.job_hash,
        client=sc_other_client,
    )

    if not 400 <= status < 500:
        fuzz.fail(request, f"a 4xx (403 or 409), got {status} {text[:200]!r}")
    owner_view = sc_client.check_progress(upload.job_hash, upload.job_id)
    expect.status(owner_view, 200, what="check_progress of the owner's job afterwards")
    assert owner_view.text.strip() == FINISHED_TEXT, (
        f"the owner's finished job changed state: {expect.answer(owner_view)}"
    )
