"""Simulated execution of a job's flowgraph nodes, one after another, over time.

Each node takes ``node_seconds``; it then writes its log and its outputs manifest
(the uploaded manifest with the node's status recorded). A node configured to fail
ends in ``error``; nodes that depend on it are skipped and the job ends failed,
which clients still see as finished. Progress lives in the store, so a restarted
server resumes a job at the node that was running; a key account's job cannot be
resumed (its data key lived in the stopped process only) and ends failed.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from mock_server import sealed
from mock_server.control import JobControl
from mock_server.control import NodeVerdict
from mock_server.manifest import mark_node_status
from mock_server.store import FINISHED_NODE_STATUSES
from mock_server.store import JobRecord
from mock_server.store import JobState
from mock_server.store import NodeRecord
from mock_server.store import NodeStatus
from mock_server.store import Store
from mock_server.store import write_atomically

logger = logging.getLogger(__name__)

CLAIM_INTERVAL_SECONDS = 0.5
"""How often the runner looks for jobs left by a stopped process (new jobs of this
process wake it at once)."""

_UNSUCCESSFUL = frozenset({NodeStatus.ERROR, NodeStatus.SKIPPED})


def node_started_line(node_name: str, node_seconds: float) -> str:
    """The log line a node starts with; check_progress shows it as the log tail."""
    return f"{node_name}: simulated task started, it takes {node_seconds:g} s."


class Runner:
    """Claims running jobs from the store and advances them in worker threads."""

    def __init__(
        self, store: Store, node_seconds: float, pacer: JobControl | None = None
    ) -> None:
        self._store = store
        self._node_seconds = node_seconds
        self._pacer = pacer
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._job_keys: dict[str, sealed.JobKey] = {}
        self._claimer = threading.Thread(
            target=self._claim_loop, name="sc-mock-runner", daemon=True
        )

    def start(self) -> None:
        self._claimer.start()

    def wake(self) -> None:
        """Look for new jobs now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Stop between nodes and hand unfinished jobs back to the store."""
        self._stopping.set()
        self._wake.set()
        if self._claimer.is_alive():
            self._claimer.join()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        self._store.release_jobs()

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = self._store.claim_jobs()
            except Exception:
                logger.exception("cannot claim jobs from the store")
                claimed = []
            for job_hash in claimed:
                self._start_job(job_hash)
            self._wake.wait(CLAIM_INTERVAL_SECONDS)
            self._wake.clear()

    def start_sealed_job(self, job_hash: str, job_key: sealed.JobKey) -> None:
        """Run a key account's new job now, with its data key held in memory only
        for the run; the store gave the job to this process when it created it."""
        with self._lock:
            self._job_keys[job_hash] = job_key
        self._start_job(job_hash)

    def _start_job(self, job_hash: str) -> None:
        thread = threading.Thread(
            target=self._run_job,
            args=(job_hash,),
            name=f"sc-mock-job-{job_hash}",
            daemon=True,
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run_job(self, job_hash: str) -> None:
        with self._lock:
            job_key = self._job_keys.get(job_hash)
        try:
            record = self._store.job_for_runner(job_hash)
            if (
                record is not None
                and job_key is None
                and self._store.is_sealed(job_hash)
            ):
                logger.warning(
                    "job %s: encrypted, and its key left with the server process "
                    "that ran it; the job ends failed",
                    job_hash,
                )
                self._store.publish_results(
                    job_hash, JobState.FAILED, sealed.RESTART_FAILURE
                )
            elif record is not None:
                self._advance(record, job_key)
        except Exception as failure:
            logger.exception("job %s: the runner failed", job_hash)
            self._store.publish_results(
                job_hash, JobState.FAILED, str(failure), job_key
            )
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._job_keys.pop(job_hash, None)

    def _advance(self, record: JobRecord, job_key: sealed.JobKey | None) -> None:
        nodes = self._store.nodes(record.job_hash)
        manifest = json.loads(_read_text(self._store.manifest_path(record), job_key))
        status = {(node.step, node.index): node.status for node in nodes}
        for node in nodes:
            if node.status in FINISHED_NODE_STATUSES:
                _record_status(manifest, record, node, node.status)
        logger.info("job %s: running %d nodes", record.job_hash, len(nodes))

        for node in nodes:
            if node.status in FINISHED_NODE_STATUSES:
                continue
            if any(status.get(pair) in _UNSUCCESSFUL for pair in node.inputs):
                status[(node.step, node.index)] = NodeStatus.SKIPPED
                if not self._store.set_node_status(
                    record.job_hash, node, NodeStatus.SKIPPED
                ):
                    return
                logger.info("job %s: node %s skipped", record.job_hash, node.name)
                continue

            outcome = self._run_node(record, node, manifest, job_key)
            if outcome is None:
                return
            status[(node.step, node.index)] = outcome

        failed = [
            name for name, outcome in status.items() if outcome == NodeStatus.ERROR
        ]
        state = JobState.FAILED if failed else JobState.SUCCEEDED
        error = f"node {''.join(failed[0])} failed" if failed else None
        if not failed:
            # The real client reads the job's final manifest to learn that the run
            # succeeded; without it, it blames the last step for a failure.
            _write_text(
                self._store.final_manifest_path(record), json.dumps(manifest), job_key
            )
        self._store.publish_results(record.job_hash, state, error, job_key)
        logger.info("job %s finished: %s", record.job_hash, state)

    def _run_node(
        self,
        record: JobRecord,
        node: NodeRecord,
        manifest: dict[str, Any],
        job_key: sealed.JobKey | None,
    ) -> NodeStatus | None:
        """Run one node; None when the runner stops or lost the job."""
        if not self._store.set_node_status(record.job_hash, node, NodeStatus.RUNNING):
            return None
        started = node_started_line(node.name, self._node_seconds)
        log_path = self._store.node_log_path(record, node)
        _write_text(log_path, started + "\n", job_key)

        fails = self._node_fails(record, node)
        if fails is None:
            return None

        outcome = NodeStatus.ERROR if fails else NodeStatus.SUCCESS
        _record_status(manifest, record, node, outcome)
        ending = (
            f"{node.name}: failed (the server was told to fail this node)."
            if fails
            else f"{node.name}: finished successfully."
        )
        _write_text(log_path, f"{started}\n{ending}\n", job_key)
        _write_text(
            self._store.node_manifest_path(record, node), json.dumps(manifest), job_key
        )

        charge = (record.account, self._node_seconds) if record.account else None
        if not self._store.set_node_status(record.job_hash, node, outcome, charge):
            return None
        logger.info("job %s: node %s finished: %s", record.job_hash, node.name, outcome)
        return outcome

    def _node_fails(self, record: JobRecord, node: NodeRecord) -> bool | None:
        """Let the node's time pass (or its job script decide); whether it fails,
        None when the runner stops or the job was given up."""
        if self._pacer is None:
            return None if self._stopping.wait(self._node_seconds) else node.fails
        verdict = self._pacer.finish_node(record, node, self._stopping)
        if verdict is None:
            return None
        return node.fails or verdict is NodeVerdict.FAIL


def _read_text(path: Path, job_key: sealed.JobKey | None) -> str:
    if job_key is None:
        return path.read_text("utf-8")
    return sealed.read_text(path, job_key)


def _write_text(path: Path, text: str, job_key: sealed.JobKey | None) -> None:
    """Write a job file whole, encrypted when the job is a key account's."""
    if job_key is None:
        write_atomically(path, text)
    else:
        sealed.write_text(path, text, job_key)


def _record_status(
    manifest: dict[str, Any], record: JobRecord, node: NodeRecord, status: NodeStatus
) -> None:
    value = "error" if status == NodeStatus.ERROR else "success"
    if status == NodeStatus.SKIPPED:
        return
    mark_node_status(manifest, record.flow, node.step, node.index, value)
