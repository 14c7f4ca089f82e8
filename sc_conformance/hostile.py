"""Hostile import archives and broken uploads, written to disk for security checks.

Every builder streams to a path so that a decompression bomb or an archive of a
hundred thousand members never sits in memory. Each hostile archive carries the
members of the shipped import archive plus one flaw, so a server that refuses it
refuses it for the flaw and not because the job itself is incomplete.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import tarfile
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

CANARY_NAME = "sc-conformance-canary.txt"
"""File name a hostile archive tries to write outside the job's directory."""

CANARY_TEXT = b"written through a hostile import archive\n"

ESCAPE_PREFIX = "../" * 3
"""From a member under ``import/0/``, one level above the folder the import is
extracted to. That is enough to show the flaw, and on a server that extracts into
``<job_hash>/<design>/<jobname>`` (as sc-server 0.13 does) the canary lands inside
the job's own folder, where deleting the job removes it."""

ESCAPE_LINK_TARGET = "../" + CANARY_NAME
"""A hard link's target, relative to the extraction folder: one level above it."""

ABSOLUTE_CANARY = "/tmp/" + CANARY_NAME
"""Where the absolute-path archive tries to write on a server given by URL."""

DEFAULT_BOMB_BYTES = 1024 * 1024 * 1024
"""Expanded size of the default decompression bomb (its gzip is about 1 MiB)."""

DEFAULT_MEMBER_COUNT = 100_000

_CHUNK = 1024 * 1024


def shipped_import_path() -> Path:
    """Return the import archive a real SiliconCompiler 0.13 client uploaded."""
    resource = resources.files("sc_conformance.data").joinpath("import.tar.gz")
    return Path(str(resource))


@contextmanager
def _import_archive(path: Path, *, compresslevel: int = 6) -> Iterator[tarfile.TarFile]:
    """Open *path* for writing, pre-filled with the shipped import members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(
        path, "w:gz", compresslevel=compresslevel, format=tarfile.PAX_FORMAT
    ) as archive:
        with tarfile.open(shipped_import_path(), "r:gz") as shipped:
            for member in shipped:
                content = shipped.extractfile(member) if member.isreg() else None
                archive.addfile(member, content)
        yield archive


def _regular(name: str, content: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    member = tarfile.TarInfo(name)
    member.size = len(content)
    member.mode = 0o644
    return member, io.BytesIO(content)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    member.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    return member


def write_absolute_path(path: Path, *, target: str | None = None) -> Path:
    """An archive with a member whose path is absolute (default ``ABSOLUTE_CANARY``)."""
    name = target or ABSOLUTE_CANARY
    with _import_archive(path) as archive:
        archive.addfile(*_regular(name, CANARY_TEXT))
    return path


def write_dotdot_path(path: Path, *, target: str | None = None) -> Path:
    """An archive with a member whose path climbs out of the job with ``..``."""
    name = target or f"import/0/{ESCAPE_PREFIX}{CANARY_NAME}"
    with _import_archive(path) as archive:
        archive.addfile(*_regular(name, CANARY_TEXT))
    return path


def write_symlink_escape(path: Path, *, target: str | None = None) -> Path:
    """A symlink pointing out of the job, then a file written through it.

    *target* is the directory the link points to; by default the folder one level
    above the extraction folder. A naive extractor leaves
    ``<target>/sc-conformance-canary.txt`` behind.
    """
    link_target = target or ESCAPE_PREFIX.rstrip("/")
    with _import_archive(path) as archive:
        archive.addfile(_link("import/0/escape", link_target, tarfile.SYMTYPE))
        archive.addfile(*_regular(f"import/0/escape/{CANARY_NAME}", CANARY_TEXT))
    return path


def write_hardlink_escape(path: Path, *, target: str | None = None) -> Path:
    """A hard link to a file outside the job, then new content written to the link.

    *target* is the outside file; a naive extractor opens the link for writing
    and so overwrites the outside file with the canary text.
    """
    link_target = target or ESCAPE_LINK_TARGET
    with _import_archive(path) as archive:
        archive.addfile(_link("import/0/victim", link_target, tarfile.LNKTYPE))
        archive.addfile(*_regular("import/0/victim", CANARY_TEXT))
    return path


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.mode = 0o666
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        # 1:3 is /dev/null and 7:0 is /dev/loop0 on Linux: harmless if created.
        member.devmajor, member.devminor = (1, 3) if kind == tarfile.CHRTYPE else (7, 0)
    return member


def write_character_device(path: Path) -> Path:
    """An archive with a character device member."""
    with _import_archive(path) as archive:
        archive.addfile(_special("import/0/inputs/device", tarfile.CHRTYPE))
    return path


def write_block_device(path: Path) -> Path:
    """An archive with a block device member."""
    with _import_archive(path) as archive:
        archive.addfile(_special("import/0/inputs/device", tarfile.BLKTYPE))
    return path


def write_fifo(path: Path) -> Path:
    """An archive with a FIFO member (an extractor reading it would block)."""
    with _import_archive(path) as archive:
        archive.addfile(_special("import/0/inputs/fifo", tarfile.FIFOTYPE))
    return path


class _Zeros(io.RawIOBase):
    """A readable stream of *size* zero bytes that never holds them all."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        count = min(len(buffer), self._left, _CHUNK)
        buffer[:count] = bytes(count)
        self._left -= count
        return count


