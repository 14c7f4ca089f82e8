"""A key account's job on disk: its wrapped data key and its encrypted files.

Every regular file of such a job (extracted import, manifest, node logs and outputs,
results archive) is stored sealed with the job's data key (see ``mock_server.crypto``);
directory and file names stay readable so the job tree keeps its plain-job layout. The
data key is stored only wrapped to the account's public key, beside the job's files,
so deleting the job destroys the only way to read them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric import rsa

from mock_server import crypto

logger = logging.getLogger(__name__)

WRAPPED_KEY_NAME = "data-key.wrapped"
"""File in ``jobs/<job_hash>/`` that marks a job as encrypted and holds its key."""

RESTART_FAILURE = (
    "the job's files are encrypted with the account's key, which the server holds "
    "only while the job runs; the server restarted, so the job cannot resume. Its "
    "data stays encrypted: delete the job and submit it again."
)


@dataclass(frozen=True, repr=False)
class JobKey:
    """A job's data key, unwrapped, in memory only while a request or run needs it."""

    data_key: bytes

    def __repr__(self) -> str:
        return "JobKey(<secret>)"

    @classmethod
    def create(cls, public_key: rsa.RSAPublicKey) -> tuple[JobKey, bytes]:
        """A fresh key for a new job, and its wrapped form to store."""
        data_key = crypto.new_data_key()
        return cls(data_key), crypto.wrap_data_key(public_key, data_key)

    @classmethod
    def unlock(cls, job_dir: Path, private_key: rsa.RSAPrivateKey) -> JobKey:
        """Unwrap the stored key of an encrypted job with the account's private key."""
        wrapped = (job_dir / WRAPPED_KEY_NAME).read_bytes()
        return cls(crypto.unwrap_data_key(private_key, wrapped))


def is_sealed(job_dir: Path) -> bool:
    """Tell an encrypted job from a plain one by its wrapped key."""
    return (job_dir / WRAPPED_KEY_NAME).is_file()


def write_wrapped_key(job_dir: Path, wrapped: bytes) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(
        job_dir / WRAPPED_KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
    )
    with os.fdopen(descriptor, "wb") as output:
        output.write(wrapped)


def destroy_wrapped_key(job_dir: Path) -> None:
    """Remove the job's wrapped key first, so that from this moment on nothing of
    the job can be decrypted, even if removing its files is interrupted."""
    (job_dir / WRAPPED_KEY_NAME).unlink(missing_ok=True)


@contextlib.contextmanager
def sealed_output(path: Path, key: JobKey, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write a file sealed, replacing *path* atomically only once it is complete.

    A link at *path* is replaced, never followed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(prefix=".writing-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as output:
            os.fchmod(output.fileno(), mode)
            with crypto.EncryptingWriter(output, key.data_key) as writer:
                yield writer  # type: ignore[misc]
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, key: JobKey) -> None:
    with sealed_output(path, key) as output:
        output.write(text.encode("utf-8"))


def read_text(path: Path, key: JobKey) -> str:
    with path.open("rb") as sealed:
        return b"".join(crypto.decrypt_stream(sealed, key.data_key)).decode("utf-8")


def plaintext_size(path: Path) -> int:
    with path.open("rb") as sealed:
        return crypto.plaintext_size(sealed)


def stream_plaintext(sealed: BinaryIO, key: JobKey) -> Iterator[bytes]:
    """Yield an open sealed file's plaintext chunk by chunk, closing it at the end."""
    with sealed:
        yield from crypto.decrypt_stream(sealed, key.data_key)


def _anonymous(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def build_results_archive(
    job_dir: Path, job_hash: str, destination: Path, key: JobKey
) -> int:
    """Write the sealed results archive of an encrypted job; return its plaintext size.

    The archive holds what a plain job's archive holds (``<job_hash>/...``, links kept
    as links, the same member order) with each file's plaintext, so an account's
    results do not depend on how its jobs are stored. The wrapped key is left out.
    Plaintext exists only in memory, a chunk at a time.
    """
    with sealed_output(destination, key) as output:
        with tarfile.open(fileobj=output, mode="w:gz", compresslevel=1) as tar:
            _add_tree(tar, job_dir, job_hash, key, top=True)
        return output.plaintext_bytes  # type: ignore[attr-defined,no-any-return]


def _add_tree(
    tar: tarfile.TarFile, path: Path, arcname: str, key: JobKey, *, top: bool = False
) -> None:
    member = _anonymous(tar.gettarinfo(str(path), arcname))
    if member.isreg():
        member.size = plaintext_size(path)
        with path.open("rb") as sealed:
            with crypto.DecryptingReader(sealed, key.data_key) as plaintext:
                tar.addfile(member, plaintext)
        return
    tar.addfile(member)
    if member.isdir() and stat.S_ISDIR(os.lstat(path).st_mode):
        for name in sorted(os.listdir(path)):
            if top and name == WRAPPED_KEY_NAME:
                continue
            _add_tree(tar, path / name, f"{arcname}/{name}", key)


class PlaintextReader(crypto.DecryptingReader):
    """Reads a sealed file's plaintext and closes the file with itself, so it can be
    handed to a WSGI response as a whole."""

    def __init__(self, sealed_file: BinaryIO, key: JobKey) -> None:
        super().__init__(sealed_file, key.data_key)
        self._sealed_file = sealed_file

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._sealed_file.close()
