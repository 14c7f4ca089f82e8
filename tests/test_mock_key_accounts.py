"""Key accounts in the mock: jobs encrypted at rest, readable only with the private key.

A marker is uploaded in a job's import archive (stored uncompressed, so it would be
visible in the raw upload) and in its manifest; the storage root, including files the
server holds open after unlinking them, is searched for it throughout the lifecycle.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import stat
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import make_server

from conftest import FINISHED_TEXT
from conftest import MockApi
from conftest import shipped_archive
from conftest import shipped_manifest
from mock_server import MockConfig
from mock_server import MockServer
from mock_server import crypto
from mock_server import sealed
from mock_server.app import create_app
from mock_server.keyaccount import create_key_account

NODE_SECONDS = 0.05
KEY_USER = "keyholder"
PASSWORD_USER = "plain"
PASSWORD = "plain-password"
ENDPOINTS = ("remote_run", "check_progress", "get_results", "delete_job", "check_user")


@pytest.fixture(scope="module")
def key_account(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A key account made by the helper command's library function."""
    folder = tmp_path_factory.mktemp("key-account")
    users_file = folder / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "username": PASSWORD_USER,
                        "password": PASSWORD,
                        "compute_time": 100_000,
                        "bandwidth": 1_000_000,
                    }
                ]
            }
        )
    )
    account = create_key_account(
        users_file,
        KEY_USER,
        folder / "keyholder.pem",
        compute_time=100_000,
        bandwidth=1_000_000,
        key_bits=2048,
    )
    return {"users_file": users_file, "key": account.key}


