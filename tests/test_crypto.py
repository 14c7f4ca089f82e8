"""Unit tests of encryption at rest: key checks, data key wrapping, sealed streams."""

from __future__ import annotations

import base64
import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa

from mock_server import crypto

KeyEncoder = Callable[[rsa.RSAPrivateKey], str]

SMALL_CHUNK = 1024
HEADER_BYTES = 20
RECORD_BYTES = SMALL_CHUNK + 16


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def data_key() -> bytes:
    return crypto.new_data_key()


def pem_key(private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The client's ``key`` for a private key saved as unencrypted PKCS#8 PEM."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(pem).decode("ascii")


def openssh_key(private_key: rsa.RSAPrivateKey) -> str:
    """The client's ``key`` for a private key saved the way ssh-keygen saves it."""
    text = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return base64.b64encode(text).decode("ascii")


def seal(plaintext: bytes, data_key: bytes, chunk_size: int = SMALL_CHUNK) -> bytes:
    sealed = io.BytesIO()
    crypto.encrypt_stream(
        io.BytesIO(plaintext), sealed, data_key, chunk_size=chunk_size
    )
    return sealed.getvalue()


def unseal(sealed: bytes, data_key: bytes) -> bytes:
    return b"".join(crypto.decrypt_stream(io.BytesIO(sealed), data_key))


# Keys ---------------------------------------------------------------------------------


def test_public_key_loads_from_pem(account_key: rsa.RSAPrivateKey) -> None:
    pem = crypto.public_key_pem(account_key.public_key())

    loaded = crypto.load_public_key(pem)

    assert loaded.public_numbers() == account_key.public_key().public_numbers()


def test_public_key_loads_from_openssh_line(account_key: rsa.RSAPrivateKey) -> None:
    line = account_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )

    loaded = crypto.load_public_key(line.decode("ascii") + " user@host\n")

    assert loaded.public_numbers() == account_key.public_key().public_numbers()


@pytest.mark.parametrize("text", ["", "hello", "ssh-rsa AAAA", "-----BEGIN nothing"])
def test_garbage_public_key_is_a_format_error(text: str) -> None:
    with pytest.raises(crypto.KeyFormatError):
        crypto.load_public_key(text)


def test_non_rsa_public_key_is_refused() -> None:
    ed_public = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = ed_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(crypto.KeyFormatError, match="not an RSA key"):
        crypto.load_public_key(pem)


def test_short_rsa_public_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    with pytest.raises(crypto.KeyFormatError, match="2048"):
        crypto.load_public_key(crypto.public_key_pem(weak.public_key()))


@pytest.mark.parametrize("encode", [pem_key, openssh_key], ids=["pem", "openssh"])
def test_matching_private_key_unlocks(
    account_key: rsa.RSAPrivateKey, encode: KeyEncoder
) -> None:
    registered = account_key.public_key()

    unlocked = crypto.unlock_private_key(registered, encode(account_key))

    assert unlocked.private_numbers() == account_key.private_numbers()


@pytest.mark.parametrize("encode", [pem_key, openssh_key], ids=["pem", "openssh"])
def test_other_accounts_private_key_is_a_mismatch(
    account_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, encode: KeyEncoder
) -> None:

    with pytest.raises(crypto.KeyMismatchError):
        crypto.unlock_private_key(account_key.public_key(), encode(other_key))


def test_private_key_of_another_type_is_a_mismatch(
    account_key: rsa.RSAPrivateKey,
) -> None:
    ed_key = pem_key(ed25519.Ed25519PrivateKey.generate())

    with pytest.raises(crypto.KeyMismatchError):
        crypto.unlock_private_key(account_key.public_key(), ed_key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not base64 at all!",
        "password123",
        base64.b64encode(b"just some text").decode(),
        base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nAAAA\n").decode(),
        "\u00e9t\u00e9",
    ],
    ids=["empty", "not-base64", "password", "text", "broken-pem", "non-ascii"],
)
def test_text_that_is_not_a_key_is_a_format_error(
    account_key: rsa.RSAPrivateKey, key: str
) -> None:
    with pytest.raises(crypto.KeyFormatError):
        crypto.unlock_private_key(account_key.public_key(), key)


def test_public_key_sent_as_private_key_is_a_format_error(
    account_key: rsa.RSAPrivateKey,
) -> None:
    public_pem = crypto.public_key_pem(account_key.public_key()).encode()

    with pytest.raises(crypto.KeyFormatError):
        crypto.load_private_key(base64.b64encode(public_pem))


def test_encrypted_private_key_is_a_format_error(
    account_key: rsa.RSAPrivateKey,
) -> None:
    protected = account_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )

    with pytest.raises(crypto.KeyFormatError, match="encrypted"):
        crypto.load_private_key(base64.b64encode(protected))


