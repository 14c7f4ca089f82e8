"""The conformance session: the target server, its accounts, and the jobs submitted.

One object per pytest session owns the embedded mock (when used), the reachability and
authentication probes, the clients the fixtures hand out, the cleanup ledger and the log
of exchanges from which the report picks the request that decided each check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from sc_conformance import keys
from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import Credentials
from sc_conformance.client import Exchange
from sc_conformance.client import Redactor
from sc_conformance.client import ServerClient
from sc_conformance.client import ServerUnreachable
from sc_conformance.client import json_message
from sc_conformance.jobs import JobTemplate
from sc_conformance.jobs import JobUpload
from sc_conformance.jobs import load_job
from sc_conformance.ledger import POLL_INTERVAL
from sc_conformance.ledger import JobLedger
from sc_conformance.ledger import Leftover
from sc_conformance.settings import KEY_ACCOUNT_VARIABLE
from sc_conformance.settings import AuthMode
from sc_conformance.settings import Settings

logger = logging.getLogger(__name__)

MOCK_NODE_SECONDS = 0.05
"""Simulated node duration of the embedded mock: fast, yet long enough to observe."""

MOCK_ACCOUNTS = ("conformance", "conformance-other")

MOCK_KEY_ACCOUNT = "conformance-key"

MOCK_NO_COMPUTE_TIME_ACCOUNT = "conformance-no-compute-time"

MOCK_LOW_BANDWIDTH_ACCOUNT = "conformance-low-bandwidth"

MOCK_LOW_BANDWIDTH_KB = 1
"""Bandwidth of the low-bandwidth account: enough to be a live account, less than
any job's results."""

MOCK_PLENTY = 1_000_000
"""Compute seconds and KiB of bandwidth of the embedded mock's ordinary accounts."""

PROGRESS_FIRST_REPORT = 2.0
"""Seconds of waiting for a job before the first progress line is shown."""

PROGRESS_REPORT_INTERVAL = 10.0


class TargetUnusable(Exception):
    """The target cannot be judged at all: unreachable, hanging or refusing the user."""


@dataclasses.dataclass(frozen=True)
class QuotaAccounts:
    """Accounts with spent quotas and the node limit of the embedded mock.

    Only the embedded mock has them: the suite cannot spend a real server's quotas.
    """

    no_compute_time: Credentials
    low_bandwidth: Credentials
    low_bandwidth_kb: int
    max_nodes: int


@dataclasses.dataclass
class SubmittedJob:
    """A job the session uploaded, with the account that owns it."""

    upload: JobUpload
    credentials: Credentials | None
    response: requests.Response | None = None

    @property
    def accepted(self) -> bool:
        return self.response is not None and self.response.status_code == 200


@dataclasses.dataclass
class JobWait:
    """What was seen while waiting for a job to finish."""

    finished: bool
    running_seen: bool
    elapsed: float
    last_status: int | None
    last_text: str
    problem: str | None = None


