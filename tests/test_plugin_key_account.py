"""Key account and quota checks against a URL: the key file options, the key kept out
of every output, and the quota checks skipping for want of spent accounts."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mock_server import MockConfig
from mock_server import MockServer
from mock_server.keyaccount import create_key_account
from sc_conformance.client import Credentials

pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)

KEY_USER = "carol"
PASSWORD_ACCOUNT = Credentials("dave", "dave-secret-key-8901")
NODE_SECONDS = 0.05


@pytest.fixture(scope="module")
def key_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A mock with authentication on, a password account and a key account."""
    state = tmp_path_factory.mktemp("key-mock")
    users_file = state / "users.json"
    password_user = {
        "username": PASSWORD_ACCOUNT.username,
        "password": PASSWORD_ACCOUNT.key,
        "compute_time": 100_000,
        "bandwidth": 100_000,
    }
    users_file.write_text(json.dumps({"users": [password_user]}), encoding="utf-8")
    account = create_key_account(
        users_file,
        KEY_USER,
        state / "carol.pem",
        compute_time=100_000,
        bandwidth=100_000,
        key_bits=2048,
    )
    config = MockConfig(
        root=state / "root",
        auth=True,
        users_file=users_file,
        node_seconds=NODE_SECONDS,
    )
    with MockServer(config) as server:
        yield {"url": server.url, "key_file": account.key_file, "key": account.key}


def _secrets(key: str) -> list[str]:
    pem = base64.b64decode(key).decode()
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    return [key, *body]


def test_key_checks_run_against_a_url_and_never_show_the_key(
    sc_pytester: pytest.Pytester, key_mock: dict[str, object]
) -> None:
    report = sc_pytester.path / "report.json"
    result = sc_pytester.runpytest(
        f"--server-url={key_mock['url']}",
        f"--sc-username={PASSWORD_ACCOUNT.username}",
        f"--sc-key={PASSWORD_ACCOUNT.key}",
        f"--sc-key-username={KEY_USER}",
        f"--sc-key-file={key_mock['key_file']}",
        "--sc-requirements=KEY-01,KEY-02,KEY-03,QTA-01,QTA-02,QTA-03",
        f"--sc-report={report}",
        "-p",
        "no:cacheprovider",
        "-rs",
        "--log-level=DEBUG",
    )

    assert result.ret == pytest.ExitCode.OK
    document = json.loads(report.read_text())
    outcomes = {entry["id"]: entry["outcome"] for entry in document["requirements"]}
    assert [outcomes[f"KEY-0{number}"] for number in (1, 2, 3)] == ["pass"] * 3
    assert [outcomes[f"QTA-0{number}"] for number in (1, 2, 3)] == ["skip"] * 3
    assert document["target"]["key_account"] == KEY_USER
    result.stdout.fnmatch_lines(["*only on the embedded mock (--sc-mock)*"])
    everything = (
        result.stdout.str()
        + result.stderr.str()
        + report.read_text()
        + report.with_suffix(".md").read_text()
    )
    assert [
        secret for secret in _secrets(str(key_mock["key"])) if secret in everything
    ] == []


def test_key_checks_skip_without_a_key_account(
    sc_pytester: pytest.Pytester, key_mock: dict[str, object]
) -> None:
    result = sc_pytester.runpytest(
        f"--server-url={key_mock['url']}",
        f"--sc-username={PASSWORD_ACCOUNT.username}",
        f"--sc-key={PASSWORD_ACCOUNT.key}",
        "--sc-requirements=KEY-01",
        "-p",
        "no:cacheprovider",
        "-rs",
    )

    result.stdout.fnmatch_lines(
        ["*no key account given (--sc-key-username/--sc-key-file)*"]
    )


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (None, "--sc-key-username needs --sc-key-file"),
        (b"secret-password-not-a-key", "is not an unencrypted PEM or OpenSSH"),
    ],
    ids=["no-key-file", "not-a-key"],
)
def test_a_key_account_without_a_usable_key_file_is_a_usage_error(
    sc_pytester: pytest.Pytester, tmp_path: Path, contents: bytes | None, message: str
) -> None:
    arguments = ["--sc-mock", f"--sc-key-username={KEY_USER}"]
    if contents is not None:
        key_file = tmp_path / "key.pem"
        key_file.write_bytes(contents)
        arguments.append(f"--sc-key-file={key_file}")

    result = sc_pytester.runpytest(*arguments)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "secret-password" not in result.stderr.str() + result.stdout.str()
