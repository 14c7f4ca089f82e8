"""A small client for a SiliconCompiler remote job server, written to be tested:
the five endpoints, retries of busy answers, and a checked results archive.
"""

from __future__ import annotations

import dataclasses
import email.utils
import gzip
import json
import logging
import tarfile
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

FINISHED_TEXT = "Job has no running steps."
"""What ``check_progress`` answers, exactly, once a job ended (succeeded or not)."""

DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class ScClientError(Exception):
    """Anything that stops a client call from doing what it was asked."""


class ServerError(ScClientError):
    """The server refused a call; ``status`` and ``message`` say how."""

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(f"{endpoint}: HTTP {status}: {message}")
        self.endpoint = endpoint
        self.status = status
        self.message = message


class JobNotFound(ServerError):
    """The server knows no job with that job hash (or it was deleted)."""


class ServerBusy(ServerError):
    """The server kept answering 503 or 429 until the retry policy gave up."""


class RedirectRefused(ScClientError):
    """The server redirected to another origin; the body (with the account key)
    would have gone there too."""


class JobTimeout(ScClientError):
    """The job still had running steps when the client stopped waiting."""


class ResultsArchiveError(ScClientError):
    """The results download was cut off, or what arrived is no gzip tar."""


@dataclasses.dataclass(frozen=True)
class Job:
    """What one remote run needs: the manifest and the import archive on disk."""

    manifest: Mapping[str, Any]
    import_archive: Path
    design: str
    job_id: str
    """The manifest's job name (``option``/``jobname``), e.g. ``job0``."""
    flow: str


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Which answers mean "try again later", how often, and how long to wait."""

    attempts: int = 4
    """Calls in all, the first one included."""
    statuses: frozenset[int] = frozenset({429, 503})
    backoff_seconds: float = 0.5
    """First wait when the answer has no Retry-After; doubled on every retry."""
    max_wait_seconds: float = 60.0
    """A longer Retry-After is cut to this, so a confused server cannot stall us."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    def wait_seconds(self, response: requests.Response, retry: int) -> float:
        """Seconds to wait before retry number *retry* (1 for the first)."""
        told = retry_after_seconds(response.headers.get("Retry-After"))
        if told is None:
            told = self.backoff_seconds * 2 ** (retry - 1)
        return min(told, self.max_wait_seconds)


