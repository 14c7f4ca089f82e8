"""Each fault kind of the mock, end to end from a requests-based client."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time

import pytest
import requests

from conftest import FINISHED_TEXT
from conftest import MockApi
from conftest import new_job_hash
from mock_server.faults import Fault
from mock_server.faults import FaultError
from sc_conformance.mock_fixture import ScMockServer


@pytest.fixture
def api(sc_mock_server: ScMockServer) -> MockApi:
    return MockApi(sc_mock_server.url)


def finished_job(api: MockApi) -> str:
    job_hash = new_job_hash()
    assert api.upload(job_hash).status_code == 200
    api.wait_finished(job_hash)
    return job_hash


def test_status_fault_answers_503_with_retry_after_for_the_next_call_only(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault("remote_run", "status", status=503, times=1)

    refused = api.upload()
    accepted = api.upload()

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "message" in refused.json()
    assert accepted.status_code == 200


@pytest.mark.parametrize("status", [418, 429, 500])
def test_status_fault_answers_any_status_with_its_message(
    sc_mock_server: ScMockServer, api: MockApi, status: int
) -> None:
    sc_mock_server.add_fault(
        "check_user", "status", status=status, message="go away", retry_after=7
    )

    answer = api.check_user()

    assert answer.status_code == status
    assert answer.json() == {"message": "go away"}
    assert answer.headers["Retry-After"] == "7"


def test_reset_fault_resets_the_connection(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault("check_progress", "reset")

    with pytest.raises(requests.ConnectionError) as caught:
        api.progress(new_job_hash())

    assert isinstance(caught.value.args[0].args[1], ConnectionResetError)
    assert api.progress(new_job_hash()).status_code == 404
    assert [entry.status for entry in sc_mock_server.calls("check_progress")] == [
        None,
        404,
    ]


def test_empty_fault_closes_the_connection_without_an_answer(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault("delete_job", "empty")

    with pytest.raises(requests.ConnectionError, match="without response"):
        api.delete(new_job_hash())

    assert sc_mock_server.calls("delete_job")[0].fault == "empty"


def test_truncated_results_break_the_download_when_the_full_length_is_announced(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = finished_job(api)
    sc_mock_server.add_fault("get_results", "truncate", keep_bytes=1000)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.results(job_hash)

    assert api.results(job_hash).status_code == 200


def test_truncated_results_with_an_honest_length_are_no_gzip_tar(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = finished_job(api)
    whole = api.results(job_hash).content
    sc_mock_server.add_fault("get_results", "truncate", content_length="truncated")

    answer = api.results(job_hash)

    assert answer.status_code == 200
    assert answer.content == whole[: len(whole) // 2]
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
            tar.getmembers()


def test_corrupt_results_keep_their_size_and_fail_the_gzip_check(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = finished_job(api)
    whole = api.results(job_hash).content
    sc_mock_server.add_fault("get_results", "corrupt")

    corrupt = api.results(job_hash).content

    assert len(corrupt) == len(whole) and corrupt != whole
    with pytest.raises((OSError, EOFError, ValueError)):
        gzip.decompress(corrupt)


def test_slow_body_is_dribbled_over_the_duration(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = finished_job(api)
    whole = api.results(job_hash).content
    sc_mock_server.add_fault("get_results", "slow", seconds=0.3, chunks=4)

    started = time.perf_counter()
    answer = api.results(job_hash)
    elapsed = time.perf_counter() - started

    assert answer.content == whole
    assert elapsed >= 0.2


@pytest.mark.parametrize("status", [307, 308])
def test_redirected_upload_is_accepted_at_the_other_url(
    sc_mock_server: ScMockServer, api: MockApi, status: int
) -> None:
    sc_mock_server.add_fault("remote_run", "redirect", status=status)
    job_hash = new_job_hash()

    answer = api.upload(job_hash)

    assert [hop.status_code for hop in answer.history] == [status]
    assert answer.url == sc_mock_server.url + "_moved/remote_run/"
    assert answer.status_code == 200
    api.wait_finished(job_hash)
    second = sc_mock_server.assert_called("remote_run", times=2)[1]
    assert second.path == "/_moved/remote_run/"
    assert second.fields is not None and set(second.fields) == {"import", "params"}


def test_fixed_latency_delays_the_answer(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault("check_progress", "latency", seconds=0.25)

    started = time.perf_counter()
    answer = api.progress(new_job_hash())

    assert time.perf_counter() - started >= 0.25
    assert answer.status_code == 404


def test_random_latency_stays_within_its_bounds(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault(
        "check_progress", "latency", seconds=0.05, max_seconds=0.1, times=3
    )

    for _ in range(3):
        api.progress(new_job_hash())

    durations = [entry.duration for entry in sc_mock_server.calls("check_progress")]
    assert all(0.05 <= duration < 1.0 for duration in durations)


def test_seeded_probability_replays_the_same_calls(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    def faulted_calls() -> list[bool]:
        sc_mock_server.reset()
        sc_mock_server.add_fault(
            "check_user", "status", status=503, times=None, probability=0.5, seed=7
        )
        return [api.check_user().status_code == 503 for _ in range(24)]

    first, second = faulted_calls(), faulted_calls()

    assert first == second
    assert any(first) and not all(first)


def test_fault_without_times_fires_until_removed(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    fault_id = sc_mock_server.add_fault(
        "check_progress", "status", status=502, times=None
    )

    statuses = [api.progress(new_job_hash()).status_code for _ in range(3)]
    sc_mock_server.harness.faults.remove(fault_id)

    assert statuses == [502, 502, 502]
    assert api.progress(new_job_hash()).status_code == 404


def test_fault_on_one_endpoint_leaves_the_others_alone(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault("delete_job", "status", status=500, times=None)

    assert api.progress(new_job_hash()).status_code == 404
    assert api.delete(new_job_hash()).status_code == 500


def test_any_endpoint_fault_hits_whichever_endpoint_comes_first(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault("*", "status", status=503, times=1)

    assert api.progress(new_job_hash()).status_code == 503
    assert api.progress(new_job_hash()).status_code == 404
    assert sc_mock_server.faults[0].applied == 1


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "status", "status": 700},
        {"kind": "status"},
        {"kind": "teleport"},
        {"kind": "reset", "endpoint": "check_server"},
        {"kind": "redirect", "location": "http://elsewhere.invalid/"},
        {"kind": "slow"},
        {"kind": "reset", "times": 0},
        {"kind": "reset", "probability": 2},
        {"kind": "reset", "colour": "red"},
    ],
)
def test_unusable_fault_descriptions_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(FaultError):
        Fault.from_dict(document)


def test_redirect_to_a_chosen_path_of_the_same_server(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    sc_mock_server.add_fault(
        "check_progress", "redirect", location="/_moved/check_progress/"
    )

    answer = api.progress(new_job_hash())

    assert answer.history[0].headers["Location"].startswith(sc_mock_server.url)
    assert answer.status_code == 404


def test_a_finished_job_still_reports_finished_through_faults(
    sc_mock_server: ScMockServer, api: MockApi
) -> None:
    job_hash = finished_job(api)
    sc_mock_server.add_fault("check_progress", "latency", seconds=0.0)

    assert api.progress(job_hash).text == FINISHED_TEXT
    assert json.loads(json.dumps(sc_mock_server.faults[0].to_dict()))["applied"] == 1