def write_decompression_bomb(
    path: Path, *, expanded_bytes: int = DEFAULT_BOMB_BYTES, compresslevel: int = 9
) -> Path:
    """An archive whose one extra member expands to *expanded_bytes* of zeros.

    The zeros stream through gzip, so building a gigabyte bomb costs a few seconds
    and about a megabyte of disk, never a gigabyte of memory.
    """
    with _import_archive(path, compresslevel=compresslevel) as archive:
        member = tarfile.TarInfo("import/0/inputs/zeros.bin")
        member.size = expanded_bytes
        member.mode = 0o644
        archive.addfile(member, io.BufferedReader(_Zeros(expanded_bytes), _CHUNK))
    logger.debug("decompression bomb %s: %d bytes expanded", path, expanded_bytes)
    return path


def _empty_file_headers(members: int) -> Iterator[bytes]:
    """Yield ustar headers of empty files, patched from one template for speed.

    ``TarInfo.tobuf`` costs tens of microseconds a member; a hundred thousand
    members would take seconds, so only the name digits and checksum change here.
    """
    digits = 7
    template = tarfile.TarInfo(f"sc_collected_files/empty{0:0{digits}d}")
    template.mode = 0o644
    header = bytearray(template.tobuf(tarfile.USTAR_FORMAT))
    name_end = len(template.name)
    header[148:156] = b" " * 8
    base_checksum = sum(header) - digits * ord("0")
    for index in range(members):
        number = f"{index:0{digits}d}".encode("ascii")
        header[name_end - digits : name_end] = number
        checksum = base_checksum + sum(number)
        header[148:156] = b"%06o\0 " % checksum
        yield bytes(header)


def write_many_members(path: Path, *, members: int = DEFAULT_MEMBER_COUNT) -> Path:
    """An archive with *members* empty files besides the job's own."""
    with _import_archive(path, compresslevel=1) as archive:
        assert archive.fileobj is not None
        for header in _empty_file_headers(members):
            archive.fileobj.write(header)
            archive.offset += len(header)
    return path


@dataclasses.dataclass(frozen=True)
class HostileArchive:
    """One kind of hostile import archive and the rule that forbids it."""

    name: str
    requirement: str
    build: Callable[[Path], Path]


HOSTILE_ARCHIVES: tuple[HostileArchive, ...] = (
    HostileArchive("absolute-path", "RUN-08", write_absolute_path),
    HostileArchive("dotdot-path", "RUN-08", write_dotdot_path),
    HostileArchive("symlink-escape", "RUN-09", write_symlink_escape),
    HostileArchive("hardlink-escape", "RUN-09", write_hardlink_escape),
    HostileArchive("character-device", "RUN-10", write_character_device),
    HostileArchive("block-device", "RUN-10", write_block_device),
    HostileArchive("fifo", "RUN-10", write_fifo),
)
"""The small hostile archives; the bomb and the member flood take a size."""


# Uploads that are not import archives at all --------------------------------------


def empty_upload() -> bytes:
    return b""


def not_gzip_upload() -> bytes:
    return b"this is not a gzip stream, just text where an archive should be\n"


def gzip_not_tar_upload() -> bytes:
    return gzip.compress(b'{"not": "a tar archive"}\n' * 64, mtime=0)


def truncated_gzip_upload() -> bytes:
    """The first half of the shipped import archive: gzip and tar both cut short."""
    archive = shipped_import_path().read_bytes()
    return archive[: len(archive) // 2]


BROKEN_UPLOADS: dict[str, Callable[[], bytes]] = {
    "empty": empty_upload,
    "not-gzip": not_gzip_upload,
    "gzip-not-tar": gzip_not_tar_upload,
    "truncated-gzip": truncated_gzip_upload,
}
"""Import parts a server must refuse with 400 (they are not a gzip tar)."""


def write_broken_upload(path: Path, kind: str) -> Path:
    """Write one of ``BROKEN_UPLOADS`` to *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BROKEN_UPLOADS[kind]())
    return path
