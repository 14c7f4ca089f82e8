"""The WSGI layer in front of the mock: journal, faults, job polls, admin API.

Every client request is noted for the journal (a JSON body is read ahead, in memory;
a multipart upload is decoded as the application streams it), may be answered by a
scheduled fault instead of the server, counts as a poll for scripted jobs, and is
written to the journal with the status it got. Requests under ``/_admin/`` go to the
admin API when it is switched on, and are unknown paths (404) otherwise.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from mock_server.admin import ADMIN_PREFIX
from mock_server.admin import AdminApi
from mock_server.faults import MOVED_PREFIX
from mock_server.faults import FaultKind
from mock_server.faults import StartResponse
from mock_server.faults import WsgiApp
from mock_server.faults import apply_fault
from mock_server.harness import Harness
from mock_server.journal import MultipartTap
from mock_server.journal import capture_json_body
from mock_server.journal import describe_json
from mock_server.journal import endpoint_of
from mock_server.journal import is_multipart

logger = logging.getLogger(__name__)

SERVED_BY_THE_APPLICATION = frozenset(
    {FaultKind.LATENCY, FaultKind.SLOW, FaultKind.TRUNCATE, FaultKind.CORRUPT}
)
"""Fault kinds that pass the request on and change only how its answer arrives."""

DRAIN_LIMIT = 64 * 1024 * 1024
"""An upload a fault answered without reading is read (and dropped) up to this size,
so the journal still shows its parts."""


class ControlledApp:
    """The mock application behind the client-developer controls."""

    def __init__(self, application: WsgiApp, harness: Harness) -> None:
        self.application = application
        self.harness = harness
        self.admin_api = AdminApi(harness) if harness.admin else None

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if self.admin_api is not None and (
            path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/")
        ):
            return self.admin_api(environ, start_response)

        arrived = time.time()
        started = time.perf_counter()
        self.harness.sync()
        while path.startswith(MOVED_PREFIX):
            path = path[len(MOVED_PREFIX) - 1 :]
        environ["PATH_INFO"] = path
        endpoint = endpoint_of(path)

        tap: MultipartTap | None = None
        document: Any = None
        if is_multipart(environ):
            tap = MultipartTap.install(environ)
        else:
            limit = self.harness.app.config.max_json_bytes
            document = describe_json(capture_json_body(environ, limit))
        entry: dict[str, Any] = {
            "time": arrived,
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("RAW_URI") or environ.get("REQUEST_URI") or path,
            "endpoint": endpoint,
            "status": None,
            "duration": 0.0,
            "json": document,
            "fields": None,
            "body_bytes": _content_length(environ),
            "fault": None,
            "process": os.getpid(),
        }

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            entry["status"] = int(status.split(" ", 1)[0])
            self._record(entry, started, tap)
            return start_response(status, headers, exc_info)

        scheduled = self.harness.faults.take(endpoint) if endpoint else None
        if scheduled is None:
            self._count_poll(endpoint, document)
            return self.application(environ, recording_start_response)

        fault = scheduled.fault
        entry["fault"] = fault.kind.value
        logger.info("fault %s on %s: %s", scheduled.id, path, fault.kind)
        if fault.kind in (FaultKind.RESET, FaultKind.EMPTY):
            self._record(entry, started, tap)
        if fault.kind in SERVED_BY_THE_APPLICATION:
            # The client still gets the server's own answer, delayed, dribbled or
            # damaged: a scripted job advances on this poll as on any other.
            self._count_poll(endpoint, document)
        return apply_fault(fault, environ, recording_start_response, self.application)

    def _count_poll(self, endpoint: str | None, document: Any) -> None:
        if endpoint != "check_progress" or not isinstance(document, dict):
            return
        job_hash = document.get("job_hash")
        if isinstance(job_hash, str):
            try:
                self.harness.jobs.count_poll(job_hash)
            except TimeoutError:
                logger.warning("job %s: a poll could not advance the job", job_hash)

    def _record(
        self, entry: dict[str, Any], started: float, tap: MultipartTap | None
    ) -> None:
        entry["duration"] = round(time.perf_counter() - started, 6)
        if tap is not None:
            tap.drain(DRAIN_LIMIT)
            entry["json"], entry["fields"] = tap.describe()
            if entry["body_bytes"] is None:
                entry["body_bytes"] = tap.size
        try:
            self.harness.journal.record(entry)
        except Exception:  # the journal must never change an answer
            logger.exception("cannot write the journal entry for %s", entry["path"])
        self._bind_new_job(entry)

    def _bind_new_job(self, entry: dict[str, Any]) -> None:
        """Tie a job to the script in force the moment it is accepted."""
        if entry["endpoint"] != "remote_run" or entry["status"] != 200:
            return
        params = (entry["json"] or {}).get("params")
        job_hash = params.get("job_hash") if isinstance(params, dict) else None
        if isinstance(job_hash, str):
            self.harness.jobs.bind(job_hash)


def _content_length(environ: dict[str, Any]) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
