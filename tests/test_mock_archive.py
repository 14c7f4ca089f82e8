"""Import archives: the real client's is accepted, hostile ones leave nothing behind."""

from __future__ import annotations

import errno
import gzip
import io
import os
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mock_server import MockServer
from mock_server import archive as archive_module
from mock_server.archive import ExtractionLimits
from mock_server.archive import extract_import
from mock_server.errors import InvalidArchive

LIMITS = ExtractionLimits(max_bytes=4 * 1024 * 1024, max_members=50)

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"data") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _archive(*members: Member, tar_format: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tar_format) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _pax_bomb() -> bytes:
    info = tarfile.TarInfo("small")
    info.pax_headers = {"comment": "x" * (8 * 1024 * 1024)}
    return _archive((info, b""), tar_format=tarfile.PAX_FORMAT)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "absolute path": lambda: _archive(_file("/tmp/sc-mock-absolute")),
    "dot-dot path": lambda: _archive(_file("../outside")),
    "nested dot-dot path": lambda: _archive(_file("a/b/../../../outside")),
    "symlink escaping": lambda: _archive(_special("up", tarfile.SYMTYPE, "../..")),
    "absolute symlink": lambda: _archive(_special("etc", tarfile.SYMTYPE, "/etc")),
    "write through symlink": lambda: _archive(
        _special("up", tarfile.SYMTYPE, "../.."), _file("up/outside")
    ),
    "symlink redirected later": lambda: _archive(
        _special("link", tarfile.SYMTYPE, "z/.."), _special("z", tarfile.SYMTYPE, ".")
    ),
    "hardlink escaping": lambda: _archive(
        _special("passwd", tarfile.LNKTYPE, "../../../../etc/passwd")
    ),
    "absolute hardlink": lambda: _archive(
        _special("passwd", tarfile.LNKTYPE, "/etc/passwd")
    ),
    "hardlink to missing member": lambda: _archive(
        _special("ghost", tarfile.LNKTYPE, "not/there")
    ),
    "character device": lambda: _archive(_special("tty", tarfile.CHRTYPE)),
    "block device": lambda: _archive(_special("disk", tarfile.BLKTYPE)),
    "fifo": lambda: _archive(_special("pipe", tarfile.FIFOTYPE)),
    "too many members": lambda: _archive(*(_file(f"f{n}") for n in range(51))),
    "zero bomb": lambda: _archive(_file("zeros", b"\0" * (16 * 1024 * 1024))),
    "pax header bomb": _pax_bomb,
    "truncated gzip": lambda: _archive(_file("a", os.urandom(4096)))[:-200],
    "empty archive": lambda: _archive(),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_refused_by_extraction(tmp_path, kind):
    destination = tmp_path / "outer" / "job"
    destination.mkdir(parents=True)
    with pytest.raises(InvalidArchive):
        extract_import(io.BytesIO(HOSTILE[kind]()), destination, LIMITS)
    assert list(tmp_path.joinpath("outer").iterdir()) == [destination]
    assert not Path("/tmp/sc-mock-absolute").exists()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("strict")
    with MockServer(
        root=root, node_seconds=0.02, max_extract_mb=4, max_archive_members=50
    ) as server:
        yield server


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_upload_is_400_and_leaves_nothing(
    strict_server, mock_api_for, kind
):
    job_hash = uuid.uuid4().hex
    response = mock_api_for(strict_server.url).upload(job_hash, archive=HOSTILE[kind]())
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["message"], str)

    root = strict_server.root
    assert list((root / "jobs").iterdir()) == []
    assert list((root / "results").iterdir()) == []
    assert [p.name for p in strict_server.app.store.staging.iterdir()] == [
        ".owner.lock"
    ]
    assert mock_api_for(strict_server.url).progress(job_hash).status_code == 404


