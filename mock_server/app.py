"""The WSGI application: routing, request parsing, authentication, error mapping.

Every request is parsed once, validated against the project's request schemas
(``sc_conformance.spec``), authenticated once, and handed to the job store. Every
failure is a ``mock_server.errors`` exception turned into a JSON ``{"message"}``
answer by ``STATUS_CODES``, the one place where failure kinds meet HTTP.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.routing import Map
from werkzeug.routing import RequestRedirect
from werkzeug.routing import Rule
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response
from werkzeug.wsgi import wrap_file

from mock_server.accounts import Accounts
from mock_server.archive import ExtractionLimits
from mock_server.config import MockConfig
from mock_server.errors import AuthenticationFailed
from mock_server.errors import BandwidthExhausted
from mock_server.errors import ComputeTimeExhausted
from mock_server.errors import InvalidArchive
from mock_server.errors import InvalidRequest
from mock_server.errors import JobHashInUse
from mock_server.errors import JobNotFound
from mock_server.errors import JobStillRunning
from mock_server.errors import MissingCredentials
from mock_server.errors import MockServerError
from mock_server.errors import NoAccounts
from mock_server.errors import ResultsUnavailable
from mock_server.errors import TooManyNodes
from mock_server.errors import UploadTooLarge
from mock_server.manifest import read_plan
from mock_server.runner import Runner
from mock_server.runner import node_started_line
from mock_server.store import JobState
from mock_server.store import Store
from sc_conformance import spec

logger = logging.getLogger(__name__)

RUNNING_TEXT = "Job is currently running on the cluster."
FINISHED_TEXT = "Job has no running steps."

STATUS_CODES: dict[type[MockServerError], int] = {
    InvalidRequest: 400,
    InvalidArchive: 400,
    MissingCredentials: 400,
    JobStillRunning: 400,
    ComputeTimeExhausted: 400,
    AuthenticationFailed: 403,
    TooManyNodes: 403,
    JobNotFound: 404,
    NoAccounts: 404,
    ResultsUnavailable: 404,
    JobHashInUse: 409,
    UploadTooLarge: 413,
    BandwidthExhausted: 503,
}

RESULTS_CHUNK_BYTES = 1024 * 1024
MAX_FORM_PARTS = 16
MAX_FORM_FIELD_BYTES = 16 * 1024 * 1024
_RESULTS_SUFFIX = ".tar.gz"

# The schemas' patterns are ECMA-262 regular expressions, in which "$" does not
# match before a trailing newline as Python's does; these are checked in full.
_FULL_PATTERNS = {
    "job_hash": re.compile(spec.JOB_HASH_PATTERN.removeprefix("^").removesuffix("$")),
    "username": re.compile(spec.USERNAME_PATTERN.removeprefix("^").removesuffix("$")),
}


def status_for(error: MockServerError) -> int:
    """Return the HTTP status of a failure kind (the most specific one listed)."""
    for kind in type(error).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]  # type: ignore[index]
    return 500


def message_response(message: str, status: int) -> Response:
    return Response(
        json.dumps({"message": message}), status=status, mimetype="application/json"
    )


class MockApp:
    """The mock server as a WSGI application, with its store and runner."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self._temporary_root: tempfile.TemporaryDirectory[str] | None = None
        if config.root is None:
            self._temporary_root = tempfile.TemporaryDirectory(prefix="sc-mock-")
            root = Path(self._temporary_root.name)
        else:
            root = config.root
            root.mkdir(parents=True, exist_ok=True)

        self.store = Store(root)
        self.accounts = (
            Accounts.load(self._users_file(root)) if config.auth else Accounts()
        )
        self.store.seed_quotas(self.accounts)
        self.runner = Runner(self.store, config.node_seconds)
        self.runner.start()
        self.url_map = Map(
            [
                Rule("/remote_run/", endpoint="remote_run", methods=["POST"]),
                Rule("/check_progress/", endpoint="check_progress", methods=["POST"]),
                Rule("/check_user/", endpoint="check_user", methods=["POST"]),
                Rule("/delete_job/", endpoint="delete_job", methods=["POST"]),
                Rule(
                    "/get_results/<path:job_file>",
                    endpoint="get_results",
                    methods=["POST"],
                ),
            ],
            merge_slashes=False,
        )
        self._closed = False

    @property
    def root(self) -> Path:
        return self.store.root

    def _users_file(self, root: Path) -> Path | None:
        """The configured users file, else ``users.json`` in the storage root, where
        the reference server keeps it."""
        if self.config.users_file is not None:
            return self.config.users_file
        default = root / "users.json"
        return default if default.is_file() else None

    def has_defect(self, name: str) -> bool:
        """Tell whether the deliberate flaw *name* is switched on (see defects.py)."""
        return name in self.config.defects

    def close(self) -> None:
        """Stop the runner between nodes and release the storage root."""
        if self._closed:
            return
        self._closed = True
        self.runner.stop()
        self.store.close()
        if self._temporary_root is not None:
            self._temporary_root.cleanup()

    # -- WSGI --------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
            handler = getattr(self, f"on_{endpoint}")
            return handler(request, **values)  # type: ignore[no-any-return]
        except MockServerError as error:
            return message_response(error.message, status_for(error))
        except MethodNotAllowed as error:
            response = message_response("Error: only POST is served here.", 405)
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods or ()))
            return response
        except RequestRedirect:
            return message_response("Error: no such endpoint.", 404)
        except RequestEntityTooLarge:
            return message_response(self._too_large_message(), 413)
        except HTTPException as error:
            status = error.code or 400
            if status == 404:
                return message_response("Error: no such endpoint.", 404)
            return message_response(error.description or error.name, status)
        except Exception:
            logger.exception("unexpected failure answering %s", request.path)
            return message_response("Error: internal server error.", 500)

    def _too_large_message(self) -> str:
        return (
            "Error: the request is larger than this server accepts "
            f"({self.config.max_upload_mb} MiB for uploads, "
            f"{self.config.max_json_kb} KiB for JSON bodies)."
        )

    # -- request parsing ---------------------------------------------------------

    def _json_body(self, request: Request, schema: str) -> dict[str, Any]:
        """Parse the body as JSON whatever its Content-Type, and validate it."""
        limit = self.config.max_json_bytes
        if request.content_length is not None and request.content_length > limit:
            raise UploadTooLarge(self._too_large_message())
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise UploadTooLarge(self._too_large_message())
        return self._validated(_parse_json(body, "request body"), schema)

    def _validated(self, document: Any, schema: str) -> dict[str, Any]:
        reason = spec.first_error(schema, document)
        if reason is None:
            reason = _strict_field_error(document)
        if reason is not None:
            raise InvalidRequest(f"Error: invalid request: {_shorten(reason)}")
        return document  # type: ignore[no-any-return]

    def _account(self, document: dict[str, Any]) -> str | None:
        """Authenticate the request; the account name, or None without accounts."""
        if not self.config.auth:
            return None
        if "username" not in document or "key" not in document:
            raise MissingCredentials(
                "Error: some authentication parameters are missing."
            )
        return self.accounts.authenticate(
            document["username"], document["key"]
        ).username

    # -- endpoints ---------------------------------------------------------------

    def on_remote_run(self, request: Request) -> Response:
        if request.mimetype != "multipart/form-data":
            raise InvalidRequest(
                "Error: remote_run expects multipart/form-data with parts "
                "'import' and 'params'."
            )

        spooled: list[IO[bytes]] = []

        def spool(
            total_content_length: int | None,
            content_type: str | None,
            filename: str | None,
            content_length: int | None = None,
        ) -> IO[bytes]:
            part = tempfile.TemporaryFile(dir=self.store.staging)
            spooled.append(part)
            return part

        parser = FormDataParser(
            stream_factory=spool,  # type: ignore[arg-type]
            max_form_memory_size=MAX_FORM_FIELD_BYTES,
            max_content_length=self.config.max_upload_bytes,
            max_form_parts=MAX_FORM_PARTS,
        )
        try:
            _, form, files = parser.parse_from_environ(request.environ)
            return self._start_job(form, files)
        finally:
            for part in spooled:
                part.close()

    def _start_job(self, form: Any, files: Any) -> Response:
        import_part = files.get("import")
        if "params" in files:
            params_text: bytes | str = files["params"].stream.read()
        elif "params" in form:
            params_text = form["params"]
        else:
            raise InvalidRequest("Error: the 'params' part is missing.")
        if import_part is None:
            raise InvalidRequest("Error: the 'import' file part is missing.")

        envelope = self._validated(
            _parse_json(params_text, "params part"), "remote_run_envelope"
        )
        params = self._validated(envelope["params"], "remote_run")
        account = self._account(params)
        job_hash = params["job_hash"]
        if self.store.job_exists(job_hash):
            raise JobHashInUse("Error: the job hash is already in use.")

        plan = read_plan(envelope["chip_cfg"], self.config.max_nodes)
        if account is not None and self.store.quota(account).compute_time <= 0:
            raise ComputeTimeExhausted("out of bandwidth or time")

        import_part.stream.seek(0)
        self.store.create_job(
            job_hash,
            account,
            plan,
            envelope["chip_cfg"],
            import_part.stream,
            ExtractionLimits(
                max_bytes=self.config.max_extract_bytes,
                max_members=self.config.max_archive_members,
            ),
            self.config.fail_nodes,
        )
        self.runner.wake()
        return Response(f"Starting job: {job_hash}", mimetype="text/plain")

    def on_check_progress(self, request: Request) -> Response:
        document = self._json_body(request, "check_progress")
        account = self._account(document)
        record = self.store.find_job(document["job_hash"], account)
        if record.jobname != document["job_id"]:
            raise JobNotFound("Error: unknown job id for this job hash.")

        if record.state != JobState.RUNNING:
            return Response(FINISHED_TEXT, mimetype="text/plain")
        if record.current_node is None:
            return Response(RUNNING_TEXT, mimetype="text/plain")
        tail = node_started_line(record.current_node, self.config.node_seconds)
        return Response(
            f"{RUNNING_TEXT} Current node: {record.current_node}\n{tail}",
            mimetype="text/plain",
        )

    def on_get_results(self, request: Request, job_file: str) -> Response:
        if not job_file.endswith(_RESULTS_SUFFIX):
            raise JobNotFound("Error: no such endpoint.")
        job_hash = job_file.removesuffix(_RESULTS_SUFFIX)
        if not _FULL_PATTERNS["job_hash"].fullmatch(job_hash):
            raise InvalidRequest("Error: invalid job hash.")

        document = self._json_body(request, "get_results")
        account = self._account(document)
        results, size = self.store.open_results(job_hash, account)
        logger.info("job %s: sending results archive (%d bytes)", job_hash, size)
        response = Response(
            wrap_file(request.environ, results, RESULTS_CHUNK_BYTES),
            mimetype="application/x-tar",
            direct_passthrough=True,
        )
        response.headers["Content-Length"] = str(size)
        response.headers["Content-Disposition"] = (
            f'attachment; filename="{job_hash}{_RESULTS_SUFFIX}"'
        )
        return response

    def on_delete_job(self, request: Request) -> Response:
        document = self._json_body(request, "delete_job")
        account = self._account(document)
        self.store.delete_job(document["job_hash"], account)
        return Response("Job deleted.", mimetype="text/plain")

    def on_check_user(self, request: Request) -> Response:
        document = self._json_body(request, "check_user")
        if not self.config.auth:
            raise NoAccounts("Error: this server runs without accounts.")
        account = self._account(document)
        assert account is not None
        quota = self.store.quota(account)
        answer = {
            "compute_time": max(0, int(quota.compute_time)),
            "bandwidth_kb": max(0, quota.bandwidth_kb),
        }
        return Response(json.dumps(answer), mimetype="application/json")


def create_app(config: MockConfig | None = None) -> MockApp:
    """Return the mock server's WSGI application; call ``close()`` when done."""
    return MockApp(config or MockConfig())


def _parse_json(body: bytes | str, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest(f"Error: the {what} is not valid JSON.") from None


def _strict_field_error(document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    for field, pattern in _FULL_PATTERNS.items():
        value = document.get(field)
        if isinstance(value, str) and not pattern.fullmatch(value):
            return f"{field}: {value[:80]!r} does not match {pattern.pattern!r}"
    return None


def _shorten(reason: str, limit: int = 300) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