def test_format_errors_do_not_quote_the_key(account_key: rsa.RSAPrivateKey) -> None:
    pem = pem_key(account_key)
    damaged = base64.b64encode(base64.b64decode(pem)[:-200]).decode()

    with pytest.raises(crypto.KeyFormatError) as raised:
        crypto.load_private_key(damaged)

    assert damaged not in str(raised.value)
    assert raised.value.__cause__ is None


# Data keys ----------------------------------------------------------------------------


def test_data_keys_are_fresh_aes_256_keys() -> None:
    first, second = crypto.new_data_key(), crypto.new_data_key()

    assert len(first) == len(second) == 32
    assert first != second


def test_wrapped_data_key_unwraps_with_the_account_key(
    account_key: rsa.RSAPrivateKey, data_key: bytes
) -> None:
    wrapped = crypto.wrap_data_key(account_key.public_key(), data_key)

    assert data_key not in wrapped
    assert crypto.unwrap_data_key(account_key, wrapped) == data_key


def test_wrapped_data_key_does_not_unwrap_with_another_key(
    account_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, data_key: bytes
) -> None:
    wrapped = crypto.wrap_data_key(account_key.public_key(), data_key)

    with pytest.raises(crypto.WrappedKeyError):
        crypto.unwrap_data_key(other_key, wrapped)


def test_damaged_wrapped_data_key_is_refused(
    account_key: rsa.RSAPrivateKey, data_key: bytes
) -> None:
    wrapped = bytearray(crypto.wrap_data_key(account_key.public_key(), data_key))
    wrapped[10] ^= 1

    with pytest.raises(crypto.WrappedKeyError):
        crypto.unwrap_data_key(account_key, bytes(wrapped))


# Sealed streams -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 3 * SMALL_CHUNK, 5000],
)
def test_stream_round_trip(data_key: bytes, size: int) -> None:
    plaintext = os.urandom(size)

    assert unseal(seal(plaintext, data_key), data_key) == plaintext


def test_default_chunk_size_round_trip(data_key: bytes) -> None:
    plaintext = os.urandom(3 * crypto.CHUNK_SIZE + 7)

    assert unseal(seal(plaintext, data_key, crypto.CHUNK_SIZE), data_key) == plaintext


def test_sealed_stream_does_not_contain_the_plaintext(data_key: bytes) -> None:
    marker = b"MARKER-" * 400

    sealed = seal(marker, data_key)

    assert b"MARKER-" not in sealed


def test_same_plaintext_seals_differently_each_time(data_key: bytes) -> None:
    plaintext = b"same bytes" * 300

    assert seal(plaintext, data_key) != seal(plaintext, data_key)


def test_stream_size_grows_by_header_and_tags_only(data_key: bytes) -> None:
    plaintext = os.urandom(3 * SMALL_CHUNK + 5)

    sealed = seal(plaintext, data_key)

    assert len(sealed) == HEADER_BYTES + len(plaintext) + 4 * 16


def test_decryption_yields_chunk_by_chunk(data_key: bytes) -> None:
    plaintext = os.urandom(10 * crypto.CHUNK_SIZE)
    sealed = seal(plaintext, data_key, crypto.CHUNK_SIZE)

    chunks = list(crypto.decrypt_stream(io.BytesIO(sealed), data_key))

    assert len(chunks) == 10
    assert max(len(chunk) for chunk in chunks) == crypto.CHUNK_SIZE


class CountingSource(io.RawIOBase):
    """A plaintext source of a given size that never holds more than one read."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.remaining = size
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self.remaining)
        self.largest_read = max(self.largest_read, len(buffer))
        buffer[:size] = b"\xab" * size
        self.remaining -= size
        return size


class LargestWrite(io.RawIOBase):
    """A sink that keeps only the size of the largest write it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.largest_write = 0
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = len(memoryview(data))  # type: ignore[arg-type]
        self.largest_write = max(self.largest_write, size)
        self.total += size
        return size


def test_encryption_streams_in_chunk_sized_pieces(data_key: bytes) -> None:
    source = CountingSource(64 * crypto.CHUNK_SIZE)
    sink = LargestWrite()

    crypto.encrypt_stream(source, sink, data_key)  # type: ignore[arg-type]

    assert source.largest_read <= crypto.CHUNK_SIZE
    assert sink.largest_write <= crypto.CHUNK_SIZE + 16
    assert sink.total == HEADER_BYTES + 64 * (crypto.CHUNK_SIZE + 16)


def test_writer_seals_what_is_written_in_pieces(data_key: bytes) -> None:
    plaintext = os.urandom(4321)
    sealed = io.BytesIO()

    with crypto.EncryptingWriter(sealed, data_key, chunk_size=SMALL_CHUNK) as writer:
        for start in range(0, len(plaintext), 97):
            writer.write(plaintext[start : start + 97])

    assert writer.plaintext_bytes == len(plaintext)
    assert not sealed.closed
    assert unseal(sealed.getvalue(), data_key) == plaintext