def test_archive_within_limits_is_accepted_by_the_strict_server(
    strict_server, mock_api_for
):
    archive = _archive(
        _special("", tarfile.DIRTYPE),
        _file("sub/data", b"\0" * (1024 * 1024)),
        _special("sub/alias", tarfile.SYMTYPE, "data"),
        _special("top", tarfile.SYMTYPE, "sub"),
        _file("top/through-link"),
        _special("again", tarfile.LNKTYPE, "sub/data"),
    )
    job_hash = uuid.uuid4().hex
    api = mock_api_for(strict_server.url)
    assert api.upload(job_hash, archive=archive).status_code == 200
    work = strict_server.root / "jobs" / job_hash / "conformance" / "job0"
    assert (work / "sub" / "through-link").read_bytes() == b"data"
    assert os.readlink(work / "sub" / "alias") == "data"
    assert (work / "again").stat().st_ino == (work / "sub" / "data").stat().st_ino
    api.wait_finished(job_hash)


def test_real_client_archive_with_unnamed_root_and_hardlink_is_accepted(
    mock_fresh_server, mock_api_for, mock_archive
):
    names = [member.name for member in tarfile.open(fileobj=io.BytesIO(mock_archive))]
    assert "" in names  # the property this test is about

    job_hash = uuid.uuid4().hex
    api = mock_api_for(mock_fresh_server.url)
    assert api.upload(job_hash).status_code == 200
    work = mock_fresh_server.root / "jobs" / job_hash / "conformance" / "job0"
    inputs = work / "import" / "0" / "inputs" / "conformance.pkg.json"
    outputs = work / "import" / "0" / "outputs" / "conformance.pkg.json"
    assert inputs.stat().st_ino == outputs.stat().st_ino
    assert (work / "sc_collected_files").is_dir()
    api.wait_finished(job_hash)


def test_later_member_replaces_an_earlier_file_like_tar(tmp_path):
    archive = _archive(_file("same", b"first"), _file("same", b"second"))
    extract_import(io.BytesIO(archive), tmp_path, LIMITS)
    assert (tmp_path / "same").read_bytes() == b"second"


def test_file_member_over_a_directory_is_refused(tmp_path):
    archive = _archive(_special("d", tarfile.DIRTYPE), _file("d"))
    with pytest.raises(InvalidArchive):
        extract_import(io.BytesIO(archive), tmp_path, LIMITS)


def test_extracted_files_carry_no_special_permission_bits(tmp_path):
    info, data = _file("tool", b"#!/bin/sh\n")
    info.mode = 0o6777
    extract_import(io.BytesIO(_archive((info, data))), tmp_path, LIMITS)
    assert (tmp_path / "tool").stat().st_mode & 0o7777 == 0o755


# -- streaming: chunks of any size, gzip members, the writer thread -------------------

files_strategy = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=6),
    st.binary(max_size=3000) | st.just(os.urandom(300_000)),
    min_size=1,
    max_size=5,
)


def _gzip_members(members: list[bytes], padding: int) -> bytes:
    """A tar cut into gzip members, as `cat a.gz b.gz` makes, then zero padding."""
    return b"".join(gzip.compress(member) for member in members) + b"\0" * padding


@settings(max_examples=40, deadline=None)
@given(files=files_strategy, data=st.data())
def test_contents_are_the_same_whatever_the_chunks_and_members(files, data):
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    raw = tar_bytes.getvalue()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=3)))
    members = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    archive = _gzip_members(members, data.draw(st.integers(0, 600)))
    chunk_size = data.draw(st.integers(1, 70_000))
    chunks = [archive[i : i + chunk_size] for i in range(0, len(archive), chunk_size)]

    with tempfile.TemporaryDirectory() as folder:
        summary = extract_import(iter(chunks), Path(folder), LIMITS)
        extracted = {path.name: path.read_bytes() for path in Path(folder).iterdir()}

    assert extracted == files
    assert summary.members == len(files)


def test_garbage_after_the_gzip_stream_is_refused(tmp_path):
    archive = _archive(_file("a")) + b"trailing garbage"

    with pytest.raises(InvalidArchive, match="not a valid gzip-compressed tar"):
        extract_import(io.BytesIO(archive), tmp_path, LIMITS)


def test_a_corrupted_gzip_checksum_is_refused(tmp_path):
    archive = bytearray(_archive(_file("a", b"content")))
    archive[-8] ^= 0xFF  # the CRC-32 in the gzip trailer

    with pytest.raises(InvalidArchive, match="not a valid gzip-compressed tar"):
        extract_import(io.BytesIO(bytes(archive)), tmp_path, LIMITS)


