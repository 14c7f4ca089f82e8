"""Fixtures for the mock server's own tests: servers on loopback and a tiny client.

The client posts JSON without a Content-Type and sends ``params`` as a file part,
as the real SiliconCompiler client does.
"""

from __future__ import annotations

import copy
import functools
import gzip
import io
import json
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import requests

from mock_server import MockServer

FINISHED_TEXT = "Job has no running steps."
TEST_NODE_SECONDS = 0.02


@functools.cache
def _shipped(name: str) -> bytes:
    return resources.files("sc_conformance.data").joinpath(name).read_bytes()


REQUEST_TIMEOUT = 60
"""Seconds a test waits for an answer: a server that dies with its socket still
open (gunicorn's is made by the test) fails the test instead of hanging it."""


class MockApi:
    """Calls one server's endpoints, optionally with an account's credentials."""

    def __init__(self, base_url: str, credentials: dict[str, str] | None = None):
        self.base_url = base_url
        self.credentials = dict(credentials or {})

    def post_json(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(
            self.base_url + path,
            data=json.dumps({**body, **self.credentials}),
            timeout=REQUEST_TIMEOUT,
        )

    def upload(
        self,
        job_hash: str | None = None,
        archive: bytes | None = None,
        manifest: dict[str, Any] | None = None,
        params_as_field: bool = False,
        params_first: bool = False,
    ) -> requests.Response:
        params = {
            "chip_cfg": shipped_manifest() if manifest is None else manifest,
            "params": {"job_hash": job_hash or new_job_hash(), **self.credentials},
        }
        archive = shipped_archive() if archive is None else archive
        if params_as_field:
            return requests.post(
                self.base_url + "remote_run/",
                files={"import": io.BytesIO(archive)},
                data={"params": json.dumps(params)},
                timeout=REQUEST_TIMEOUT,
            )
        parts: dict[str, Any] = {"import": io.BytesIO(archive)}
        if params_first:
            parts = {"params": json.dumps(params), **parts}
        else:
            parts["params"] = json.dumps(params)
        return requests.post(
            self.base_url + "remote_run/", files=parts, timeout=REQUEST_TIMEOUT
        )

    def progress(self, job_hash: str, job_id: str = "job0") -> requests.Response:
        return self.post_json(
            "check_progress/", {"job_hash": job_hash, "job_id": job_id}
        )

    def wait_finished(
        self, job_hash: str, job_id: str = "job0", timeout: float = 20.0
    ) -> None:
        """Poll until the job reports the finished text; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.progress(job_hash, job_id)
            assert response.status_code == 200, response.text
            if response.text == FINISHED_TEXT:
                return
            time.sleep(0.01)
        pytest.fail(f"job {job_hash} did not finish within {timeout} s")

    def results(self, job_hash: str) -> requests.Response:
        return self.post_json(f"get_results/{job_hash}.tar.gz", {})

    def delete(self, job_hash: str) -> requests.Response:
        return self.post_json("delete_job/", {"job_hash": job_hash})

    def check_user(self) -> requests.Response:
        return self.post_json("check_user/", {})


def new_job_hash() -> str:
    return uuid.uuid4().hex


def shipped_manifest() -> dict[str, Any]:
    """A fresh copy of the manifest a real 0.13 client sent."""
    return copy.deepcopy(_shipped_manifest())


@functools.cache
def _shipped_manifest() -> dict[str, Any]:
    return json.loads(gzip.decompress(_shipped("manifest.json.gz")))


def shipped_archive() -> bytes:
    """The import archive a real 0.13 client uploaded."""
    return _shipped("import.tar.gz")


@pytest.fixture(scope="module")
def mock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    """A server shared by a module's tests: use new job hashes, not disk state."""
    root = tmp_path_factory.mktemp("mock-root")
    with MockServer(root=root, node_seconds=TEST_NODE_SECONDS) as server:
        yield server


@pytest.fixture
def mock_fresh_server(tmp_path: Path) -> Iterator[MockServer]:
    """A server of the test's own, for checks of what is on disk."""
    with MockServer(root=tmp_path / "root", node_seconds=TEST_NODE_SECONDS) as server:
        yield server


@pytest.fixture(scope="module")
def mock_api(mock_server: MockServer) -> MockApi:
    return MockApi(mock_server.url)


@pytest.fixture
def mock_users_file(tmp_path: Path) -> Path:
    users = {
        "users": [
            {
                "username": "alice",
                "password": "alice-key",
                "compute_time": 120,
                "bandwidth": 100_000,
            },
            {
                "username": "bob",
                "password": "bob-key",
                "compute_time": 120,
                "bandwidth": 100_000,
            },
            {
                "username": "idle",
                "password": "idle-key",
                "compute_time": 0,
                "bandwidth": 100_000,
            },
            {
                "username": "thin",
                "password": "thin-key",
                "compute_time": 120,
                "bandwidth": 1,
            },
        ]
    }
    path = tmp_path / "users.json"
    path.write_text(json.dumps(users), encoding="utf-8")
    return path


@pytest.fixture
def mock_auth_server(tmp_path: Path, mock_users_file: Path) -> Iterator[MockServer]:
    with MockServer(
        root=tmp_path / "auth-root",
        auth=True,
        users_file=mock_users_file,
        node_seconds=TEST_NODE_SECONDS,
    ) as server:
        yield server


@pytest.fixture
def mock_account_api(mock_auth_server: MockServer) -> Callable[[str], MockApi]:
    """Return a client for an account of ``mock_users_file`` (password: name-key)."""

    def for_account(username: str, key: str | None = None) -> MockApi:
        return MockApi(
            mock_auth_server.url,
            {"username": username, "key": f"{username}-key" if key is None else key},
        )

    return for_account


@pytest.fixture
def mock_api_for() -> Callable[..., MockApi]:
    """Return a client factory for servers a test starts itself."""
    return MockApi


@pytest.fixture
def mock_manifest() -> dict[str, Any]:
    return shipped_manifest()


@pytest.fixture
def mock_archive() -> bytes:
    return shipped_archive()
