"""``mock_server.wsgi:app`` under gunicorn with four workers on one storage root.

Jobs, accounts, faults set through the admin API and the journal must be shared:
every worker sees them, no job is lost and no node runs twice.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import FINISHED_TEXT
from conftest import MockApi
from conftest import new_job_hash

pytest.importorskip("gunicorn")

WORKERS = 4
START_TIMEOUT_SECONDS = 30.0


class Gunicorn:
    """A gunicorn master serving the mock on a loopback socket made here."""

    def __init__(self, root: Path, log: Path) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        environment = {
            **os.environ,
            "SC_MOCK_ROOT": str(root),
            "SC_MOCK_ADMIN": "1",
            "SC_MOCK_NODE_SECONDS": "0.05",
        }
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--workers",
                    str(WORKERS),
                    "--bind",
                    f"fd://{self.listener.fileno()}",
                    "--graceful-timeout",
                    "5",
                    "mock_server.wsgi:app",
                ],
                env=environment,
                pass_fds=(self.listener.fileno(),),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "_admin/settings", timeout=5).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.05)
        pytest.fail(f"gunicorn did not answer:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.listener.close()


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    state = tmp_path_factory.mktemp("gunicorn")
    server = Gunicorn(state / "root", state / "gunicorn.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def admin(gunicorn: Gunicorn, method: str, path: str, body: Any = None) -> Any:
    answer = requests.request(
        method,
        gunicorn.url + "_admin/" + path,
        data=None if body is None else json.dumps(body),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def api(gunicorn: Gunicorn) -> MockApi:
    admin(gunicorn, "POST", "reset")
    return MockApi(gunicorn.url)


def in_parallel(count: int, call: Any) -> list[Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def test_journal_and_latency_fault_span_several_workers(
    gunicorn: Gunicorn, api: MockApi
) -> None:
    admin(
        gunicorn,
        "POST",
        "faults",
        {"endpoint": "check_progress", "kind": "latency", "seconds": 0.3, "times": 8},
    )

    answers = in_parallel(8, lambda: api.progress(new_job_hash()).status_code)
    entries = admin(gunicorn, "GET", "journal?endpoint=check_progress")["entries"]

    assert answers == [404] * 8
    assert [entry["fault"] for entry in entries] == ["latency"] * 8
    assert len({entry["process"] for entry in entries}) >= 2


def test_a_fault_for_the_next_n_calls_fires_exactly_n_times_across_workers(
    gunicorn: Gunicorn, api: MockApi
) -> None:
    admin(
        gunicorn,
        "POST",
        "faults",
        {"endpoint": "check_progress", "kind": "status", "status": 503, "times": 5},
    )

    answers = in_parallel(16, lambda: api.progress(new_job_hash()).status_code)

    assert sorted(answers) == [404] * 11 + [503] * 5


def test_accounts_added_through_admin_are_known_to_every_worker(
    gunicorn: Gunicorn, api: MockApi
) -> None:
    admin(gunicorn, "PUT", "accounts/grace", {"password": "grace-key"})
    admin(gunicorn, "PUT", "settings", {"auth": True})
    grace = MockApi(gunicorn.url, {"username": "grace", "key": "grace-key"})

    answers = in_parallel(12, lambda: grace.check_user().status_code)
    anonymous = in_parallel(4, lambda: api.progress(new_job_hash()).status_code)

    assert answers == [200] * 12
    assert anonymous == [400] * 4


def test_every_job_runs_once_and_finishes(gunicorn: Gunicorn, api: MockApi) -> None:
    job_hashes = [new_job_hash() for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        uploads = list(pool.map(lambda job_hash: api.upload(job_hash), job_hashes))
        list(pool.map(api.wait_finished, job_hashes))
        results = list(pool.map(api.results, job_hashes))

    jobs = {job["job_hash"]: job for job in admin(gunicorn, "GET", "jobs")["jobs"]}

    assert [upload.status_code for upload in uploads] == [200] * 8
    assert [result.status_code for result in results] == [200] * 8
    assert set(jobs) == set(job_hashes)
    for job in jobs.values():
        assert sorted(run["node"] for run in job["node_runs"]) == [
            "merge0",
            "work0",
            "work1",
        ]


def test_a_manual_job_is_advanced_from_whichever_worker_answers(
    gunicorn: Gunicorn, api: MockApi
) -> None:
    admin(gunicorn, "PUT", "jobs/script", {"progress": "manual"})
    job_hash = new_job_hash()
    api.upload(job_hash)

    for _ in range(3):
        admin(gunicorn, "POST", f"jobs/{job_hash}/advance")

    assert api.progress(job_hash).text == FINISHED_TEXT


def test_the_conformance_suite_passes_against_four_workers(
    gunicorn: Gunicorn, api: MockApi, sc_pytester: pytest.Pytester
) -> None:
    del api  # a reset server: no account, so authentication is off
    report = sc_pytester.path / "report.json"

    result = sc_pytester.runpytest_subprocess(
        f"--server-url={gunicorn.url}",
        f"--sc-report={report}",
        "--sc-max-upload-mb=1024",
        "-p",
        "no:cacheprovider",
        "-q",
    )

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    document = json.loads(report.read_text())
    assert document["totals"]["MUST"]["fail"] == 0
    assert document["totals"]["MUST"]["pass"] > 0
