"""The request journal: every client request, what it carried and what it got.

Client developers assert on it ("my client retried remote_run three times"), so each
entry keeps the endpoint, the parsed JSON body (or the multipart parts and the parsed
``params`` part), the status answered, the time taken and the fault applied, if any.
Keys are redacted before anything is written: the journal lives on disk.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
from collections.abc import Callable
from typing import IO
from typing import Any

from werkzeug.http import parse_options_header

from mock_server.controldb import ControlDatabase
from mock_server.manifest import parameter_value
from mock_server.multipart import OBSERVER_KEY
from mock_server.multipart import Event
from mock_server.multipart import MalformedMultipart
from mock_server.multipart import MultipartDecoder
from mock_server.multipart import PartData
from mock_server.multipart import PartStart

logger = logging.getLogger(__name__)

ENDPOINTS = ("remote_run", "check_progress", "check_user", "delete_job", "get_results")

REDACTED = "<redacted>"
MAX_ENTRIES = 10_000
"""Older entries are dropped beyond this many, so a long-lived server stays small."""

_MAX_JSON_PART_BYTES = 16 * 1024 * 1024
_MAX_PARTS = 16
_TRIM_EVERY = 256


def endpoint_of(path: str) -> str | None:
    """The API endpoint a path addresses, None for any other path."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "" and parts[2] == "" and parts[1] in ENDPOINTS:
        return parts[1] if parts[1] != "get_results" else None
    if len(parts) == 3 and parts[:2] == ["", "get_results"] and parts[2]:
        return "get_results"
    return None


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    """One request as the server saw it."""

    id: int
    time: float
    """When the request arrived (seconds since the epoch)."""
    method: str
    path: str
    endpoint: str | None
    status: int | None
    """The status answered; None when a fault cut the connection instead."""
    duration: float
    """Seconds from the request's arrival to the status line (or the cut)."""
    json: Any
    """The JSON body, or for ``remote_run`` the parsed ``params`` part, with keys
    redacted and the manifest (``chip_cfg``) summarised."""
    fields: dict[str, dict[str, Any]] | None
    """Multipart parts by name: filename, content type and size in bytes."""
    body_bytes: int | None
    fault: str | None
    process: int

    @property
    def job_hash(self) -> str | None:
        """The job hash the request names, wherever it carries it."""
        document = self.json if isinstance(self.json, dict) else {}
        params = document.get("params")
        if isinstance(params, dict) and isinstance(params.get("job_hash"), str):
            return params["job_hash"]  # type: ignore[no-any-return]
        if isinstance(document.get("job_hash"), str):
            return document["job_hash"]  # type: ignore[no-any-return]
        if self.endpoint == "get_results":
            return self.path.rsplit("/", 1)[-1].removesuffix(".tar.gz")
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> JournalEntry:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: document.get(name) for name in names})


class Journal:
    """The journal in the control database, shared by every serving process."""

    def __init__(self, database: ControlDatabase) -> None:
        self._database = database
        self._since_trim = 0

    def record(self, entry: dict[str, Any]) -> None:
        """Append an entry (without ``id``: the database numbers entries in order)."""
        with self._database.transaction() as connection:
            connection.execute(
                "INSERT INTO journal (endpoint, entry) VALUES (?, ?)",
                (entry.get("endpoint"), json.dumps(entry)),
            )
        self._since_trim += 1
        if self._since_trim >= _TRIM_EVERY:
            self._since_trim = 0
            self._trim()

    def _trim(self) -> None:
        with self._database.transaction() as connection:
            connection.execute(
                "DELETE FROM journal WHERE id <= (SELECT MAX(id) FROM journal) - ?",
                (MAX_ENTRIES,),
            )

    def entries(
        self, endpoint: str | None = None, since: int = 0
    ) -> list[JournalEntry]:
        """Entries in arrival order; only one endpoint's, only those after *since*."""
        query = "SELECT id, entry FROM journal WHERE id > ?"
        arguments: list[Any] = [since]
        if endpoint is not None:
            query += " AND endpoint = ?"
            arguments.append(endpoint)
        with self._database.connection() as connection:
            rows = connection.execute(query + " ORDER BY id", arguments).fetchall()
        return [
            JournalEntry.from_dict({**json.loads(row["entry"]), "id": row["id"]})
            for row in rows
        ]

    def clear(self) -> None:
        with self._database.transaction() as connection:
            connection.execute("DELETE FROM journal")


