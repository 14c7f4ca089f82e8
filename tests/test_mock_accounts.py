"""Authentication, account isolation and quotas, with authentication on."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from mock_server import MockServer
from mock_server.accounts import Account
from mock_server.accounts import Accounts


def _finished_job(api) -> str:
    job_hash = uuid.uuid4().hex
    assert api.upload(job_hash).status_code == 200
    api.wait_finished(job_hash)
    return job_hash


@pytest.mark.parametrize(
    "path, body",
    [
        ("check_progress/", {"job_hash": "a" * 32, "job_id": "job0"}),
        ("delete_job/", {"job_hash": "a" * 32}),
        ("check_user/", {"username": "alice"}),
        (f"get_results/{'a' * 32}.tar.gz", {}),
    ],
)
def test_missing_credentials_get_400(mock_auth_server, path, body):
    response = requests.post(mock_auth_server.url + path, data=json.dumps(body))
    assert response.status_code == 400
    assert isinstance(response.json()["message"], str)


def test_remote_run_without_credentials_is_400(mock_auth_server, mock_api_for):
    response = mock_api_for(mock_auth_server.url).upload()
    assert response.status_code == 400


@pytest.mark.parametrize(
    "path, body",
    [
        ("check_progress/", {"job_hash": "a" * 32, "job_id": "job0"}),
        ("delete_job/", {"job_hash": "a" * 32}),
        ("check_user/", {}),
        (f"get_results/{'a' * 32}.tar.gz", {}),
    ],
)
def test_unknown_user_and_wrong_key_get_identical_403(mock_account_api, path, body):
    wrong_key = mock_account_api("alice", "not-alice-key").post_json(path, body)
    unknown_user = mock_account_api("mallory", "alice-key").post_json(path, body)
    assert wrong_key.status_code == unknown_user.status_code == 403
    assert wrong_key.content == unknown_user.content
    assert wrong_key.headers["Content-Type"] == unknown_user.headers["Content-Type"]


def test_remote_run_with_wrong_key_is_403_and_creates_no_job(
    mock_auth_server, mock_account_api
):
    assert mock_account_api("alice", "wrong").upload().status_code == 403
    assert list((mock_auth_server.root / "jobs").iterdir()) == []


def test_account_runs_its_own_job_end_to_end(mock_account_api):
    alice = mock_account_api("alice")
    job_hash = _finished_job(alice)
    assert alice.results(job_hash).status_code == 200
    assert alice.delete(job_hash).text == "Job deleted."


def test_other_accounts_cannot_poll_fetch_or_delete_a_job(mock_account_api):
    alice, bob = mock_account_api("alice"), mock_account_api("bob")
    job_hash = _finished_job(alice)

    assert bob.progress(job_hash).status_code == 404
    assert bob.results(job_hash).status_code == 404
    assert bob.delete(job_hash).status_code == 404
    assert bob.progress(job_hash).content == bob.progress(uuid.uuid4().hex).content
    assert alice.results(job_hash).status_code == 200


def test_check_user_reports_the_live_quota(mock_account_api):
    alice = mock_account_api("alice")
    before = alice.check_user()
    assert before.status_code == 200
    assert before.json() == {"compute_time": 120, "bandwidth_kb": 100_000}

    job_hash = _finished_job(alice)
    download = alice.results(job_hash)
    after = alice.check_user().json()
    assert after["bandwidth_kb"] == 100_000 - -(-len(download.content) // 1024)
    assert after["compute_time"] < 120
    assert all(type(value) is int for value in after.values())


def test_check_user_with_bad_credentials_is_403(mock_account_api):
    assert mock_account_api("alice", "nope").check_user().status_code == 403


def test_remote_run_without_compute_time_is_400(mock_auth_server, mock_account_api):
    response = mock_account_api("idle").upload()
    assert response.status_code == 400
    assert "out of bandwidth or time" in response.json()["message"]
    assert list((mock_auth_server.root / "jobs").iterdir()) == []


def test_results_beyond_the_bandwidth_left_are_503(mock_account_api):
    thin = mock_account_api("thin")
    job_hash = _finished_job(thin)
    response = thin.results(job_hash)
    assert response.status_code == 503
    assert isinstance(response.json()["message"], str)
    assert thin.check_user().json()["bandwidth_kb"] == 1


def test_quota_survives_a_restart(tmp_path, mock_users_file, mock_api_for):
    settings = {
        "root": tmp_path / "root",
        "auth": True,
        "users_file": mock_users_file,
        "node_seconds": 0.02,
    }
    credentials = {"username": "alice", "key": "alice-key"}
    with MockServer(**settings) as server:
        api = mock_api_for(server.url, credentials)
        api.results(_finished_job(api))
        spent = api.check_user().json()
    with MockServer(**settings) as server:
        assert mock_api_for(server.url, credentials).check_user().json() == spent


def test_users_json_in_the_storage_root_is_used_by_default(tmp_path, mock_api_for):
    root = tmp_path / "root"
    root.mkdir()
    root.joinpath("users.json").write_text(
        json.dumps({"users": [{"username": "ref", "password": "pw"}]})
    )
    with MockServer(root=root, auth=True) as server:
        api = mock_api_for(server.url, {"username": "ref", "key": "pw"})
        assert api.check_user().json() == {"compute_time": 0, "bandwidth_kb": 0}


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        '{"people": []}',
        '{"users": [{"username": "x"}]}',
        '{"users": [{"username": "", "password": "p"}]}',
        '{"users": [{"username": "a b", "password": "p"}]}',
        '{"users": [{"username": "a", "password": "p", "compute_time": -5}]}',
        '{"users": [{"username": "a", "password": "p", "bandwidth": NaN}]}',
        '{"users": [{"username": "a", "password": "p"}, '
        '{"username": "a", "password": "q"}]}',
    ],
)
def test_malformed_users_file_stops_start_up(tmp_path, document):
    users = tmp_path / "users.json"
    users.write_text(document)
    with pytest.raises(ValueError):
        Accounts.load(users)


def test_account_repr_hides_the_password():
    assert len(Accounts.load(None)) == 0
    assert "s3cret" not in repr(Account("alice", "s3cret", 1, 2))


def test_a_proven_private_key_is_not_loaded_again_but_a_wrong_one_still_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mock_server import crypto
    from mock_server.accounts import Account
    from mock_server.accounts import Accounts
    from mock_server.errors import AuthenticationFailed
    from sc_conformance.keys import new_private_key

    key, public_pem = new_private_key()
    wrong_key, _ = new_private_key()
    account = Account(
        "carol", None, 60, 60, public_key=crypto.load_public_key(public_pem)
    )
    accounts = Accounts({"carol": account})
    unlocks = []
    real_unlock = crypto.unlock_private_key
    monkeypatch.setattr(
        crypto,
        "unlock_private_key",
        lambda *arguments: unlocks.append(1) or real_unlock(*arguments),
    )

    assert accounts.authenticate("carol", key) is account
    assert accounts.authenticate("carol", key) is account
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate("carol", wrong_key)

    assert len(unlocks) == 2