@pytest.fixture(scope="module")
def foreign_key() -> str:
    """A well-formed private key that belongs to no account."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(pem).decode("ascii")


@pytest.fixture
def marker() -> bytes:
    return f"KEY-ACCOUNT-MARKER-{uuid.uuid4().hex[:12]}".encode()


def marked_upload(marker: bytes, padding: int = 0) -> tuple[bytes, dict[str, Any]]:
    """The shipped job plus a marker file, gzip level 0 so the marker shows raw.

    The marker comes first so that it reaches the server early in an upload, then
    *padding* random bytes, so that an upload can be held midway with megabytes
    already sent (the server reads a body a megabyte at a time).
    """
    archive = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(shipped_archive()), mode="r:gz") as shipped,
        tarfile.open(fileobj=archive, mode="w:gz", compresslevel=0) as marked,
    ):
        content = (marker + b"\n") * 200
        member = tarfile.TarInfo("sc_collected_files/marker.txt")
        member.size = len(content)
        marked.addfile(member, io.BytesIO(content))
        if padding:
            member = tarfile.TarInfo("sc_collected_files/padding.bin")
            member.size = padding
            marked.addfile(member, io.BytesIO(os.urandom(padding)))
        for member in shipped:
            marked.addfile(
                member, shipped.extractfile(member) if member.isreg() else None
            )
    manifest = shipped_manifest()
    manifest["marker_note"] = marker.decode()
    return archive.getvalue(), manifest


def stored_bytes(root: Path) -> bytes:
    """Every byte under *root*: its files, and files this process holds open there
    (the server runs in this process; unlinked temporary files count too)."""
    chunks = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                if not path.is_symlink():
                    chunks.append(path.read_bytes())
            except (FileNotFoundError, IsADirectoryError):
                continue
    chunks.extend(open_files_under(root).values())
    return b"\n".join(chunks)


def open_files_under(root: Path) -> dict[str, bytes]:
    contents = {}
    for descriptor in os.listdir("/proc/self/fd"):
        link = f"/proc/self/fd/{descriptor}"
        try:
            target = os.readlink(link)
            if target.startswith(str(root)):
                with open(link, "rb") as opened:
                    contents[f"{descriptor}:{target}"] = opened.read()
        except OSError:
            continue
    return contents


class StorageWatch:
    """Searches the storage root for secrets over and over while a test runs."""

    def __init__(self, root: Path, secrets: list[bytes]) -> None:
        self.root = root
        self.secrets = secrets
        self.found: list[bytes] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StorageWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.check()

    def check(self) -> None:
        stored = stored_bytes(self.root)
        self.scans += 1
        self.found.extend(secret for secret in self.secrets if secret in stored)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(0.005)


def members(archive: bytes, job_hash: str) -> dict[str, tuple[bytes, bytes | str]]:
    """Results members by path below the job hash: type and content or link."""
    found: dict[str, tuple[bytes, bytes | str]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix(job_hash)
            extracted = tar.extractfile(member) if member.isreg() else None
            content = (
                extracted.read()
                if extracted
                else member.linkname.removeprefix(job_hash)
            )
            found[name] = (member.type, content)
    return found


@pytest.fixture
def key_server(tmp_path: Path, key_account: dict[str, Any]) -> Iterator[MockServer]:
    with MockServer(
        root=tmp_path / "root",
        auth=True,
        users_file=key_account["users_file"],
        node_seconds=NODE_SECONDS,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, key_account: dict[str, Any]
) -> Iterator[MockServer]:
    """A server for checks that leave its storage as they found it."""
    with MockServer(
        root=tmp_path_factory.mktemp("shared-root"),
        auth=True,
        users_file=key_account["users_file"],
        node_seconds=NODE_SECONDS,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def shared_job(shared_server: MockServer, key_account: dict[str, Any]) -> str:
    """A finished job of the key account on the shared server."""
    api = MockApi(shared_server.url, {"username": KEY_USER, "key": key_account["key"]})
    return finished_key_job(api, b"SHARED-JOB-MARKER")


@pytest.fixture
def key_api(key_server: MockServer, key_account: dict[str, Any]) -> MockApi:
    return MockApi(key_server.url, {"username": KEY_USER, "key": key_account["key"]})


@pytest.fixture
def api_with_key(key_server: MockServer) -> Callable[[str], MockApi]:
    def make(key: str) -> MockApi:
        return MockApi(key_server.url, {"username": KEY_USER, "key": key})

    return make


def finished_key_job(api: MockApi, marker: bytes) -> str:
    archive, manifest = marked_upload(marker)
    job_hash = uuid.uuid4().hex
    response = api.upload(job_hash, archive=archive, manifest=manifest)
    assert response.status_code == 200, response.text
    api.wait_finished(job_hash)
    return job_hash


# Encryption at rest -------------------------------------------------------------------


def test_marker_is_never_stored_in_plaintext_for_a_key_account(
    key_server: MockServer, key_api: MockApi, marker: bytes
) -> None:
    with StorageWatch(key_server.root, [marker]) as watch:
        job_hash = finished_key_job(key_api, marker)
        results = key_api.results(job_hash)
        assert results.status_code == 200
        watch.check()
        assert key_api.delete(job_hash).status_code == 200

    assert watch.scans > 10
    assert watch.found == []
    assert marker in b"".join(
        content
        for _, content in members(results.content, job_hash).values()
        if isinstance(content, bytes)
    )


def test_marker_is_found_in_storage_for_a_password_account(
    key_server: MockServer, marker: bytes
) -> None:
    """The search itself works: a password account's job is stored as uploaded."""
    api = MockApi(key_server.url, {"username": PASSWORD_USER, "key": PASSWORD})

    job_hash = finished_key_job(api, marker)

    assert marker in stored_bytes(key_server.root)
    assert not (key_server.root / "jobs" / job_hash / sealed.WRAPPED_KEY_NAME).exists()