def test_writer_serves_tarfile_and_reader_serves_extraction(data_key: bytes) -> None:
    payload = os.urandom(3000)
    sealed = io.BytesIO()
    with crypto.EncryptingWriter(sealed, data_key, chunk_size=SMALL_CHUNK) as writer:
        with tarfile.open(fileobj=writer, mode="w|gz") as archive:
            member = tarfile.TarInfo("job/outputs/design.pkg.json")
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))

    reader = crypto.DecryptingReader(io.BytesIO(sealed.getvalue()), data_key)
    with tarfile.open(fileobj=reader, mode="r|gz") as archive:
        member = archive.next()
        assert member is not None
        extracted = archive.extractfile(member)
        assert extracted is not None
        contents = extracted.read()

    assert member.name == "job/outputs/design.pkg.json"
    assert contents == payload
    assert payload not in sealed.getvalue()


def test_reader_returns_everything_with_small_reads(data_key: bytes) -> None:
    plaintext = os.urandom(5000)
    reader = crypto.DecryptingReader(io.BytesIO(seal(plaintext, data_key)), data_key)

    pieces = iter(lambda: reader.read(333), b"")

    assert b"".join(pieces) == plaintext


def test_unclosed_writer_does_not_authenticate(data_key: bytes) -> None:
    sealed = io.BytesIO()
    writer = crypto.EncryptingWriter(sealed, data_key, chunk_size=SMALL_CHUNK)
    writer.write(os.urandom(5 * SMALL_CHUNK))

    with pytest.raises(crypto.EncryptedFileError):
        unseal(sealed.getvalue(), data_key)


def test_write_after_close_is_refused(data_key: bytes) -> None:
    writer = crypto.EncryptingWriter(io.BytesIO(), data_key)
    writer.close()

    with pytest.raises(ValueError):
        writer.write(b"late")


# Tamper and truncation ----------------------------------------------------------------


@pytest.fixture
def sealed_chunks(data_key: bytes) -> bytes:
    """Four records: three full chunks and a short final one."""
    return seal(os.urandom(3 * SMALL_CHUNK + 100), data_key)


def records(sealed: bytes) -> Iterator[bytes]:
    for start in range(HEADER_BYTES, len(sealed), RECORD_BYTES):
        yield sealed[start : start + RECORD_BYTES]


@pytest.mark.parametrize("position", [0, 9, HEADER_BYTES + 5, -1, -17, -200])
def test_flipped_bit_is_detected(
    data_key: bytes, sealed_chunks: bytes, position: int
) -> None:
    damaged = bytearray(sealed_chunks)
    damaged[position] ^= 0x10

    with pytest.raises(crypto.EncryptedFileError):
        unseal(bytes(damaged), data_key)


@pytest.mark.parametrize("records_kept", [0, 1, 2, 3])
def test_truncation_at_a_chunk_boundary_is_detected(
    data_key: bytes, sealed_chunks: bytes, records_kept: int
) -> None:
    truncated = sealed_chunks[: HEADER_BYTES + records_kept * RECORD_BYTES]

    with pytest.raises(crypto.EncryptedFileError):
        unseal(truncated, data_key)


def test_truncation_inside_a_chunk_is_detected(
    data_key: bytes, sealed_chunks: bytes
) -> None:
    with pytest.raises(crypto.EncryptedFileError):
        unseal(sealed_chunks[:-30], data_key)


def test_empty_file_is_not_an_encrypted_file(data_key: bytes) -> None:
    with pytest.raises(crypto.EncryptedFileError, match="header"):
        unseal(b"", data_key)


def test_appended_bytes_are_detected(data_key: bytes, sealed_chunks: bytes) -> None:
    with pytest.raises(crypto.EncryptedFileError):
        unseal(sealed_chunks + b"\x00" * 40, data_key)


def test_swapped_chunks_are_detected(data_key: bytes, sealed_chunks: bytes) -> None:
    first, second, *rest = records(sealed_chunks)
    swapped = sealed_chunks[:HEADER_BYTES] + second + first + b"".join(rest)

    with pytest.raises(crypto.EncryptedFileError, match="chunk 0"):
        unseal(swapped, data_key)


def test_dropped_final_chunk_is_detected_when_chunks_are_full(
    data_key: bytes,
) -> None:
    sealed = seal(os.urandom(3 * SMALL_CHUNK), data_key)
    assert len(sealed) == HEADER_BYTES + 3 * RECORD_BYTES

    with pytest.raises(crypto.EncryptedFileError, match="chunk 1"):
        unseal(sealed[: HEADER_BYTES + 2 * RECORD_BYTES], data_key)