# -- reading a request body without taking it from the application -----------------


class ReplayStream(io.RawIOBase):
    """The captured part of a request body, then whatever the client still sends."""

    def __init__(self, captured: IO[bytes], rest: IO[bytes] | None) -> None:
        self._captured = captured
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        chunk = self._captured.read(len(view))
        if not chunk and self._rest is not None:
            chunk = self._rest.read(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)


def _content_length(environ: dict[str, Any]) -> int | None:
    """The body's length; None when it is chunked, which wins over Content-Length."""
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return None
    text = environ.get("CONTENT_LENGTH") or ""
    try:
        length = int(text) if text.strip() else None
    except ValueError:
        return None
    return None if length is None or length < 0 else length


def is_multipart(environ: dict[str, Any]) -> bool:
    content_type = str(environ.get("CONTENT_TYPE", ""))
    return content_type.lower().startswith("multipart/form-data")


def capture_json_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """Read a small body ahead of the application and hand it a replay.

    Only JSON-sized bodies are read (in memory); a body announced larger than
    *limit*, or of unknown length on a connection that does not end it, passes
    untouched, so the application still answers its own limits.
    """
    stream = environ.get("wsgi.input")
    length = _content_length(environ)
    terminated = bool(environ.get("wsgi.input_terminated"))
    if stream is None or (length is None and not terminated):
        return None
    if length is not None and length > limit:
        return None

    wanted = limit + 1 if length is None else length
    body = bytearray()
    while len(body) < wanted:
        chunk = stream.read(min(64 * 1024, wanted - len(body)))
        if not chunk:
            break
        body += chunk
    rest = stream if length is None else None
    environ["wsgi.input"] = io.BufferedReader(ReplayStream(io.BytesIO(body), rest))
    return bytes(body) if len(body) <= limit else None


