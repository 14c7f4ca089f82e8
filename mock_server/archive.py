"""Safe extraction of import archives and the making of results archives.

An import archive is client input written to the server's disk, so every member is
checked before anything is written: no absolute paths, no ``..``, no links that
resolve outside the job, no devices or FIFOs, and bounded member count and size
(counted on the decompressed stream, so a small gzip cannot expand without limit).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import queue
import stat
import sys
import tarfile
import threading
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import BinaryIO
from typing import cast

from zlib_ng import zlib_ng

from mock_server.crypto import EncryptingWriter
from mock_server.errors import InvalidArchive

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024

Buffer = bytes | bytearray | memoryview
"""What an upload's bytes arrive as."""

_GZIP_WBITS = 16 + zlib_ng.MAX_WBITS
"""zlib reads the gzip header and checks the trailer (CRC and size) itself.

zlib-ng is used for its speed: the same API as the standard library's zlib, with
a checksum an order of magnitude faster, which takes a large import's gunzip from
about half of the extraction's time to a fifth."""

_GZIP_ERROR = cast("type[Exception]", zlib_ng.error)

MAX_EXTENDED_HEADER_BYTES = 64 * 1024
MAX_CHAINED_HEADERS = 8
MAX_PATH_DEPTH = 128
"""Folders deep a member may sit; deeper paths are refused, not created."""
MAX_GZIP_MEMBERS = 64
"""gzip members an import may be cut into (``cat a.gz b.gz``); each costs a copy of
the rest of a read, so an archive of thousands of empty members is refused."""

_EXTENDED_HEADERS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)

_RESERVE_FROM_BYTES = 1024 * 1024
_WRITE_BATCH_BYTES = 1024 * 1024
_WRITE_BATCH_PIECES = 64
_WRITE_QUEUE_DEPTH = 4
"""Batches of pieces waiting to be written, at most: the memory an extraction
holds stays a few megabytes whatever the size of the import."""

_INPUT_BYTES = 64 * 1024
_OUTPUT_BYTES = 256 * 1024
"""What one decompression step takes and makes at most: small enough that its
buffers come from the allocator's free lists instead of fresh pages, which a
gigabyte-sized import would otherwise fault in by the hundred thousand."""

_SERVER_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


@dataclass(frozen=True)
class ExtractionLimits:
    """How much an import archive may hold once decompressed."""

    max_bytes: int
    max_members: int


@dataclass(frozen=True)
class ExtractionSummary:
    """What an accepted import archive held."""

    members: int
    bytes: int


