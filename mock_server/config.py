"""Settings of one mock server: the keyword API of ``MockConfig`` and its env vars.

The CLI, the WSGI entry point and the library object all build the same frozen
``MockConfig``, so a setting means the same thing however the server is started.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mock_server.defects import validate_defects

MIB = 1024 * 1024

ENV_PREFIX = "SC_MOCK_"


@dataclass(frozen=True)
class MockConfig:
    """Everything that changes how the mock server behaves.

    ``fail_nodes`` names flowgraph nodes (``<step><index>``, e.g. ``work1``) that end
    in error in every job, so clients can watch a failing job; a job can also ask
    for failures itself (see ``mock_server.manifest.FAIL_HINT_KEY``).
    """

    root: Path | None = None
    auth: bool = False
    users_file: Path | None = None
    node_seconds: float = 0.5
    max_upload_mb: int = 1024
    max_nodes: int = 64
    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = False
    defects: frozenset[str] = frozenset()
    fail_nodes: frozenset[str] = frozenset()
    max_extract_mb: int = 1024
    max_archive_members: int = 10_000
    max_json_kb: int = 1024
    admin: bool = False
    """Serve the admin API under ``/_admin/`` (faults, journal, job scripts,
    accounts, reset); off by default because it lets anyone reconfigure the server."""
    scenario: Path | None = None
    """A JSON scenario (accounts, faults, job script) applied at start and on reset."""

    def __post_init__(self) -> None:
        if self.root is not None and not isinstance(self.root, Path):
            object.__setattr__(self, "root", Path(self.root))
        if self.users_file is not None and not isinstance(self.users_file, Path):
            object.__setattr__(self, "users_file", Path(self.users_file))
        if self.scenario is not None and not isinstance(self.scenario, Path):
            object.__setattr__(self, "scenario", Path(self.scenario))
        object.__setattr__(self, "defects", frozenset(self.defects))
        object.__setattr__(self, "fail_nodes", frozenset(self.fail_nodes))

        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie between 0 and 65535, not {self.port}")
        if not math.isfinite(self.node_seconds) or self.node_seconds < 0:
            raise ValueError("node_seconds must be a finite number >= 0")
        for name in ("max_upload_mb", "max_nodes", "max_extract_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_archive_members < 1:
            raise ValueError("max_archive_members must be at least 1")
        validate_defects(self.defects)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MIB

    @property
    def max_extract_bytes(self) -> int:
        return self.max_extract_mb * MIB

    @property
    def max_json_bytes(self) -> int:
        return self.max_json_kb * 1024


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


_ENV_SETTINGS = {
    "ROOT": ("root", Path),
    "USERS": ("users_file", Path),
    "AUTH": ("auth", _flag),
    "NODE_SECONDS": ("node_seconds", float),
    "MAX_UPLOAD_MB": ("max_upload_mb", int),
    "MAX_NODES": ("max_nodes", int),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "TLS": ("tls", _flag),
    "FAIL_NODES": ("fail_nodes", _names),
    "DEFECTS": ("defects", _names),
    "MAX_EXTRACT_MB": ("max_extract_mb", int),
    "MAX_ARCHIVE_MEMBERS": ("max_archive_members", int),
    "ADMIN": ("admin", _flag),
    "SCENARIO": ("scenario", Path),
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Return ``MockConfig`` keyword arguments set by ``SC_MOCK_*`` variables.

    A setting that cannot be parsed raises ``ValueError`` naming the variable, so a
    typo in a deployment fails at start rather than silently using a default.
    """
    environ = os.environ if environ is None else environ
    settings: dict[str, object] = {}
    for suffix, (name, parse) in _ENV_SETTINGS.items():
        variable = ENV_PREFIX + suffix
        if variable not in environ:
            continue
        try:
            settings[name] = parse(environ[variable])
        except ValueError as error:
            raise ValueError(f"{variable}: {error}") from None
    return settings


def config_from_env(environ: Mapping[str, str] | None = None) -> MockConfig:
    """Build a ``MockConfig`` from ``SC_MOCK_*`` variables (defaults elsewhere)."""
    return MockConfig(**settings_from_env(environ))  # type: ignore[arg-type]
