"""How the suite's client tells a server that broke one answer from one that is gone.

A server that answers 500 and then cuts its chunked body (as sc-server 0.13 does for
results of an unknown job) has failed a check; only a server that no longer takes
connections ends the session.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from sc_conformance.client import BrokenResponse
from sc_conformance.client import Credentials
from sc_conformance.client import ServerClient
from sc_conformance.client import ServerUnreachable

BROKEN_CHUNKED_ANSWER = (
    b"HTTP/1.1 500 Internal Server Error\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Content-Type: text/plain\r\n\r\n"
    b"not-a-chunk-size\r\n"
)


@contextlib.contextmanager
def canned_server(answer: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback server that records every request and sends *answer* to each."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    received.append(connection.recv(65536))
                    connection.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/", received
    finally:
        stopping.set()
        thread.join()
        listener.close()


@pytest.fixture
def broken_body_server() -> Iterator[str]:
    """Answers every request with a 500 whose chunked body is malformed."""
    with canned_server(BROKEN_CHUNKED_ANSWER) as (url, _):
        yield url


def test_a_cut_body_from_a_live_server_is_a_broken_response(
    broken_body_server: str,
) -> None:
    client = ServerClient(broken_body_server, request_timeout=5)

    with pytest.raises(BrokenResponse) as raised:
        client.get_results("0" * 32)

    assert "answered 500" in raised.value.reason


def test_a_closed_port_is_unreachable_not_broken() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ServerClient(f"http://127.0.0.1:{port}/", request_timeout=5)

    with pytest.raises(ServerUnreachable) as raised:
        client.check_progress("0" * 32, "job0")

    assert not isinstance(raised.value, BrokenResponse)


def test_a_redirect_to_another_origin_is_not_followed_with_the_key() -> None:
    with canned_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as (
        elsewhere,
        received,
    ):
        redirect = (
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}check_user/\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        with canned_server(redirect) as (redirecting, _):
            client = ServerClient(
                redirecting,
                credentials=Credentials("alice", "redirect-secret-123"),
                request_timeout=5,
            )

            with pytest.raises(BrokenResponse) as raised:
                client.check_user()

    assert "not followed" in raised.value.reason
    assert received == []
