"""Unit tests of an encrypted job on disk: wrapped key, sealed files, results."""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mock_server import crypto
from mock_server import sealed
from mock_server.archive import build_results_archive as build_plain_results_archive

JOB_HASH = "0123456789abcdef0123456789abcdef"
MARKER = b"SEALED-JOB-MARKER-"


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def job_key() -> sealed.JobKey:
    return sealed.JobKey(crypto.new_data_key())


def make_job_tree(job_dir: Path, key: sealed.JobKey | None) -> None:
    """A small job tree: nested files, a hard link, a relative symlink, an empty dir."""
    files = {
        "configs/chipjob0.json": b'{"design": "d"}',
        "d/job0/import/0/inputs/d.pkg.json": MARKER * 100,
        "d/job0/work/0/work.log": b"log line\n",
        "d/job0/big.bin": random.Random(7).randbytes(3 * crypto.CHUNK_SIZE + 5),
    }
    for relative, content in files.items():
        path = job_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if key is None:
            path.write_bytes(content)
        else:
            with sealed.sealed_output(path, key) as output:
                output.write(content)
    (job_dir / "d/job0/import/0/outputs").mkdir(parents=True)
    os.link(
        job_dir / "d/job0/import/0/inputs/d.pkg.json",
        job_dir / "d/job0/import/0/outputs/d.pkg.json",
    )
    os.symlink("../inputs/d.pkg.json", job_dir / "d/job0/import/0/outputs/link.json")
    (job_dir / "d/job0/empty").mkdir()


def archive_members(archive: bytes) -> list[tuple[str, str, int, bytes | str]]:
    members = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            content: bytes | str = member.linkname
            if member.isreg():
                extracted = tar.extractfile(member)
                assert extracted is not None
                content = extracted.read()
            kind = member.type.decode()
            members.append((member.name, kind, member.mode, content))
    return members


def walk_bytes(root: Path) -> bytes:
    return b"".join(
        (Path(folder) / name).read_bytes()
        for folder, _, names in os.walk(root)
        for name in names
        if not (Path(folder) / name).is_symlink()
    )


def test_job_key_round_trips_through_the_wrapped_file(
    tmp_path: Path, account_key: rsa.RSAPrivateKey
) -> None:
    key, wrapped = sealed.JobKey.create(account_key.public_key())

    sealed.write_wrapped_key(tmp_path, wrapped)

    assert sealed.is_sealed(tmp_path)
    assert sealed.JobKey.unlock(tmp_path, account_key) == key
    assert key.data_key not in (tmp_path / sealed.WRAPPED_KEY_NAME).read_bytes()


def test_wrapped_key_file_is_private(
    tmp_path: Path, account_key: rsa.RSAPrivateKey
) -> None:
    _, wrapped = sealed.JobKey.create(account_key.public_key())

    sealed.write_wrapped_key(tmp_path, wrapped)

    assert (tmp_path / sealed.WRAPPED_KEY_NAME).stat().st_mode & 0o777 == 0o600


def test_destroyed_wrapped_key_makes_the_job_plain_and_unreadable(
    tmp_path: Path, account_key: rsa.RSAPrivateKey
) -> None:
    _, wrapped = sealed.JobKey.create(account_key.public_key())
    sealed.write_wrapped_key(tmp_path, wrapped)

    sealed.destroy_wrapped_key(tmp_path)

    assert not sealed.is_sealed(tmp_path)
    with pytest.raises(FileNotFoundError):
        sealed.JobKey.unlock(tmp_path, account_key)


def test_job_key_repr_hides_the_key(job_key: sealed.JobKey) -> None:
    assert job_key.data_key.hex() not in repr(job_key)
    assert repr(job_key.data_key) not in repr(job_key)


def test_sealed_text_round_trip(tmp_path: Path, job_key: sealed.JobKey) -> None:
    path = tmp_path / "node" / "outputs" / "d.pkg.json"

    sealed.write_text(path, '{"marker": "SEALED-TEXT"}', job_key)

    assert b"SEALED-TEXT" not in path.read_bytes()
    assert sealed.read_text(path, job_key) == '{"marker": "SEALED-TEXT"}'
    assert sealed.plaintext_size(path) == len('{"marker": "SEALED-TEXT"}')


def test_interrupted_sealed_output_leaves_nothing(
    tmp_path: Path, job_key: sealed.JobKey
) -> None:
    target = tmp_path / "out.bin"

    with pytest.raises(RuntimeError):
        with sealed.sealed_output(target, job_key) as output:
            output.write(b"half")
            raise RuntimeError("stopped")

    assert list(tmp_path.iterdir()) == []


def test_sealed_results_archive_matches_the_plain_one(
    tmp_path: Path, job_key: sealed.JobKey
) -> None:
    plain_dir, sealed_dir = (
        tmp_path / "plain" / JOB_HASH,
        tmp_path / "sealed" / JOB_HASH,
    )
    make_job_tree(plain_dir, None)
    make_job_tree(sealed_dir, job_key)
    sealed.write_wrapped_key(sealed_dir, b"wrapped key bytes")
    plain_archive, sealed_archive = tmp_path / "plain.tgz", tmp_path / "sealed.tgz"

    build_plain_results_archive(plain_dir, JOB_HASH, plain_archive)
    size = sealed.build_results_archive(sealed_dir, JOB_HASH, sealed_archive, job_key)

    with sealed_archive.open("rb") as stored:
        decrypted = b"".join(sealed.stream_plaintext(stored, job_key))
    assert size == len(decrypted) == sealed.plaintext_size(sealed_archive)
    assert archive_members(decrypted) == archive_members(plain_archive.read_bytes())


def test_sealed_job_keeps_no_plaintext_on_disk(
    tmp_path: Path, job_key: sealed.JobKey
) -> None:
    job_dir = tmp_path / "jobs" / JOB_HASH
    make_job_tree(job_dir, job_key)

    sealed.build_results_archive(job_dir, JOB_HASH, tmp_path / "r.tgz", job_key)

    assert MARKER not in walk_bytes(tmp_path)
    assert b"log line" not in walk_bytes(tmp_path)


def test_tampered_job_file_fails_the_results_archive(
    tmp_path: Path, job_key: sealed.JobKey
) -> None:
    job_dir = tmp_path / JOB_HASH
    make_job_tree(job_dir, job_key)
    log = job_dir / "d/job0/work/0/work.log"
    damaged = bytearray(log.read_bytes())
    damaged[-1] ^= 1
    log.write_bytes(bytes(damaged))
    destination = tmp_path / "r.tgz"

    with pytest.raises(crypto.EncryptedFileError):
        sealed.build_results_archive(job_dir, JOB_HASH, destination, job_key)

    assert not destination.exists()