def test_a_write_failure_reaches_the_caller_as_itself(tmp_path, monkeypatch):
    def disk_full(sink, pieces):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module, "_write_pieces", disk_full)

    with pytest.raises(OSError) as raised:
        extract_import(io.BytesIO(_archive(_file("a", b"x" * 5000))), tmp_path, LIMITS)
    assert raised.value.errno == errno.ENOSPC
    assert not isinstance(raised.value, InvalidArchive)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_archive_cut_inside_a_member_leaves_no_file_open(tmp_path):
    archive = _archive(_file("a", os.urandom(200_000)), _file("b", os.urandom(200_000)))
    cut = gzip.decompress(archive)[:300_000]
    before = _open_descriptors()

    with pytest.raises(InvalidArchive):
        extract_import(iter([gzip.compress(cut)]), tmp_path, LIMITS)

    assert _open_descriptors() == before
    assert not any(thread.name == "import-writer" for thread in threading.enumerate())


def test_a_large_member_is_written_whole_and_exactly_its_size(tmp_path):
    content = os.urandom(2 * 1024 * 1024 + 123)
    archive = _archive(_file("large.bin", content), _file("after", b"small"))

    extract_import(io.BytesIO(archive), tmp_path, LIMITS)

    assert (tmp_path / "large.bin").stat().st_size == len(content)
    assert (tmp_path / "large.bin").read_bytes() == content
    assert (tmp_path / "after").read_bytes() == b"small"


# -- what tarfile would build in memory without bound is refused ----------------------


def _pax_member(name: str, pax_headers: dict[str, str], data: bytes = b"") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.pax_headers = pax_headers
    padding = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return info.tobuf(format=tarfile.PAX_FORMAT) + data + padding


def _chained_pax_headers(count: int) -> bytes:
    block = tarfile.TarInfo("x" * 200).tobuf(format=tarfile.PAX_FORMAT)
    extended_header, member = block[: -tarfile.BLOCKSIZE], block[-tarfile.BLOCKSIZE :]
    return gzip.compress(extended_header * count + member + b"\0" * 1024)


def _old_gnu_sparse() -> bytes:
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)


def _long_gnu_name(length: int) -> bytes:
    info = tarfile.TarInfo("n" * length)
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)


UNBOUNDED = {
    "sparse 1.0 map": lambda: gzip.compress(
        _pax_member(
            "f",
            {
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
                "GNU.sparse.realsize": "1",
                "GNU.sparse.name": "f",
            },
            b"1000000\n" + b"0\n" * 2000,
        )
        + b"\0" * 1024
    ),
    "sparse 0.1 map that is not numbers": lambda: gzip.compress(
        _pax_member("f", {"GNU.sparse.map": "a,b"}) + b"\0" * 1024
    ),
    "old GNU sparse member": _old_gnu_sparse,
    "GNU long name of 1 MiB": lambda: _long_gnu_name(1024 * 1024),
    "2000 chained pax headers": lambda: _chained_pax_headers(2000),
    "12 chained pax headers": lambda: _chained_pax_headers(12),
    "path 300 folders deep": lambda: _archive(_file("a/" * 300 + "f")),
    "100 empty gzip members": lambda: (
        _archive(_file("a")) + gzip.compress(b"", mtime=0) * 100
    ),
}


@pytest.mark.parametrize("kind", UNBOUNDED)
def test_what_tarfile_would_hold_in_memory_is_refused(tmp_path, kind):
    with pytest.raises(InvalidArchive):
        extract_import(io.BytesIO(UNBOUNDED[kind]()), tmp_path, LIMITS)


def test_a_few_chained_extended_headers_and_long_names_are_accepted(tmp_path):
    long_name = "d" * 150 + "/" + "f" * 150
    archive = _archive(_file(long_name, b"content"), tar_format=tarfile.PAX_FORMAT)

    extract_import(io.BytesIO(archive), tmp_path, LIMITS)

    assert (tmp_path / long_name).read_bytes() == b"content"
    extract_import(io.BytesIO(_chained_pax_headers(3)), tmp_path / "chained", LIMITS)


def test_a_megabyte_of_zero_padding_after_the_archive_is_accepted(tmp_path):
    archive = _archive(_file("a", b"content")) + b"\0" * (1024 * 1024)

    extract_import(iter([archive]), tmp_path, LIMITS)

    assert (tmp_path / "a").read_bytes() == b"content"