class _DecompressedImport:
    """The decompressed bytes of an import archive, read forward only.

    ``tarfile`` reads headers through ``read``, ``tell`` and forward ``seek``;
    member contents are taken with ``views``, straight from the decompressor's
    output, so the bytes of a large import are copied as little as possible. Every
    decompressed byte counts against *limit*, so a small gzip cannot expand
    without bound, and the gzip checksum of every member is verified by zlib.
    """

    def __init__(self, compressed: Iterable[Buffer], limit: int) -> None:
        self._compressed = iter(compressed)
        self._limit = limit
        self._decompressor = zlib_ng.decompressobj(_GZIP_WBITS)
        self._input = memoryview(b"")
        self._member_open = False
        self._members = 0
        self._output = b""
        self._start = 0
        self._offset = 0
        self.produced = 0
        """Decompressed bytes made so far."""

    def tell(self) -> int:
        return self._offset

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or position < self._offset:
            raise tarfile.ReadError("the import archive is read forward only")
        for _ in self.views(position - self._offset, exact=False):
            pass
        return self._offset

    def read(self, size: int = -1) -> bytes:
        """*size* bytes, fewer only where the archive ends."""
        if size < 0:
            size = sys.maxsize
        return b"".join(bytes(view) for view in self.views(size, exact=False))

    def views(self, size: int, exact: bool = True) -> Iterator[memoryview]:
        """The next *size* bytes, in pieces: views of output blocks that are never
        changed, so a piece may be kept (queued for writing) after the next.

        With *exact*, an archive that ends sooner is refused.
        """
        while size > 0:
            if self._start == len(self._output) and not self._decompress():
                if exact:
                    raise EOFError("the import archive ends inside a member")
                return
            stop = min(len(self._output), self._start + size)
            view = memoryview(self._output)[self._start : stop]
            size -= stop - self._start
            self._offset += stop - self._start
            self._start = stop
            yield view

    def drain(self) -> None:
        """Read to the end, so that the whole gzip stream is checked."""
        for _ in self.views(sys.maxsize, exact=False):
            pass

    def _decompress(self) -> bool:
        """Make the next block of output; False at the end of the archive."""
        while True:
            if not len(self._input):
                following = next(self._compressed, None)
                if following is None:
                    if self._member_open:
                        raise EOFError("the import archive ends inside its gzip stream")
                    return False
                self._input = memoryview(following)
                continue
            if not self._member_open and not self._open_member():
                continue

            piece = self._input[:_INPUT_BYTES]
            output = self._decompressor.decompress(piece, _OUTPUT_BYTES)
            if self._decompressor.eof:
                left = len(self._decompressor.unused_data)
                self._member_open = False
            else:
                left = len(self._decompressor.unconsumed_tail)
            self._input = self._input[len(piece) - left :]
            if output:
                self._take(output)
                return True

    def _open_member(self) -> bool:
        """Start the next gzip member; False when the input held only padding."""
        if self._members:
            # Zero padding may follow a member, as gzip allows; it is skipped a
            # little at a time, never by copying the rest of the read.
            while len(self._input) and self._input[0] == 0:
                head = bytes(self._input[:4096])
                self._input = self._input[len(head) - len(head.lstrip(b"\0")) :]
            if not len(self._input):
                return False
        if self._members == MAX_GZIP_MEMBERS:
            raise InvalidArchive(
                f"Error: the import archive has more than {MAX_GZIP_MEMBERS} "
                "gzip members."
            )
        self._decompressor = zlib_ng.decompressobj(_GZIP_WBITS)
        self._member_open = True
        self._members += 1
        return True

    def _take(self, output: bytes) -> None:
        self.produced += len(output)
        if self.produced > self._limit:
            raise InvalidArchive(
                "Error: the import archive expands beyond "
                f"{self._limit // (1024 * 1024)} MiB."
            )
        self._output = output
        self._start = 0


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses what ``tarfile`` would otherwise build in memory without bound.

    Extended headers (pax, GNU long names) are read whole, and can chain one to the
    next through recursion; sparse maps are parsed into lists as long as the data
    says. Only the decompressed bytes are limited, so a few kilobytes of gzip could
    cost gigabytes of memory. Archives made by ``tarfile`` itself, as the client's
    are, have no sparse members and extended headers of a few hundred bytes.
    """

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            _refuse_sparse(self)
        if self.type not in _EXTENDED_HEADERS:
            return super()._proc_member(archive)  # type: ignore[misc,no-any-return]

        if self.size > MAX_EXTENDED_HEADER_BYTES:
            raise InvalidArchive(
                "Error: the import archive has an extended header larger than "
                f"{MAX_EXTENDED_HEADER_BYTES // 1024} KiB."
            )
        depth = getattr(archive, "_extended_depth", 0) + 1
        if depth > MAX_CHAINED_HEADERS:
            raise InvalidArchive(
                "Error: the import archive has more than "
                f"{MAX_CHAINED_HEADERS} extended headers in a row."
            )
        archive._extended_depth = depth  # type: ignore[attr-defined]
        try:
            return super()._proc_member(archive)  # type: ignore[misc,no-any-return]
        finally:
            archive._extended_depth = depth - 1  # type: ignore[attr-defined]

    def _proc_gnusparse_00(self, *arguments: Any) -> None:
        _refuse_sparse(self)

    def _proc_gnusparse_01(self, *arguments: Any) -> None:
        _refuse_sparse(self)

    def _proc_gnusparse_10(self, *arguments: Any) -> None:
        _refuse_sparse(self)


def _refuse_sparse(member: tarfile.TarInfo) -> None:
    raise InvalidArchive(
        f"Error: archive member {member.name!r} is a sparse file (refused)."
    )


class _FileWriter:
    """Writes the contents of extracted files on a thread of its own.

    Copying an import into the page cache is a large share of its extraction; on a
    thread of its own it overlaps receiving and gunzipping the next pieces (both
    sides release the GIL). Everything else, every check included, stays on the
    request's thread, which waits for the writes before it answers.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, list[memoryview] | None] | None] = (
            queue.Queue(maxsize=_WRITE_QUEUE_DEPTH)
        )
        self._failure: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, name="import-writer", daemon=True
        )
        self._thread.start()

    def write(self, sink: BinaryIO, pieces: list[memoryview]) -> None:
        """Queue *pieces* (views of bytes nobody changes) to be written to *sink*."""
        self._raise_failure()
        self._queue.put((sink, pieces))

    def close(self, *files: BinaryIO) -> None:
        """Queue the closing of *files*, in this order, after their writes."""
        self._queue.put((files, None))

    def finish(self) -> None:
        """Wait for every queued write; raise the first error writing met."""
        self._stop()
        self._raise_failure()

    def abandon(self) -> None:
        """Drop the writes still queued (their files are thrown away); close all."""
        self._abandoned = True
        self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            target, pieces = item
            try:
                if pieces is None:
                    for file in target:
                        file.close()
                elif self._failure is None and not self._abandoned:
                    _write_pieces(target, pieces)
            except BaseException as error:  # handed to the request's thread
                self._failure = self._failure or error


