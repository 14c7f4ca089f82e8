"""Job records in SQLite (WAL) and job files on disk, kept consistent by atomic moves.

Layout of a storage root::

    state.sqlite3                    job records, node states, live quotas
    staging/<process>/               uploads, extractions, archives in the making
    jobs/<job_hash>/configs/         the uploaded manifest
    jobs/<job_hash>/<design>/<jobname>/<step>/<index>/...   the job's work tree
    jobs/<job_hash>/data-key.wrapped a key account's job: its wrapped data key (every
                                     file of such a job is stored encrypted)
    results/<job_hash>.tar.gz        the results archive, once the job ended

A job exists for clients only once its record is written, which happens after its
files were moved into place, so a half-written job is never visible. Several
processes may share a root: each owns a locked staging folder, and a running job is
claimed by one process at a time.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from typing import Any
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric import rsa

from mock_server import crypto
from mock_server import sealed
from mock_server.accounts import Accounts
from mock_server.archive import Buffer
from mock_server.archive import ExtractionLimits
from mock_server.archive import ExtractionSummary
from mock_server.archive import build_results_archive
from mock_server.archive import extract_import
from mock_server.errors import AuthenticationFailed
from mock_server.errors import BandwidthExhausted
from mock_server.errors import JobHashInUse
from mock_server.errors import JobNotFound
from mock_server.errors import JobStillRunning
from mock_server.errors import ResultsUnavailable
from mock_server.manifest import JobPlan
from mock_server.sqlite import SqliteDatabase

logger = logging.getLogger(__name__)

DATABASE_NAME = "state.sqlite3"
ORPHAN_GRACE_SECONDS = 60.0
_LOCK_NAME = ".owner.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_hash TEXT PRIMARY KEY,
    account TEXT,
    design TEXT NOT NULL,
    jobname TEXT NOT NULL,
    flow TEXT,
    state TEXT NOT NULL,
    current_node TEXT,
    results_bytes INTEGER,
    error TEXT,
    owner TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    job_hash TEXT NOT NULL REFERENCES jobs(job_hash) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    step TEXT NOT NULL,
    node_index TEXT NOT NULL,
    inputs TEXT NOT NULL,
    fails INTEGER NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (job_hash, position)
);
CREATE TABLE IF NOT EXISTS quotas (
    username TEXT PRIMARY KEY,
    compute_time REAL NOT NULL,
    bandwidth_kb INTEGER NOT NULL
);
"""


class JobState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NodeStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    SKIPPED = "skipped"
    IMPORTED = "imported"
    """The client ran the node itself and uploaded its outputs."""


FINISHED_NODE_STATUSES = frozenset(
    {NodeStatus.SUCCESS, NodeStatus.ERROR, NodeStatus.SKIPPED, NodeStatus.IMPORTED}
)


@dataclass(frozen=True)
class JobRecord:
    """What the store knows about one job."""

    job_hash: str
    account: str | None
    design: str
    jobname: str
    flow: str | None
    state: JobState
    current_node: str | None
    results_bytes: int | None
    error: str | None


@dataclass(frozen=True)
class NodeRecord:
    """One node of a job's plan and how far it got."""

    position: int
    step: str
    index: str
    inputs: tuple[tuple[str, str], ...]
    fails: bool
    status: NodeStatus

    @property
    def name(self) -> str:
        return f"{self.step}{self.index}"


@dataclass(frozen=True)
class Quota:
    """An account's live quota."""

    compute_time: float
    bandwidth_kb: int


@dataclass(frozen=True)
class StagedImport:
    """An extracted import archive in staging, waiting for its job to be created."""

    folder: Path
    tree: Path
    summary: ExtractionSummary
    job_key: sealed.JobKey | None
    """The key its files are encrypted with (a key account's job), if any."""