def retry_after_seconds(value: str | None) -> float | None:
    """Read Retry-After, given in seconds or as an HTTP date; None when absent or
    unreadable, so the policy's own backoff applies."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds)


class _SameOriginSession(requests.Session):
    """A session that follows 307/308 only to the origin it was redirected from.

    requests re-sends a POST body on 307 and 308, and our bodies carry the account
    key, so a redirect to any other scheme, host or port is refused before it is
    followed.
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is not None and _origin(urljoin(resp.url, target)) != _origin(
            resp.url
        ):
            resp.close()
            raise RedirectRefused(
                f"{resp.url} redirected to another origin ({target}); not following"
            )
        return target


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class ScClient:
    """Calls one server's five endpoints, as one account (or none, without auth).

    *sleep* is what the client waits with, between polls and before retries: tests
    pass one that records the waits instead of taking them.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Mapping[str, str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        poll_seconds: float = 2.0,
        request_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.credentials = dict(credentials or {})
        self.retry = retry or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.request_timeout = request_timeout
        self.sleep = sleep
        self.session = _SameOriginSession()
        self.session.max_redirects = 5

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ScClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the endpoints -----------------------------------------------------------

    def check_user(self) -> dict[str, int]:
        """The account's remaining quota: ``compute_time`` and ``bandwidth_kb``."""
        response = self._post("check_user", "check_user/", json={})
        return response.json()  # type: ignore[no-any-return]

    def submit(self, job: Job, job_hash: str | None = None) -> str:
        """Start *job* on the server and return its job hash.

        The import archive is read once, as bytes: requests builds a multipart body
        in memory anyway, and bytes can be sent again on a retry or a 307/308
        redirect, where an open file would already be at its end.
        """
        job_hash = job_hash or uuid.uuid4().hex
        params = {
            "chip_cfg": job.manifest,
            "params": {"job_hash": job_hash, **self.credentials},
        }
        files = {
            "import": (
                job.import_archive.name,
                job.import_archive.read_bytes(),
                "application/gzip",
            ),
            "params": ("params.json", json.dumps(params), "application/json"),
        }
        self._post("remote_run", "remote_run/", files=files)
        logger.info("job %s accepted", job_hash)
        return job_hash

    def progress(self, job_hash: str, job_id: str) -> str:
        """The server's progress text for a job."""
        body = {"job_hash": job_hash, "job_id": job_id}
        return self._post("check_progress", "check_progress/", json=body).text

    def wait_for_job(
        self, job_hash: str, job_id: str, timeout_seconds: float = 3600.0
    ) -> None:
        """Poll until the job has no running steps; it may have failed, which only
        its results tell."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            text = self.progress(job_hash, job_id)
            if text == FINISHED_TEXT:
                logger.info("job %s finished", job_hash)
                return
            logger.debug("job %s: %s", job_hash, text.splitlines()[0] if text else "")
            if time.monotonic() >= deadline:
                raise JobTimeout(
                    f"job {job_hash} still running after {timeout_seconds:g} s"
                )
            self.sleep(self.poll_seconds)

    def download_results(self, job_hash: str, destination: Path) -> ResultsArchive:
        """Stream the results archive to *destination* and check that it is a
        whole gzip tar; nothing is left at *destination* when it is not."""
        path = f"get_results/{job_hash}.tar.gz"
        response = self._post("get_results", path, json={}, stream=True)
        partial = destination.with_name(destination.name + ".part")
        received = 0
        try:
            with response, partial.open("wb") as archive:
                for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                    archive.write(chunk)
                    received += len(chunk)
        except requests.RequestException as error:
            partial.unlink(missing_ok=True)
            raise ResultsArchiveError(
                f"the results archive of job {job_hash} was cut off after "
                f"{received} bytes: {error}"
            ) from error
        try:
            check_gzip_tar(partial)
        except ResultsArchiveError as error:
            partial.unlink()
            raise ResultsArchiveError(
                f"the results archive of job {job_hash} is broken: {error}"
            ) from None
        partial.replace(destination)
        logger.info("job %s: results saved to %s", job_hash, destination)
        return ResultsArchive(destination, job_hash)

    def delete_job(self, job_hash: str) -> None:
        self._post("delete_job", "delete_job/", json={"job_hash": job_hash})
        logger.info("job %s deleted", job_hash)

    # -- one call, with retries, and its answer mapped to an exception ---------------

    def _post(self, endpoint: str, path: str, **request: Any) -> requests.Response:
        if "json" in request:
            request["json"] = {**request["json"], **self.credentials}
        url = urljoin(self.base_url, path)
        for attempt in range(1, self.retry.attempts + 1):
            response = self.session.post(url, timeout=self.request_timeout, **request)
            if response.status_code not in self.retry.statuses:
                break
            if attempt == self.retry.attempts:
                raise ServerBusy(endpoint, response.status_code, _message(response))
            wait = self.retry.wait_seconds(response, attempt)
            logger.info(
                "%s answered %d; retrying in %g s", endpoint, response.status_code, wait
            )
            response.close()
            self.sleep(wait)
        if response.status_code == 404 and endpoint != "check_user":
            raise JobNotFound(endpoint, 404, _message(response))
        if response.status_code != 200:
            raise ServerError(endpoint, response.status_code, _message(response))
        return response


def _message(response: requests.Response) -> str:
    """The server's reason: the ``message`` of a JSON error, else the body text."""
    with response:
        text = response.text.strip()
    try:
        document = json.loads(text)
    except ValueError:
        return text or response.reason
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return document["message"]
    return text


def check_gzip_tar(path: Path) -> None:
    """Raise ``ResultsArchiveError`` unless *path* is a gzip stream whose checksum
    holds and whose content is a complete tar."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(DOWNLOAD_CHUNK_BYTES):
                pass
        with tarfile.open(path, "r:gz") as archive:
            archive.getmembers()
    except (OSError, EOFError, tarfile.TarError) as error:
        raise ResultsArchiveError(f"not a valid gzip tar ({error})") from None


@dataclasses.dataclass(frozen=True)
class ResultsArchive:
    """A downloaded, checked results archive and what it says about the nodes."""

    path: Path
    job_hash: str

    def node_status(self, job: Job, step: str, index: str) -> str | None:
        """The status a node's outputs manifest records (``success``, ``error``);
        None when the node left no manifest, as a node skipped after a failure."""
        name = (
            f"{self.job_hash}/{job.design}/{job.job_id}/{step}/{index}/outputs/"
            f"{job.design}.pkg.json"
        )
        with tarfile.open(self.path, "r:gz") as archive:
            try:
                member = archive.extractfile(name)
            except KeyError:
                return None
            if member is None:
                return None
            manifest = json.load(member)
        values = manifest["flowgraph"][job.flow][step][index]["status"]["node"]
        for scope in ("global", "default"):
            status = values.get(scope, {}).get(scope, {}).get("value")
            if status is not None:
                return str(status)
        return None
