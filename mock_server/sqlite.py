"""SQLite databases shared by the threads and processes of one storage root.

Job records and the client-developer controls each live in a SQLite file in WAL
mode beside the job files, so several workers can serve one root. Connections are
pooled per process; each write is one short transaction taken up front.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
from collections.abc import Iterator
from pathlib import Path

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a connection waits for another process's write transaction."""


class SqliteDatabase:
    """One SQLite file: its schema made on first use, a pool of connections."""

    def __init__(self, path: Path, schema: str, *, foreign_keys: bool = False) -> None:
        self.path = path
        self._foreign_keys = foreign_keys
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        connection = self._connect()
        # Accounts added through the admin API (passwords included) and job records
        # live here: readable by the server's user only. SQLite gives its -wal and
        # -shm files the same mode.
        os.chmod(self.path, 0o600)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(schema)
        finally:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        connection.row_factory = sqlite3.Row
        if self._foreign_keys:
            connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA synchronous = NORMAL")
        return connection

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection for reads (autocommit)."""
        try:
            connection = self._pool.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            yield connection
        finally:
            if connection.in_transaction:
                connection.rollback()
            self._pool.put(connection)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front, so read-then-write steps of different
        threads and processes cannot interleave."""
        with self.connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
