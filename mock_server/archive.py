"""Safe extraction of import archives and the making of results archives.

An import archive is client input written to the server's disk, so every member is
checked before anything is written: no absolute paths, no ``..``, no links that
resolve outside the job, no devices or FIFOs, and bounded member count and size
(counted on the decompressed stream, so a small gzip cannot expand without limit).
"""

from __future__ import annotations

import errno
import gzip
import io
import logging
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mock_server.crypto import EncryptingWriter
from mock_server.errors import InvalidArchive

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024

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


class _LimitedReader(io.RawIOBase):
    """Reads a decompressed stream and refuses to go past a byte budget."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        super().__init__()
        self._stream = stream
        self._limit = limit
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        self.consumed += count
        if self.consumed > self._limit:
            raise InvalidArchive(
                "Error: the import archive expands beyond "
                f"{self._limit // (1024 * 1024)} MiB."
            )
        return count


def extract_import(
    archive: BinaryIO,
    destination: Path,
    limits: ExtractionLimits,
    data_key: bytes | None = None,
) -> ExtractionSummary:
    """Extract a gzip tar into the empty directory *destination*, member by member.

    On ``InvalidArchive`` the caller removes *destination*; nothing outside it is
    ever written, because each path is resolved before it is used. With a
    *data_key* (a key account's job) every file is written encrypted with it, so
    the import's plaintext never reaches the disk.
    """
    root = os.path.realpath(destination)
    decompressed = gzip.GzipFile(fileobj=archive, mode="rb")
    limited = _LimitedReader(decompressed, limits.max_bytes)
    members = 0
    declared_bytes = 0
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=limited, mode="r|", bufsize=COPY_CHUNK_BYTES
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
                _extract_member(tar, member, root, data_key)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
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
        decompressed.close()

    if members == 0:
        raise InvalidArchive("Error: the import archive is empty.")
    _check_links_stay_inside(root)
    return ExtractionSummary(members=members, bytes=limited.consumed)


def _member_path(name: str) -> str | None:
    """Return a member's normalised relative path, None for the archive root."""
    if "\x00" in name or name.startswith("/") or name.startswith("\\"):
        raise InvalidArchive(f"Error: archive member {name!r} has an absolute path.")
    parts = [part for part in name.split("/") if part not in ("", ".")]
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
    tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, data_key: bytes | None
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
        _write_regular_file(tar, member, target, data_key)
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
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: str, data_key: bytes | None
) -> None:
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    source = tar.extractfile(member)
    if source is None:
        raise InvalidArchive(f"Error: archive member {member.name!r} has no data.")
    with source, os.fdopen(os.open(target, flags, mode), "wb") as output:
        if data_key is None:
            shutil.copyfileobj(source, output, COPY_CHUNK_BYTES)
            return
        with EncryptingWriter(output, data_key) as sealed:
            shutil.copyfileobj(source, sealed, COPY_CHUNK_BYTES)


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
