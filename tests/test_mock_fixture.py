"""The ``sc_mock_server`` fixture: journal, accounts, job control, reset."""

from __future__ import annotations

import http.client
import json
import sqlite3
import textwrap

import pytest
import requests

from conftest import FINISHED_TEXT
from conftest import MockApi
from conftest import new_job_hash
from conftest import shipped_archive
from conftest import shipped_manifest
from mock_server.journal import REDACTED
from sc_conformance.mock_fixture import ScMockServer


@pytest.fixture
def api(sc_mock_server: ScMockServer) -> MockApi:
    return MockApi(sc_mock_server.url)


def test_journal_records_json_multipart_parts_status_and_timing(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = new_job_hash()
    api.upload(job_hash)
    api.progress(job_hash)

    upload, poll = sc_mock_server.journal

    assert (upload.endpoint, upload.status, upload.method) == (
        "remote_run",
        200,
        "POST",
    )
    assert upload.fields is not None and set(upload.fields) == {"import", "params"}
    assert upload.json["params"] == {"job_hash": job_hash}
    assert upload.json["chip_cfg"]["jobname"] == "job0"
    assert upload.job_hash == job_hash
    assert (poll.endpoint, poll.json) == (
        "check_progress",
        {"job_hash": job_hash, "job_id": "job0"},
    )
    assert poll.duration >= 0 and poll.time >= upload.time


def test_journal_redacts_keys(sc_mock_server: ScMockServer) -> None:
    credentials = sc_mock_server.add_account("alice", "alice-secret")
    sc_mock_server.require_auth()
    MockApi(sc_mock_server.url, credentials).upload()

    entry = sc_mock_server.assert_called("remote_run", times=1, status=200)[0]

    assert entry.json["params"]["key"] == REDACTED
    with sqlite3.connect(sc_mock_server.root / "control.sqlite3") as database:
        stored = [row[0] for row in database.execute("SELECT entry FROM journal")]
    assert stored and not any("alice-secret" in entry for entry in stored)


def test_assert_called_names_what_was_received(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    api.progress(new_job_hash())

    with pytest.raises(AssertionError, match=r"called 1 times, expected 2") as caught:
        sc_mock_server.assert_called("check_progress", times=2)

    assert "POST /check_progress/ -> 404" in str(caught.value)
    sc_mock_server.assert_called("check_progress", times=1, status=404)
    sc_mock_server.assert_not_called("remote_run")


def test_added_account_is_required_once_auth_is_on(
    sc_mock_server: ScMockServer,
) -> None:
    credentials = sc_mock_server.add_account("carol", "carol-key", compute_time=60)
    sc_mock_server.require_auth()

    anonymous = MockApi(sc_mock_server.url).upload()
    wrong = MockApi(sc_mock_server.url, {"username": "carol", "key": "nope"}).upload()
    right = MockApi(sc_mock_server.url, credentials).check_user()

    assert (anonymous.status_code, wrong.status_code) == (400, 403)
    assert right.json()["compute_time"] == 60


def test_manual_progress_moves_one_node_per_advance(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs("manual")
    job_hash = new_job_hash()
    api.upload(job_hash)

    seen = []
    for _ in range(3):
        sc_mock_server.advance(job_hash)
        seen.append(api.progress(job_hash).text.splitlines()[0])

    assert seen[:2] == [
        "Job is currently running on the cluster. Current node: work1",
        "Job is currently running on the cluster. Current node: merge0",
    ]
    assert seen[2] == FINISHED_TEXT
    assert [run.node for run in sc_mock_server.node_runs(job_hash)] == [
        "work0",
        "work1",
        "merge0",
    ]


def test_manual_job_does_not_move_without_advance(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs("manual")
    job_hash = new_job_hash()
    api.upload(job_hash)
    sc_mock_server.advance(job_hash)

    answers = {api.progress(job_hash).text.splitlines()[0] for _ in range(5)}

    assert answers == {"Job is currently running on the cluster. Current node: work1"}


def test_polls_progress_finishes_a_node_every_n_polls(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs("polls", polls_per_node=2)
    job_hash = new_job_hash()
    api.upload(job_hash)

    answers = [api.progress(job_hash).text.splitlines()[0] for _ in range(6)]

    assert [answer.rsplit(" ", 1)[-1] for answer in answers[:5]] == [
        "work0",
        "work1",
        "work1",
        "merge0",
        "merge0",
    ]
    assert answers[5] == FINISHED_TEXT


@pytest.mark.parametrize("kind", ["latency", "slow"])
def test_a_poll_answered_through_a_delaying_fault_still_counts(
    sc_mock_server: ScMockServer, api: MockApi, kind: str
) -> None:
    sc_mock_server.script_jobs("polls")
    job_hash = new_job_hash()
    api.upload(job_hash)
    sc_mock_server.add_fault("check_progress", kind, seconds=0.01)

    delayed = api.progress(job_hash).text.splitlines()[0]
    plain = api.progress(job_hash).text.splitlines()[0]

    # Each poll finishes the running node before it is answered.
    assert delayed.endswith("work1") and plain.endswith("merge0")


def test_scripted_failure_fails_the_node_and_skips_its_dependants(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs(fail_nodes=["work1"], node_seconds=0.0)
    job_hash = new_job_hash()
    api.upload(job_hash)
    api.wait_finished(job_hash)

    runs = {run.node: run.outcome for run in sc_mock_server.node_runs(job_hash)}

    assert runs == {"work0": "success", "work1": "error"}
    assert api.results(job_hash).status_code == 200


def test_node_durations_set_the_time_of_single_nodes(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs(node_seconds=0.0, node_durations={"merge0": 0.3})
    job_hash = new_job_hash()
    api.upload(job_hash)
    api.wait_finished(job_hash)

    runs = sc_mock_server.node_runs(job_hash)

    assert runs[-1].node == "merge0"
    assert sc_mock_server.harness.app.store.lookup_job(job_hash) is not None
    merge_started = runs[-1].started
    work_started = runs[-2].started
    assert merge_started - work_started < 0.3
    assert sc_mock_server.journal[-1].time - merge_started >= 0.3


def test_script_applies_to_jobs_accepted_after_it(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs("manual")
    held = new_job_hash()
    api.upload(held)
    sc_mock_server.script_jobs(node_seconds=0.0)
    free = new_job_hash()
    api.upload(free)

    api.wait_finished(free)

    assert api.progress(held).text != FINISHED_TEXT
    assert sc_mock_server.advance(nodes=3) == [held]
    assert api.progress(held).text == FINISHED_TEXT


def test_reset_forgets_jobs_faults_accounts_and_journal(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.script_jobs("manual")
    job_hash = new_job_hash()
    api.upload(job_hash)
    sc_mock_server.add_fault("check_user", "reset")
    sc_mock_server.add_account("dave", "dave-key")
    sc_mock_server.require_auth()

    sc_mock_server.reset()

    assert api.progress(job_hash).status_code == 404
    assert list((sc_mock_server.root / "jobs").iterdir()) == []
    assert sc_mock_server.faults == []
    assert sc_mock_server.harness.accounts() == []
    assert not sc_mock_server.harness.auth
    assert [entry.endpoint for entry in sc_mock_server.journal] == ["check_progress"]


def test_uploaded_manifest_is_the_one_the_client_sent(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = new_job_hash()
    api.upload(job_hash)

    manifest = sc_mock_server.uploaded_manifest(job_hash)

    assert (
        manifest["option"]["jobname"]["node"]["default"]["default"]["value"] == "job0"
    )


def test_fixture_is_offered_without_sc_mock_and_starts_only_when_used(
    sc_pytester: pytest.Pytester,
) -> None:
    sc_pytester.makepyfile(
        textwrap.dedent(
            """
            import threading

            def servers():
                return [t for t in threading.enumerate() if t.name == "sc-mock-server"]

            def test_nothing_started():
                assert servers() == []

            def test_uses_it(sc_mock_server):
                assert sc_mock_server.url.startswith("http://127.0.0.1:")
                assert len(servers()) == 1
            """
        )
    )

    result = sc_pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def test_journal_notes_the_parts_the_application_takes(
    sc_mock_server: ScMockServer,
) -> None:
    """The first params part, and an import only with a file name, as remote_run."""
    taken, ignored = new_job_hash(), new_job_hash()
    manifest = shipped_manifest()
    body = _multipart(
        "b0undary",
        [
            ("import", None, b"not the import"),
            ("params", "params", _params(manifest, taken)),
            ("params", "params", _params(manifest, ignored)),
            ("import", "import.tar.gz", shipped_archive()),
            ("import", "second.tar.gz", b"ignored"),
        ],
    )

    response = requests.post(
        sc_mock_server.url + "remote_run/",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )

    assert response.text == f"Starting job: {taken}"
    (upload,) = sc_mock_server.journal
    assert upload.job_hash == taken
    assert upload.fields is not None
    assert upload.fields["import"]["filename"] == "import.tar.gz"
    assert upload.fields["import"]["bytes"] == len(shipped_archive())


def _params(manifest: dict, job_hash: str) -> bytes:
    return json.dumps({"chip_cfg": manifest, "params": {"job_hash": job_hash}}).encode()


def test_a_chunked_body_with_a_content_length_is_read_in_full(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    """Transfer-Encoding: chunked wins over Content-Length, as HTTP says."""
    job_hash = new_job_hash()
    api.upload(job_hash)
    body = json.dumps({"job_hash": job_hash, "job_id": "job0"}).encode()
    host, port = sc_mock_server.url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port))
    connection.putrequest("POST", "/check_progress/")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.putheader("Content-Length", "3")
    connection.endheaders()
    connection.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    response = connection.getresponse()

    assert response.status == 200, response.read()
    assert sc_mock_server.journal[-1].json["job_hash"] == job_hash


def test_an_rfc_2231_boundary_is_a_clear_400(sc_mock_server: ScMockServer) -> None:
    response = requests.post(
        sc_mock_server.url + "remote_run/",
        data=b"--x--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary*=UTF-8''%E2%82%AC"},
    )

    assert response.status_code == 400
    assert "boundary" in response.json()["message"]