@pytest.fixture
def bare_app() -> Iterator[Callable[[Path, Path], tuple[str, Path]]]:
    """Serve ``MockApp`` alone on loopback, without the request journal in front
    (which reads whole bodies first), so a test sees the app's own upload spool."""
    started: list[tuple[Any, Any, threading.Thread]] = []

    def start(root: Path, users_file: Path) -> tuple[str, Path]:
        app = create_app(
            MockConfig(root=root, auth=True, users_file=users_file, node_seconds=60)
        )
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((app, server, thread))
        return f"http://127.0.0.1:{server.server_port}/", app.root

    yield start
    for app, server, thread in started:
        server.shutdown()
        thread.join()
        app.close()


def upload_in_two_steps(
    url_text: str,
    root: Path,
    credentials: dict[str, str],
    marker: bytes,
    params_first: bool = False,
) -> tuple[int, bytes]:
    """Send the import part, search storage while the server holds it, then send
    params (so the server cannot know the account yet); returns the spooled size
    seen and what storage held meanwhile. With *params_first*, send params and
    3 MiB of the import, then the rest."""
    archive, manifest = marked_upload(marker, padding=4 * 1024 * 1024)
    params = {"chip_cfg": manifest, "params": {"job_hash": uuid.uuid4().hex}}
    params["params"].update(credentials)
    prepared = requests.Request(
        "POST",
        url_text + "remote_run/",
        files=dict(
            sorted(
                {"import": io.BytesIO(archive), "params": json.dumps(params)}.items(),
                reverse=params_first,
            )
        ),
    ).prepare()
    body = prepared.body
    assert isinstance(body, bytes)
    split = body.index(b'name="params"')
    if params_first:
        split = body.index(b'name="import"') + 3 * 1024 * 1024
    url = urllib.parse.urlsplit(url_text)
    connection = http.client.HTTPConnection(url.hostname or "", url.port)
    connection.putrequest("POST", "/remote_run/")
    for name, value in prepared.headers.items():
        connection.putheader(name, value)
    connection.endheaders()

    connection.send(body[:split])
    spooled = wait_for_spooled(root, 2 * 1024 * 1024)
    stored_midway = stored_bytes(root)
    connection.send(body[split:])
    answer = connection.getresponse()
    assert answer.status == 200, answer.read()
    connection.close()
    return spooled, stored_midway


def wait_for_spooled(root: Path, size: int, timeout: float = 10.0) -> int:
    """Wait until the server's staging holds *size* bytes of the upload in one file:
    an unlinked spool file, or a file extracted as the upload arrives."""
    deadline = time.monotonic() + timeout
    largest = 0
    while time.monotonic() < deadline:
        staged = [
            content
            for name, content in open_files_under(root / "staging").items()
            if "(deleted)" in name
        ]
        staged += [
            path.read_bytes()
            for path in (root / "staging").rglob("*")
            if path.is_file() and not path.is_symlink()
        ]
        largest = max((len(content) for content in staged), default=0)
        if largest >= size:
            return largest
        time.sleep(0.01)
    return largest


def test_upload_is_spooled_encrypted_before_the_account_is_known(
    tmp_path: Path, bare_app: Any, key_account: dict[str, Any], marker: bytes
) -> None:
    url, root = bare_app(tmp_path / "root", key_account["users_file"])
    credentials = {"username": KEY_USER, "key": key_account["key"]}

    spooled, stored_midway = upload_in_two_steps(url, root, credentials, marker)

    assert spooled >= 2 * 1024 * 1024
    assert marker not in stored_midway


def test_upload_after_params_is_extracted_encrypted_as_it_arrives(
    tmp_path: Path, bare_app: Any, key_account: dict[str, Any], marker: bytes
) -> None:
    url, root = bare_app(tmp_path / "root", key_account["users_file"])
    credentials = {"username": KEY_USER, "key": key_account["key"]}

    staged, stored_midway = upload_in_two_steps(
        url, root, credentials, marker, params_first=True
    )

    assert staged >= 2 * 1024 * 1024
    assert marker not in stored_midway
    (job,) = (root / "jobs").iterdir()
    assert sealed.is_sealed(job)
    assert marker not in stored_bytes(root)


