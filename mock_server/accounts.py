"""Accounts from a reference-format ``users.json`` and the credential check.

The file looks like the reference server's: ``{"users": [{"username", "password",
"compute_time", "bandwidth"}]}`` with compute time in seconds and bandwidth in KiB.
A key account has a ``public_key`` (RSA, PEM or OpenSSH text); its ``key`` is then
the base64 of the private key, which proves the account and unlocks its encrypted
jobs. Passwords and private keys stay in memory only; the live quotas are kept by
the job store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mock_server import crypto
from mock_server.errors import AuthenticationFailed
from mock_server.errors import InvalidRequest

logger = logging.getLogger(__name__)

AUTHENTICATION_ERROR = "Authentication error."
NOT_A_KEY_ERROR = (
    "Error: this account authenticates with a key: send the base64 of its private "
    "key (unencrypted PEM or OpenSSH text)."
)

_UNKNOWN_ACCOUNT_DIGEST = b"\x00" * 32


USERNAME_PATTERN = re.compile(r"[^\s;]+")
r"""The API's username pattern ``^[^\s;]*$``, less the empty name."""

PROVEN_KEYS_KEPT = 256
"""Digests of proven private keys remembered per process (see authenticate)."""


@dataclass(frozen=True)
class Account:
    """One account and the quota it starts with.

    A key account (``public_key`` set) authenticates with its private key only; a
    password beside the key is kept for other servers reading the same file.
    """

    username: str
    password: str | None
    compute_time: int
    bandwidth_kb: int
    public_key: rsa.RSAPublicKey | None = None

    def __repr__(self) -> str:
        return (
            f"Account(username={self.username!r}, compute_time={self.compute_time}, "
            f"bandwidth_kb={self.bandwidth_kb}, "
            f"key_account={self.public_key is not None})"
        )


@dataclass(frozen=True, repr=False)
class SignedIn:
    """An authenticated request: the account, and for a key account its private key,
    which lives only as long as the request that needs it."""

    account: Account
    private_key: rsa.RSAPrivateKey | None = None

    def __repr__(self) -> str:
        return f"SignedIn(username={self.account.username!r})"


class Accounts:
    """The accounts a server knows, and the one place credentials are compared."""

    def __init__(self, accounts: dict[str, Account] | None = None) -> None:
        self._accounts = dict(accounts or {})
        self._proven_keys: OrderedDict[tuple[str, bytes, bytes], None] = OrderedDict()
        self._proven_lock = threading.Lock()

    @classmethod
    def load(cls, users_file: Path | None) -> Accounts:
        """Read ``users.json``; a missing or malformed file is a start-up error."""
        if users_file is None:
            return cls()

        try:
            document = json.loads(users_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read users file {users_file}: {error}") from None

        accounts = {}
        for entry in _user_entries(document, users_file):
            account = _account(entry, users_file)
            if account.username in accounts:
                raise ValueError(
                    f"{users_file}: {account.username!r} is listed more than once"
                )
            accounts[account.username] = account
        logger.info("loaded %d accounts from %s", len(accounts), users_file)
        return cls(accounts)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts.values())

    def __len__(self) -> int:
        return len(self._accounts)

    def find(self, username: str) -> Account | None:
        """The account named *username*, if there is one (no authentication)."""
        return self._accounts.get(username)

    @property
    def has_key_accounts(self) -> bool:
        """True when some account's jobs are stored encrypted."""
        return any(account.public_key is not None for account in self)

    def authenticate(self, username: str, key: str) -> Account:
        """Return the account whose password or private key is *key*, else raise.

        Loading and checking an RSA private key costs a tenth of a second or more, too
        much for every poll of a key account's job: a key once proven is remembered
        by its digest (never the key itself) together with the registered public key,
        so replacing the account's public key forgets the proof.
        """
        account = self._accounts.get(username)
        if account is None or account.public_key is None:
            return self.sign_in(username, key).account
        proof = (username, _public_digest(account.public_key), _digest(key))
        with self._proven_lock:
            if proof in self._proven_keys:
                self._proven_keys.move_to_end(proof)
                return account
        signed_in = self.sign_in(username, key)
        with self._proven_lock:
            self._proven_keys[proof] = None
            while len(self._proven_keys) > PROVEN_KEYS_KEPT:
                self._proven_keys.popitem(last=False)
        return signed_in.account

    def sign_in(self, username: str, key: str) -> SignedIn:
        """Authenticate *key* for *username*; for a key account, also load its key.

        A key account's *key* must be its private key: text that is no key at all is
        a malformed request (``InvalidRequest``), another key is refused like a wrong
        password. An unknown username is compared against a dummy secret so that it
        costs the same time and gets the same answer as a wrong password. Both sides
        are hashed first so the comparison does not depend on the key's length.
        """
        account = self._accounts.get(username)
        if account is not None and account.public_key is not None:
            return SignedIn(account, _unlock(account.public_key, key))
        password = account.password if account is not None else None
        expected = (
            _digest(password) if password is not None else _UNKNOWN_ACCOUNT_DIGEST
        )
        matches = hmac.compare_digest(expected, _digest(key))
        if account is None or not matches:
            raise AuthenticationFailed(AUTHENTICATION_ERROR)
        return SignedIn(account)


def _unlock(public_key: rsa.RSAPublicKey, key: str) -> rsa.RSAPrivateKey:
    try:
        return crypto.unlock_private_key(public_key, key)
    except crypto.KeyFormatError:
        raise InvalidRequest(NOT_A_KEY_ERROR) from None
    except crypto.KeyMismatchError:
        raise AuthenticationFailed(AUTHENTICATION_ERROR) from None


def _public_digest(public_key: rsa.RSAPublicKey) -> bytes:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _user_entries(document: Any, users_file: Path) -> list[Any]:
    if not isinstance(document, dict) or not isinstance(document.get("users"), list):
        raise ValueError(f"{users_file}: expected an object with a 'users' list")
    return document["users"]


def _account(entry: Any, users_file: Path) -> Account:
    if not isinstance(entry, dict):
        raise ValueError(f"{users_file}: every user must be an object")

    username = entry.get("username")
    password = entry.get("password")
    public_key = _public_key(entry, users_file)
    if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
        raise ValueError(
            f"{users_file}: {username!r}: a username is a non-empty string without "
            "whitespace or ';' (the API's pattern), or no client could sign in as it"
        )
    if not isinstance(password, str) and not (password is None and public_key):
        raise ValueError(
            f"{users_file}: {username}: every user needs a string password or a "
            "public_key"
        )

    compute_time = entry.get("compute_time", 0)
    bandwidth = entry.get("bandwidth", 0)
    for name, value in (("compute_time", compute_time), ("bandwidth", bandwidth)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"{users_file}: {username}: {name} must be a number >= 0, not {value!r}"
            )
    return Account(
        username, password, int(compute_time), int(bandwidth), public_key=public_key
    )


def _public_key(entry: dict[str, Any], users_file: Path) -> rsa.RSAPublicKey | None:
    text = entry.get("public_key")
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{users_file}: a public_key must be PEM or OpenSSH text")
    try:
        return crypto.load_public_key(text)
    except crypto.KeyFormatError as error:
        raise ValueError(f"{users_file}: {entry.get('username')!r}: {error}") from None