def _reserve(output: BinaryIO, size: int) -> None:
    """Allocate a large file's blocks at once: the file system then has less to do
    on each write (a third less time in the kernel, measured on ext4)."""
    try:
        os.posix_fallocate(output.fileno(), 0, size)
    except OSError as error:
        logger.debug("cannot reserve %d bytes for an extracted file: %s", size, error)


def _write_pieces(sink: BinaryIO, pieces: list[memoryview]) -> None:
    if isinstance(sink, io.FileIO):
        written = os.writev(sink.fileno(), pieces)
        if written == sum(len(piece) for piece in pieces):
            return
        pieces = _after(pieces, written)
    for piece in pieces:
        while len(piece):
            piece = piece[sink.write(piece) or 0 :]


def _after(pieces: list[memoryview], skipped: int) -> list[memoryview]:
    """What is left of *pieces* once their first *skipped* bytes are written."""
    left = []
    for piece in pieces:
        if skipped >= len(piece):
            skipped -= len(piece)
            continue
        left.append(piece[skipped:])
        skipped = 0
    return left


def file_chunks(archive: BinaryIO) -> Iterator[bytes]:
    """The bytes of an archive file, a read at a time."""
    while chunk := archive.read(COPY_CHUNK_BYTES):
        yield chunk


def extract_import(
    archive: BinaryIO | Iterable[Buffer],
    destination: Path,
    limits: ExtractionLimits,
    data_key: bytes | None = None,
) -> ExtractionSummary:
    """Extract a gzip tar into the empty directory *destination*, member by member.

    *archive* is a file, or the bytes of an upload as they arrive. On
    ``InvalidArchive`` the caller removes *destination*; nothing outside it is
    ever written, because each path is resolved before it is used. With a
    *data_key* (a key account's job) every file is written encrypted with it, so
    the import's plaintext never reaches the disk.
    """
    root = os.path.realpath(destination)
    compressed = (
        file_chunks(cast(BinaryIO, archive))
        if hasattr(archive, "read")
        else cast(Iterable[Buffer], archive)
    )
    decompressed = _DecompressedImport(compressed, limits.max_bytes)
    writer = _FileWriter()
    members = 0
    declared_bytes = 0
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=decompressed, mode="r:", tarinfo=_CheckedTarInfo
        ) as tar:
            for member in tar:
                members += 1
                if members > limits.max_members:
                    raise InvalidArchive(
                        "Error: the import archive has more than "
                        f"{limits.max_members} members."
                    )
                declared_bytes += max(member.size, 0) if member.isreg() else 0
                if declared_bytes > limits.max_bytes:
                    raise InvalidArchive(
                        "Error: the import archive expands beyond "
                        f"{limits.max_bytes // (1024 * 1024)} MiB."
                    )
                _extract_member(decompressed, writer, member, root, data_key)
        decompressed.drain()
        writer.finish()
    except (
        tarfile.TarError,
        EOFError,
        _GZIP_ERROR,
        ValueError,
        RecursionError,
    ) as error:
        logger.debug("unreadable import archive: %s", error)
        raise InvalidArchive(
            "Error: the import archive is not a valid gzip-compressed tar."
        ) from None
    except OSError as error:
        if error.errno in _SERVER_FAULTS:
            raise
        raise InvalidArchive(
            f"Error: the import archive could not be extracted ({error.strerror})."
        ) from None
    finally:
        writer.abandon()

    if members == 0:
        raise InvalidArchive("Error: the import archive is empty.")
    _check_links_stay_inside(root)
    return ExtractionSummary(members=members, bytes=decompressed.produced)


def _member_path(name: str) -> str | None:
    """Return a member's normalised relative path, None for the archive root."""
    if "\x00" in name or name.startswith("/") or name.startswith("\\"):
        raise InvalidArchive(f"Error: archive member {name!r} has an absolute path.")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if len(parts) > MAX_PATH_DEPTH:
        raise InvalidArchive(
            f"Error: archive member {name[:80]!r}... is more than "
            f"{MAX_PATH_DEPTH} folders deep."
        )
    if ".." in parts:
        raise InvalidArchive(
            f"Error: archive member {name!r} leaves the job directory."
        )
    return "/".join(parts) if parts else None


def _is_inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _resolved_inside(root: str, path: str, what: str) -> str:
    resolved = os.path.realpath(path)
    if not _is_inside(root, resolved):
        raise InvalidArchive(
            f"Error: archive member {what!r} leaves the job directory."
        )
    return resolved


