"""Streaming decoding of ``multipart/form-data`` bodies, for remote_run uploads.

An import archive can be gigabytes, so its bytes are handed on as views into the
buffer just read, never copied or held: the boundary is looked for with one
``find`` per buffer, and only the few bytes that could begin a boundary split
across two reads are kept back.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Iterator
from typing import IO

from werkzeug.http import parse_options_header

from mock_server.errors import InvalidRequest
from mock_server.errors import UploadTooLarge

READ_BYTES = 1024 * 1024
"""How much of the body is read at a time."""

MAX_HEADER_BYTES = 16 * 1024
"""The most a part's header block (or a boundary line's padding) may hold."""


OBSERVER_KEY = "mock_server.multipart.observer"
"""WSGI environ key under which a middleware may offer to watch the body decoded:
a callable that returns the function to hand every event to."""


class MalformedMultipart(InvalidRequest):
    """The body does not follow ``multipart/form-data``."""


@dataclasses.dataclass(frozen=True)
class PartStart:
    """A part begins; its bytes follow as ``PartData`` events, then ``PartEnd``."""

    name: str
    filename: str | None
    content_type: str | None


@dataclasses.dataclass(frozen=True)
class PartData:
    """Some bytes of the current part: a view valid until the decoder is fed again."""

    data: memoryview


@dataclasses.dataclass(frozen=True)
class PartEnd:
    """The current part has no more bytes."""


Event = PartStart | PartData | PartEnd


_CR = ord("\r")
_LF = ord("\n")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_LINE_BREAK = re.compile(r"\r?\n")


class _State(enum.Enum):
    PREAMBLE = enum.auto()
    DATA = enum.auto()
    BOUNDARY_LINE = enum.auto()
    HEADERS = enum.auto()
    EPILOGUE = enum.auto()


class MultipartDecoder:
    """Turns the bytes of a body, fed in pieces of any size, into events.

    Sans-IO, so the application (which pulls the body) and the journal (which
    watches it go by) decode it the same way.
    """

    def __init__(self, boundary: bytes) -> None:
        if not boundary:
            raise MalformedMultipart("Error: the multipart boundary is empty.")
        self._delimiter = b"\n--" + boundary
        # The first boundary of a body has no line break before it.
        self._held = b"\r\n"
        self._state = _State.PREAMBLE
        self._line = bytearray()
        self.complete = False
        """True once the closing boundary has been read."""

    def feed(
        self, buffer: bytes | bytearray, end: int | None = None
    ) -> Iterator[Event]:
        """Decode ``buffer[:end]``, yielding its events in order."""
        end = len(buffer) if end is None else end
        position = 0
        while position < end:
            if self._state in (_State.PREAMBLE, _State.DATA):
                position = yield from self._scan_data(buffer, position, end)
            elif self._state is _State.BOUNDARY_LINE:
                position = self._boundary_line(buffer, position, end)
            elif self._state is _State.HEADERS:
                position = yield from self._headers(buffer, position, end)
            else:
                position = end

    def close(self) -> None:
        """Say the body has ended; it must have ended with its closing boundary."""
        if not self.complete:
            raise MalformedMultipart(
                "Error: the multipart body ends before its closing boundary."
            )

    def _scan_data(
        self, buffer: bytes | bytearray, position: int, end: int
    ) -> Generator[Event, None, int]:
        delimiter = self._delimiter
        # One byte more than a delimiter is held back, so that the carriage return
        # before a delimiter that starts the next read is still at hand.
        hold = len(delimiter)

        if self._held:
            taken = min(end, position + hold) - position
            probe = self._held + bytes(buffer[position : position + taken])
            found = probe.find(delimiter)
            if found != -1:
                yield from self._data(probe, 0, found)
                position += found + len(delimiter) - len(self._held)
                self._held = b""
                yield from self._at_delimiter()
                return position
            if taken < hold:
                safe = max(len(probe) - hold, 0)
                yield from self._data(probe, 0, safe, before_delimiter=False)
                self._held = probe[safe:]
                return end
            yield from self._data(self._held, 0, len(self._held), False)
            self._held = b""

        found = buffer.find(delimiter, position, end)
        if found != -1:
            yield from self._data(buffer, position, found)
            yield from self._at_delimiter()
            return found + len(delimiter)
        safe = max(position, end - hold)
        yield from self._data(buffer, position, safe, before_delimiter=False)
        self._held = bytes(buffer[safe:end])
        return end

    def _data(
        self,
        source: bytes | bytearray,
        start: int,
        stop: int,
        before_delimiter: bool = True,
    ) -> Iterator[Event]:
        """Hand on ``source[start:stop]``; a line break before a delimiter belongs
        to the delimiter, whether it is CRLF or a bare LF."""
        if before_delimiter and stop > start and source[stop - 1] == _CR:
            stop -= 1
        if self._state is _State.DATA and stop > start:
            yield PartData(memoryview(source)[start:stop])

    def _at_delimiter(self) -> Iterator[Event]:
        if self._state is _State.DATA:
            yield PartEnd()
        self._state = _State.BOUNDARY_LINE
        self._line.clear()

    def _boundary_line(self, buffer: bytes | bytearray, position: int, end: int) -> int:
        """After a delimiter: ``--`` closes the body, else padding and a line break
        (CRLF or a bare LF). These few bytes are taken one at a time."""
        while position < end:
            byte = buffer[position]
            position += 1
            self._line.append(byte)
            if self._line == b"--":
                self.complete = True
                self._state = _State.EPILOGUE
                return end
            if byte == _LF:
                break
            if len(self._line) > MAX_HEADER_BYTES:
                raise MalformedMultipart(
                    "Error: a multipart boundary line is too long."
                )
        else:
            return position

        if self._line.rstrip(b"\r\n").strip(b" \t"):
            raise MalformedMultipart(
                "Error: a multipart boundary is followed by more than a line break."
            )
        self._state = _State.HEADERS
        # The line break just read starts the header block, so that a part with
        # no headers at all ends its block at once.
        self._line[:] = b"\n"
        return position

    def _headers(
        self, buffer: bytes | bytearray, position: int, end: int
    ) -> Generator[Event, None, int]:
        held = len(self._line)
        room = MAX_HEADER_BYTES - held
        self._line += buffer[position : min(end, position + room)]
        blank_line = _BLANK_LINE.search(self._line, max(held - 2, 0))
        if blank_line is None:
            if len(self._line) >= MAX_HEADER_BYTES:
                raise MalformedMultipart(
                    "Error: a multipart part's headers are too long."
                )
            return end
        headers = _parse_headers(bytes(self._line[1 : blank_line.start()]))
        self._line.clear()
        self._state = _State.DATA
        yield _part_start(headers)
        return position + blank_line.end() - held


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = ""
    for line in _LINE_BREAK.split(block.decode("utf-8", "replace")):
        if not line:
            continue
        if line[0] in " \t" and name:
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise MalformedMultipart(f"Error: malformed multipart header {line!r}.")
        headers[name] = value.strip()
    return headers


def _part_start(headers: dict[str, str]) -> PartStart:
    disposition, options = parse_options_header(headers.get("content-disposition"))
    if disposition.lower() != "form-data" or "name" not in options:
        raise MalformedMultipart(
            "Error: a multipart part has no Content-Disposition form-data name."
        )
    return PartStart(
        name=options["name"],
        filename=options.get("filename"),
        content_type=headers.get("content-type"),
    )


class Part:
    """One part of a body being read: its name, then its bytes, read once."""

    def __init__(self, start: PartStart, events: Iterator[Event]) -> None:
        self.name = start.name
        self.filename = start.filename
        self.content_type = start.content_type
        self._events = events
        self._ended = False

    def chunks(self) -> Iterator[memoryview]:
        """The part's bytes as they arrive; each view is valid until the next."""
        while not self._ended:
            event = next(self._events, None)
            if event is None or isinstance(event, PartEnd):
                self._ended = True
            elif isinstance(event, PartData):
                yield event.data

    def read(self, limit: int) -> bytes:
        """The whole part, in memory, refused beyond *limit* bytes."""
        collected = bytearray()
        for chunk in self.chunks():
            collected += chunk
            if len(collected) > limit:
                raise UploadTooLarge(
                    f"Error: the multipart part {self.name!r} is larger than "
                    f"{limit // (1024 * 1024)} MiB."
                )
        return bytes(collected)

    def skip(self) -> None:
        for _ in self.chunks():
            pass


