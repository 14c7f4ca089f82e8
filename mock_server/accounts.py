"""Accounts from a reference-format ``users.json`` and the credential check.

The file looks like the reference server's: ``{"users": [{"username", "password",
"compute_time", "bandwidth"}]}`` with compute time in seconds and bandwidth in KiB.
Passwords stay in memory only; the live quotas are kept by the job store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mock_server.errors import AuthenticationFailed

logger = logging.getLogger(__name__)

AUTHENTICATION_ERROR = "Authentication error."

_UNKNOWN_ACCOUNT_DIGEST = b"\x00" * 32


@dataclass(frozen=True)
class Account:
    """One account and the quota it starts with."""

    username: str
    password: str
    compute_time: int
    bandwidth_kb: int

    def __repr__(self) -> str:
        return (
            f"Account(username={self.username!r}, compute_time={self.compute_time}, "
            f"bandwidth_kb={self.bandwidth_kb})"
        )


class Accounts:
    """The accounts a server knows, and the one place credentials are compared."""

    def __init__(self, accounts: dict[str, Account] | None = None) -> None:
        self._accounts = dict(accounts or {})

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
            accounts[account.username] = account
        logger.info("loaded %d accounts from %s", len(accounts), users_file)
        return cls(accounts)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts.values())

    def __len__(self) -> int:
        return len(self._accounts)

    def authenticate(self, username: str, key: str) -> Account:
        """Return the account whose password is *key*, else raise.

        An unknown username is compared against a dummy secret so that it costs the
        same time and gets the same answer as a wrong key. Both sides are hashed
        first so the comparison does not depend on the key's length either.
        """
        account = self._accounts.get(username)
        expected = _digest(account.password) if account else _UNKNOWN_ACCOUNT_DIGEST
        matches = hmac.compare_digest(expected, _digest(key))
        if account is None or not matches:
            raise AuthenticationFailed(AUTHENTICATION_ERROR)
        return account


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
    if not isinstance(username, str) or not isinstance(password, str):
        raise ValueError(
            f"{users_file}: every user needs a string username and password"
        )

    compute_time = entry.get("compute_time", 0)
    bandwidth = entry.get("bandwidth", 0)
    for name, value in (("compute_time", compute_time), ("bandwidth", bandwidth)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{users_file}: {username}: {name} must be a number")
    return Account(username, password, int(compute_time), int(bandwidth))