def test_upload_is_staged_as_sent_without_key_accounts(
    tmp_path: Path, bare_app: Any, marker: bytes
) -> None:
    """The midway search itself works: without key accounts the import is
    extracted as it arrives, as sent."""
    users_file = tmp_path / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "username": PASSWORD_USER,
                        "password": PASSWORD,
                        "compute_time": 60,
                    }
                ]
            }
        )
    )
    url, root = bare_app(tmp_path / "root", users_file)
    credentials = {"username": PASSWORD_USER, "key": PASSWORD}

    spooled, stored_midway = upload_in_two_steps(url, root, credentials, marker)

    assert spooled >= 2 * 1024 * 1024
    assert marker in stored_midway


def test_every_stored_file_of_a_key_job_is_sealed(
    key_server: MockServer, key_api: MockApi, marker: bytes
) -> None:
    job_hash = finished_key_job(key_api, marker)
    job_dir = key_server.root / "jobs" / job_hash
    files = [
        Path(folder) / name
        for folder, _, names in os.walk(job_dir)
        for name in names
        if name != sealed.WRAPPED_KEY_NAME
    ]
    files.append(key_server.root / "results" / f"{job_hash}.tar.gz")

    assert len(files) > 8
    for path in files:
        if not path.is_symlink():
            assert path.read_bytes().startswith(b"SCMENC01"), path


