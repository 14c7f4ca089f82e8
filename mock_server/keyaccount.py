"""Create key accounts for tests and demos: an RSA key pair plus a users.json entry.

The command prints the ``key`` value a client sends (base64 of the private key PEM) so
that a demo needs nothing but this command; the private key itself goes only to a file
readable by its owner.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mock_server.crypto import MIN_RSA_BITS
from mock_server.crypto import public_key_pem

__all__ = [
    "DEFAULT_BANDWIDTH_KB",
    "DEFAULT_COMPUTE_TIME",
    "DEFAULT_KEY_BITS",
    "KeyAccount",
    "KeyAccountError",
    "create_key_account",
    "main",
]

logger = logging.getLogger(__name__)

#: Quotas of a new account, the values of the reference server's users.json example.
DEFAULT_COMPUTE_TIME = 3600
DEFAULT_BANDWIDTH_KB = 1024 * 1024

DEFAULT_KEY_BITS = 3072

_PRIVATE_FILE_MODE = 0o600


class KeyAccountError(Exception):
    """The account cannot be created as asked (the command exits with status 2)."""


@dataclass(frozen=True, repr=False)
class KeyAccount:
    """A freshly created key account; ``key`` is what the client sends."""

    username: str
    public_key: str
    key_file: Path
    key: str

    def __repr__(self) -> str:
        # The key is a secret: keep it out of reprs, tracebacks and log records.
        return (
            f"KeyAccount(username={self.username!r}, key_file={str(self.key_file)!r})"
        )


def create_key_account(
    users_file: Path,
    username: str,
    key_file: Path,
    *,
    compute_time: int = DEFAULT_COMPUTE_TIME,
    bandwidth: int = DEFAULT_BANDWIDTH_KB,
    key_bits: int = DEFAULT_KEY_BITS,
    overwrite_key: bool = False,
) -> KeyAccount:
    """Generate a key pair, register its public half for ``username`` and save the key.

    An existing entry for ``username`` keeps its other fields (a password may stay
    beside the key); its public key and quotas are replaced. The private key file is
    written before users.json so that an account never exists whose key was lost.
    """
    _check_username(username)
    if key_bits < MIN_RSA_BITS:
        raise KeyAccountError(f"RSA keys need at least {MIN_RSA_BITS} bits")
    if key_file.exists() and not overwrite_key:
        raise KeyAccountError(f"{key_file} exists; refusing to replace a private key")
    if compute_time < 0 or bandwidth < 0:
        raise KeyAccountError("compute time and bandwidth must not be negative")
    for folder in {users_file.parent, key_file.parent}:
        if not folder.is_dir():
            raise KeyAccountError(f"no folder {folder} to write into")
    accounts = _read_users(users_file)

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public_key_pem(private_key.public_key())

    # A key that replaces another is staged beside it and moved into place only once
    # users.json names its public half: a failure keeps the old key and account.
    replacing = overwrite_key and key_file.exists()
    written = _staging_path(key_file) if replacing else key_file
    try:
        _write_private(written, private_pem, overwrite=False)
    except OSError as error:
        raise KeyAccountError(f"cannot write {key_file}: {error.strerror}") from None
    _register(accounts, username, public_pem, compute_time, bandwidth)
    try:
        _write_users(users_file, accounts)
    except OSError as error:
        written.unlink(missing_ok=True)
        raise KeyAccountError(f"cannot write {users_file}: {error.strerror}") from None
    if replacing:
        os.replace(written, key_file)
    logger.info("key account %s registered in %s", username, users_file)
    return KeyAccount(
        username=username,
        public_key=public_pem,
        key_file=key_file,
        key=base64.b64encode(private_pem).decode("ascii"),
    )


def _check_username(username: str) -> None:
    # The published pattern for usernames is ^[^\s;]*$; an empty name is no account.
    if not username or any(char.isspace() or char == ";" for char in username):
        raise KeyAccountError("a username is non-empty, without whitespace or ';'")


def _read_users(users_file: Path) -> dict[str, Any]:
    if not users_file.exists():
        return {"users": []}
    try:
        accounts = json.loads(users_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KeyAccountError(f"cannot read {users_file}: {error}") from error
    if not isinstance(accounts, dict) or not isinstance(accounts.get("users"), list):
        raise KeyAccountError(f'{users_file} is not {{"users": [...]}}')
    return accounts


def _register(
    accounts: dict[str, Any],
    username: str,
    public_pem: str,
    compute_time: int,
    bandwidth: int,
) -> None:
    fields = {
        "public_key": public_pem,
        "compute_time": compute_time,
        "bandwidth": bandwidth,
    }
    for entry in accounts["users"]:
        if isinstance(entry, dict) and entry.get("username") == username:
            entry.update(fields)
            return
    accounts["users"].append({"username": username, **fields})


def _write_private(key_file: Path, private_pem: bytes, *, overwrite: bool) -> None:
    # The file is created with its final mode (O_EXCL, or a private staging file when
    # replacing), so the key is never readable by others, not even for a moment.
    if overwrite:
        _atomic_write(key_file, private_pem, _PRIVATE_FILE_MODE)
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        descriptor = os.open(key_file, flags, _PRIVATE_FILE_MODE)
    except FileExistsError:
        raise KeyAccountError(
            f"{key_file} exists; refusing to replace a private key"
        ) from None
    with os.fdopen(descriptor, "wb") as stream:
        os.fchmod(stream.fileno(), _PRIVATE_FILE_MODE)
        stream.write(private_pem)


def _staging_path(key_file: Path) -> Path:
    return key_file.with_name(f".{key_file.name}.{os.getpid()}.new")


def _write_users(users_file: Path, accounts: dict[str, Any]) -> None:
    # Keep the mode of an existing users.json (it may hold passwords); a new one is
    # private to its owner.
    mode = (
        stat.S_IMODE(users_file.stat().st_mode)
        if users_file.exists()
        else _PRIVATE_FILE_MODE
    )
    text = json.dumps(accounts, indent=2) + "\n"
    _atomic_write(users_file, text.encode("utf-8"), mode)


def _atomic_write(path: Path, content: bytes, mode: int) -> None:
    descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sc-mock-keyaccount",
        description=(
            "Create a key account for the mock server: an RSA key pair, its public "
            "key in users.json and the private key in a 0600 file. Prints the 'key' "
            "value to give the client (base64 of the private key PEM) on stdout."
        ),
    )
    parser.add_argument("username")
    parser.add_argument(
        "--users-file",
        type=Path,
        default=Path("users.json"),
        help="users.json to create or update (default: ./users.json)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="where to write the private key (default: ./<username>.pem)",
    )
    parser.add_argument("--compute-time", type=int, default=DEFAULT_COMPUTE_TIME)
    parser.add_argument("--bandwidth", type=int, default=DEFAULT_BANDWIDTH_KB)
    parser.add_argument("--key-bits", type=int, default=DEFAULT_KEY_BITS)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing private key file",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sc-mock-keyaccount``."""
    options = _parser().parse_args(argv)
    key_file = options.key_file or Path(f"{options.username}.pem")
    try:
        account = create_key_account(
            options.users_file,
            options.username,
            key_file,
            compute_time=options.compute_time,
            bandwidth=options.bandwidth,
            key_bits=options.key_bits,
            overwrite_key=options.force,
        )
    except KeyAccountError as error:
        print(f"sc-mock-keyaccount: error: {error}", file=sys.stderr)
        return 2
    print(
        f"key account {account.username!r} registered in {options.users_file}; "
        f"private key written to {account.key_file} (mode 0600). "
        "The client's key value follows on stdout.",
        file=sys.stderr,
    )
    print(account.key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
