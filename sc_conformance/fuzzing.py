"""Running generated requests against the target: pace, seed, budget and failure text.

A fuzz check hands a strategy and a judge to ``FuzzRun.run``; hypothesis shrinks a
failing request and the failure message shows it with a curl line to replay it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import NoReturn
from typing import TypeVar

import requests
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import seed
from hypothesis import settings
from hypothesis import strategies as st

from sc_conformance.client import FINISHED_TEXT
from sc_conformance.client import ServerClient
from sc_conformance.client import ServerUnreachable
from sc_conformance.fuzz_options import SEED_OPTION
from sc_conformance.fuzz_options import FuzzSettings
from sc_conformance.fuzz_options import fuzz_settings
from sc_conformance.pacing import TokenBucket
from sc_conformance.session import ConformanceSession
from sc_conformance.strategies import FuzzRequest

logger = logging.getLogger(__name__)

Example = TypeVar("Example")


class FuzzFailure(AssertionError):
    """A generated request got an answer its requirement forbids."""


@dataclasses.dataclass
class FuzzRun:
    """What every fuzz and security check shares: the target, the pace, the seed."""

    client: ServerClient
    settings: FuzzSettings
    bucket: TokenBucket
    storage_root: Path | None = None
    """The embedded mock's storage root, for checks that look at the disk."""
    mock_config: Any = None
    """The embedded mock's ``MockConfig`` (its limits), when the plugin exposes it."""

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def run(
        self,
        strategy: st.SearchStrategy[Example],
        judge: Callable[[Example], None],
        *,
        examples: int | None = None,
    ) -> None:
        """Judge *examples* (default: the per-endpoint budget) drawn from *strategy*."""
        budget = self.settings.examples if examples is None else examples

        @settings(
            max_examples=budget,
            deadline=None,
            database=None,
            derandomize=False,
            print_blob=False,
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
        )
        @seed(self.settings.seed)
        @given(strategy)
        def example(value: Example) -> None:
            judge(value)

        example()

    def send(self, request: FuzzRequest) -> requests.Response:
        """Send one generated request at the session's pace."""
        self.bucket.acquire()
        try:
            return self.client.post_bytes(
                request.path, request.body, headers=request.headers
            )
        except ServerUnreachable as error:
            self.fail(request, f"an answer, got none ({error.args[0]})")

    def fail(
        self,
        request: FuzzRequest,
        expectation: str,
        response: requests.Response | None = None,
    ) -> NoReturn:
        """Raise a failure that shows the request, the answer and how to replay it."""
        got = ""
        if response is not None:
            shown = response.content[:300].decode("utf-8", "backslashreplace")
            got = f", got {response.status_code} {shown!r}"
        raise FuzzFailure(
            f"expected {expectation}{got}\n{request.describe(self.base_url)}\n"
            f"replay this run: {SEED_OPTION}={self.settings.seed} "
            f"--sc-fuzz-examples={self.settings.examples}"
        )

    def job_exists(self, job_hash: str, job_id: str) -> bool:
        """Whether *job_hash* names a job, judged through the API (and the disk)."""
        if self.storage_root is not None and any(
            job_hash in path.name for path in self.storage_root.rglob("*")
        ):
            return True
        self.bucket.acquire()
        progress = self.client.check_progress(job_hash, job_id)
        if progress.status_code == 200 and progress.text.strip() != FINISHED_TEXT:
            return True
        self.bucket.acquire()
        return self.client.get_results(job_hash).status_code == 200


def fuzz_run(config: Any, session: ConformanceSession) -> FuzzRun:
    """Build the run of one session's fuzz and security checks.

    The embedded mock's storage root and limits are read from the session's
    ``mock_server`` when the plugin exposes it; without it checks judge by the API.
    """
    mock = getattr(session, "mock_server", None)
    settings_ = fuzz_settings(config, embedded_mock=session.settings.mock)
    return FuzzRun(
        client=session.client(),
        settings=settings_,
        bucket=TokenBucket(settings_.rate),
        storage_root=getattr(mock, "root", None),
        mock_config=getattr(mock, "config", None),
    )
