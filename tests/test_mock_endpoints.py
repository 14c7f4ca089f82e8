"""Routing, parsing and every endpoint's answers, with authentication off."""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import time
import uuid

import pytest
import requests

from conftest import shipped_archive

FINISHED_TEXT = "Job has no running steps."
RUNNING_TEXT = "Job is currently running on the cluster."

ENDPOINTS = ["remote_run/", "check_progress/", "check_user/", "delete_job/"]


def _hash() -> str:
    return uuid.uuid4().hex


def _assert_json_message(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    message = response.json()["message"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", [*ENDPOINTS, f"get_results/{'a' * 32}.tar.gz"])
def test_other_methods_than_post_get_405_with_allow(mock_server, method, path):
    response = requests.request(method, mock_server.url + path)
    _assert_json_message(response, 405)
    assert response.headers["Allow"] == "POST"


def test_head_gets_405_without_a_body(mock_server):
    response = requests.head(mock_server.url + "check_progress/")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.content == b""


@pytest.mark.parametrize(
    "path",
    ["", "nothing/", "remote_run", "check_progress", "get_results/", "jobs/", "static"],
)
def test_unknown_paths_get_404_json(mock_server, path):
    _assert_json_message(requests.post(mock_server.url + path, data="{}"), 404)


def test_no_stored_file_is_served_by_get(mock_api, mock_server):
    job_hash = _hash()
    assert mock_api.upload(job_hash).status_code == 200
    mock_api.wait_finished(job_hash)
    for path in (
        f"get_results/{job_hash}.tar.gz",
        f"results/{job_hash}.tar.gz",
        f"jobs/{job_hash}/configs/chipjob0.json",
        "state.sqlite3",
    ):
        response = requests.get(mock_server.url + path)
        assert response.status_code in (404, 405)
        assert b"conformance" not in response.content


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"42", b'"text"', b"null", b"{", b"[" * 100_000],
)
def test_a_body_that_is_not_a_json_object_gets_400(mock_server, body):
    response = requests.post(mock_server.url + "check_progress/", data=body)
    _assert_json_message(response, 400)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_json_is_parsed_whatever_the_content_type(mock_server, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(
        mock_server.url + "check_progress/",
        data=json.dumps({"job_hash": _hash(), "job_id": "job0"}),
        headers=headers,
    )
    _assert_json_message(response, 404)


@pytest.mark.parametrize(
    "body",
    [
        {"job_id": "job0"},
        {"job_hash": "A" * 32, "job_id": "job0"},
        {"job_hash": "a" * 31, "job_id": "job0"},
        {"job_hash": "a" * 32 + "\n", "job_id": "job0"},
        {"job_hash": 7, "job_id": "job0"},
        {"job_hash": "a" * 32},
        {"job_hash": "a" * 32, "job_id": "job0", "extra": 1},
        {"job_hash": "a" * 32, "job_id": "job0", "username": "alice"},
        {"job_hash": "a" * 32, "job_id": "job0", "key": "k"},
        {"job_hash": "a" * 32, "job_id": "job0", "username": "a b", "key": "k"},
        {"job_hash": "a" * 32, "job_id": "job0", "username": "bob\n", "key": "k"},
    ],
)
def test_invalid_check_progress_requests_get_400(mock_server, body):
    response = requests.post(mock_server.url + "check_progress/", data=json.dumps(body))
    _assert_json_message(response, 400)


def test_json_bodies_over_the_limit_get_413(mock_server):
    body = json.dumps({"job_hash": _hash(), "job_id": "x" * (2 * 1024 * 1024)})
    response = requests.post(mock_server.url + "check_progress/", data=body)
    _assert_json_message(response, 413)


def test_check_progress_of_unknown_job_is_404(mock_api):
    _assert_json_message(mock_api.progress(_hash()), 404)


def test_check_progress_with_another_job_id_is_404(mock_api):
    job_hash = _hash()
    assert mock_api.upload(job_hash).status_code == 200
    _assert_json_message(mock_api.progress(job_hash, "job1"), 404)


def test_running_job_names_its_node_as_the_real_client_parses_it(
    tmp_path, mock_api_for
):
    from mock_server import MockServer

    with MockServer(root=tmp_path / "slow", node_seconds=30) as server:
        api = mock_api_for(server.url)
        job_hash = _hash()
        assert api.upload(job_hash).status_code == 200
        text = ""
        for _ in range(500):
            text = api.progress(job_hash).text
            if ":" in text:
                break
        first_line, *tail = text.splitlines()
        assert first_line.startswith(RUNNING_TEXT)
        # the reference client shows what follows the first ": " as the step
        assert first_line[first_line.find(": ") + 2 :] == "work0"
        assert tail and "work0" in tail[0]
        _assert_json_message(api.results(job_hash), 400)
        assert api.delete(job_hash).json() == {
            "message": "Error: job is still running."
        }
        assert api.delete(job_hash).status_code == 400


def test_remote_run_answers_starting_job_text(mock_api):
    job_hash = _hash()
    response = mock_api.upload(job_hash)
    assert response.status_code == 200
    assert response.text == f"Starting job: {job_hash}"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_remote_run_reads_params_sent_as_a_form_field(mock_api):
    job_hash = _hash()
    assert mock_api.upload(job_hash, params_as_field=True).status_code == 200
    mock_api.wait_finished(job_hash)


PART_ORDERS = pytest.mark.parametrize(
    "params_first", [False, True], ids=["import-first", "params-first"]
)


def _staging_is_empty(server) -> bool:
    return [p.name for p in server.app.store.staging.iterdir()] == [".owner.lock"]


@PART_ORDERS
def test_remote_run_takes_its_parts_in_either_order(mock_api, params_first):
    job_hash = _hash()

    assert mock_api.upload(job_hash, params_first=params_first).status_code == 200

    mock_api.wait_finished(job_hash)
    assert mock_api.results(job_hash).status_code == 200


@PART_ORDERS
def test_remote_run_answers_a_wrong_key_before_a_broken_import(
    mock_auth_server, mock_account_api, params_first
):
    api = mock_account_api("alice", key="not-alice-key")

    response = api.upload(archive=b"not a gzip tar", params_first=params_first)

    _assert_json_message(response, 403)
    assert _staging_is_empty(mock_auth_server)


@PART_ORDERS
def test_remote_run_with_a_broken_import_leaves_nothing(
    mock_fresh_server, mock_api_for, params_first
):
    api = mock_api_for(mock_fresh_server.url)
    archive = shipped_archive()

    response = api.upload(
        archive=archive[: len(archive) // 2], params_first=params_first
    )

    _assert_json_message(response, 400)
    assert "not a valid gzip-compressed tar" in response.json()["message"]
    assert list((mock_fresh_server.root / "jobs").iterdir()) == []
    assert _staging_is_empty(mock_fresh_server)


def test_remote_run_cut_off_midway_leaves_nothing(mock_fresh_server):
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="import"; '
        'filename="import.tar.gz"\r\n\r\n'
    ).encode()
    archive = _random_import(3 * 1024 * 1024)
    connection = http.client.HTTPConnection("127.0.0.1", mock_fresh_server.port)
    connection.putrequest("POST", "/remote_run/")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + len(archive) + 100))
    connection.endheaders()

    connection.send(head + archive[: 2 * 1024 * 1024])
    _wait_until(lambda: any(mock_fresh_server.app.store.staging.glob("upload-*")))
    connection.close()

    _wait_until(lambda: _staging_is_empty(mock_fresh_server))
    assert list((mock_fresh_server.root / "jobs").iterdir()) == []


