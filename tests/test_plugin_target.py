"""A target that cannot be judged ends the session early with one clear line."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

ORDINARY_TEST = """
def test_ordinary():
    pass
"""


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections into its backlog and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _only_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1, result.stderr.lines
    assert "Traceback" not in result.stdout.str()
    return lines[0]


def test_unreachable_server_is_one_line_and_a_usage_error(
    sc_pytester: pytest.Pytester, closed_port: int
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest(
        f"--server-url=http://127.0.0.1:{closed_port}/", str(sc_pytester.path)
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = _only_line(result)
    assert "does not answer: connection refused" in line
    assert "passed" not in result.stdout.str()


def test_hanging_server_is_one_line_after_the_request_timeout(
    sc_pytester: pytest.Pytester, silent_server: int
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest(
        f"--server-url=http://127.0.0.1:{silent_server}/",
        "--sc-request-timeout=0.5",
        str(sc_pytester.path),
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no answer within 0.5 s" in _only_line(result)


def test_url_credentials_are_redacted_from_the_error_line(
    sc_pytester: pytest.Pytester, closed_port: int
) -> None:
    result = sc_pytester.runpytest(
        f"--server-url=http://user:url-secret-99@127.0.0.1:{closed_port}/",
        str(sc_pytester.path),
    )
    assert "url-secret-99" not in result.stderr.str() + result.stdout.str()
    assert f"127.0.0.1:{closed_port}" in _only_line(result)


def test_a_server_that_requires_accounts_needs_one(
    sc_pytester: pytest.Pytester, auth_mock
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest(
        f"--server-url={auth_mock.url}", "-p", "no:cacheprovider", str(sc_pytester.path)
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "requires authentication" in _only_line(result)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/", "http://127.0.0.1:abc/", "ftp://127.0.0.1/"]
)
def test_a_malformed_server_url_is_one_line(
    sc_pytester: pytest.Pytester, url: str
) -> None:
    result = sc_pytester.runpytest(f"--server-url={url}", str(sc_pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--server-url" in _only_line(result)
