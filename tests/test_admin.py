"""The admin API under ``/_admin/``, scenario files and their settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import FINISHED_TEXT
from conftest import MockApi
from conftest import new_job_hash
from mock_server import MockServer
from mock_server.config import config_from_env
from mock_server.scenario import Scenario
from mock_server.scenario import ScenarioError
from sc_conformance.mock_fixture import ScMockServer

SCENARIO = {
    "auth": True,
    "accounts": [{"username": "erin", "password": "erin-key", "compute_time": 90}],
    "faults": [{"endpoint": "check_user", "kind": "status", "status": 503}],
    "jobs": {"progress": "manual"},
}


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    root = tmp_path_factory.mktemp("admin-root")
    with MockServer(root=root, node_seconds=0.01, admin=True) as server:
        yield server


class Admin:
    """Calls the admin API the way a client in another language would."""

    def __init__(self, url: str) -> None:
        self.url = url + "_admin/"

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        data = None if body is None else json.dumps(body)
        return requests.request(method, self.url + path, data=data)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.call(method, path, body)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def admin(admin_server: MockServer) -> Admin:
    client = Admin(admin_server.url)
    client.ok("POST", "reset")
    return client


@pytest.fixture
def api(admin_server: MockServer) -> MockApi:
    return MockApi(admin_server.url)


def test_admin_api_is_off_unless_asked_for(sc_mock_server: ScMockServer) -> None:
    answer = requests.get(sc_mock_server.url + "_admin/journal")

    assert answer.status_code in (404, 405)
    sc_mock_server.assert_called("check_user", times=0)


def test_faults_are_scheduled_listed_and_removed(admin: Admin, api: MockApi) -> None:
    ids = admin.ok(
        "POST",
        "faults",
        [
            {"endpoint": "check_progress", "kind": "status", "status": 429},
            {"endpoint": "delete_job", "kind": "empty", "times": None},
        ],
    )["ids"]

    throttled = api.progress(new_job_hash())
    admin.ok("DELETE", f"faults/{ids[1]}")
    listing = admin.ok("GET", "faults")["faults"]

    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "1")
    assert [
        (fault["id"], fault["remaining"], fault["applied"]) for fault in listing
    ] == [(ids[0], 0, 1)]
    assert api.delete(new_job_hash()).status_code == 404


def test_unusable_fault_is_refused_with_a_message(admin: Admin) -> None:
    answer = admin.call("POST", "faults", {"kind": "status", "status": 99})

    assert answer.status_code == 400
    assert "status" in answer.json()["message"]
    assert admin.ok("GET", "faults") == {"faults": []}


def test_journal_is_read_by_endpoint_and_since_an_entry(
    admin: Admin, api: MockApi
) -> None:
    api.progress(new_job_hash())
    api.delete(new_job_hash())
    api.progress(new_job_hash())

    everything = admin.ok("GET", "journal")["entries"]
    polls = admin.ok("GET", "journal?endpoint=check_progress")["entries"]
    later = admin.ok("GET", f"journal?since={everything[0]['id']}")["entries"]

    assert [entry["endpoint"] for entry in everything] == [
        "check_progress",
        "delete_job",
        "check_progress",
    ]
    assert [entry["status"] for entry in polls] == [404, 404]
    assert later == everything[1:]
    admin.ok("DELETE", "journal")
    assert admin.ok("GET", "journal") == {"entries": []}


def test_job_script_and_advance_drive_a_job(admin: Admin, api: MockApi) -> None:
    admin.ok("PUT", "jobs/script", {"progress": "manual", "fail_nodes": ["merge0"]})
    job_hash = new_job_hash()
    api.upload(job_hash)

    admin.ok("POST", f"jobs/{job_hash}/advance", {"nodes": 2})
    running = api.progress(job_hash).text
    advanced = admin.ok("POST", "jobs/advance")["advanced"]
    jobs = admin.ok("GET", "jobs")["jobs"]

    assert running.startswith(
        "Job is currently running on the cluster. Current node: merge0"
    )
    assert advanced == [job_hash]
    assert api.progress(job_hash).text == FINISHED_TEXT
    assert jobs[0]["state"] == "failed"
    assert [run["outcome"] for run in jobs[0]["node_runs"]] == [
        "success",
        "success",
        "error",
    ]
    assert admin.ok("DELETE", "jobs/script")["progress"] == "time"


def test_advancing_an_unknown_job_is_404(admin: Admin) -> None:
    answer = admin.call("POST", f"jobs/{new_job_hash()}/advance")

    assert answer.status_code == 404


def test_accounts_and_auth_are_managed_without_showing_keys(
    admin: Admin, api: MockApi, admin_server: MockServer
) -> None:
    admin.ok("PUT", "accounts/frank", {"password": "frank-key", "bandwidth": 42})
    settings = admin.ok("PUT", "settings", {"auth": True})
    frank = MockApi(admin_server.url, {"username": "frank", "key": "frank-key"})

    listing = admin.call("GET", "accounts")

    assert settings == {"auth": True}
    assert api.upload().status_code == 400
    assert frank.check_user().json()["bandwidth_kb"] == 42
    assert "frank-key" not in listing.text
    assert listing.json()["accounts"][0]["username"] == "frank"
    admin.ok("DELETE", "accounts/frank")
    assert frank.check_user().status_code == 403
    assert admin.call("DELETE", "accounts/frank").status_code == 404


def test_scenario_is_applied_through_the_api(admin: Admin, api: MockApi) -> None:
    admin.ok("POST", "scenario", SCENARIO)

    assert api.check_user().status_code == 503
    assert admin.ok("GET", "settings") == {"auth": True}
    assert admin.ok("GET", "jobs/script")["progress"] == "manual"


def test_unknown_admin_path_and_wrong_method(admin: Admin) -> None:
    assert admin.call("GET", "nothing-here").status_code == 404
    assert admin.call("PATCH", "faults").status_code == 405
    assert admin.call("POST", "faults", "not a fault").status_code == 400


def test_scenario_file_is_applied_at_start_and_by_every_reset(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(SCENARIO), encoding="utf-8")

    with MockServer(root=tmp_path / "root", scenario=scenario, admin=True) as server:
        erin = MockApi(server.url, {"username": "erin", "key": "erin-key"})
        first = erin.check_user().status_code
        after_fault = erin.check_user().json()
        server.harness.reset()
        after_reset = erin.check_user().status_code

    assert (first, after_fault["compute_time"], after_reset) == (503, 90, 503)


@pytest.mark.parametrize(
    "document",
    [
        {"faults": [{"kind": "status"}]},
        {"accounts": [{"username": "a b", "password": "x"}]},
        {"jobs": {"progress": "sideways"}},
        {"auth": "yes"},
        {"extra": 1},
        [],
    ],
)
def test_broken_scenarios_are_refused(document: Any) -> None:
    with pytest.raises(ScenarioError):
        Scenario.from_dict(document)


def test_missing_scenario_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario"):
        MockServer(root=tmp_path, scenario=tmp_path / "absent.json").start()


def test_admin_and_scenario_come_from_the_environment(tmp_path: Path) -> None:
    config = config_from_env(
        {"SC_MOCK_ADMIN": "1", "SC_MOCK_SCENARIO": str(tmp_path / "s.json")}
    )

    assert config.admin
    assert config.scenario == tmp_path / "s.json"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("faults", b'{"endpoint": "remote_run", "kind": "latency", "seconds": NaN}'),
        ("faults", b'{"endpoint": "remote_run", "kind": "latency", "seconds": "1"}'),
        ("jobs/script", b'{"node_seconds": Infinity}'),
        ("faults", b'{"endpoint": "check_user", "kind": "latency", "seconds": 1e308}'),
        (
            "faults",
            b'{"endpoint": "check_user", "kind": "redirect", '
            b'"location": "/x\\r\\nX-Injected: 1"}',
        ),
    ],
    ids=[
        "nan-seconds",
        "text-seconds",
        "infinite-node-seconds",
        "huge-seconds",
        "header-in-location",
    ],
)
def test_fault_and_script_values_the_mock_cannot_honour_are_refused(
    admin: Admin, path: str, body: bytes
) -> None:
    method = "PUT" if path == "jobs/script" else "POST"
    answer = requests.request(method, admin.url + path, data=body)

    assert answer.status_code == 400
    assert isinstance(answer.json()["message"], str)
    assert admin.ok("GET", "faults") == {"faults": []}
