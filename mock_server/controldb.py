"""The shared state of the client-developer controls: ``control.sqlite3`` in the root.

Faults, the request journal, job scripts, extra accounts and runtime settings live in
one SQLite database (WAL) beside the job store, so every process serving the same
storage root (gunicorn workers) sees the same controls and the same journal.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from mock_server.sqlite import SqliteDatabase

CONTROL_DATABASE_NAME = "control.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    fault TEXT NOT NULL,
    remaining INTEGER,
    considered INTEGER NOT NULL DEFAULT 0,
    applied INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    compute_time INTEGER NOT NULL,
    bandwidth_kb INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS job_scripts (
    job_hash TEXT PRIMARY KEY,
    script TEXT NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    granted INTEGER NOT NULL DEFAULT 0,
    consumed INTEGER NOT NULL DEFAULT 0,
    parked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS node_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_hash TEXT NOT NULL,
    node TEXT NOT NULL,
    process INTEGER NOT NULL,
    started REAL NOT NULL,
    outcome TEXT
);
"""

REVISION = "revision"
"""Setting bumped whenever accounts or settings change, so that every process
rebuilds its view of them on its next request."""


class ControlDatabase(SqliteDatabase):
    """``control.sqlite3``: faults, journal, job scripts, added accounts, settings."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / CONTROL_DATABASE_NAME, _SCHEMA)

    # -- settings ----------------------------------------------------------------

    def setting(self, name: str) -> Any:
        """Return a JSON setting, None when unset."""
        with self.connection() as connection:
            row = connection.execute(
                "SELECT value FROM settings WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else json.loads(row["value"])

    @staticmethod
    def put_setting(connection: sqlite3.Connection, name: str, value: Any) -> None:
        if value is None:
            connection.execute("DELETE FROM settings WHERE name = ?", (name,))
        else:
            connection.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)",
                (name, json.dumps(value)),
            )

    @staticmethod
    def bump_revision(connection: sqlite3.Connection) -> None:
        connection.execute(
            "INSERT INTO settings (name, value) VALUES (?, '1') "
            "ON CONFLICT(name) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (REVISION,),
        )

    def revision(self) -> int:
        return int(self.setting(REVISION) or 0)
