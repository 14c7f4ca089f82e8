"""Hostile import archives carry their flaw and are built in bounded memory."""

from __future__ import annotations

import tarfile
import tracemalloc
from pathlib import Path

import pytest

from sc_conformance import hostile

SHIPPED_MEMBERS = 9


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as archive:
        return archive.getmembers()


@pytest.mark.parametrize("kind", hostile.HOSTILE_ARCHIVES, ids=lambda kind: kind.name)
def test_hostile_archive_keeps_the_shipped_job(tmp_path: Path, kind) -> None:
    members = _members(kind.build(tmp_path / "hostile.tar.gz"))
    names = {member.name for member in members}
    assert "import/0/inputs/conformance.pkg.json" in names
    assert len(members) > SHIPPED_MEMBERS


def test_absolute_path_member_is_absolute(tmp_path: Path) -> None:
    members = _members(hostile.write_absolute_path(tmp_path / "a.tar.gz"))
    assert members[-1].name.startswith("/")


def test_dotdot_member_climbs_out(tmp_path: Path) -> None:
    members = _members(hostile.write_dotdot_path(tmp_path / "a.tar.gz"))
    assert ".." in members[-1].name.split("/")


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (hostile.write_character_device, tarfile.CHRTYPE),
        (hostile.write_block_device, tarfile.BLKTYPE),
        (hostile.write_fifo, tarfile.FIFOTYPE),
    ],
    ids=["character-device", "block-device", "fifo"],
)
def test_special_member_has_its_type(tmp_path: Path, build, kind: bytes) -> None:
    assert _members(build(tmp_path / "a.tar.gz"))[-1].type == kind


def test_symlink_escape_writes_outside_when_extracted_naively(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = hostile.write_symlink_escape(tmp_path / "a.tar.gz", target=str(outside))

    with tarfile.open(path, "r:gz") as archive:
        archive.extractall(tmp_path / "job", filter="fully_trusted")

    assert (outside / hostile.CANARY_NAME).read_bytes() == hostile.CANARY_TEXT


def test_hardlink_escape_overwrites_outside_file_when_extracted_naively(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    path = hostile.write_hardlink_escape(tmp_path / "a.tar.gz", target=str(victim))

    with tarfile.open(path, "r:gz") as archive:
        archive.extractall(tmp_path / "job", filter="fully_trusted")

    assert victim.read_bytes() == hostile.CANARY_TEXT


REFUSED_BY_DATA_FILTER = [
    kind for kind in hostile.HOSTILE_ARCHIVES if kind.name != "absolute-path"
]
"""The 'data' filter rewrites absolute names instead of refusing them."""


@pytest.mark.parametrize("kind", REFUSED_BY_DATA_FILTER, ids=lambda kind: kind.name)
def test_safe_extraction_filter_refuses_hostile_archive(tmp_path: Path, kind) -> None:
    path = kind.build(tmp_path / "hostile.tar.gz")

    with tarfile.open(path, "r:gz") as archive, pytest.raises(tarfile.FilterError):
        archive.extractall(tmp_path / "job", filter="data")


def test_decompression_bomb_is_small_and_built_in_bounded_memory(
    tmp_path: Path,
) -> None:
    expanded = 64 * 1024 * 1024

    tracemalloc.start()
    try:
        path = hostile.write_decompression_bomb(
            tmp_path / "bomb.tar.gz", expanded_bytes=expanded
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 16 * 1024 * 1024
    assert path.stat().st_size < expanded // 500
    assert _members(path)[-1].size == expanded


def test_many_members_archive_has_the_requested_count(tmp_path: Path) -> None:
    path = hostile.write_many_members(tmp_path / "many.tar.gz", members=20_000)

    members = _members(path)

    assert len(members) == SHIPPED_MEMBERS + 20_000
    assert members[-1].name == "sc_collected_files/empty0019999"
    assert all(member.isreg() and member.size == 0 for member in members[-20_000:])


@pytest.mark.parametrize("kind", sorted(hostile.BROKEN_UPLOADS))
def test_broken_upload_is_not_a_gzip_tar(tmp_path: Path, kind: str) -> None:
    path = hostile.write_broken_upload(tmp_path / "upload.bin", kind)

    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        with tarfile.open(path, "r:gz") as archive:
            archive.getmembers()
