"""The cleanup ledger: jobs deleted after failures and Ctrl-C, leftovers reported."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from mock_server import MockServer
from mock_server.app import create_app
from sc_conformance.client import Credentials

SUBMIT_THEN = """
import pathlib
import pytest

@pytest.mark.requirement("RUN-01")
def test_submits_then_{ending}(sc_submit):
    job = sc_submit()
    pathlib.Path("job_hash.txt").write_text(job.upload.job_hash)
    assert job.accepted
    {statement}
"""


def _job_state(server_url: str, account: Credentials, job_hash: str) -> int:
    body = {"job_hash": job_hash, "job_id": "job0", **account.as_fields()}
    return requests.post(
        f"{server_url}check_progress/", data=json.dumps(body), timeout=10
    ).status_code


@pytest.mark.parametrize(
    ("ending", "statement"),
    [
        ("failing", "assert False, 'fails after the upload'"),
        ("interrupted", "raise KeyboardInterrupt"),
        ("terminated", "__import__('os').kill(__import__('os').getpid(), 15)"),
    ],
)
def test_jobs_are_deleted_at_session_end(
    sc_pytester: pytest.Pytester,
    auth_mock: MockServer,
    auth_mock_options: list[str],
    plugin_account: Credentials,
    ending: str,
    statement: str,
) -> None:
    sc_pytester.makepyfile(SUBMIT_THEN.format(ending=ending, statement=statement))
    # A subprocess, so that the inner KeyboardInterrupt cannot reach this run.
    result = sc_pytester.runpytest_subprocess(*auth_mock_options)
    assert result.ret != pytest.ExitCode.OK
    job_hash = (sc_pytester.path / "job_hash.txt").read_text()
    assert _job_state(auth_mock.url, plugin_account, job_hash) == 404
    assert "could not be deleted" not in result.stdout.str()


@pytest.fixture
def undeletable_server(tmp_path: Path, auth_mock: MockServer) -> Iterator[str]:
    """The mock's application, except that ``delete_job`` always fails with 500."""
    from mock_server import MockConfig

    config = MockConfig(
        root=tmp_path / "root",
        auth=True,
        users_file=auth_mock.config.users_file,
        node_seconds=0.05,
    )
    application = create_app(config)

    def refuse_deletes(environ: dict, start_response: object) -> object:
        if Request(environ).path == "/delete_job/":
            return Response('{"message": "no"}', 500)(environ, start_response)
        return application(environ, start_response)

    server = make_server("127.0.0.1", 0, refuse_deletes, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_jobs_that_cannot_be_deleted_are_reported_apart(
    sc_pytester: pytest.Pytester, undeletable_server: str, plugin_account: Credentials
) -> None:
    sc_pytester.makepyfile(SUBMIT_THEN.format(ending="passing", statement="pass"))
    report = sc_pytester.path / "report.json"
    result = sc_pytester.runpytest(
        f"--server-url={undeletable_server}",
        f"--sc-username={plugin_account.username}",
        f"--sc-key={plugin_account.key}",
        f"--sc-report={report}",
        str(sc_pytester.path),
    )
    job_hash = (sc_pytester.path / "job_hash.txt").read_text()
    result.stdout.fnmatch_lines(
        [
            "*jobs that could not be deleted:*",
            f"*{job_hash} (account alice): delete_job answered 500*",
        ]
    )
    document = json.loads(report.read_text())
    assert document["leftover_jobs"] == [
        {"job_hash": job_hash, "account": "alice", "reason": "delete_job answered 500"}
    ]
    assert (
        next(e for e in document["requirements"] if e["id"] == "RUN-01")["outcome"]
        == "pass"
    )
