"""Jobs from upload to deletion, failing nodes, and surviving a server restart."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from mock_server import MockConfig
from mock_server import MockServer

NODES = ["work/0", "work/1", "merge/0"]


def _results_members(response: requests.Response) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        return {member.name: member for member in tar.getmembers()}


def _node_status(manifest: dict, step: str, index: str) -> str:
    node = manifest["flowgraph"]["conformance"][step][index]
    return node["status"]["node"]["global"]["global"]["value"]


def test_job_end_to_end_upload_poll_download_extract_delete(
    mock_fresh_server, mock_api_for, tmp_path
):
    api = mock_api_for(mock_fresh_server.url)
    job_hash = uuid.uuid4().hex
    assert api.upload(job_hash).text == f"Starting job: {job_hash}"
    api.wait_finished(job_hash)

    response = api.results(job_hash)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-tar"
    assert (
        response.headers["Content-Disposition"]
        == f'attachment; filename="{job_hash}.tar.gz"'
    )
    members = _results_members(response)
    for name, member in members.items():
        assert name == job_hash or name.startswith(f"{job_hash}/")
        assert ".." not in name.split("/")
        assert not member.issym() or not os.path.isabs(member.linkname)

    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(tmp_path / "download", filter="data")
    work = tmp_path / "download" / job_hash / "conformance" / "job0"
    for node in ["import/0", *NODES]:
        manifest_path = work / node / "outputs" / "conformance.pkg.json"
        assert manifest_path.is_file(), node
    for node in NODES:
        step, index = node.split("/")
        assert (work / node / f"{step}.log").is_file()
        manifest = json.loads(
            (work / node / "outputs" / "conformance.pkg.json").read_text()
        )
        assert _node_status(manifest, step, index) == "success"

    assert api.delete(job_hash).text == "Job deleted."
    assert api.results(job_hash).status_code == 404
    assert api.progress(job_hash).status_code == 404
    root = mock_fresh_server.root
    assert list((root / "jobs").iterdir()) == []
    assert list((root / "results").iterdir()) == []


def test_nodes_run_in_dependency_order(mock_fresh_server, mock_api_for):
    api = mock_api_for(mock_fresh_server.url)
    job_hash = uuid.uuid4().hex
    api.upload(job_hash)
    api.wait_finished(job_hash)
    work = mock_fresh_server.root / "jobs" / job_hash / "conformance" / "job0"
    finished = {
        node: (work / node / "outputs" / "conformance.pkg.json").stat().st_mtime_ns
        for node in NODES
    }
    assert finished["merge/0"] > max(finished["work/0"], finished["work/1"])


def _run_failing_job(api, manifest=None):
    job_hash = uuid.uuid4().hex
    assert api.upload(job_hash, manifest=manifest).status_code == 200
    api.wait_finished(job_hash)
    response = api.results(job_hash)
    assert response.status_code == 200
    return _results_members(response), response, job_hash


def _manifest_in(response, name):
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        return json.load(tar.extractfile(name))


def test_node_failing_by_server_setting_finishes_with_error_recorded(
    tmp_path, mock_api_for
):
    with MockServer(
        root=tmp_path / "root", node_seconds=0.02, fail_nodes={"work1"}
    ) as server:
        members, response, job_hash = _run_failing_job(mock_api_for(server.url))
    prefix = f"{job_hash}/conformance/job0"
    failed = _manifest_in(response, f"{prefix}/work/1/outputs/conformance.pkg.json")
    assert _node_status(failed, "work", "1") == "error"
    passed = _manifest_in(response, f"{prefix}/work/0/outputs/conformance.pkg.json")
    assert _node_status(passed, "work", "0") == "success"
    # merge0 depends on the failed node, so it never ran
    assert f"{prefix}/merge/0/outputs/conformance.pkg.json" not in members
    # no final manifest: the real client then reports the failed step
    assert f"{prefix}/conformance.pkg.json" not in members


def test_successful_job_results_hold_the_final_manifest(mock_api):
    job_hash = uuid.uuid4().hex
    assert mock_api.upload(job_hash).status_code == 200
    mock_api.wait_finished(job_hash)

    response = mock_api.results(job_hash)

    final = _manifest_in(response, f"{job_hash}/conformance/job0/conformance.pkg.json")
    for step, index in [("import", "0"), ("work", "0"), ("work", "1"), ("merge", "0")]:
        assert _node_status(final, step, index) == "success"


def test_node_failing_by_manifest_hint(mock_api, mock_manifest):
    mock_manifest["sc_mock"] = {"fail_nodes": ["work0"]}
    members, response, job_hash = _run_failing_job(mock_api, mock_manifest)
    prefix = f"{job_hash}/conformance/job0"
    failed = _manifest_in(response, f"{prefix}/work/0/outputs/conformance.pkg.json")
    assert _node_status(failed, "work", "0") == "error"


def test_manifest_without_flowgraph_still_finishes(mock_api, mock_manifest):
    del mock_manifest["flowgraph"]
    job_hash = uuid.uuid4().hex
    assert mock_api.upload(job_hash, manifest=mock_manifest).status_code == 200
    mock_api.wait_finished(job_hash)
    assert mock_api.results(job_hash).status_code == 200


def test_manifest_without_names_uses_defaults(mock_api, mock_manifest):
    del mock_manifest["design"]
    del mock_manifest["option"]["jobname"]
    job_hash = uuid.uuid4().hex
    assert mock_api.upload(job_hash, manifest=mock_manifest).status_code == 200
    mock_api.wait_finished(job_hash)
    members = _results_members(mock_api.results(job_hash))
    assert f"{job_hash}/design/job0/work/0/outputs/design.pkg.json" in members


def _wait_for_node(api, job_hash: str, node: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"Current node: {node}" in api.progress(job_hash).text:
            return
        time.sleep(0.01)
    pytest.fail(f"node {node} never started")


def test_restart_resumes_a_running_job(tmp_path, mock_api_for):
    root = tmp_path / "root"
    job_hash = uuid.uuid4().hex
    with MockServer(root=root, node_seconds=60) as first:
        api = mock_api_for(first.url)
        assert api.upload(job_hash).status_code == 200
        _wait_for_node(api, job_hash, "work0")

    with MockServer(root=root, node_seconds=0.02) as second:
        api = mock_api_for(second.url)
        api.wait_finished(job_hash)
        members = _results_members(api.results(job_hash))
    assert (
        f"{job_hash}/conformance/job0/merge/0/outputs/conformance.pkg.json" in members
    )


def test_killed_server_job_is_resumed_by_the_next(tmp_path, mock_api_for):
    root = tmp_path / "root"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mock_server.cli",
            "--root",
            str(root),
            "--port",
            "0",
            "--node-seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        url = _announced_url(process)
        api = mock_api_for(url)
        job_hash = uuid.uuid4().hex
        assert api.upload(job_hash).status_code == 200
        _wait_for_node(api, job_hash, "work0")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    with MockServer(root=root, node_seconds=0.02) as server:
        api = mock_api_for(server.url)
        api.wait_finished(job_hash)
        assert api.results(job_hash).status_code == 200


def _announced_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if "listening on " in line:
            return line.split("listening on ", 1)[1].split()[0]
    pytest.fail("the server never announced its URL")


def test_tls_server_answers_with_its_certificate(tmp_path, mock_api_for):
    with MockServer(root=tmp_path / "root", tls=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        response = requests.post(
            server.url + "check_progress/",
            data=json.dumps({"job_hash": uuid.uuid4().hex, "job_id": "job0"}),
            verify=str(server.certificate),
        )
        assert response.status_code == 404
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(server.url + "check_progress/", data="{}")


def test_config_refuses_unknown_defects():
    with pytest.raises(ValueError, match="unknown defects"):
        MockConfig(defects=frozenset({"no-such-defect"}))


def test_server_url_ends_with_slash_and_root_is_temporary_without_one():
    with MockServer(node_seconds=0.02) as server:
        root = server.root
        assert server.url.endswith("/")
        assert root.is_dir()
    assert not root.exists()