def test_data_keys_are_stored_only_wrapped(
    key_server: MockServer,
    key_api: MockApi,
    marker: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    issued: list[bytes] = []
    real_new_data_key = crypto.new_data_key

    def recording_new_data_key() -> bytes:
        issued.append(real_new_data_key())
        return issued[-1]

    monkeypatch.setattr(crypto, "new_data_key", recording_new_data_key)

    finished_key_job(key_api, marker)

    stored = stored_bytes(key_server.root)
    assert len(issued) >= 2  # the spooled parts' keys and the job's
    for data_key in issued:
        assert data_key not in stored
        assert data_key.hex() not in caplog.text
        assert base64.b64encode(data_key).decode() not in caplog.text


# The right key ------------------------------------------------------------------------


def test_results_with_the_right_key_match_a_password_accounts(
    key_server: MockServer, key_api: MockApi, marker: bytes
) -> None:
    plain_api = MockApi(key_server.url, {"username": PASSWORD_USER, "key": PASSWORD})
    key_job = finished_key_job(key_api, marker)
    plain_job = finished_key_job(plain_api, marker)

    key_results = key_api.results(key_job)
    plain_results = plain_api.results(plain_job)

    assert key_results.status_code == 200
    assert key_results.headers["Content-Type"] == plain_results.headers["Content-Type"]
    assert int(key_results.headers["Content-Length"]) == len(key_results.content)
    assert members(key_results.content, key_job) == members(
        plain_results.content, plain_job
    )


def test_openssh_private_key_unlocks_the_account(
    key_server: MockServer, key_account: dict[str, Any], api_with_key: Any
) -> None:
    pem = base64.b64decode(key_account["key"])
    private_key = serialization.load_pem_private_key(pem, password=None)
    openssh = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    api = api_with_key(base64.b64encode(openssh).decode())

    assert api.check_user().status_code == 200


def test_quota_is_charged_with_the_plaintext_size(
    key_api: MockApi, marker: bytes
) -> None:
    job_hash = finished_key_job(key_api, marker)
    before = key_api.check_user().json()["bandwidth_kb"]

    results = key_api.results(job_hash)

    after = key_api.check_user().json()["bandwidth_kb"]
    assert before - after == -(-len(results.content) // 1024)


# Wrong keys ---------------------------------------------------------------------------


def call(
    endpoint: str, api: MockApi, job_hash: str, marker: bytes
) -> requests.Response:
    if endpoint == "remote_run":
        archive, manifest = marked_upload(marker)
        return api.upload(uuid.uuid4().hex, archive=archive, manifest=manifest)
    if endpoint == "check_progress":
        return api.progress(job_hash)
    if endpoint == "get_results":
        return api.results(job_hash)
    if endpoint == "delete_job":
        return api.delete(job_hash)
    return api.check_user()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_another_private_key_is_403_on_every_endpoint(
    shared_server: MockServer,
    shared_job: str,
    key_account: dict[str, Any],
    foreign_key: str,
    marker: bytes,
    endpoint: str,
) -> None:
    intruder = MockApi(shared_server.url, {"username": KEY_USER, "key": foreign_key})
    owner = MockApi(
        shared_server.url, {"username": KEY_USER, "key": key_account["key"]}
    )

    response = call(endpoint, intruder, shared_job, marker)

    assert response.status_code == 403, response.text
    assert set(response.json()) == {"message"}
    assert b"\x1f\x8b" not in response.content
    assert owner.results(shared_job).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "key",
    ["wrong-password", base64.b64encode(b"-----BEGIN PRIVATE KEY-----\n").decode()],
    ids=["password", "broken-pem"],
)
def test_text_that_is_not_a_key_is_400_on_every_endpoint(
    shared_server: MockServer,
    shared_job: str,
    marker: bytes,
    endpoint: str,
    key: str,
) -> None:
    api = MockApi(shared_server.url, {"username": KEY_USER, "key": key})

    response = call(endpoint, api, shared_job, marker)

    assert response.status_code == 400, response.text
    assert "key" in response.json()["message"]


def test_unknown_user_with_a_private_key_is_403(
    key_server: MockServer, foreign_key: str
) -> None:
    api = MockApi(key_server.url, {"username": "nobody", "key": foreign_key})

    assert api.check_user().status_code == 403


# Secrets never leave memory -----------------------------------------------------------


def private_key_fragments(key: str) -> list[bytes]:
    pem = base64.b64decode(key)
    private_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    numbers = private_key.private_numbers()
    body_lines = [line for line in pem.splitlines() if not line.startswith(b"-----")]
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    exponent = numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big")
    return [key.encode(), pem, der, exponent, numbers.p.to_bytes(128, "big")] + [
        line for line in body_lines if len(line) >= 32
    ]


def test_private_key_never_appears_in_storage_or_logs(
    key_server: MockServer,
    key_api: MockApi,
    key_account: dict[str, Any],
    marker: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fragments = private_key_fragments(key_account["key"])

    with StorageWatch(key_server.root, fragments) as watch:
        job_hash = finished_key_job(key_api, marker)
        assert key_api.results(job_hash).status_code == 200
        assert key_api.progress(job_hash).text == FINISHED_TEXT
        assert key_api.delete(job_hash).status_code == 200

    assert watch.found == []
    assert caplog.records
    logged = caplog.text.encode()
    assert [fragment for fragment in fragments if fragment in logged] == []


# Deletion and restarts ----------------------------------------------------------------


def test_delete_destroys_the_wrapped_key(
    key_server: MockServer, key_api: MockApi, marker: bytes
) -> None:
    job_hash = finished_key_job(key_api, marker)
    wrapped_path = key_server.root / "jobs" / job_hash / sealed.WRAPPED_KEY_NAME
    wrapped = wrapped_path.read_bytes()

    assert key_api.delete(job_hash).text == "Job deleted."

    assert not wrapped_path.exists()
    assert wrapped not in stored_bytes(key_server.root)
    assert key_api.results(job_hash).status_code == 404


def wait_for_node(api: MockApi, job_hash: str, node: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f"Current node: {node}" in api.progress(job_hash).text:
            return
        time.sleep(0.01)
    pytest.fail(f"node {node} never started")


def test_restart_fails_a_running_key_job_and_keeps_it_encrypted(
    tmp_path: Path, key_account: dict[str, Any], marker: bytes
) -> None:
    root = tmp_path / "root"
    credentials = {"username": KEY_USER, "key": key_account["key"]}
    settings = {"root": root, "auth": True, "users_file": key_account["users_file"]}
    archive, manifest = marked_upload(marker)
    job_hash = uuid.uuid4().hex
    with MockServer(node_seconds=60, **settings) as first:
        api = MockApi(first.url, credentials)
        assert api.upload(job_hash, archive=archive, manifest=manifest).ok
        wait_for_node(api, job_hash, "work0")

    with MockServer(node_seconds=NODE_SECONDS, **settings) as second:
        api = MockApi(second.url, credentials)
        api.wait_finished(job_hash)
        results = api.results(job_hash)
        still_stored = stored_bytes(root)
        wrapped_kept = sealed.is_sealed(root / "jobs" / job_hash)
        deleted = api.delete(job_hash)

    assert results.status_code == 404
    assert "restarted" in results.json()["message"]
    assert marker not in still_stored
    assert wrapped_kept
    assert deleted.status_code == 200


def test_restart_leaves_password_jobs_resumable(
    tmp_path: Path, key_account: dict[str, Any]
) -> None:
    root = tmp_path / "root"
    credentials = {"username": PASSWORD_USER, "key": PASSWORD}
    settings = {"root": root, "auth": True, "users_file": key_account["users_file"]}
    job_hash = uuid.uuid4().hex
    with MockServer(node_seconds=60, **settings) as first:
        api = MockApi(first.url, credentials)
        assert api.upload(job_hash).ok
        wait_for_node(api, job_hash, "work0")

    with MockServer(node_seconds=NODE_SECONDS, **settings) as second:
        api = MockApi(second.url, credentials)
        api.wait_finished(job_hash)

        assert api.results(job_hash).status_code == 200


def test_tampered_results_archive_is_never_sent_whole(
    key_server: MockServer, key_api: MockApi, marker: bytes
) -> None:
    job_hash = finished_key_job(key_api, marker)
    stored = key_server.root / "results" / f"{job_hash}.tar.gz"
    damaged = bytearray(stored.read_bytes())
    damaged[-40] ^= 1
    stored.write_bytes(bytes(damaged))

    try:
        response = key_api.results(job_hash)
    except requests.RequestException:
        return
    assert response.status_code != 200 or len(response.content) < int(
        response.headers["Content-Length"]
    )


def open_regular_files() -> list[bytes]:
    """The contents of every regular file this process holds open, anywhere."""
    contents = []
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISREG(os.fstat(int(descriptor)).st_mode):
                contents.append(os.pread(int(descriptor), 64 * 1024 * 1024, 0))
        except OSError:
            continue
    return contents


def test_large_key_upload_is_never_on_disk_in_plaintext_anywhere(
    key_server: MockServer, key_account: dict[str, Any], marker: bytes
) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=0) as tar:
        content = (marker + b"\n") * (3 * 1024 * 1024 // len(marker))
        member = tarfile.TarInfo("import/0/inputs/large.txt")
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
    params = {
        "chip_cfg": shipped_manifest(),
        "params": {"job_hash": uuid.uuid4().hex, "username": KEY_USER},
    }
    params["params"]["key"] = key_account["key"]
    prepared = requests.Request(
        "POST",
        key_server.url + "remote_run/",
        files={"import": io.BytesIO(archive.getvalue()), "params": json.dumps(params)},
    ).prepare()
    body = prepared.body
    assert isinstance(body, bytes)
    split = body.index(b'name="params"')
    url = urllib.parse.urlsplit(key_server.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port)
    connection.putrequest("POST", "/remote_run/")
    for name, value in prepared.headers.items():
        connection.putheader(name, value)
    connection.endheaders()

    connection.send(body[:split])
    time.sleep(0.5)
    held_midway = open_regular_files()
    connection.send(body[split:])
    answer = connection.getresponse()
    connection.close()

    assert answer.status == 200
    assert not [content for content in held_midway if marker in content]
