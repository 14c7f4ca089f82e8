"""Job control: how long each node takes, which nodes fail, and who moves a job on.

A job script says how jobs progress: by time (each node takes its duration), by
polls (every ``polls_per_node`` calls of ``check_progress`` finish one node) or
manually (``advance()``). The script in force when a job is accepted is bound to
it, so changing the script never changes a job already running. The runner asks
``JobControl.finish_node`` when a node ends; the state lives in the control database
so any process may advance a job another process runs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from mock_server.controldb import ControlDatabase
from mock_server.store import JobRecord
from mock_server.store import JobState
from mock_server.store import NodeRecord
from mock_server.store import Store

logger = logging.getLogger(__name__)

DEFAULT_SCRIPT = "default_job_script"
POLL_SECONDS = 0.01
"""How often a waiting node or an ``advance()`` looks at the shared state: other
processes can only be heard by looking."""
ADVANCE_TIMEOUT_SECONDS = 30.0


class ScriptError(ValueError):
    """A job script that cannot be used; the message names the problem."""


class UnknownJob(LookupError):
    """No job with that job hash is on the server."""


class Progress(enum.StrEnum):
    TIME = "time"
    POLLS = "polls"
    MANUAL = "manual"


class NodeVerdict(enum.Enum):
    SUCCEED = "success"
    FAIL = "error"


MAX_NODE_SECONDS = 24 * 3600
"""The longest a scripted node may take: a day, far beyond any client test."""


@dataclasses.dataclass(frozen=True)
class JobScript:
    """How the jobs accepted from now on run."""

    progress: Progress = Progress.TIME
    node_seconds: float | None = None
    """Duration of every node in ``time`` mode; None keeps the server's setting."""
    node_durations: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Durations of single nodes by name (``work0``), over ``node_seconds``."""
    fail_nodes: frozenset[str] = frozenset()
    polls_per_node: int = 1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "progress", Progress(self.progress))
        except ValueError:
            raise ScriptError(
                f"progress must be time, polls or manual, not {self.progress!r}"
            ) from None
        object.__setattr__(self, "fail_nodes", frozenset(self.fail_nodes))
        object.__setattr__(self, "node_durations", dict(self.node_durations))
        durations = list(self.node_durations.values())
        if self.node_seconds is not None:
            durations.append(self.node_seconds)
        if any(not _seconds(value) for value in durations):
            raise ScriptError(
                "node durations must be numbers of seconds from 0 to "
                f"{MAX_NODE_SECONDS}"
            )
        if (
            isinstance(self.polls_per_node, bool)
            or not isinstance(self.polls_per_node, int)
            or self.polls_per_node < 1
        ):
            raise ScriptError("polls_per_node must be a whole number >= 1")

    def duration(self, node: str, default: float) -> float:
        if node in self.node_durations:
            return float(self.node_durations[node])
        return default if self.node_seconds is None else float(self.node_seconds)

    @classmethod
    def from_dict(cls, document: Any) -> JobScript:
        if not isinstance(document, dict):
            raise ScriptError("a job script is a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ScriptError(f"unknown job script fields: {', '.join(unknown)}")
        if not isinstance(document.get("fail_nodes", []), list):
            raise ScriptError("fail_nodes is a list of node names")
        if not isinstance(document.get("node_durations", {}), dict):
            raise ScriptError("node_durations maps node names to seconds")
        return cls(**document)

    def to_dict(self) -> dict[str, Any]:
        return {
            "progress": self.progress.value,
            "node_seconds": self.node_seconds,
            "node_durations": dict(self.node_durations),
            "fail_nodes": sorted(self.fail_nodes),
            "polls_per_node": self.polls_per_node,
        }


@dataclasses.dataclass(frozen=True)
class NodeRun:
    """One run of one node, by the process that ran it (double runs show here)."""

    job_hash: str
    node: str
    process: int
    started: float
    outcome: str | None


class JobControl:
    """The runner's pacer and the controls that drive it."""

    def __init__(
        self, database: ControlDatabase, store: Store, node_seconds: float
    ) -> None:
        self._database = database
        self._store = store
        self._node_seconds = node_seconds

    # -- scripts -----------------------------------------------------------------

    def default_script(self) -> JobScript:
        document = self._database.setting(DEFAULT_SCRIPT)
        return JobScript() if document is None else JobScript.from_dict(document)

    def set_default_script(self, script: JobScript | None) -> None:
        """Script the jobs accepted from now on (None: back to the server's
        settings)."""
        with self._database.transaction() as connection:
            self._database.put_setting(
                connection, DEFAULT_SCRIPT, None if script is None else script.to_dict()
            )

    def bind(self, job_hash: str) -> JobScript | None:
        """Give a job the script in force, once; None when the job does not exist."""
        script = self.script_of(job_hash)
        if script is not None:
            return script
        if self._store.lookup_job(job_hash) is None:
            return None
        with self._database.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO job_scripts (job_hash, script) VALUES (?, ?)",
                (job_hash, json.dumps(self.default_script().to_dict())),
            )
        return self.script_of(job_hash)

    def script_of(self, job_hash: str) -> JobScript | None:
        with self._database.connection() as connection:
            row = connection.execute(
                "SELECT script FROM job_scripts WHERE job_hash = ?", (job_hash,)
            ).fetchone()
        return None if row is None else JobScript.from_dict(json.loads(row["script"]))

    def scripted_jobs(self) -> list[str]:
        with self._database.connection() as connection:
            rows = connection.execute(
                "SELECT job_hash FROM job_scripts ORDER BY rowid"
            ).fetchall()
        return [row["job_hash"] for row in rows]

    def running_jobs(self) -> list[str]:
        """Scripted jobs that have not ended yet."""
        return [
            job_hash
            for job_hash in self.scripted_jobs()
            if (record := self._store.lookup_job(job_hash)) is not None
            and record.state is JobState.RUNNING
        ]

    def node_runs(self, job_hash: str | None = None) -> list[NodeRun]:
        query = "SELECT * FROM node_runs"
        arguments: tuple[str, ...] = ()
        if job_hash is not None:
            query += " WHERE job_hash = ?"
            arguments = (job_hash,)
        with self._database.connection() as connection:
            rows = connection.execute(query + " ORDER BY id", arguments).fetchall()
        return [
            NodeRun(
                row["job_hash"],
                row["node"],
                row["process"],
                row["started"],
                row["outcome"],
            )
            for row in rows
        ]

    def forget_jobs(self) -> None:
        """Drop every binding; runners waiting on a node give their job up."""
        with self._database.transaction() as connection:
            connection.execute("DELETE FROM job_scripts")
            connection.execute("DELETE FROM node_runs")

    # -- the runner's side -------------------------------------------------------

    def finish_node(
        self, record: JobRecord, node: NodeRecord, stopping: threading.Event
    ) -> NodeVerdict | None:
        """Block until the node may end; None when the job was given up."""
        script = self.bind(record.job_hash)
        if script is None:
            return None
        run_id = self._start_run(record.job_hash, node.name)
        deadline = None
        if script.progress is Progress.TIME:
            deadline = time.monotonic() + script.duration(node.name, self._node_seconds)

        self._set_parked(record.job_hash, True)
        while True:
            permit = self._take_permit(record.job_hash)
            if permit is None:
                return None
            if permit:
                break
            remaining = POLL_SECONDS
            if deadline is not None:
                remaining = min(remaining, deadline - time.monotonic())
                if remaining <= 0:
                    self._set_parked(record.job_hash, False)
                    break
            if stopping.wait(remaining):
                return None

        # A node fails by the job script, or by --fail-node or the manifest's
        # sc_mock.fail_nodes (recorded on the node when the job was accepted).
        fails = node.fails or node.name in script.fail_nodes
        verdict = NodeVerdict.FAIL if fails else NodeVerdict.SUCCEED
        with self._database.transaction() as connection:
            connection.execute(
                "UPDATE node_runs SET outcome = ? WHERE id = ?",
                (verdict.value, run_id),
            )
        return verdict

    def _start_run(self, job_hash: str, node: str) -> int:
        with self._database.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO node_runs (job_hash, node, process, started) "
                "VALUES (?, ?, ?, ?)",
                (job_hash, node, os.getpid(), time.time()),
            )
        return int(cursor.lastrowid or 0)

    def _set_parked(self, job_hash: str, parked: bool) -> None:
        with self._database.transaction() as connection:
            connection.execute(
                "UPDATE job_scripts SET parked = ? WHERE job_hash = ?",
                (int(parked), job_hash),
            )

    def _take_permit(self, job_hash: str) -> bool | None:
        """Use one ``advance`` permit if there is one; None when the job is gone."""
        with self._database.connection() as connection:
            row = connection.execute(
                "SELECT granted, consumed FROM job_scripts WHERE job_hash = ?",
                (job_hash,),
            ).fetchone()
        if row is None:
            return None
        if row["granted"] <= row["consumed"]:
            return False
        with self._database.transaction() as connection:
            taken = connection.execute(
                "UPDATE job_scripts SET consumed = consumed + 1, parked = 0 "
                "WHERE job_hash = ? AND granted > consumed",
                (job_hash,),
            ).rowcount
        return bool(taken)

    # -- the client developer's side ---------------------------------------------

    def advance(
        self,
        job_hash: str,
        nodes: int = 1,
        timeout: float = ADVANCE_TIMEOUT_SECONDS,
    ) -> None:
        """Let *nodes* more nodes of a job finish and wait until they have: on
        return the job runs its next node or has ended."""
        if nodes < 1:
            raise ScriptError("advance at least one node")
        if self.bind(job_hash) is None:
            raise UnknownJob(f"no job {job_hash}")
        with self._database.transaction() as connection:
            connection.execute(
                "UPDATE job_scripts SET granted = granted + ? WHERE job_hash = ?",
                (nodes, job_hash),
            )
            target = connection.execute(
                "SELECT granted FROM job_scripts WHERE job_hash = ?", (job_hash,)
            ).fetchone()["granted"]
        logger.info("job %s: advancing %d node(s)", job_hash, nodes)

        deadline = time.monotonic() + timeout
        while not self._advanced(job_hash, target):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_hash} did not advance within {timeout:g} s: "
                    "no process of this server runs it"
                )
            time.sleep(POLL_SECONDS)

    def _advanced(self, job_hash: str, target: int) -> bool:
        record = self._store.lookup_job(job_hash)
        if record is None or record.state is not JobState.RUNNING:
            return True
        with self._database.connection() as connection:
            row = connection.execute(
                "SELECT consumed, parked FROM job_scripts WHERE job_hash = ?",
                (job_hash,),
            ).fetchone()
        return row is None or (row["consumed"] >= target and bool(row["parked"]))

    def count_poll(self, job_hash: str) -> None:
        """Count a ``check_progress`` call; in ``polls`` mode every
        ``polls_per_node``-th one finishes a node before it is answered."""
        script = self.script_of(job_hash)
        if script is None or script.progress is not Progress.POLLS:
            return
        record = self._store.lookup_job(job_hash)
        if record is None or record.state is not JobState.RUNNING:
            return
        with self._database.transaction() as connection:
            connection.execute(
                "UPDATE job_scripts SET polls = polls + 1 WHERE job_hash = ?",
                (job_hash,),
            )
            polls = connection.execute(
                "SELECT polls FROM job_scripts WHERE job_hash = ?", (job_hash,)
            ).fetchone()["polls"]
        if polls % script.polls_per_node == 0:
            self.advance(job_hash)


def _seconds(value: Any) -> bool:
    """A duration a job can wait for: a finite number >= 0 (not NaN, not a flag)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_NODE_SECONDS
    )