class Store:
    """The only code that touches the storage root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs_dir = root / "jobs"
        self.results_dir = root / "results"
        self.staging_root = root / "staging"
        for folder in (self.jobs_dir, self.results_dir, self.staging_root):
            folder.mkdir(parents=True, exist_ok=True)

        self._database = SqliteDatabase(
            root / DATABASE_NAME, _SCHEMA, foreign_keys=True
        )
        self._connection = self._database.connection
        self._transaction = self._database.transaction
        self.owner = uuid.uuid4().hex
        self.staging = self.staging_root / self.owner
        self.staging.mkdir()
        self._owner_lock = self._lock_staging(self.staging)
        self._remove_leftovers()

    def close(self) -> None:
        """Close database connections and give up this process's staging folder."""
        self._database.close()
        shutil.rmtree(self.staging, ignore_errors=True)
        self._owner_lock.close()

    # -- process ownership -------------------------------------------------------

    @staticmethod
    def _lock_staging(folder: Path) -> IO[bytes]:
        lock = open(folder / _LOCK_NAME, "wb")  # noqa: SIM115 - held for the lifetime
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return lock

    def owner_alive(self, owner: str) -> bool:
        """Tell whether the process that claimed a job still holds its staging lock."""
        if owner == self.owner:
            return True
        lock_path = self.staging_root / owner / _LOCK_NAME
        try:
            with open(lock_path, "rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(lock, fcntl.LOCK_UN)
                return False
        except FileNotFoundError:
            return False

    def _remove_leftovers(self) -> None:
        """Remove what crashed processes left: their staging folders and job folders
        that never got a record (a crash between the move and the insert)."""
        for folder in self.staging_root.iterdir():
            if folder.name != self.owner and not self.owner_alive(folder.name):
                logger.debug("removing staging folder of a stopped process: %s", folder)
                shutil.rmtree(folder, ignore_errors=True)

        with self._connection() as connection:
            known = {row[0] for row in connection.execute("SELECT job_hash FROM jobs")}
        threshold = time.time() - ORPHAN_GRACE_SECONDS
        for folder in self.jobs_dir.iterdir():
            if folder.name not in known and folder.lstat().st_mtime < threshold:
                logger.info("removing job files without a record: %s", folder.name)
                shutil.rmtree(folder, ignore_errors=True)

    # -- paths -------------------------------------------------------------------

    def job_dir(self, job_hash: str) -> Path:
        return self.jobs_dir / job_hash

    def work_dir(self, record: JobRecord) -> Path:
        return self.job_dir(record.job_hash) / record.design / record.jobname

    def manifest_path(self, record: JobRecord) -> Path:
        return self.job_dir(record.job_hash) / "configs" / f"chip{record.jobname}.json"

    def final_manifest_path(self, record: JobRecord) -> Path:
        """The job's final manifest, ``<design>/<jobname>/<design>.pkg.json``."""
        return self.work_dir(record) / f"{record.design}.pkg.json"

    def results_path(self, job_hash: str) -> Path:
        return self.results_dir / f"{job_hash}.tar.gz"

    def node_dir(self, record: JobRecord, node: NodeRecord) -> Path:
        return self.work_dir(record) / node.step / node.index

    def node_manifest_path(self, record: JobRecord, node: NodeRecord) -> Path:
        return _node_manifest(
            self.work_dir(record), node.step, node.index, record.design
        )

    def node_log_path(self, record: JobRecord, node: NodeRecord) -> Path:
        return self.node_dir(record, node) / f"{node.step}.log"

    # -- quotas ------------------------------------------------------------------

    def seed_quotas(self, accounts: Accounts) -> None:
        """Give accounts seen for the first time their quota from the users file;
        accounts already known keep their live quota across restarts."""
        with self._transaction() as connection:
            connection.executemany(
                "INSERT OR IGNORE INTO quotas (username, compute_time, bandwidth_kb) "
                "VALUES (?, ?, ?)",
                [(a.username, a.compute_time, a.bandwidth_kb) for a in accounts],
            )

    def quota(self, username: str) -> Quota:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT compute_time, bandwidth_kb FROM quotas WHERE username = ?",
                (username,),
            ).fetchone()
        if row is None:
            return Quota(0.0, 0)
        return Quota(row["compute_time"], row["bandwidth_kb"])

    # -- jobs as clients see them ------------------------------------------------

    def find_job(self, job_hash: str, account: str | None) -> JobRecord:
        """Return the account's job; another account's job is reported as unknown."""
        with self._connection() as connection:
            row = connection.execute(
                "SELECT * FROM jobs WHERE job_hash = ?", (job_hash,)
            ).fetchone()
        if row is None or row["account"] != account:
            raise JobNotFound("Error: unknown job hash.")
        return _job_record(row)

    def job_exists(self, job_hash: str) -> bool:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT 1 FROM jobs WHERE job_hash = ?", (job_hash,)
            ).fetchone()
        return row is not None

    def stage_import(
        self,
        compressed: Iterable[Buffer] | BinaryIO,
        limits: ExtractionLimits,
        job_key: sealed.JobKey | None = None,
    ) -> StagedImport:
        """Extract an import archive into this process's staging folder.

        An upload is extracted as it arrives, before the request is fully read, so
        the job's design and job name (which place the tree) are not known yet: the
        tree waits in staging for ``create_job``, and is gone on any failure.
        """
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.staging))
        tree = folder / "import"
        try:
            tree.mkdir()
            summary = extract_import(
                compressed,
                tree,
                limits,
                None if job_key is None else job_key.data_key,
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return StagedImport(folder, tree, summary, job_key)

    def create_job(
        self,
        job_hash: str,
        account: str | None,
        plan: JobPlan,
        manifest: dict[str, Any],
        staged: StagedImport,
        fail_nodes: frozenset[str],
        wrapped_key: bytes | None = None,
    ) -> JobRecord:
        """Publish a staged import as a job, atomically, and remove what is left.

        With the staged import's job key (a key account's job) its files are
        already encrypted; the *wrapped_key* is stored beside them, and the job is
        claimed by this process at once: only this process holds the key, so no
        other may run the job.
        """
        job_key = staged.job_key
        try:
            if self.job_exists(job_hash):
                raise JobHashInUse("Error: the job hash is already in use.")

            job_root = staged.folder / job_hash
            work_dir = job_root / plan.design / plan.jobname
            work_dir.parent.mkdir(parents=True)
            os.rename(staged.tree, work_dir)
            manifest_path = job_root / "configs" / f"chip{plan.jobname}.json"
            if job_key is None:
                _write_manifest(manifest_path, manifest)
            else:
                assert wrapped_key is not None
                sealed.write_wrapped_key(job_root, wrapped_key)
                sealed.write_text(manifest_path, json.dumps(manifest), job_key)
            imported = {
                node.name
                for node in plan.nodes
                if _node_manifest(
                    work_dir, node.step, node.index, plan.design
                ).is_file()
            }
            self._publish(job_root, job_hash)
            owner = self.owner if job_key is not None else None
            self._insert_job(job_hash, account, plan, imported, fail_nodes, owner)
        finally:
            self.discard(staged)

        logger.info(
            "job %s accepted: design %s, job %s, %d nodes, %d archive members",
            job_hash,
            plan.design,
            plan.jobname,
            len(plan.nodes),
            staged.summary.members,
        )
        return self.find_job(job_hash, account)

    @staticmethod
    def discard(staged: StagedImport) -> None:
        """Remove a staged import (what is left of it once its job is published)."""
        shutil.rmtree(staged.folder, ignore_errors=True)

    def _publish(self, job_root: Path, job_hash: str) -> None:
        try:
            os.rename(job_root, self.job_dir(job_hash))
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise JobHashInUse("Error: the job hash is already in use.") from None
            raise

    def _insert_job(
        self,
        job_hash: str,
        account: str | None,
        plan: JobPlan,
        imported: set[str],
        fail_nodes: frozenset[str],
        owner: str | None = None,
    ) -> None:
        now = time.time()
        failing = fail_nodes | plan.fail_nodes
        try:
            with self._transaction() as connection:
                connection.execute(
                    "INSERT INTO jobs (job_hash, account, design, jobname, flow, "
                    "state, owner, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_hash,
                        account,
                        plan.design,
                        plan.jobname,
                        plan.flow,
                        JobState.RUNNING,
                        owner,
                        now,
                        now,
                    ),
                )
                connection.executemany(
                    "INSERT INTO nodes (job_hash, position, step, node_index, inputs, "
                    "fails, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            job_hash,
                            position,
                            node.step,
                            node.index,
                            json.dumps(node.inputs),
                            node.name in failing,
                            NodeStatus.IMPORTED
                            if node.name in imported
                            else NodeStatus.PENDING,
                        )
                        for position, node in enumerate(plan.nodes)
                    ],
                )
        except sqlite3.IntegrityError:
            shutil.rmtree(self.job_dir(job_hash), ignore_errors=True)
            raise JobHashInUse("Error: the job hash is already in use.") from None

    def delete_job(self, job_hash: str, account: str | None) -> None:
        """Forget a job that has ended, then remove every file it had."""
        with self._transaction() as connection:
            row = connection.execute(
                "SELECT account, state FROM jobs WHERE job_hash = ?", (job_hash,)
            ).fetchone()
            if row is None or row["account"] != account:
                raise JobNotFound("Error: unknown job hash.")
            if row["state"] == JobState.RUNNING:
                raise JobStillRunning("Error: job is still running.")
            connection.execute("DELETE FROM jobs WHERE job_hash = ?", (job_hash,))

        sealed.destroy_wrapped_key(self.job_dir(job_hash))
        trash = self.staging / f"deleted-{uuid.uuid4().hex}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.job_dir(job_hash), trash)
        shutil.rmtree(trash, ignore_errors=True)
        self.results_path(job_hash).unlink(missing_ok=True)
        logger.info("job %s deleted", job_hash)

    def is_sealed(self, job_hash: str) -> bool:
        """Tell whether the job's files are stored encrypted (a key account's job)."""
        return sealed.is_sealed(self.job_dir(job_hash))

    def open_results(
        self,
        job_hash: str,
        account: str | None,
        private_key: rsa.RSAPrivateKey | None = None,
        *,
        charge: bool = True,
    ) -> tuple[BinaryIO, int]:
        """Open a finished job's results archive and charge its size to the account
        (unless *charge* is false).

        The file is opened before the charge, so a concurrent delete cannot leave
        the account paying for nothing. An encrypted job's archive is opened for
        reading its plaintext with the account's *private_key*; the size is then
        the plaintext's.
        """
        record = self.find_job(job_hash, account)
        if record.state == JobState.RUNNING:
            raise JobStillRunning("Error: job is still running.")

        try:
            results = open(self.results_path(job_hash), "rb")  # noqa: SIM115
        except FileNotFoundError:
            reason = f": {record.error}" if record.error else "."
            raise ResultsUnavailable(
                f"Error: the job's results are not available{reason}"
            ) from None

        if self.is_sealed(job_hash):
            results, size = self._unseal_results(results, job_hash, private_key)
        else:
            size = os.fstat(results.fileno()).st_size
        if account is not None and charge:
            try:
                self._charge_bandwidth(account, -(-size // 1024))
            except BaseException:
                results.close()
                raise
        return results, size

    def _unseal_results(
        self,
        results: BinaryIO,
        job_hash: str,
        private_key: rsa.RSAPrivateKey | None,
    ) -> tuple[BinaryIO, int]:
        try:
            if private_key is None:
                raise crypto.WrappedKeyError("no private key was given")
            job_key = sealed.JobKey.unlock(self.job_dir(job_hash), private_key)
            size = crypto.plaintext_size(results)
        except crypto.WrappedKeyError:
            results.close()
            raise AuthenticationFailed("Authentication error.") from None
        except (crypto.EncryptedFileError, OSError) as failure:
            results.close()
            logger.error("job %s: unreadable results archive: %s", job_hash, failure)
            raise ResultsUnavailable(
                "Error: the job's results are not available."
            ) from None
        return sealed.PlaintextReader(results, job_key), size  # type: ignore[return-value]

    def _charge_bandwidth(self, username: str, kib: int) -> None:
        with self._transaction() as connection:
            updated = connection.execute(
                "UPDATE quotas SET bandwidth_kb = bandwidth_kb - ? "
                "WHERE username = ? AND bandwidth_kb >= ?",
                (kib, username, kib),
            ).rowcount
        if not updated:
            raise BandwidthExhausted(
                f"Error: the results need {kib} KiB, more than the account's remaining "
                "bandwidth."
            )

    # -- the client-developer controls (reset, scripted jobs) --------------------

    def lookup_job(self, job_hash: str) -> JobRecord | None:
        """Return any account's job, None when unknown: for the server's own
        controls, never for answering a client."""
        with self._connection() as connection:
            row = connection.execute(
                "SELECT * FROM jobs WHERE job_hash = ?", (job_hash,)
            ).fetchone()
        return None if row is None else _job_record(row)

    def purge_jobs(self) -> int:
        """Forget every job, running or not, and remove their files; runners of
        those jobs lose ownership and stop at their next step."""
        with self._transaction() as connection:
            hashes = [row[0] for row in connection.execute("SELECT job_hash FROM jobs")]
            connection.execute("DELETE FROM jobs")
        trash = self.staging / f"purged-{uuid.uuid4().hex}"
        trash.mkdir()
        for folder in (self.jobs_dir, self.results_dir):
            for entry in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    os.rename(entry, trash / f"{folder.name}-{entry.name}")
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("%d jobs purged", len(hashes))
        return len(hashes)

    def set_quotas(self, accounts: Accounts) -> None:
        """Give accounts their starting quota again, whatever they have used."""
        with self._transaction() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO quotas (username, compute_time, bandwidth_kb) "
                "VALUES (?, ?, ?)",
                [(a.username, a.compute_time, a.bandwidth_kb) for a in accounts],
            )

    # -- jobs as the runner sees them --------------------------------------------

    def claim_jobs(self) -> list[str]:
        """Take over running jobs nobody runs: unclaimed ones, and those of a
        process that stopped (its staging lock is free)."""
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT job_hash, owner FROM jobs WHERE state = ? "
                "AND (owner IS NULL OR owner != ?)",
                (JobState.RUNNING, self.owner),
            ).fetchall()
        claimable = [
            (row["job_hash"], row["owner"])
            for row in rows
            if row["owner"] is None or not self.owner_alive(row["owner"])
        ]
        if not claimable:
            return []

        claimed = []
        with self._transaction() as connection:
            for job_hash, previous_owner in claimable:
                taken = connection.execute(
                    "UPDATE jobs SET owner = ?, updated = ? "
                    "WHERE job_hash = ? AND state = ? AND owner IS ?",
                    (
                        self.owner,
                        time.time(),
                        job_hash,
                        JobState.RUNNING,
                        previous_owner,
                    ),
                ).rowcount
                if taken:
                    claimed.append(job_hash)
        return claimed

    def release_jobs(self) -> None:
        """Hand this process's running jobs back so another process resumes them."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE jobs SET owner = NULL WHERE owner = ?", (self.owner,)
            )

    def job_for_runner(self, job_hash: str) -> JobRecord | None:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT * FROM jobs WHERE job_hash = ? AND owner = ?",
                (job_hash, self.owner),
            ).fetchone()
        return None if row is None else _job_record(row)

    def nodes(self, job_hash: str) -> list[NodeRecord]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT * FROM nodes WHERE job_hash = ? ORDER BY position", (job_hash,)
            ).fetchall()
        return [
            NodeRecord(
                position=row["position"],
                step=row["step"],
                index=row["node_index"],
                inputs=tuple(tuple(pair) for pair in json.loads(row["inputs"])),  # type: ignore[misc]
                fails=bool(row["fails"]),
                status=NodeStatus(row["status"]),
            )
            for row in rows
        ]

    def set_node_status(
        self,
        job_hash: str,
        node: NodeRecord,
        status: NodeStatus,
        charge: tuple[str, float] | None = None,
    ) -> bool:
        """Record a node's new status; False when this process no longer owns the
        job, so the caller must stop."""
        current = node.name if status == NodeStatus.RUNNING else None
        with self._transaction() as connection:
            owned = connection.execute(
                "UPDATE jobs SET current_node = ?, updated = ? "
                "WHERE job_hash = ? AND owner = ?",
                (current, time.time(), job_hash, self.owner),
            ).rowcount
            if not owned:
                return False
            connection.execute(
                "UPDATE nodes SET status = ? WHERE job_hash = ? AND position = ?",
                (status, job_hash, node.position),
            )
            if charge is not None:
                connection.execute(
                    "UPDATE quotas SET compute_time = compute_time - ? "
                    "WHERE username = ?",
                    (charge[1], charge[0]),
                )
        return True

    def publish_results(
        self,
        job_hash: str,
        state: JobState,
        error: str | None,
        job_key: sealed.JobKey | None = None,
    ) -> None:
        """Build the results archive beside the job, move it into place, then mark
        the job ended, so an ended job always has its whole archive.

        An encrypted job's archive is built encrypted with its *job_key*; without
        the key (the server restarted) the job ends failed with no archive, and its
        files stay as they are, encrypted.
        """
        archive = self.staging / f"results-{job_hash}-{uuid.uuid4().hex}.tar.gz"
        results_bytes: int | None = None
        job_dir = self.job_dir(job_hash)
        try:
            if job_key is not None:
                results_bytes = sealed.build_results_archive(
                    job_dir, job_hash, archive, job_key
                )
                os.replace(archive, self.results_path(job_hash))
            elif sealed.is_sealed(job_dir):
                state = JobState.FAILED
            else:
                results_bytes = build_results_archive(job_dir, job_hash, archive)
                os.replace(archive, self.results_path(job_hash))
        except (OSError, crypto.EncryptionError) as failure:
            logger.error(
                "job %s: cannot build its results archive: %s", job_hash, failure
            )
            archive.unlink(missing_ok=True)
            state = JobState.FAILED
            error = error or "the results archive could not be built"

        with self._transaction() as connection:
            connection.execute(
                "UPDATE jobs SET state = ?, current_node = NULL, results_bytes = ?, "
                "error = ?, owner = NULL, updated = ? "
                "WHERE job_hash = ? AND owner = ?",
                (state, results_bytes, error, time.time(), job_hash, self.owner),
            )


def _job_record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        job_hash=row["job_hash"],
        account=row["account"],
        design=row["design"],
        jobname=row["jobname"],
        flow=row["flow"],
        state=JobState(row["state"]),
        current_node=row["current_node"],
        results_bytes=row["results_bytes"],
        error=row["error"],
    )


def _node_manifest(work_dir: Path, step: str, index: str, design: str) -> Path:
    return work_dir / step / index / "outputs" / f"{design}.pkg.json"


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as output:
        json.dump(manifest, output)


def write_atomically(path: Path, text: str) -> None:
    """Replace *path* with *text* in one step; a link at *path* is replaced, never
    followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".writing-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as output:
            output.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
