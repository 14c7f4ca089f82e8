"""Encryption at rest for key accounts: key checks, data key wrapping, chunked AES-GCM.

A key account registers an RSA public key; its jobs are stored under a fresh data key
that is kept only wrapped (RSA-OAEP) to that public key, so the server cannot read them
unless the client presents the matching private key with a request.

Files are sealed in fixed-size chunks so that arbitrarily large uploads and results
archives stream through bounded memory. Each chunk is an AES-256-GCM record whose
nonce is a random per-file prefix plus the chunk counter, and whose associated data
binds the file header, the chunk index and a final-chunk flag: reordering, swapping,
truncating or extending a file all fail authentication.

Private keys are never logged or written by this module.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import os
import struct
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "CHUNK_SIZE",
    "DATA_KEY_BYTES",
    "MIN_RSA_BITS",
    "DecryptingReader",
    "EncryptedFileError",
    "EncryptingWriter",
    "EncryptionError",
    "KeyFormatError",
    "KeyMismatchError",
    "SealedSpool",
    "WrappedKeyError",
    "decrypt_stream",
    "encrypt_stream",
    "load_private_key",
    "load_public_key",
    "new_data_key",
    "plaintext_size",
    "public_key_pem",
    "unlock_private_key",
    "unwrap_data_key",
    "wrap_data_key",
]

#: Plaintext bytes per sealed chunk: large enough that AES-GCM runs near memory speed,
#: small enough that a streaming request holds only a few of them at once.
CHUNK_SIZE = 64 * 1024

#: Upper bound on a chunk size read from a file header, so that a forged header cannot
#: make the reader allocate an arbitrary buffer before authentication fails.
MAX_CHUNK_SIZE = 4 * 1024 * 1024

#: AES-256.
DATA_KEY_BYTES = 32

#: Smallest RSA modulus accepted for a registered public key.
MIN_RSA_BITS = 2048

_MAGIC = b"SCMENC01"
_HEADER = struct.Struct(">8sI8s")  # magic, chunk size, nonce prefix
_NONCE_PREFIX_BYTES = 8
_TAG_BYTES = 16
_MAX_CHUNKS = 2**32  # the counter is the last 4 bytes of the 12-byte nonce
_CHUNK_AAD = struct.Struct(">Q?")  # chunk index, final-chunk flag

_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()),
    algorithm=hashes.SHA256(),
    label=None,
)


class EncryptionError(Exception):
    """Base of every failure of encryption at rest."""


class KeyFormatError(EncryptionError, ValueError):
    """The text is not a usable key at all (the server answers 400)."""


class KeyMismatchError(EncryptionError):
    """A well-formed private key that does not belong to the account (403)."""


class WrappedKeyError(EncryptionError):
    """A wrapped data key that the given private key cannot unwrap."""


class EncryptedFileError(EncryptionError):
    """An encrypted file was tampered with, truncated, extended or is not ours."""


def load_public_key(text: str | bytes) -> rsa.RSAPublicKey:
    """Parse an account's registered RSA public key, PEM or OpenSSH (``ssh-rsa``)."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    data = data.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyFormatError(
            "not an RSA public key in PEM or OpenSSH format"
        ) from error
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError("the registered public key is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise KeyFormatError(f"RSA public keys need at least {MIN_RSA_BITS} bits")
    return key


def load_private_key(key: str | bytes) -> PrivateKeyTypes:
    """Decode a client's ``key``: base64 of an unencrypted PEM or OpenSSH private key.

    Any key type is returned (an Ed25519 key is still *a key*, just not the account's);
    only text that is not a private key at all raises :class:`KeyFormatError`. The
    error messages never quote the input, which may be a secret.
    """
    try:
        encoded = key.encode("ascii") if isinstance(key, str) else bytes(key)
        key_text = base64.b64decode(b"".join(encoded.split()), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise KeyFormatError("the key is not base64") from None
    key_text = key_text.strip()
    try:
        if key_text.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            return serialization.load_ssh_private_key(key_text, password=None)
        if key_text.startswith(b"-----BEGIN"):
            return serialization.load_pem_private_key(key_text, password=None)
    except TypeError:
        raise KeyFormatError("encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError("the key is not a readable private key") from None
    raise KeyFormatError("the key is not a PEM or OpenSSH private key")


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def unlock_private_key(
    registered: rsa.RSAPublicKey, key: str | bytes
) -> rsa.RSAPrivateKey:
    """Return the client's private key if it is the one registered for the account.

    Raises :class:`KeyFormatError` for text that is not a key and
    :class:`KeyMismatchError` for a key of another account; the public halves are
    compared in constant time so the comparison leaks nothing about the registered key.
    """
    private_key = load_private_key(key)
    presented = _public_der(private_key.public_key())
    matches = hmac.compare_digest(presented, _public_der(registered))
    if not matches or not isinstance(private_key, rsa.RSAPrivateKey):
        raise KeyMismatchError("the key does not match the account's public key")
    return private_key


def public_key_pem(key: rsa.RSAPublicKey) -> str:
    """The PEM text that users.json stores for a key account."""
    return key.public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode("ascii")


def new_data_key() -> bytes:
    """A fresh AES-256 key for one job."""
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)


def wrap_data_key(public_key: rsa.RSAPublicKey, data_key: bytes) -> bytes:
    """Seal a job's data key to the account, so only its private key can recover it."""
    return public_key.encrypt(data_key, _OAEP)


def unwrap_data_key(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Recover a job's data key; a foreign or damaged wrapped key is refused."""
    try:
        data_key = private_key.decrypt(wrapped, _OAEP)
    except ValueError:
        raise WrappedKeyError(
            "the data key cannot be unwrapped with this key"
        ) from None
    if len(data_key) != DATA_KEY_BYTES:
        raise WrappedKeyError("the unwrapped data key has the wrong length")
    return data_key


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _chunk_aad(header: bytes, index: int, final: bool) -> bytes:
    return header + _CHUNK_AAD.pack(index, final)


class EncryptingWriter(io.RawIOBase):
    """A write-only file object that seals everything written to it into ``dst``.

    Lets the server encrypt while it writes (an upload being staged, a results archive
    being built by tarfile) so plaintext never reaches the disk. :meth:`close` writes
    the final chunk; a file that was never closed does not authenticate, which is the
    point: an interrupted write cannot pass for a complete one. ``dst`` is not closed.
    """

    def __init__(
        self, dst: BinaryIO, data_key: bytes, *, chunk_size: int = CHUNK_SIZE
    ) -> None:
        super().__init__()
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_SIZE}")
        self._dst = dst
        self._cipher = AESGCM(data_key)
        self._chunk_size = chunk_size
        self._prefix = os.urandom(_NONCE_PREFIX_BYTES)
        self._header = _HEADER.pack(_MAGIC, chunk_size, self._prefix)
        self._pending = bytearray()
        self._index = 0
        self._plaintext_bytes = 0
        dst.write(self._header)

    @property
    def plaintext_bytes(self) -> int:
        """How many plaintext bytes were written so far (for sizes and quotas)."""
        return self._plaintext_bytes

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        if self.closed:
            raise ValueError("write to a closed encrypted file")
        view = memoryview(data).cast("B")
        self._pending += view
        self._plaintext_bytes += len(view)
        # A chunk is sealed as non-final only once a later byte proves it is not last.
        while len(self._pending) > self._chunk_size:
            self._seal(bytes(self._pending[: self._chunk_size]), final=False)
            del self._pending[: self._chunk_size]
        return len(view)

    def close(self) -> None:
        if not self.closed:
            try:
                self._seal(bytes(self._pending), final=True)
                self._pending.clear()
                self._dst.flush()
            finally:
                super().close()

    def _seal(self, chunk: bytes, *, final: bool) -> None:
        if self._index >= _MAX_CHUNKS:
            raise EncryptionError("file too large for one encrypted stream")
        aad = _chunk_aad(self._header, self._index, final)
        self._dst.write(
            self._cipher.encrypt(_nonce(self._prefix, self._index), chunk, aad)
        )
        self._index += 1


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, data_key: bytes, *, chunk_size: int = CHUNK_SIZE
) -> int:
    """Seal all of ``src`` into ``dst``; returns the number of plaintext bytes."""
    with EncryptingWriter(dst, data_key, chunk_size=chunk_size) as writer:
        while block := src.read(chunk_size):
            writer.write(block)
    return writer.plaintext_bytes


def _read_exact(src: BinaryIO, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining:
        block = src.read(remaining)
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


def decrypt_stream(src: BinaryIO, data_key: bytes) -> Iterator[bytes]:
    """Yield the plaintext of an encrypted file chunk by chunk, each one authenticated.

    A chunk is released only after its tag verified, so a consumer never sees forged
    bytes; damage, truncation or trailing data raise :class:`EncryptedFileError` at the
    point where they are found (for a stream already being sent, mid-way).
    """
    header = _read_exact(src, _HEADER.size)
    if len(header) < _HEADER.size:
        raise EncryptedFileError("not an encrypted file: header truncated")
    magic, chunk_size, prefix = _HEADER.unpack(header)
    if magic != _MAGIC:
        raise EncryptedFileError("not an encrypted file: unknown format")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise EncryptedFileError("not an encrypted file: bad chunk size")
    cipher = AESGCM(data_key)
    record_size = chunk_size + _TAG_BYTES

    record = _read_exact(src, record_size)
    index = 0
    while True:
        if len(record) < _TAG_BYTES:
            raise EncryptedFileError("encrypted file is truncated")
        following = _read_exact(src, record_size) if len(record) == record_size else b""
        final = not following
        try:
            chunk = cipher.decrypt(
                _nonce(prefix, index), record, _chunk_aad(header, index, final)
            )
        except InvalidTag:
            raise EncryptedFileError(
                f"encrypted file failed authentication at chunk {index} "
                "(tampered, truncated, reordered or wrong data key)"
            ) from None
        yield chunk
        if final:
            return
        record = following
        index += 1


class DecryptingReader(io.RawIOBase):
    """A read-only file object over an encrypted file, for consumers such as tarfile.

    Only authenticated plaintext is ever returned; a damaged file raises
    :class:`EncryptedFileError` from :meth:`readinto`. ``src`` is not closed.
    """

    def __init__(self, src: BinaryIO, data_key: bytes) -> None:
        super().__init__()
        self._chunks = decrypt_stream(src, data_key)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        target = memoryview(buffer).cast("B")
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def close(self) -> None:
        self._chunks.close()
        super().close()


def plaintext_size(sealed: BinaryIO) -> int:
    """The plaintext length of an encrypted file, from its header and size alone.

    Lets a tar header or a Content-Length be written before the content is decrypted.
    The answer is only as trustworthy as the file: a damaged file is still refused
    when its chunks are read.
    """
    sealed.seek(0)
    header = _read_exact(sealed, _HEADER.size)
    if len(header) < _HEADER.size:
        raise EncryptedFileError("not an encrypted file: header truncated")
    magic, chunk_size, _ = _HEADER.unpack(header)
    if magic != _MAGIC or not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise EncryptedFileError("not an encrypted file: unknown format")
    body = sealed.seek(0, io.SEEK_END) - _HEADER.size
    sealed.seek(0)
    full_records, last_record = divmod(body, chunk_size + _TAG_BYTES)
    if last_record == 0 and full_records > 0:
        return full_records * chunk_size
    if last_record < _TAG_BYTES:
        raise EncryptedFileError("encrypted file is truncated")
    return full_records * chunk_size + last_record - _TAG_BYTES


class SealedSpool(io.RawIOBase):
    """A temporary file for a request part that is only ever on disk encrypted.

    Written first, then rewound with ``seek(0)`` and read (the way werkzeug's form
    parser uses its ``stream_factory`` files). The key is random, lives in this object
    only and dies with it, so a spooled upload is unreadable on disk even before the
    server knows whose upload it is.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self._file = tempfile.TemporaryFile(dir=directory)
        self._key = new_data_key()
        self._writer: EncryptingWriter | None = EncryptingWriter(self._file, self._key)
        self._reader: DecryptingReader | None = None
        self._position = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writer is not None

    def seekable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        if self._writer is None:
            raise io.UnsupportedOperation("the spool was rewound and is read-only now")
        written = self._writer.write(data)
        self._position += written
        return written

    def readinto(self, buffer: Buffer) -> int:
        if self._reader is None:
            raise io.UnsupportedOperation("rewind the spool with seek(0) to read it")
        count = self._reader.readinto(buffer)
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR and offset == 0:
            return self._position
        if whence != io.SEEK_SET or offset != 0:
            raise io.UnsupportedOperation("a sealed spool can only be rewound")
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
        self._file.seek(0)
        self._reader = DecryptingReader(self._file, self._key)
        self._position = 0
        return 0

    def close(self) -> None:
        if not self.closed:
            try:
                if self._writer is not None:
                    self._writer.close()
                if self._reader is not None:
                    self._reader.close()
            finally:
                self._file.close()
                super().close()
