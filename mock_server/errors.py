"""Failure kinds of the mock server, free of HTTP.

Handlers, the job store and the archive code raise these; ``mock_server.app`` maps
each kind to its status code in one table, so the HTTP contract lives in one place.
"""

from __future__ import annotations


class MockServerError(Exception):
    """A request the server refuses; ``message`` is what the client reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(MockServerError):
    """The request body, a field or a multipart part is malformed."""


class InvalidArchive(InvalidRequest):
    """The import archive is not a gzip tar or holds a member the server refuses."""


class MissingCredentials(MockServerError):
    """Authentication is on and the request carries no username and key."""


class AuthenticationFailed(MockServerError):
    """Unknown account or wrong key; both give the same answer on purpose."""


class NoAccounts(MockServerError):
    """Account information was asked of a server running without accounts."""


class JobNotFound(MockServerError):
    """No job of this account has that job hash (or job id)."""


class JobStillRunning(MockServerError):
    """The job's nodes are still running, so it cannot be deleted or fetched yet."""


class JobHashInUse(MockServerError):
    """A job with the same job hash already exists."""


class UploadTooLarge(MockServerError):
    """The request body is larger than the server accepts."""


class TooManyNodes(MockServerError):
    """The manifest's flowgraph has more nodes than the server runs."""


class ComputeTimeExhausted(MockServerError):
    """The account has no compute time left to start a job."""


class BandwidthExhausted(MockServerError):
    """The account's remaining bandwidth is smaller than the results archive."""


class ResultsUnavailable(MockServerError):
    """The job ended but its results archive could not be produced."""