def test_chunk_from_another_file_is_detected(data_key: bytes) -> None:
    one = seal(os.urandom(2 * SMALL_CHUNK + 1), data_key)
    two = seal(os.urandom(2 * SMALL_CHUNK + 1), data_key)
    spliced = one[: HEADER_BYTES + RECORD_BYTES] + two[HEADER_BYTES + RECORD_BYTES :]

    with pytest.raises(crypto.EncryptedFileError, match="chunk 1"):
        unseal(spliced, data_key)


def test_wrong_data_key_is_detected_before_any_plaintext(
    sealed_chunks: bytes,
) -> None:
    chunks = crypto.decrypt_stream(io.BytesIO(sealed_chunks), crypto.new_data_key())

    with pytest.raises(crypto.EncryptedFileError, match="chunk 0"):
        next(chunks)


def test_plaintext_file_is_not_an_encrypted_file(data_key: bytes) -> None:
    with pytest.raises(crypto.EncryptedFileError, match="format"):
        unseal(b"\x1f\x8b" + os.urandom(4000), data_key)


def test_forged_huge_chunk_size_is_refused_before_reading(
    data_key: bytes, sealed_chunks: bytes
) -> None:
    forged = sealed_chunks[:8] + (2**31).to_bytes(4, "big") + sealed_chunks[12:]

    with pytest.raises(crypto.EncryptedFileError, match="chunk size"):
        unseal(forged, data_key)


def test_reader_raises_on_tampering(data_key: bytes, sealed_chunks: bytes) -> None:
    damaged = bytearray(sealed_chunks)
    damaged[-1] ^= 1
    reader = crypto.DecryptingReader(io.BytesIO(bytes(damaged)), data_key)

    with pytest.raises(crypto.EncryptedFileError):
        reader.read()


# Sizes and spools ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 3 * SMALL_CHUNK]
)
def test_plaintext_size_is_read_from_the_sealed_size(
    data_key: bytes, size: int
) -> None:
    sealed = io.BytesIO(seal(os.urandom(size), data_key))

    assert crypto.plaintext_size(sealed) == size
    assert sealed.tell() == 0


def test_plaintext_size_of_a_cut_file_is_an_error(data_key: bytes) -> None:
    sealed = seal(os.urandom(2 * SMALL_CHUNK + 5), data_key)

    with pytest.raises(crypto.EncryptedFileError):
        crypto.plaintext_size(io.BytesIO(sealed[:-10]))


def test_spool_reads_back_what_was_written_after_a_rewind(tmp_path: Path) -> None:
    upload = os.urandom(3 * crypto.CHUNK_SIZE + 11)
    with crypto.SealedSpool(tmp_path) as spool:
        spool.write(upload[:1000])
        spool.write(upload[1000:])
        spool.seek(0)

        first = spool.read()
        spool.seek(0)
        second = spool.read(500)

    assert first == upload
    assert second == upload[:500]


def test_spool_keeps_only_ciphertext_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[BinaryIO] = []
    real_temporary_file = tempfile.TemporaryFile

    def recording_temporary_file(**kwargs: Any) -> BinaryIO:
        handle: BinaryIO = real_temporary_file(**kwargs)
        opened.append(handle)
        return handle

    monkeypatch.setattr(tempfile, "TemporaryFile", recording_temporary_file)
    marker = b"SPOOLED-MARKER-" * 5000

    with crypto.SealedSpool(tmp_path) as spool:
        spool.write(marker)
        spool.seek(0)
        (handle,) = opened
        on_disk = os.pread(handle.fileno(), 10 * len(marker), 0)

        assert spool.read() == marker
    assert b"SPOOLED-MARKER-" not in on_disk
    assert len(on_disk) > len(marker)


def test_spool_cannot_be_read_before_the_rewind(tmp_path: Path) -> None:
    with crypto.SealedSpool(tmp_path) as spool:
        spool.write(b"part")

        with pytest.raises(io.UnsupportedOperation):
            spool.read()


def test_spool_cannot_be_written_after_the_rewind(tmp_path: Path) -> None:
    with crypto.SealedSpool(tmp_path) as spool:
        spool.write(b"part")
        spool.seek(0)

        with pytest.raises(io.UnsupportedOperation):
            spool.write(b"more")


def test_spool_feeds_gzip_and_tarfile(tmp_path: Path) -> None:
    payload = os.urandom(2000)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        member = tarfile.TarInfo("import/0/inputs/marker.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))

    with crypto.SealedSpool(tmp_path) as spool:
        spool.write(archive.getvalue())
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r|gz") as tar:
            member = tar.next()
            assert member is not None
            extracted = tar.extractfile(member)
            assert extracted is not None
            contents = extracted.read()

    assert contents == payload
