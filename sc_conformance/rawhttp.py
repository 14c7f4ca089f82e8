"""Requests sent byte for byte, for checks that a normalising HTTP client would spoil.

``requests`` and urllib3 resolve ``..`` in paths and re-quote percent escapes, so a
path attack would never reach the server as written. These helpers use
``http.client`` and also read the answer to an upload the server cut short.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import ssl
import urllib.parse
from collections.abc import Iterable
from collections.abc import Mapping

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RawResponse:
    """Status, headers and body of one answer (body capped by the caller's limit)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def describe(self, limit: int = 300) -> str:
        shown = self.body[:limit].decode("utf-8", "backslashreplace")
        return f"{self.status} {shown!r}"


class NoAnswer(ConnectionError):
    """The server closed the connection or timed out without any HTTP answer."""


def _connection(
    base_url: str, timeout: float, verify: bool | str
) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        context = ssl.create_default_context(
            cafile=verify if isinstance(verify, str) else None
        )
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    return connection, parts.path.rstrip("/") + "/"


def _read(connection: http.client.HTTPConnection, limit: int) -> RawResponse:
    response = connection.getresponse()
    body = response.read(limit)
    return RawResponse(response.status, dict(response.getheaders()), body)


def send(
    base_url: str,
    method: str,
    target: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    verify: bool | str = True,
    limit: int = 1024 * 1024,
) -> RawResponse:
    """Send *method* to ``<base path>/<target>`` with *target* exactly as given."""
    connection, base_path = _connection(base_url, timeout, verify)
    try:
        connection.putrequest(method, base_path + target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body or method not in ("GET", "HEAD"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        return _read(connection, limit)
    except (OSError, http.client.HTTPException) as error:
        raise NoAnswer(f"{method} {target}: {type(error).__name__}: {error}") from None
    finally:
        connection.close()


def send_streamed(
    base_url: str,
    target: str,
    content_length: int,
    chunks: Iterable[bytes],
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    verify: bool | str = True,
) -> RawResponse:
    """POST a large body in chunks; if the server stops reading, read its answer.

    A server that refuses an oversized upload answers early and closes the
    connection; the send then fails, but the answer is already waiting.
    """
    connection, base_path = _connection(base_url, timeout, verify)
    try:
        connection.putrequest("POST", base_path + target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(content_length))
        connection.endheaders()
        try:
            for chunk in chunks:
                connection.send(chunk)
        except (BrokenPipeError, ConnectionResetError) as error:
            logger.debug("the server stopped reading the upload: %s", error)
        return _read(connection, 1024 * 1024)
    except (OSError, http.client.HTTPException) as error:
        raise NoAnswer(f"POST {target}: {type(error).__name__}: {error}") from None
    finally:
        connection.close()