def read_parts(
    stream: IO[bytes],
    boundary: bytes,
    max_parts: int,
    read_bytes: int = READ_BYTES,
    observe: Callable[[Event], None] | None = None,
) -> Iterator[Part]:
    """The parts of the body in *stream*, one after the other.

    A part the caller leaves unread is skipped when the next is asked for. The body
    is read through one reused buffer, so a part's views must be used (or copied)
    before the next is taken. *observe*, if given, sees every event first.
    """
    decoder = MultipartDecoder(boundary)
    events = _events(stream, decoder, read_bytes, observe)
    count = 0
    for event in events:
        if not isinstance(event, PartStart):
            continue
        count += 1
        if count > max_parts:
            raise UploadTooLarge(
                f"Error: the multipart body has more than {max_parts} parts."
            )
        part = Part(event, events)
        yield part
        part.skip()


def _events(
    stream: IO[bytes],
    decoder: MultipartDecoder,
    read_bytes: int,
    observe: Callable[[Event], None] | None,
) -> Iterator[Event]:
    buffer = bytearray(read_bytes)
    while not decoder.complete:
        count = stream.readinto(buffer)  # type: ignore[attr-defined]
        if not count:
            decoder.close()
            return
        for event in decoder.feed(buffer, count):
            if observe is not None:
                observe(event)
            yield event