def test_remote_run_refused_on_its_params_never_writes_the_import(
    mock_auth_server, mock_account_api, monkeypatch
):
    """params first with a wrong key: the import is read past, not extracted."""
    staged = []
    stage_import = mock_auth_server.app.store.stage_import
    monkeypatch.setattr(
        mock_auth_server.app.store,
        "stage_import",
        lambda *arguments: staged.append(arguments) or stage_import(*arguments),
    )
    api = mock_account_api("alice", key="not-alice-key")

    refused = api.upload(params_first=True)
    accepted = mock_account_api("alice").upload(params_first=True)

    _assert_json_message(refused, 403)
    assert accepted.status_code == 200
    assert len(staged) == 1


def _random_import(size: int) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=0) as tar:
        member = tarfile.TarInfo("payload.bin")
        member.size = size
        tar.addfile(member, io.BytesIO(os.urandom(size)))
    return archive.getvalue()


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_remote_run_with_a_used_job_hash_is_409(mock_api):
    job_hash = _hash()
    assert mock_api.upload(job_hash).status_code == 200
    _assert_json_message(mock_api.upload(job_hash), 409)


def _multipart(mock_server, files=None, data=None):
    return requests.post(mock_server.url + "remote_run/", files=files, data=data)


def _params(manifest, job_hash=None):
    return json.dumps(
        {"chip_cfg": manifest, "params": {"job_hash": job_hash or _hash()}}
    )


def test_remote_run_without_import_part_is_400(mock_server, mock_manifest):
    response = _multipart(mock_server, files={"params": _params(mock_manifest)})
    _assert_json_message(response, 400)


def test_remote_run_without_params_part_is_400(mock_server, mock_archive):
    response = _multipart(mock_server, files={"import": io.BytesIO(mock_archive)})
    _assert_json_message(response, 400)


def test_remote_run_that_is_not_multipart_is_400(mock_server, mock_manifest):
    response = requests.post(
        mock_server.url + "remote_run/", data=_params(mock_manifest)
    )
    _assert_json_message(response, 400)


@pytest.mark.parametrize(
    "params",
    [
        "not json",
        "[]",
        json.dumps({"params": {"job_hash": "a" * 32}}),
        json.dumps({"chip_cfg": [], "params": {"job_hash": "a" * 32}}),
        json.dumps({"chip_cfg": {}, "params": {}}),
        json.dumps({"chip_cfg": {}, "params": {"job_hash": "../../etc"}}),
        json.dumps({"chip_cfg": {}, "params": {"job_hash": "a" * 32, "x": 1}}),
        json.dumps({"chip_cfg": {}, "params": {"job_hash": "a" * 32}, "x": 1}),
    ],
)
def test_remote_run_with_bad_params_is_400(mock_server, mock_archive, params):
    response = _multipart(
        mock_server, files={"import": io.BytesIO(mock_archive), "params": params}
    )
    _assert_json_message(response, 400)