def _extract_member(
    decompressed: _DecompressedImport,
    writer: _FileWriter,
    member: tarfile.TarInfo,
    root: str,
    data_key: bytes | None,
) -> None:
    relative = _member_path(member.name)
    if relative is None:
        if member.isdir():
            return
        raise InvalidArchive(
            "Error: an archive member that is not a directory is unnamed."
        )

    if member.ischr() or member.isblk() or member.isfifo():
        raise InvalidArchive(
            f"Error: archive member {member.name!r} is a device or FIFO (refused)."
        )

    target = os.path.join(root, relative)
    parent = _resolved_inside(root, os.path.dirname(target), member.name)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    target = os.path.join(parent, os.path.basename(target))

    if member.isdir():
        _make_directory(target, member.name)
    elif member.isreg():
        _clear_for_file(target, member.name)
        _write_regular_file(decompressed, writer, member, target, data_key)
    elif member.issym():
        _make_symlink(root, member, target)
    elif member.islnk():
        _make_hardlink(root, member, target)
    else:
        raise InvalidArchive(
            f"Error: archive member {member.name!r} has an unsupported type."
        )


def _make_directory(target: str, name: str) -> None:
    if os.path.lexists(target):
        if os.path.isdir(target) and not os.path.islink(target):
            return
        raise InvalidArchive(f"Error: archive member {name!r} conflicts with another.")
    os.mkdir(target, 0o755)


def _clear_for_file(target: str, name: str) -> None:
    """Let a later member replace an earlier file, as tar does, but never a folder."""
    if not os.path.lexists(target):
        return
    if os.path.isdir(target) and not os.path.islink(target):
        raise InvalidArchive(f"Error: archive member {name!r} conflicts with another.")
    os.unlink(target)


def _write_regular_file(
    decompressed: _DecompressedImport,
    writer: _FileWriter,
    member: tarfile.TarInfo,
    target: str,
    data_key: bytes | None,
) -> None:
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    output = os.fdopen(os.open(target, flags, mode), "wb", buffering=0)
    sink: BinaryIO = output
    if data_key is not None:
        sink = EncryptingWriter(output, data_key)  # type: ignore[assignment]
    elif member.size >= _RESERVE_FROM_BYTES:
        _reserve(output, member.size)

    batch: list[memoryview] = []
    batched = 0
    try:
        for view in decompressed.views(member.size):
            batch.append(view)
            batched += len(view)
            if batched >= _WRITE_BATCH_BYTES or len(batch) >= _WRITE_BATCH_PIECES:
                writer.write(sink, batch)
                batch, batched = [], 0
        if batch:
            writer.write(sink, batch)
    finally:
        writer.close(*dict.fromkeys((sink, output)))


def _make_symlink(root: str, member: tarfile.TarInfo, target: str) -> None:
    link = member.linkname
    if not link or "\x00" in link or os.path.isabs(link):
        raise InvalidArchive(
            f"Error: archive member {member.name!r} links outside the job directory."
        )
    _resolved_inside(root, os.path.join(os.path.dirname(target), link), member.name)
    _clear_for_file(target, member.name)
    os.symlink(link, target)


def _make_hardlink(root: str, member: tarfile.TarInfo, target: str) -> None:
    relative = _member_path(member.linkname)
    if relative is None:
        raise InvalidArchive(
            f"Error: archive member {member.name!r} links to the job directory itself."
        )
    source = os.path.join(root, relative)
    _resolved_inside(root, source, member.name)
    if not os.path.lexists(source) or not stat.S_ISREG(os.lstat(source).st_mode):
        raise InvalidArchive(
            f"Error: archive member {member.name!r} links to a file the archive "
            "does not hold."
        )
    _clear_for_file(target, member.name)
    os.link(source, target, follow_symlinks=False)


def _check_links_stay_inside(root: str) -> None:
    """Re-check every symlink once all exist: a later member can redirect an earlier
    link through a directory link that did not exist when the first was made."""
    for directory, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                _resolved_inside(root, path, os.path.relpath(path, root))


def _anonymous(tarinfo: tarfile.TarInfo) -> tarfile.TarInfo:
    """Strip the server's user and group names from results members."""
    tarinfo.uid = tarinfo.gid = 0
    tarinfo.uname = tarinfo.gname = ""
    return tarinfo


def build_results_archive(job_dir: Path, job_hash: str, destination: Path) -> int:
    """Write the job's tree as ``<job_hash>/...`` to a gzip tar; return its size.

    Links are stored as links, never followed, so the archive holds only the
    job's own files.
    """
    with tarfile.open(destination, mode="w:gz", compresslevel=1) as tar:
        tar.add(job_dir, arcname=job_hash, recursive=True, filter=_anonymous)
    return destination.stat().st_size
