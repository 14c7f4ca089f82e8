"""Tests of the key account helper (``sc-mock-keyaccount``)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mock_server import crypto
from mock_server.keyaccount import KeyAccountError
from mock_server.keyaccount import create_key_account
from mock_server.keyaccount import main

KEY_BITS = 2048


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable, as on a careless host."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def users_of(users_file: Path) -> dict[str, dict[str, object]]:
    accounts = json.loads(users_file.read_text())
    return {entry["username"]: entry for entry in accounts["users"]}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_account_is_registered_with_its_public_key(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"

    account = create_key_account(
        users_file,
        "alice",
        tmp_path / "alice.pem",
        compute_time=60,
        bandwidth=2048,
        key_bits=KEY_BITS,
    )

    entry = users_of(users_file)["alice"]
    assert entry == {
        "username": "alice",
        "public_key": account.public_key,
        "compute_time": 60,
        "bandwidth": 2048,
    }
    registered = crypto.load_public_key(str(entry["public_key"]))
    crypto.unlock_private_key(registered, account.key)


def test_key_value_is_base64_of_the_private_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "alice.pem"

    account = create_key_account(
        tmp_path / "users.json", "alice", key_file, key_bits=KEY_BITS
    )

    assert base64.b64decode(account.key) == key_file.read_bytes()
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.usefixtures("permissive_umask")
def test_private_key_file_is_private_to_its_owner(tmp_path: Path) -> None:
    key_file = tmp_path / "alice.pem"

    create_key_account(tmp_path / "users.json", "alice", key_file, key_bits=KEY_BITS)

    assert mode_of(key_file) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_replaced_private_key_file_is_private_to_its_owner(tmp_path: Path) -> None:
    key_file = tmp_path / "alice.pem"
    key_file.write_text("old key")
    key_file.chmod(0o644)

    account = create_key_account(
        tmp_path / "users.json",
        "alice",
        key_file,
        key_bits=KEY_BITS,
        overwrite_key=True,
    )

    assert mode_of(key_file) == 0o600
    assert base64.b64decode(account.key) == key_file.read_bytes()


@pytest.mark.usefixtures("permissive_umask")
def test_new_users_file_is_private_to_its_owner(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"

    create_key_account(users_file, "alice", tmp_path / "a.pem", key_bits=KEY_BITS)

    assert mode_of(users_file) == 0o600


def test_existing_account_keeps_its_password_and_others_stay(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "users": [
                    {"username": "bob", "password": "pw", "compute_time": 1},
                    {"username": "alice", "password": "pa", "compute_time": 5},
                ]
            }
        )
    )
    users_file.chmod(0o640)

    account = create_key_account(
        users_file,
        "alice",
        tmp_path / "alice.pem",
        compute_time=30,
        bandwidth=7,
        key_bits=KEY_BITS,
    )

    users = users_of(users_file)
    assert users["bob"] == {"username": "bob", "password": "pw", "compute_time": 1}
    assert users["alice"] == {
        "username": "alice",
        "password": "pa",
        "compute_time": 30,
        "bandwidth": 7,
        "public_key": account.public_key,
    }
    assert mode_of(users_file) == 0o640


def test_existing_private_key_is_not_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / "alice.pem"
    key_file.write_text("precious")
    users_file = tmp_path / "users.json"

    with pytest.raises(KeyAccountError, match="exists"):
        create_key_account(users_file, "alice", key_file, key_bits=KEY_BITS)

    assert key_file.read_text() == "precious"
    assert not users_file.exists()


def test_unreadable_users_file_is_an_error(tmp_path: Path) -> None:
    users_file = tmp_path / "users.json"
    users_file.write_text("[1, 2]")
    key_file = tmp_path / "alice.pem"

    with pytest.raises(KeyAccountError, match="users"):
        create_key_account(users_file, "alice", key_file, key_bits=KEY_BITS)

    assert not key_file.exists()


@pytest.mark.parametrize("username", ["", "two words", "semi;colon"])
def test_username_outside_the_published_pattern_is_refused(
    tmp_path: Path, username: str
) -> None:
    with pytest.raises(KeyAccountError, match="username"):
        create_key_account(
            tmp_path / "users.json", username, tmp_path / "k.pem", key_bits=KEY_BITS
        )


def test_weak_key_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyAccountError, match="2048"):
        create_key_account(
            tmp_path / "users.json", "alice", tmp_path / "k.pem", key_bits=1024
        )


def test_account_repr_and_logs_do_not_show_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    account = create_key_account(
        tmp_path / "users.json", "alice", tmp_path / "alice.pem", key_bits=KEY_BITS
    )

    secret_line = base64.b64decode(account.key).decode().splitlines()[1]
    assert account.key not in repr(account)
    assert secret_line not in repr(account)
    assert "alice" in caplog.text
    assert account.key not in caplog.text
    assert secret_line not in caplog.text


def test_command_prints_only_the_key_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users_file = tmp_path / "users.json"
    key_file = tmp_path / "carol.pem"

    exit_code = main(
        [
            "carol",
            "--users-file",
            str(users_file),
            "--key-file",
            str(key_file),
            "--key-bits",
            str(KEY_BITS),
            "--compute-time",
            "9",
        ]
    )

    out, err = capsys.readouterr()
    assert exit_code == 0
    assert base64.b64decode(out.strip()) == key_file.read_bytes()
    assert out.strip() not in err
    assert str(key_file) in err
    assert users_of(users_file)["carol"]["compute_time"] == 9


def test_command_refuses_an_existing_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "carol.pem"
    key_file.write_text("precious")

    exit_code = main(
        ["carol", "--users-file", str(tmp_path / "u.json"), "--key-file", str(key_file)]
    )

    out, err = capsys.readouterr()
    assert exit_code == 2
    assert out == ""
    assert "exists" in err


def test_command_defaults_to_files_in_the_working_directory(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mock_server.keyaccount", "dave", "--key-bits", "2048"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )

    assert (tmp_path / "dave.pem").read_bytes() == base64.b64decode(completed.stdout)
    assert "dave" in users_of(tmp_path / "users.json")


def test_an_account_that_cannot_be_written_leaves_no_key_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "eve.pem"

    exit_code = main(
        [
            "eve",
            "--users-file",
            str(tmp_path / "missing" / "users.json"),
            "--key-file",
            str(key_file),
        ]
    )

    assert exit_code == 2
    assert not key_file.exists()
    assert "no folder" in capsys.readouterr().err


def test_a_forced_replacement_that_fails_keeps_the_old_key(tmp_path: Path) -> None:
    key_file = tmp_path / "carol.pem"
    users = tmp_path / "users.json"
    assert main(["carol", "--users-file", str(users), "--key-file", str(key_file)]) == 0
    old_key = key_file.read_bytes()

    # /proc exists but takes no new files: the users file fails after the new key
    # was written, which is the moment the old key must survive.
    exit_code = main(
        [
            "carol",
            "--users-file",
            "/proc/sc-conformance-users.json",
            "--key-file",
            str(key_file),
            "--force",
        ]
    )

    assert exit_code == 2
    assert key_file.read_bytes() == old_key
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "carol.pem",
        "users.json",
    ]