@pytest.mark.parametrize("design", ["../escape", "a/b", "", ".", "..", 5])
def test_remote_run_with_unsafe_design_name_is_400(
    mock_api_for, mock_manifest, mock_fresh_server, design
):
    mock_manifest["design"]["node"]["global"]["global"]["value"] = design
    response = mock_api_for(mock_fresh_server.url).upload(manifest=mock_manifest)
    if design == "":
        # an empty design counts as unset and falls back to the default name
        assert response.status_code == 200
    else:
        _assert_json_message(response, 400)
        assert list((mock_fresh_server.root / "jobs").iterdir()) == []


def test_remote_run_with_an_import_that_is_not_gzip_tar_is_400(
    mock_api_for, mock_fresh_server
):
    api = mock_api_for(mock_fresh_server.url)
    _assert_json_message(api.upload(archive=b"plain text, not an archive"), 400)
    plain_tar = io.BytesIO()
    with tarfile.open(fileobj=plain_tar, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty"))
    _assert_json_message(api.upload(archive=plain_tar.getvalue()), 400)
    assert list((mock_fresh_server.root / "jobs").iterdir()) == []


def test_remote_run_with_too_many_nodes_is_403(mock_server, mock_manifest, mock_api):
    flow = mock_manifest["flowgraph"]["conformance"]
    template = flow["work"]["0"]
    flow["wide"] = {str(index): template for index in range(70)}
    _assert_json_message(mock_api.upload(manifest=mock_manifest), 403)


def test_remote_run_with_a_cyclic_flowgraph_is_400(mock_manifest, mock_api):
    work0 = mock_manifest["flowgraph"]["conformance"]["work"]["0"]
    work0["input"]["node"]["global"]["global"]["value"] = [["merge", "0"]]
    _assert_json_message(mock_api.upload(manifest=mock_manifest), 400)


def test_remote_run_over_the_upload_limit_is_413(tmp_path, mock_api_for):
    from mock_server import MockServer

    with MockServer(root=tmp_path / "small", max_upload_mb=1) as server:
        api = mock_api_for(server.url)
        response = api.upload(archive=b"\0" * (1024 * 1024 + 1))
        _assert_json_message(response, 413)
        assert list((server.root / "jobs").iterdir()) == []
        assert [p.name for p in server.app.store.staging.iterdir()] == [".owner.lock"]


def test_results_while_unknown_or_deleted_are_404(mock_api):
    job_hash = _hash()
    _assert_json_message(mock_api.results(job_hash), 404)
    assert mock_api.upload(job_hash).status_code == 200
    mock_api.wait_finished(job_hash)
    assert mock_api.results(job_hash).status_code == 200
    assert mock_api.delete(job_hash).text == "Job deleted."
    _assert_json_message(mock_api.results(job_hash), 404)
    _assert_json_message(mock_api.progress(job_hash), 404)
    _assert_json_message(mock_api.delete(job_hash), 404)


@pytest.mark.parametrize(
    "job_file",
    [
        "..%2F..%2Fstate.sqlite3.tar.gz",
        "%2e%2e/%2e%2e/etc/passwd.tar.gz",
        "ABCDEF0123456789ABCDEF0123456789.tar.gz",
        "abc.tar.gz",
        f"{'a' * 32}%0A.tar.gz",
        f"{'a' * 32}.tar.gz%00",
    ],
)
def test_malformed_hash_in_results_path_is_400_or_404(mock_server, job_file):
    response = requests.post(mock_server.url + "get_results/" + job_file, data="{}")
    assert response.status_code in (400, 404)
    _assert_json_message(response, response.status_code)


def test_results_body_is_validated(mock_api, mock_server):
    response = requests.post(
        mock_server.url + f"get_results/{_hash()}.tar.gz", data='{"job_hash": 1}'
    )
    _assert_json_message(response, 400)


def test_delete_job_validates_its_body(mock_server):
    response = requests.post(mock_server.url + "delete_job/", data="{}")
    _assert_json_message(response, 400)


def test_check_user_without_accounts_is_404(mock_server):
    body = json.dumps({"username": "alice", "key": "alice-key"})
    _assert_json_message(requests.post(mock_server.url + "check_user/", data=body), 404)


def test_check_user_missing_a_field_is_400(mock_server):
    response = requests.post(mock_server.url + "check_user/", data='{"username": "a"}')
    _assert_json_message(response, 400)


def test_credentials_are_ignored_without_authentication(mock_server, mock_api_for):
    api = mock_api_for(mock_server.url, {"username": "nobody", "key": "whatever"})
    job_hash = _hash()
    assert api.upload(job_hash).status_code == 200
    api.wait_finished(job_hash)
    assert mock_api_for(mock_server.url).results(job_hash).status_code == 200