class MultipartTap(io.RawIOBase):
    """Hands a multipart upload to the application and notes its parts on the way.

    Nothing is read ahead, copied or written anywhere: the bytes pass through to
    the application's own buffer and are decoded there, keeping only the parts'
    sizes and the (small) ``params`` part, so an upload streams once, and a key
    account's upload never lands in plaintext.
    """

    def __init__(self, stream: IO[bytes], length: int | None, boundary: bytes) -> None:
        self._stream = stream
        self._left = length
        self._decoder: MultipartDecoder | None = MultipartDecoder(boundary)
        self._part: dict[str, Any] | None = None
        self._params = bytearray()
        self._params_open = False
        self._adopted = False
        self.parts: dict[str, dict[str, Any]] = {}
        self.size = 0

    @classmethod
    def install(cls, environ: dict[str, Any]) -> MultipartTap | None:
        """Put a tap in front of ``wsgi.input``; None when the body has no boundary."""
        _, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        try:
            boundary = options.get("boundary", "").encode("ascii")
        except UnicodeEncodeError:  # the application refuses such a body
            return None
        stream = environ.get("wsgi.input")
        if not boundary or stream is None:
            return None
        tap = cls(stream, _content_length(environ), boundary)
        environ["wsgi.input"] = tap
        environ[OBSERVER_KEY] = tap.adopt
        return tap

    def adopt(self) -> Callable[[Event], None]:
        """Take the events of the application's own decoding of the body from now
        on, so that a large upload is searched for its boundary once, not twice."""
        self._adopted = True
        return self._note

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._wanted(size)
        if wanted == 0:
            return b""
        chunk = self._stream.read(wanted)
        self._passed(chunk, len(chunk))
        return chunk

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = self._wanted(len(view))
        if wanted == 0:
            return 0
        if hasattr(self._stream, "readinto"):
            count = self._stream.readinto(view[:wanted]) or 0
        else:
            chunk = self._stream.read(wanted)
            count = len(chunk)
            view[:count] = chunk
        if isinstance(buffer, (bytes, bytearray)):
            self._passed(buffer, count)
        else:
            self._passed(bytes(view[:count]), count)
        return count

    def _wanted(self, size: int | None) -> int:
        if size is None or size < 0:
            size = sys.maxsize if self._left is None else self._left
        return size if self._left is None else min(size, self._left)

    def _passed(self, buffer: bytes | bytearray, count: int) -> None:
        self.size += count
        if self._left is not None:
            self._left -= count
        self._decode(buffer, count)

    def drain(self, limit: int) -> None:
        """Read what the application left unread, if that is at most *limit* bytes."""
        if self._left is None or self._left > limit:
            return
        while self.readinto(bytearray(64 * 1024)):
            pass

    def _decode(self, buffer: bytes | bytearray, count: int) -> None:
        if self._decoder is None or self._adopted or count == 0:
            return
        try:
            for event in self._decoder.feed(buffer, count):
                self._note(event)
        except MalformedMultipart:  # a malformed body is the application's to refuse
            logger.debug("journal: cannot decode a multipart body", exc_info=True)
            self._decoder = None
            self.parts = {}

    def _note(self, event: Event) -> None:
        if isinstance(event, PartStart):
            self._part = None
            self._params_open = False
            if not self._takes(event):
                return
            self._part = {
                "filename": event.filename,
                "content_type": event.content_type,
                "bytes": 0,
            }
            self.parts[event.name] = self._part
            self._params_open = event.name == "params"
        elif isinstance(event, PartData) and self._part is not None:
            self._part["bytes"] += len(event.data)
            if self._params_open and len(self._params) <= _MAX_JSON_PART_BYTES:
                self._params += event.data

    def _takes(self, start: PartStart) -> bool:
        """Note a part as the application reads it: the first of each name, but an
        ``import`` only with a file name; never more than a form's worth of names."""
        if start.name == "import" and start.filename is None:
            return "import" not in self.parts
        if start.name == "import" and self.parts.get("import", {}).get("filename"):
            return False
        if start.name != "import" and start.name in self.parts:
            return False
        return len(self.parts) < _MAX_PARTS

    def describe(self) -> tuple[Any, dict[str, dict[str, Any]] | None]:
        """The journal's view: the parsed ``params`` and the parts seen so far."""
        if self._decoder is None and not self.parts:
            return None, None
        params: bytes | None = None
        if "params" in self.parts and len(self._params) <= _MAX_JSON_PART_BYTES:
            params = bytes(self._params)
        fields = {name: dict(part) for name, part in self.parts.items()}
        return _describe_params(params), fields


def describe_json(body: bytes | None) -> Any:
    """The journal's view of a JSON body: the document with keys redacted."""
    if body is None:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return redact(document)


def _describe_params(params_text: bytes | str | None) -> Any:
    if params_text is None:
        return None
    try:
        envelope = json.loads(params_text)
    except (ValueError, RecursionError):
        return None
    if isinstance(envelope, dict) and isinstance(envelope.get("chip_cfg"), dict):
        envelope = {**envelope, "chip_cfg": summarise_manifest(envelope["chip_cfg"])}
    return redact(envelope)


def summarise_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a journal reader needs of a manifest; the whole one stays in the job
    (``ROOT/jobs/<job_hash>/configs/``), so the journal stays small."""
    return {
        "design": parameter_value(manifest, ("design",)),
        "jobname": parameter_value(manifest, ("option", "jobname")),
        "flow": parameter_value(manifest, ("option", "flow")),
    }


def redact(document: Any) -> Any:
    """Replace the account key, at the top and in ``params``, by a marker."""
    if not isinstance(document, dict):
        return document
    redacted = dict(document)
    if "key" in redacted:
        redacted["key"] = REDACTED
    params = redacted.get("params")
    if isinstance(params, dict) and "key" in params:
        redacted["params"] = {**params, "key": REDACTED}
    return redacted
