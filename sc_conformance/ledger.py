"""The cleanup ledger: every job the session creates, and its deletion at the end.

A conformance run must not leave jobs behind on a server it does not own, whatever
happens to the run; jobs that could not be deleted are reported apart from results.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable

from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import Credentials
from sc_conformance.client import ServerClient
from sc_conformance.client import ServerUnreachable
from sc_conformance.client import json_message

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
"""Seconds between two progress polls while waiting for a job to finish."""

STILL_RUNNING_MESSAGE = "Error: job is still running."
"""The message ``delete_job`` answers for a job that still runs."""

ANNOUNCE_AFTER = 2.0
"""Seconds a deletion may wait on a running job before the user is told."""


@dataclasses.dataclass
class LedgerEntry:
    """A job hash the session submitted, with the account that submitted it."""

    job_hash: str
    job_id: str
    credentials: Credentials | None = dataclasses.field(repr=False)
    accepted: bool | None = None
    """True: the server accepted it; False: refused with 4xx; None: outcome unknown."""
    deleted: bool = False

    @property
    def account(self) -> str:
        return self.credentials.username if self.credentials else "(no account)"


@dataclasses.dataclass(frozen=True)
class Leftover:
    """A job that may still exist on the server after the session."""

    job_hash: str
    account: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


class JobLedger:
    """Records submissions before they are sent, so a timeout cannot hide a job."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        self._lock = threading.Lock()

    def record(
        self, job_hash: str, job_id: str, credentials: Credentials | None
    ) -> LedgerEntry:
        entry = LedgerEntry(job_hash, job_id, credentials)
        with self._lock:
            self._entries.append(entry)
        return entry

    def mark_deleted(self, job_hash: str) -> None:
        with self._lock:
            for entry in self._entries:
                if entry.job_hash == job_hash:
                    entry.deleted = True

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        with self._lock:
            return tuple(self._entries)

    def clean_up(
        self,
        client: ServerClient,
        timeout: float,
        report_progress: Callable[[str], None] = logger.info,
    ) -> list[Leftover]:
        """Delete every job not yet deleted, waiting (bounded) for running ones.

        Jobs the server refused are deleted on a best-effort basis only: the server
        said they do not exist, so failing to delete them is not a leftover.
        """
        deadline = time.monotonic() + timeout
        leftovers: list[Leftover] = []
        pending = _one_per_job(entry for entry in self.entries if not entry.deleted)
        logger.info("deleting %s job(s) created by this session", len(pending))
        for position, entry in enumerate(pending):
            try:
                reason = self._delete(client, entry, deadline, report_progress)
            except KeyboardInterrupt:
                leftovers += [
                    Leftover(left.job_hash, left.account, "cleanup interrupted")
                    for left in pending[position:]
                    if left.accepted is not False
                ]
                break
            if reason is not None and entry.accepted is not False:
                leftovers.append(Leftover(entry.job_hash, entry.account, reason))
        return leftovers

    def _delete(
        self,
        client: ServerClient,
        entry: LedgerEntry,
        deadline: float,
        report_progress: Callable[[str], None],
    ) -> str | None:
        """Delete one job; return why it may remain, or None once it is gone."""
        account_client = client.with_credentials(entry.credentials)
        if entry.accepted is False:
            return self._delete_refused_upload(account_client, entry)

        announce_at = time.monotonic() + ANNOUNCE_AFTER
        while True:
            try:
                progress = account_client.check_progress(entry.job_hash, entry.job_id)
                running = progress.status_code == 200 and (
                    progress.text.strip() != FINISHED_TEXT
                )
                if not running:
                    answer = account_client.delete_job(entry.job_hash)
                    if answer.status_code in (200, 404):
                        entry.deleted = True
                        logger.info("deleted job %s", entry.job_hash)
                        return None
                    if json_message(answer) != STILL_RUNNING_MESSAGE:
                        return f"delete_job answered {answer.status_code}"
            except ServerUnreachable as error:
                return f"no answer from the server: {error.reason}"
            if time.monotonic() >= deadline:
                return "still running when the cleanup deadline passed"
            if time.monotonic() >= announce_at:
                report_progress(
                    f"waiting for job {entry.job_hash} to finish to delete it"
                )
                announce_at = float("inf")
            time.sleep(POLL_INTERVAL)

    def _delete_refused_upload(
        self, client: ServerClient, entry: LedgerEntry
    ) -> str | None:
        """One delete for an upload the server refused, in case it kept it anyway."""
        try:
            answer = client.delete_job(entry.job_hash)
        except ServerUnreachable as error:
            return f"no answer from the server: {error.reason}"
        if answer.status_code == 200:
            logger.info(
                "deleted job %s although its upload was refused", entry.job_hash
            )
        entry.deleted = answer.status_code in (200, 404)
        return None


def _one_per_job(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """One entry per job hash and account (a hash may be sent more than once, as by
    the reuse check); an accepted or unanswered submission wins over a refused one."""
    chosen: dict[tuple[str, str | None], LedgerEntry] = {}
    for entry in entries:
        key = (entry.job_hash, entry.account)
        known = chosen.get(key)
        if known is None or (known.accepted is False and entry.accepted is not False):
            chosen[key] = entry
    return list(chosen.values())
