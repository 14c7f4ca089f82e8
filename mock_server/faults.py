"""Scripted faults: answers a misbehaving server or network would give a client.

A fault targets one endpoint (or ``*``), fires for the next ``times`` calls and/or
with a ``probability``, and does one thing: answer a status code, reset or close the
connection, truncate, corrupt or dribble the response body, redirect to another URL
of the same server, or delay the request. Faults live in the control database, so
"the next two calls" means two calls whichever gunicorn worker serves them.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import logging
import math
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from werkzeug.wsgi import get_host

from mock_server.controldb import ControlDatabase
from mock_server.journal import ENDPOINTS

logger = logging.getLogger(__name__)

ANY_ENDPOINT = "*"
MOVED_PREFIX = "/_moved/"
"""Redirects lead here: the same endpoints under another URL of the same server."""

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class FaultError(ValueError):
    """A fault description that cannot be used; the message names the problem."""


class FaultKind(enum.StrEnum):
    STATUS = "status"
    RESET = "reset"
    EMPTY = "empty"
    TRUNCATE = "truncate"
    CORRUPT = "corrupt"
    SLOW = "slow"
    REDIRECT = "redirect"
    LATENCY = "latency"


class ContentLength(enum.StrEnum):
    FULL = "full"
    """Announce the whole body, send less, close: the client sees a cut download."""
    TRUNCATED = "truncated"
    """Announce what is sent: a well-formed response carrying half an archive."""


MAX_FAULT_SECONDS = 3600
"""The longest delay a fault takes: an hour is more than any client test waits."""

_WHOLE_NUMBERS = (
    "times",
    "seed",
    "status",
    "retry_after",
    "keep_bytes",
    "offset",
    "length",
    "chunks",
)
"""Fault fields that count something; ``Retry-After`` allows whole seconds only."""


@dataclasses.dataclass(frozen=True)
class Fault:
    """One scripted fault. ``times=None`` means every matching call until removed."""

    kind: FaultKind
    endpoint: str = ANY_ENDPOINT
    times: int | None = 1
    probability: float = 1.0
    seed: int | None = None
    status: int | None = None
    message: str | None = None
    retry_after: int | None = None
    keep_bytes: int | None = None
    content_length: ContentLength = ContentLength.FULL
    offset: int | None = None
    length: int = 64
    seconds: float | None = None
    max_seconds: float | None = None
    chunks: int = 16
    location: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _choice(FaultKind, self.kind, "kind"))
        object.__setattr__(
            self,
            "content_length",
            _choice(ContentLength, self.content_length, "content_length"),
        )
        for name in _WHOLE_NUMBERS:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int)
            ):
                raise FaultError(f"{name} must be a whole number, not {value!r}")
        if self.endpoint != ANY_ENDPOINT and self.endpoint not in ENDPOINTS:
            raise FaultError(
                f"endpoint must be one of {', '.join(ENDPOINTS)} or '*', "
                f"not {self.endpoint!r}"
            )
        if self.times is not None and self.times < 1:
            raise FaultError("times must be at least 1 (or null for every call)")
        if not 0.0 <= self.probability <= 1.0:
            raise FaultError("probability must lie between 0 and 1")
        self._check_kind()

    def _check_kind(self) -> None:
        if self.kind is FaultKind.STATUS:
            if self.status is None or not 100 <= self.status <= 599:
                raise FaultError("a status fault needs a status between 100 and 599")
        if self.kind is FaultKind.REDIRECT:
            if self.status not in (None, 301, 302, 303, 307, 308):
                raise FaultError("a redirect's status is 301, 302, 303, 307 or 308")
            if self.location is not None and (
                not self.location.startswith("/")
                or self.location.startswith("//")
                or any(ord(char) < 0x21 or ord(char) == 0x7F for char in self.location)
            ):
                raise FaultError(
                    "location must be a path on the same server, starting with '/'"
                )
        for name in ("seconds", "max_seconds"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value > MAX_FAULT_SECONDS
            ):
                raise FaultError(
                    f"{name} must be a number of seconds up to {MAX_FAULT_SECONDS}, "
                    f"not {value!r}"
                )
        if self.kind in (FaultKind.SLOW, FaultKind.LATENCY):
            if self.seconds is None or self.seconds < 0:
                raise FaultError(f"a {self.kind} fault needs seconds >= 0")
            if self.max_seconds is not None and self.max_seconds < self.seconds:
                raise FaultError("max_seconds must not be below seconds")
        if self.chunks < 1 or self.length < 1:
            raise FaultError("chunks and length must be at least 1")
        for name in ("keep_bytes", "offset", "retry_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FaultError(f"{name} must not be negative")

    @classmethod
    def from_dict(cls, document: Any) -> Fault:
        """Build a fault from its JSON form (the admin API, scenario files)."""
        if not isinstance(document, dict):
            raise FaultError("a fault is a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known - {"id"})
        if unknown:
            raise FaultError(f"unknown fault fields: {', '.join(unknown)}")
        if "kind" not in document:
            raise FaultError("a fault needs a kind: " + ", ".join(FaultKind))
        try:
            return cls(**{name: document[name] for name in known if name in document})
        except TypeError as error:
            raise FaultError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        defaults = Fault(kind=FaultKind.EMPTY)
        document = {
            name: value
            for name, value in dataclasses.asdict(self).items()
            if name in ("kind", "endpoint", "times") or value != getattr(defaults, name)
        }
        return json.loads(json.dumps(document))  # type: ignore[no-any-return]


def _choice(kind: type[enum.StrEnum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)  # type: ignore[attr-defined]
        raise FaultError(f"{name} must be one of {choices}, not {value!r}") from None


@dataclasses.dataclass(frozen=True)
class ScheduledFault:
    """A fault as stored: its id, what is left of it and how often it fired."""

    id: int
    fault: Fault
    remaining: int | None
    applied: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.fault.to_dict(),
            "remaining": self.remaining,
            "applied": self.applied,
        }


class FaultBook:
    """The scheduled faults in the control database."""

    def __init__(self, database: ControlDatabase) -> None:
        self._database = database

    def add(self, fault: Fault) -> int:
        with self._database.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO faults (endpoint, fault, remaining) VALUES (?, ?, ?)",
                (fault.endpoint, json.dumps(fault.to_dict()), fault.times),
            )
        logger.info("fault %s scheduled: %s", cursor.lastrowid, fault.to_dict())
        return int(cursor.lastrowid or 0)

    def scheduled(self) -> list[ScheduledFault]:
        with self._database.connection() as connection:
            rows = connection.execute("SELECT * FROM faults ORDER BY id").fetchall()
        return [_scheduled(row) for row in rows]

    def remove(self, fault_id: int) -> bool:
        with self._database.transaction() as connection:
            removed = connection.execute(
                "DELETE FROM faults WHERE id = ?", (fault_id,)
            ).rowcount
        return bool(removed)

    def clear(self) -> None:
        with self._database.transaction() as connection:
            connection.execute("DELETE FROM faults")

    def take(self, endpoint: str) -> ScheduledFault | None:
        """Decide, once for all processes, which fault (if any) this call gets.

        Faults are tried in the order they were scheduled; the first that fires is
        used up by one. A seeded fault draws from ``Random(seed, call number)``, so a
        probabilistic scenario replays identically.
        """
        with self._database.transaction() as connection:
            rows = connection.execute(
                "SELECT * FROM faults WHERE endpoint IN (?, ?) "
                "AND (remaining IS NULL OR remaining > 0) ORDER BY id",
                (endpoint, ANY_ENDPOINT),
            ).fetchall()
            for row in rows:
                scheduled = _scheduled(row)
                considered = row["considered"] + 1
                fires = _draw(scheduled.fault, considered)
                connection.execute(
                    "UPDATE faults SET considered = ?, applied = applied + ?, "
                    "remaining = remaining - ? WHERE id = ?",
                    (considered, int(fires), int(fires), scheduled.id),
                )
                if fires:
                    return scheduled
        return None


def _scheduled(row: Any) -> ScheduledFault:
    return ScheduledFault(
        id=row["id"],
        fault=Fault.from_dict(json.loads(row["fault"])),
        remaining=row["remaining"],
        applied=row["applied"],
    )


def _draw(fault: Fault, call_number: int) -> bool:
    if fault.probability >= 1.0:
        return True
    if fault.probability <= 0.0:
        return False
    if fault.seed is None:
        return random.random() < fault.probability
    return random.Random(f"{fault.seed}:{call_number}").random() < fault.probability


# -- applying a fault to one request -------------------------------------------------


def apply_fault(
    fault: Fault,
    environ: dict[str, Any],
    start_response: StartResponse,
    application: WsgiApp,
) -> Iterable[bytes]:
    """Answer the request as the fault says; *application* serves it when needed."""
    if fault.kind is FaultKind.STATUS:
        return _status_answer(fault, environ, start_response)
    if fault.kind is FaultKind.REDIRECT:
        return _redirect(fault, environ, start_response)
    if fault.kind is FaultKind.RESET:
        reset_connection(environ)
    if fault.kind is FaultKind.EMPTY:
        close_connection(environ)
    if fault.kind is FaultKind.LATENCY:
        time.sleep(_seconds(fault))
        return application(environ, start_response)
    return _rewrite_body(fault, environ, start_response, application)


def _status_answer(
    fault: Fault, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    status = int(fault.status or 500)
    message = fault.message or f"Error: injected fault ({_status_line(status)})."
    body = json.dumps({"message": message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    retry_after = fault.retry_after
    if retry_after is None and status in (429, 503):
        retry_after = 1
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    start_response(_status_line(status), headers)
    return [body]


def _redirect(
    fault: Fault, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    path = fault.location or MOVED_PREFIX.rstrip("/") + environ.get("PATH_INFO", "/")
    query = environ.get("QUERY_STRING")
    scheme = environ.get("wsgi.url_scheme", "http")
    script = environ.get("SCRIPT_NAME", "").rstrip("/")
    location = f"{scheme}://{get_host(environ)}{script}{path}"
    if query and fault.location is None:
        location += f"?{query}"
    status = int(fault.status or 307)
    body = json.dumps({"message": f"Moved to {path}."}).encode()
    start_response(
        _status_line(status),
        [
            ("Location", location),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


def _rewrite_body(
    fault: Fault,
    environ: dict[str, Any],
    start_response: StartResponse,
    application: WsgiApp,
) -> Iterable[bytes]:
    answer: dict[str, Any] = {}

    def keep_answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None):  # type: ignore[no-untyped-def]
        answer["status"], answer["headers"] = status, headers
        return lambda data: None

    chunks = application(environ, keep_answer)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

    headers = [
        (name, value)
        for name, value in answer["headers"]
        if name.lower() != "content-length"
    ]
    if fault.kind is FaultKind.CORRUPT:
        body = corrupted(body, fault.offset, fault.length)
    if fault.kind is FaultKind.TRUNCATE:
        kept = len(body) // 2 if fault.keep_bytes is None else fault.keep_bytes
        partial = body[:kept]
        announced = (
            len(body) if fault.content_length is ContentLength.FULL else len(partial)
        )
        headers.append(("Content-Length", str(announced)))
        start_response(answer["status"], headers)
        return _cut_after(partial, environ)

    headers.append(("Content-Length", str(len(body))))
    start_response(answer["status"], headers)
    if fault.kind is FaultKind.SLOW:
        return _dribble(body, _seconds(fault), fault.chunks)
    return [body]


def corrupted(body: bytes, offset: int | None, length: int) -> bytes:
    """Invert *length* bytes from *offset* (default: the middle): same size, and a
    gzip stream that no longer checks out."""
    if not body:
        return body
    start = min(len(body) // 2 if offset is None else offset, len(body) - 1)
    end = min(start + length, len(body))
    return body[:start] + bytes(byte ^ 0xFF for byte in body[start:end]) + body[end:]


def _cut_after(partial: bytes, environ: dict[str, Any]) -> Iterator[bytes]:
    yield partial
    connection = _socket(environ)
    if connection is not None:
        try:
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            logger.debug("truncate: the connection was already closed")


def _dribble(body: bytes, seconds: float, chunks: int) -> Iterator[bytes]:
    size = max(1, -(-len(body) // chunks))
    pieces = [body[start : start + size] for start in range(0, len(body), size)]
    pause = seconds / max(1, len(pieces))
    for number, piece in enumerate(pieces):
        if number:
            time.sleep(pause)
        yield piece


def _seconds(fault: Fault) -> float:
    low = fault.seconds or 0.0
    if fault.max_seconds is None:
        return low
    return random.uniform(low, fault.max_seconds)


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Injected Fault"


# -- cutting connections -------------------------------------------------------------


def _socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client connection, from werkzeug's or gunicorn's environ."""
    connection = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    return connection if isinstance(connection, socket.socket) else None


def reset_connection(environ: dict[str, Any]) -> None:
    """Abort the connection with a TCP reset, then unwind the request.

    The connection's descriptor is replaced by a dead placeholder: the real socket
    closes at once with ``SO_LINGER`` 0 (a RST), and the server's own clean-up later
    acts on the placeholder instead of a descriptor another thread may reuse.
    """
    connection = _socket(environ)
    if connection is None:
        logger.warning("reset fault: this WSGI server does not expose the connection")
    else:
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        placeholder, peer = socket.socketpair()
        try:
            socket_fd = connection.fileno()
            if socket_fd >= 0:
                os.dup2(placeholder.fileno(), socket_fd)
        finally:
            placeholder.close()
            peer.close()
    raise ConnectionResetError(errno.ECONNRESET, "connection reset by a fault")


def close_connection(environ: dict[str, Any]) -> None:
    """Close the connection before any byte of an answer, then unwind the request."""
    connection = _socket(environ)
    if connection is None:
        logger.warning("empty fault: this WSGI server does not expose the connection")
    else:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            logger.debug("empty: the connection was already closed")
    raise BrokenPipeError(errno.EPIPE, "connection closed by a fault")