class ConformanceSession:
    """State shared by the plugin's hooks and fixtures for one pytest session."""

    def __init__(
        self,
        settings: Settings,
        report_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.redactor = Redactor()
        self.redactor.add_credentials(settings.credentials)
        self.redactor.add_credentials(settings.other_credentials)
        self.add_key(settings.key_credentials)
        self.report_progress = report_progress or logger.info
        self.exchanges: list[Exchange] = []
        self.ledger = JobLedger()
        self.leftovers: list[Leftover] = []
        self.url: str = settings.server_url or ""
        self.credentials = settings.credentials
        self.other_credentials = settings.other_credentials
        self.key_credentials = settings.key_credentials
        self.quota_accounts: QuotaAccounts | None = None
        self.auth_required: bool | None = None
        self.auth_source = ""
        self.started = False
        self._stack = contextlib.ExitStack()
        self._template: JobTemplate | None = None
        self.mock_settings: dict[str, Any] = {}
        """``MockConfig`` keywords for the embedded mock (its flaws, its limits)."""
        self.mock_server: Any = None

    # Starting and stopping ---------------------------------------------------------

    def start(self) -> None:
        """Start the embedded mock if asked, then make sure the target answers.

        Raises :class:`TargetUnusable` with a one-line reason when it does not.
        """
        if self.settings.mock:
            self._start_mock()
        self.started = True
        try:
            self._probe()
        except ServerUnreachable as error:
            raise TargetUnusable(
                f"the server at {self.redactor.url(self.url)} does not answer: "
                f"{error.reason}"
            ) from None

    def stop(self) -> None:
        self._stack.close()

    def _start_mock(self) -> None:
        from mock_server import MockConfig
        from mock_server import MockServer

        state = Path(self._stack.enter_context(tempfile.TemporaryDirectory()))
        accounts = [
            Credentials(username, secrets.token_urlsafe(18), key_variable=variable)
            for username, variable in zip(
                MOCK_ACCOUNTS, ("SC_KEY", "SC_OTHER_KEY"), strict=True
            )
        ]
        no_compute_time, low_bandwidth = (
            Credentials(username, secrets.token_urlsafe(18))
            for username in (MOCK_NO_COMPUTE_TIME_ACCOUNT, MOCK_LOW_BANDWIDTH_ACCOUNT)
        )
        users = [_password_user(account) for account in accounts]
        users += [
            _password_user(no_compute_time, compute_time=0),
            _password_user(low_bandwidth, bandwidth=MOCK_LOW_BANDWIDTH_KB),
        ]
        key, public_key = keys.new_private_key()
        key_account = Credentials(
            MOCK_KEY_ACCOUNT, key, key_variable=KEY_ACCOUNT_VARIABLE
        )
        users.append(
            {
                "username": key_account.username,
                "public_key": public_key,
                "compute_time": MOCK_PLENTY,
                "bandwidth": MOCK_PLENTY,
            }
        )
        users_file = state / "users.json"
        users_file.write_text(json.dumps({"users": users}), encoding="utf-8")
        server = self._stack.enter_context(
            MockServer(
                MockConfig(
                    **{
                        # A root of its own inside the private folder, so the folder
                        # around it (where an escaping write would land) is private.
                        "root": state / "root",
                        "auth": True,
                        "users_file": users_file,
                        "node_seconds": MOCK_NODE_SECONDS,
                        **self.mock_settings,
                    }
                )
            )
        )
        self.url = server.url
        self.mock_server = server
        self.credentials, self.other_credentials = accounts
        self.key_credentials = key_account
        self.quota_accounts = QuotaAccounts(
            no_compute_time,
            low_bandwidth,
            MOCK_LOW_BANDWIDTH_KB,
            server.app.config.max_nodes,
        )
        for account in (*accounts, no_compute_time, low_bandwidth):
            self.redactor.add_credentials(account)
        self.add_key(key_account)
        logger.info("embedded mock server listening at %s", self.url)

    def _probe(self) -> None:
        """Check the server answers, settle whether it enforces authentication, and
        refuse to start with credentials the server rejects (every check would fail).
        """
        anonymous = self.client(None)
        probe = anonymous.check_progress(uuid.uuid4().hex, "job0")
        mode = self.settings.auth
        if mode is not AuthMode.AUTO:
            self.auth_required = mode is AuthMode.REQUIRED
            self.auth_source = "--sc-auth"
        else:
            self.auth_source = "detected"
            self.auth_required = self._detect_auth(probe.status_code)

        if self.auth_required and self.credentials is None:
            raise TargetUnusable(
                f"the server at {self.redactor.url(self.url)} requires authentication "
                "(detected; --sc-auth to say otherwise): give an account with "
                "--sc-username and SC_KEY (or --sc-key), or --sc-credentials"
                if self.auth_source == "detected"
                else "--sc-auth=required needs an account: give --sc-username and "
                "SC_KEY (or --sc-key), or --sc-credentials"
            )
        if self.auth_required and self.credentials is not None:
            answer = self.client().check_user()
            # 400 with both fields present is a key the account cannot use (a
            # password for a key account, say): as hopeless as a wrong one.
            if answer.status_code in (400, 401, 403):
                reason = json_message(answer)
                raise TargetUnusable(
                    f"the server at {self.redactor.url(self.url)} refused the "
                    f"credentials of {self.credentials.username!r} (check_user "
                    f"answered {answer.status_code}"
                    + (f": {self.redactor.text(reason)[:200]})" if reason else ")")
                )

    def _detect_auth(self, anonymous_progress_status: int) -> bool:
        if anonymous_progress_status in (400, 401, 403):
            return True
        if self.credentials is not None:
            answer = self.client().check_user()
            return answer.status_code in (200, 401, 403)
        stranger = Credentials(f"nobody-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex)
        answer = self.client(stranger).check_user()
        return answer.status_code in (401, 403)

    def add_key(self, credentials: Credentials | None) -> None:
        """Keep a key account's key out of everything the suite writes: the base64
        sent, and the lines of the key text, should a server echo it decoded."""
        if credentials is None:
            return
        self.redactor.add_credentials(credentials)
        for line in keys.key_text_lines(credentials.key):
            self.redactor.add(line, credentials.key_variable)

    # Clients and jobs ---------------------------------------------------------------

    def client(self, credentials: Credentials | None | str = "primary") -> ServerClient:
        """Return a client for the primary account, or the given one (None: none)."""
        if credentials == "primary":
            credentials = self.credentials
        assert not isinstance(credentials, str)
        return ServerClient(
            self.url,
            credentials=credentials,
            request_timeout=self.settings.request_timeout,
            verify=self.settings.verify,
            redactor=self.redactor,
            on_exchange=self.exchanges.append,
        )

    @property
    def template(self) -> JobTemplate:
        if self._template is None:
            self._template = load_job(
                self.settings.job_manifest, self.settings.job_archive
            )
        return self._template

    def submit(
        self,
        client: ServerClient,
        upload: JobUpload | None = None,
        *,
        params_as_file: bool = True,
    ) -> SubmittedJob:
        """Upload a job, recording it in the ledger before the request is sent."""
        upload = upload if upload is not None else self.template.new_upload()
        entry = self.ledger.record(upload.job_hash, upload.job_id, client.credentials)
        job = SubmittedJob(upload, client.credentials)
        job.response = client.remote_run(
            upload.job_hash,
            upload.manifest,
            upload.import_archive,
            params_as_file=params_as_file,
        )
        status = job.response.status_code
        entry.accepted = True if status == 200 else (False if status < 500 else None)
        if job.accepted:
            logger.info("job %s accepted", upload.job_hash)
        return job

    def wait_for(
        self,
        client: ServerClient,
        upload: JobUpload,
        timeout: float | None = None,
    ) -> JobWait:
        """Poll ``check_progress`` until the finished text, an error or the deadline."""
        timeout = self.settings.job_timeout if timeout is None else timeout
        started = time.monotonic()
        next_report = started + PROGRESS_FIRST_REPORT
        running_seen = False
        last_text = ""
        while True:
            response = client.check_progress(upload.job_hash, upload.job_id)
            elapsed = time.monotonic() - started
            text = response.text.strip()
            if response.status_code != 200:
                return JobWait(
                    False,
                    running_seen,
                    elapsed,
                    response.status_code,
                    text,
                    problem=f"check_progress answered {response.status_code}",
                )
            if text == FINISHED_TEXT:
                logger.info("job %s finished after %.1f s", upload.job_hash, elapsed)
                return JobWait(True, running_seen, elapsed, 200, text)
            running_seen = True
            if text != last_text:
                logger.info("job %s: %s", upload.job_hash, text.splitlines()[0:1])
                last_text = text
            now = time.monotonic()
            if now - started >= timeout:
                return JobWait(
                    False,
                    running_seen,
                    elapsed,
                    200,
                    text,
                    problem=f"still running after {timeout:g} s (--sc-job-timeout)",
                )
            if now >= next_report:
                first_line = text.splitlines()[0] if text else ""
                self.report_progress(
                    f"waiting for job {upload.job_hash} ({elapsed:.0f} s of "
                    f"{timeout:g} s): {first_line}"
                )
                next_report = now + PROGRESS_REPORT_INTERVAL
            time.sleep(POLL_INTERVAL)

    def delete(self, client: ServerClient, job_hash: str) -> requests.Response:
        """Delete a job through the API, keeping the ledger in step."""
        response = client.delete_job(job_hash)
        if response.status_code == 200:
            self.ledger.mark_deleted(job_hash)
        return response

    def clean_up(self) -> list[Leftover]:
        """Delete everything the session created; return what may remain."""
        if not self.started or not self.url:
            return []
        self.leftovers = self.ledger.clean_up(
            self.client(None),
            timeout=self.settings.job_timeout,
            report_progress=self.report_progress,
        )
        return self.leftovers

    # Describing the run ------------------------------------------------------------

    def describe_target(self) -> dict[str, Any]:
        """The target and profile as the report shows them; never a secret."""
        return {
            "url": self.redactor.url(self.url),
            "kind": "embedded mock" if self.settings.mock else "server",
            "auth": (
                "unknown"
                if self.auth_required is None
                else ("required" if self.auth_required else "off")
            ),
            "auth_source": self.auth_source,
            "account": self.credentials.username if self.credentials else None,
            "second_account": (
                self.other_credentials.username if self.other_credentials else None
            ),
            "key_account": (
                self.key_credentials.username if self.key_credentials else None
            ),
        }


def _password_user(
    account: Credentials,
    *,
    compute_time: int = MOCK_PLENTY,
    bandwidth: int = MOCK_PLENTY,
) -> dict[str, Any]:
    """A users.json entry of the embedded mock (compute seconds, KiB)."""
    return {
        "username": account.username,
        "password": account.key,
        "compute_time": compute_time,
        "bandwidth": bandwidth,
    }
