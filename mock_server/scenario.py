"""Scenario files: the accounts, faults and job script a mock starts with.

A scenario is the admin API's settings written down once, for client developers who
start the mock from a script or another language::

    {"auth": true,
     "accounts": [{"username": "alice", "password": "secret", "compute_time": 600}],
     "faults": [{"endpoint": "remote_run", "kind": "status", "status": 503,
                 "times": 2}],
     "jobs": {"progress": "polls", "polls_per_node": 1, "fail_nodes": ["work1"]}}

It is applied at start and again by every reset, so a reset returns to it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mock_server.control import JobScript
from mock_server.control import ScriptError
from mock_server.faults import Fault
from mock_server.faults import FaultError

DEFAULT_COMPUTE_TIME = 1_000_000
DEFAULT_BANDWIDTH_KB = 1_000_000


class ScenarioError(ValueError):
    """A scenario that cannot be applied; the message names the place."""


@dataclasses.dataclass(frozen=True)
class AccountSpec:
    """An account in the reference ``users.json`` shape (bandwidth in KiB)."""

    username: str
    password: str
    compute_time: int = DEFAULT_COMPUTE_TIME
    bandwidth: int = DEFAULT_BANDWIDTH_KB

    def __post_init__(self) -> None:
        if not isinstance(self.username, str) or not self.username:
            raise ScenarioError("an account needs a username")
        if any(character.isspace() or character == ";" for character in self.username):
            raise ScenarioError(f"username {self.username!r} has a space or ';'")
        if not isinstance(self.password, str):
            raise ScenarioError(f"account {self.username!r} needs a string password")
        for name in ("compute_time", "bandwidth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ScenarioError(f"{name} must be a whole number >= 0")

    @classmethod
    def from_dict(cls, document: Any) -> AccountSpec:
        if not isinstance(document, dict):
            raise ScenarioError("an account is a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ScenarioError(f"unknown account fields: {', '.join(unknown)}")
        if "password" not in document or "username" not in document:
            raise ScenarioError("an account needs a username and a password")
        return cls(**document)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What a server is set to at start and after each reset."""

    auth: bool | None = None
    accounts: tuple[AccountSpec, ...] = ()
    faults: tuple[Fault, ...] = ()
    jobs: JobScript | None = None

    @classmethod
    def from_dict(cls, document: Any) -> Scenario:
        if not isinstance(document, dict):
            raise ScenarioError("a scenario is a JSON object")
        unknown = sorted(set(document) - {"auth", "accounts", "faults", "jobs"})
        if unknown:
            raise ScenarioError(f"unknown scenario fields: {', '.join(unknown)}")
        auth = document.get("auth")
        if auth is not None and not isinstance(auth, bool):
            raise ScenarioError("auth is true, false or null")
        try:
            return cls(
                auth=auth,
                accounts=tuple(
                    AccountSpec.from_dict(entry)
                    for entry in _list(document, "accounts")
                ),
                faults=tuple(
                    Fault.from_dict(entry) for entry in _list(document, "faults")
                ),
                jobs=(
                    None
                    if document.get("jobs") is None
                    else JobScript.from_dict(document["jobs"])
                ),
            )
        except (FaultError, ScriptError, TypeError) as error:
            raise ScenarioError(str(error)) from None

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read a scenario file; any problem is a start-up error naming the file."""
        try:
            document = json.loads(
                path.read_text(encoding="utf-8"), parse_constant=_no_constant
            )
            return cls.from_dict(document)
        except (OSError, ValueError) as error:
            raise ScenarioError(f"scenario {path}: {error}") from None


def _list(document: dict[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise ScenarioError(f"{name} must be a list")
    return value


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's parser would take them."""
    raise ValueError(f"{name} is not JSON")
