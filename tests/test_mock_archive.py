"""Import archives: the real client's is accepted, hostile ones leave nothing behind."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mock_server import MockServer
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
