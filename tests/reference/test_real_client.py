"""The mock server under the real SiliconCompiler 0.13 client.

These tests run only where ``siliconcompiler`` is installed (the ``reference-0.13``
tox environment); elsewhere they are skipped with that reason. The client runs in a
subprocess because its flow runner forks worker processes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mock_server import MockConfig
from mock_server import MockServer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("siliconcompiler") is None,
    reason="needs siliconcompiler==0.13.0 (run: tox -e reference-0.13)",
)

DRIVER = Path(__file__).with_name("real_client_job.py")
CLIENT_TIMEOUT_SECONDS = 300


@pytest.fixture
def mock_with_account(tmp_path: Path):
    users_file = tmp_path / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "username": "carol",
                        "password": "carol-secret",
                        "compute_time": 600,
                        "bandwidth": 65536,
                    }
                ]
            }
        )
    )
    config = MockConfig(
        root=tmp_path / "storage", auth=True, users_file=users_file, node_seconds=0.05
    )
    with MockServer(config) as server:
        yield server


def write_credentials(directory: Path, url: str, password: str) -> Path:
    host_and_port = url.rstrip("/").rsplit(":", 1)
    credentials = directory / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "address": host_and_port[0],
                "port": int(host_and_port[1]),
                "username": "carol",
                "password": password,
            }
        )
    )
    return credentials


def run_client(workdir: Path, credentials: Path, action: str):
    return subprocess.run(
        [sys.executable, str(DRIVER), str(credentials), action],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
    )


def test_real_client_completes_a_remote_job_against_the_mock(
    mock_with_account, tmp_path: Path
):
    workdir = tmp_path / "client"
    workdir.mkdir()
    credentials = write_credentials(tmp_path, mock_with_account.url, "carol-secret")

    completed = run_client(workdir, credentials, "run")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    job_dir = workdir / "build" / "conformance" / "job0"
    for step, index in [("import", 0), ("work", 0), ("work", 1), ("merge", 0)]:
        node_manifest = job_dir / step / str(index) / "outputs" / "conformance.pkg.json"
        assert node_manifest.is_file(), f"missing {node_manifest}"
    assert "Remote job run completed" in completed.stdout + completed.stderr
    jobs_left = list((mock_with_account.root / "jobs").glob("*"))
    assert jobs_left == [], "the client's delete_job left files on the mock"


def test_real_client_reads_the_account_quota(mock_with_account, tmp_path: Path):
    credentials = write_credentials(tmp_path, mock_with_account.url, "carol-secret")

    completed = run_client(tmp_path, credentials, "ping")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Remaining compute time: 10.00 minutes" in completed.stdout
    assert "Remaining results bandwidth: 65536 KiB" in completed.stdout


def test_real_client_ping_with_a_wrong_password_fails(
    mock_with_account, tmp_path: Path
):
    credentials = write_credentials(tmp_path, mock_with_account.url, "not-the-secret")

    completed = run_client(tmp_path, credentials, "ping")

    assert completed.returncode != 0
