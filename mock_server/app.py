"""The WSGI application: routing, request parsing, authentication, error mapping.

Every request is parsed once, validated against the project's request schemas
(``sc_conformance.spec``), authenticated once, and handed to the job store. Every
failure is a ``mock_server.errors`` exception turned into a JSON ``{"message"}``
answer by ``STATUS_CODES``, the one place where failure kinds meet HTTP.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.exceptions import UnprocessableEntity
from werkzeug.routing import Map
from werkzeug.routing import RequestRedirect
from werkzeug.routing import Rule
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response
from werkzeug.wsgi import get_input_stream
from werkzeug.wsgi import wrap_file

from mock_server import defects
from mock_server.accounts import AUTHENTICATION_ERROR
from mock_server.accounts import Accounts
from mock_server.archive import ExtractionLimits
from mock_server.archive import build_results_archive
from mock_server.config import MockConfig
from mock_server.control import JobControl
from mock_server.controldb import ControlDatabase
from mock_server.crypto import SealedSpool
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
from mock_server.manifest import JobPlan
from mock_server.manifest import read_plan
from mock_server.multipart import OBSERVER_KEY
from mock_server.multipart import Part
from mock_server.multipart import read_parts
from mock_server.runner import Runner
from mock_server.runner import node_started_line
from mock_server.sealed import JobKey
from mock_server.store import JobState
from mock_server.store import NodeStatus
from mock_server.store import StagedImport
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
        # Read even with authentication off: a scenario, the admin API or the
        # fixture may switch it on later, and the file's accounts must exist then.
        self.accounts = Accounts.load(self._users_file(root))
        self.store.seed_quotas(self.accounts)
        self.control_database = ControlDatabase(root)
        self.job_control = JobControl(
            self.control_database, self.store, config.node_seconds
        )
        self.runner = Runner(self.store, config.node_seconds, self.job_control)
        self.runner.start()
        methods = ["GET", "POST"] if self.has_defect("get-method-allowed") else ["POST"]
        check_user = "/check_user/"
        if self.has_defect("check-server-instead-of-check-user"):
            check_user = "/check_server/"
        self.url_map = Map(
            [
                Rule("/remote_run/", endpoint="remote_run", methods=methods),
                Rule("/check_progress/", endpoint="check_progress", methods=methods),
                Rule(check_user, endpoint="check_user", methods=methods),
                Rule("/delete_job/", endpoint="delete_job", methods=methods),
                Rule(
                    "/get_results/<path:job_file>",
                    endpoint="get_results",
                    methods=methods,
                ),
            ],
            merge_slashes=False,
        )
        self._deleted_jobs: set[str] = set()
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

    def _acting_account(self, job_hash: str, account: str | None) -> str | None:
        """The account a job call acts as: the caller's, or with the flaw the owner."""
        if not self.has_defect("serve-other-accounts-jobs"):
            return account
        for owner in (account, *(known.username for known in self.accounts)):
            try:
                return self.store.find_job(job_hash, owner).account
            except JobNotFound:
                continue
        return account

    def close(self) -> None:
        """Stop the runner between nodes and release the storage root."""
        if self._closed:
            return
        self._closed = True
        self.runner.stop()
        self.control_database.close()
        self.store.close()
        if self._temporary_root is not None:
            self._temporary_root.cleanup()

    # -- WSGI --------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        if self.has_defect("error-body-not-json"):
            response = defects.as_text_error(response)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        if request.method in ("GET", "HEAD") and self.has_defect("serve-files-by-get"):
            stored = defects.stored_file(self.root, request.path)
            if stored is not None:
                return Response(
                    stored.read_bytes(), mimetype="application/octet-stream"
                )
        try:
            endpoint, values = adapter.match()
            handler = getattr(self, f"on_{endpoint}")
            return handler(request, **values)  # type: ignore[no-any-return]
        except MockServerError as error:
            if isinstance(error, AuthenticationFailed) and self.has_defect(
                "auth-failure-200-text"
            ):
                return Response(error.message, mimetype="text/plain")
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
            if status == 404 and self.has_defect("unknown-path-400"):
                return message_response("Error: invalid request.", 400)
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
        if self.has_defect("content-type-must-be-json") and request.mimetype not in (
            "",
            "application/json",
        ):
            raise InvalidRequest("Error: expected Content-Type application/json.")
        if self.has_defect("malformed-json-500"):
            return self._validated(json.loads(body), schema)
        if self.has_defect("deep-json-500"):
            try:
                return self._validated(json.loads(body), schema)
            except ValueError:
                raise InvalidRequest("Error: the request body is not JSON.") from None
        if self.has_defect("malformed-json-422"):
            try:
                document = _parse_json(body, "request body")
            except InvalidRequest as error:
                raise UnprocessableEntity(error.message) from None
            if not isinstance(document, dict):
                raise UnprocessableEntity("Error: the body is not a JSON object.")
        return self._validated(_parse_json(body, "request body"), schema)

    def _validated(self, document: Any, schema: str) -> dict[str, Any]:
        properties = spec.load_schema(schema).get("properties", {})
        document, checked = defects.loosen_request(
            document, properties, self.config.defects
        )
        reason = spec.first_error(schema, checked)
        if reason is None:
            reason = _strict_field_error(checked)
        if reason is not None:
            raise InvalidRequest(f"Error: invalid request: {_shorten(reason)}")
        return document  # type: ignore[no-any-return]

    def _private_key(self, document: dict[str, Any]) -> rsa.RSAPrivateKey | None:
        """A key account's private key from the request, to unwrap a job's data key;
        it is dropped with the request. None for password accounts."""
        if not self.config.auth or "username" not in document or "key" not in document:
            return None
        signed_in = self.accounts.sign_in(document["username"], document["key"])
        return signed_in.private_key

    def _new_job_key(self, account: str | None) -> tuple[JobKey | None, bytes | None]:
        """A key account's job gets a fresh data key, stored only wrapped."""
        public_key = self._public_key(account)
        return (None, None) if public_key is None else JobKey.create(public_key)

    def _public_key(self, account: str | None) -> rsa.RSAPublicKey | None:
        """The public key of a key account; None for any other account, or none."""
        found = self.accounts.find(account) if account is not None else None
        return None if found is None else found.public_key

    def _account(self, document: dict[str, Any]) -> str | None:
        """Authenticate the request; the account name, or None without accounts."""
        credentials = "username" in document and "key" in document
        if not self.config.auth:
            if not credentials and self.has_defect(
                "credentials-required-without-accounts"
            ):
                raise MissingCredentials("Error: username and key are required.")
            return None
        if not credentials and self.has_defect("missing-credentials-anonymous"):
            return None
        if "username" not in document or "key" not in document:
            raise MissingCredentials(
                "Error: some authentication parameters are missing."
            )
        known = {account.username for account in self.accounts}
        if document["username"] not in known:
            if self.has_defect("unknown-users-registered"):
                return str(document["username"])
            if self.has_defect("username-oracle"):
                raise AuthenticationFailed("Error: no such user.")
        if document["username"] in known and self.has_defect("no-key-check"):
            return str(document["username"])
        found = self.accounts.find(document["username"])
        if (
            found is not None
            and found.public_key is not None
            and self.has_defect("key-account-any-key")
            and defects.is_any_private_key(document["key"])
        ):
            return found.username
        try:
            return self.accounts.authenticate(
                document["username"], document["key"]
            ).username
        except InvalidRequest:
            if self.has_defect("key-not-a-key-403"):
                raise AuthenticationFailed(AUTHENTICATION_ERROR) from None
            raise

    # -- endpoints ---------------------------------------------------------------

    def on_remote_run(self, request: Request) -> Response:
        boundary = request.mimetype_params.get("boundary", "")
        if request.mimetype != "multipart/form-data" or not boundary:
            raise InvalidRequest(
                "Error: remote_run expects multipart/form-data with parts "
                "'import' and 'params'."
            )

        try:
            boundary_bytes = boundary.encode("ascii")
        except UnicodeEncodeError:
            message = "Error: the multipart boundary is not ASCII."
            raise InvalidRequest(message) from None

        limit: int | None = self.config.max_upload_bytes
        if self.has_defect("upload-into-memory-no-limit"):
            limit = None
        body = get_input_stream(request.environ, max_content_length=limit)
        watch = request.environ.get(OBSERVER_KEY)
        parts = read_parts(
            body, boundary_bytes, MAX_FORM_PARTS, observe=watch() if watch else None
        )
        upload = _Upload()
        try:
            for part in parts:
                if part.name == "params" and upload.params_text is None:
                    if self._takes_params_part(part):
                        upload.params_text = part.read(MAX_FORM_FIELD_BYTES)
                elif part.name == "import" and part.filename is not None:
                    if not upload.import_seen:
                        upload.import_seen = True
                        self._receive_import(part, upload)
            return self._start_job(upload)
        finally:
            if upload.staged is not None:
                self.store.discard(upload.staged)
            if upload.spool is not None:
                upload.spool.close()

    def _takes_params_part(self, part: Part) -> bool:
        if part.filename is not None:
            return not self.has_defect("params-form-field-only")
        return not self.has_defect("params-file-part-only")

    def _receive_import(self, part: Part, upload: _Upload) -> None:
        """Extract the import as it arrives; keep it whole only when it cannot be.

        When ``params`` came first it is judged before anything is written, and a
        refused request's import is only read past. The import is kept whole (in a
        staging file) when a defect variant rewrites it, and when it comes before
        ``params`` on a server with key accounts: whose it is, and so whether it
        must be encrypted, is not known yet, and a key account's import must never
        be written in plaintext (the staging file is sealed with a key held in
        memory only).
        """
        if upload.params_text is not None:
            try:
                upload.judged = self._judge(upload.params_text)
            except MockServerError as error:
                upload.refusal = error
                return
            if upload.judged.hash_in_use:
                return

        import_flaws = self.has_defect("non-gzip-import-500") or any(
            self.has_defect(name) for name in defects.IMPORT_FLAWS
        )
        owner_unknown = (
            upload.judged is None
            and self.config.auth
            and self.accounts.has_key_accounts
        )
        if import_flaws or owner_unknown:
            spool: BinaryIO
            if self.accounts.has_key_accounts:
                spool = SealedSpool(self.store.staging)  # type: ignore[assignment]
            else:
                spool = tempfile.TemporaryFile(dir=self.store.staging)
            upload.spool = spool
            for chunk in part.chunks():
                spool.write(chunk)
            return

        job_key = None
        if upload.judged is not None:
            job_key, upload.wrapped_key = self._new_job_key(upload.judged.account)
        try:
            upload.staged = self.store.stage_import(
                part.chunks(), self._extraction_limits(), job_key
            )
        except InvalidArchive as error:
            # Refused once the params are judged, so that a request wrong in both
            # ways gets the same answer whatever the order of its parts.
            upload.archive_error = error

    def _extraction_limits(self) -> ExtractionLimits:
        max_members = self.config.max_archive_members
        if self.has_defect("archive-member-limit-ignored"):
            max_members = sys.maxsize
        return ExtractionLimits(
            max_bytes=self.config.max_extract_bytes, max_members=max_members
        )

    def _start_job(self, upload: _Upload) -> Response:
        if self.has_defect("missing-part-500") and (
            not upload.import_seen or upload.params_text is None
        ):
            # What a server indexing the parts unchecked does: an unhandled error.
            raise KeyError("import" if not upload.import_seen else "params")
        if upload.params_text is None:
            raise InvalidRequest("Error: the 'params' part is missing.")
        if not upload.import_seen:
            raise InvalidRequest("Error: the 'import' file part is missing.")
        if upload.refusal is not None:
            raise upload.refusal

        judged = upload.judged or self._judge(upload.params_text)
        if judged.hash_in_use:
            return Response(f"Starting job: {judged.job_hash}", mimetype="text/plain")
        if upload.spool is not None:
            job_key, upload.wrapped_key = self._new_job_key(judged.account)
            upload.staged = self.store.stage_import(
                self._spooled_import(upload.spool),
                self._extraction_limits(),
                job_key,
            )
        elif upload.archive_error is not None:
            raise upload.archive_error
        elif upload.judged is None and self._public_key(judged.account) is not None:
            # Not reached: an import that comes first on a server with key
            # accounts is spooled sealed, never extracted in plaintext.
            raise RuntimeError("a key account's import was extracted unencrypted")

        staged = upload.staged
        assert staged is not None
        upload.staged = None
        self.store.create_job(
            judged.job_hash,
            judged.account,
            judged.plan,
            judged.manifest,
            staged,
            self.config.fail_nodes,
            wrapped_key=upload.wrapped_key,
        )
        if staged.job_key is None:
            self.runner.wake()
        else:
            self.runner.start_sealed_job(judged.job_hash, staged.job_key)
        if self.has_defect("run-answer-without-hash"):
            return Response("Job accepted.", mimetype="text/plain")
        return Response(f"Starting job: {judged.job_hash}", mimetype="text/plain")

    def _judge(self, params_text: bytes) -> _Judged:
        """Check ``params`` in full: fields, account, job hash, flowgraph, quota."""
        document = _parse_json(params_text, "params part")
        if self.has_defect("manifest-not-checked") and isinstance(document, dict):
            if not isinstance(document.get("chip_cfg"), dict):
                document["chip_cfg"] = {}
        envelope = self._validated(document, "remote_run_envelope")
        params = self._validated(envelope["params"], "remote_run")
        account = self._account(params)
        job_hash = params["job_hash"]
        in_use = self.store.job_exists(job_hash)
        if in_use and not self.has_defect("reused-hash-accepted"):
            raise JobHashInUse("Error: the job hash is already in use.")

        max_nodes = self.config.max_nodes
        if self.has_defect("node-limit-ignored"):
            max_nodes = sys.maxsize
        plan = read_plan(envelope["chip_cfg"], max_nodes)
        out_of_time = (
            account is not None and self.store.quota(account).compute_time <= 0
        )
        if out_of_time and not self.has_defect("quota-compute-ignored"):
            raise ComputeTimeExhausted("out of bandwidth or time")
        return _Judged(account, job_hash, plan, envelope["chip_cfg"], in_use)

    def _spooled_import(self, spool: BinaryIO) -> BinaryIO:
        """The import kept whole, as the active defect variants spoil it."""
        spool.seek(0)
        if self.has_defect("non-gzip-import-500") and spool.read(2) != b"\x1f\x8b":
            raise gzip.BadGzipFile("Not a gzipped file")
        archive = spool
        for name, skipped in defects.IMPORT_FLAWS.items():
            if self.has_defect(name):
                archive = defects.without_members(archive, skipped)
        archive.seek(0)
        return archive

    def on_check_progress(self, request: Request) -> Response:
        document = self._json_body(request, "check_progress")
        account = self._acting_account(document["job_hash"], self._account(document))
        finished_text = FINISHED_TEXT
        if self.has_defect("finished-text-trailing-newline"):
            finished_text += "\n"
        if document["job_hash"] in self._deleted_jobs:
            return Response(finished_text, mimetype="text/plain")
        try:
            record = self.store.find_job(document["job_hash"], account)
        except JobNotFound:
            if self.has_defect("unknown-job-no-running-steps"):
                return Response(finished_text, mimetype="text/plain")
            raise
        if record.jobname != document["job_id"]:
            raise JobNotFound("Error: unknown job id for this job hash.")

        if self.has_defect("never-reports-finished"):
            return Response(RUNNING_TEXT, mimetype="text/plain")
        if record.state != JobState.RUNNING or self.has_defect("finished-immediately"):
            return Response(finished_text, mimetype="text/plain")
        current_node = record.current_node or self._next_node(record.job_hash)
        if current_node is None:
            return Response(RUNNING_TEXT, mimetype="text/plain")
        tail = node_started_line(current_node, self.config.node_seconds)
        return Response(
            f"{RUNNING_TEXT} Current node: {current_node}\n{tail}",
            mimetype="text/plain",
        )

    def _next_node(self, job_hash: str) -> str | None:
        """The node about to run, in the moment between two nodes (or before the
        first), so that a running job's answer always names one."""
        for node in self.store.nodes(job_hash):
            if node.status in (NodeStatus.PENDING, NodeStatus.RUNNING):
                return node.name
        return None

    def on_get_results(self, request: Request, job_file: str) -> Response:
        if not job_file.endswith(_RESULTS_SUFFIX):
            raise JobNotFound("Error: no such endpoint.")
        job_hash = job_file.removesuffix(_RESULTS_SUFFIX)
        if self.has_defect("results-hash-case-folded"):
            job_hash = job_hash.lower()
        if not _FULL_PATTERNS["job_hash"].fullmatch(job_hash):
            raise InvalidRequest("Error: invalid job hash.")

        document = self._json_body(request, "get_results")
        account = self._acting_account(job_hash, self._account(document))
        private_key = self._private_key(document)
        try:
            results, size = self.store.open_results(job_hash, account, private_key)
        except BandwidthExhausted:
            if not self.has_defect("bandwidth-ignored"):
                raise
            results, size = self.store.open_results(
                job_hash, account, private_key, charge=False
            )
        except JobNotFound:
            if self.has_defect("unknown-results-500"):
                raise FileNotFoundError(self.store.results_path(job_hash)) from None
            raise
        except JobStillRunning:
            if not self.has_defect("results-while-running-partial"):
                raise
            results = tempfile.TemporaryFile(dir=self.store.staging)
            partial = self.store.staging / f"partial-{job_hash}.tar.gz"
            size = build_results_archive(
                self.store.job_dir(job_hash), job_hash, partial
            )
            with open(partial, "rb") as built:
                shutil.copyfileobj(built, results)
            partial.unlink()
            results.seek(0)
        if self.has_defect("key-results-ciphertext") and self.store.is_sealed(job_hash):
            with results:
                spoiled = defects.with_stored_contents(
                    results.read(), self.store.job_dir(job_hash)
                )
            results, size = io.BytesIO(spoiled), len(spoiled)
        for name, spoil in defects.RESULTS_FLAWS.items():
            if self.has_defect(name):
                with results:
                    spoiled = spoil(results.read())
                results, size = io.BytesIO(spoiled), len(spoiled)
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
        if self.has_defect("results-without-attachment-headers"):
            response.mimetype = "application/octet-stream"
            del response.headers["Content-Disposition"]
        return response

    def on_delete_job(self, request: Request) -> Response:
        document = self._json_body(request, "delete_job")
        job_hash = document["job_hash"]
        account = self._acting_account(job_hash, self._account(document))
        deleted = Response("Job deleted.", mimetype="text/plain")
        try:
            record = self.store.find_job(job_hash, account)
        except JobNotFound:
            if self.has_defect("delete-unknown-200"):
                return deleted
            raise
        running = record.state == JobState.RUNNING
        if running and self.has_defect("delete-while-running"):
            return deleted
        if not running and self.has_defect("delete-leaves-results"):
            shutil.rmtree(self.store.work_dir(record), ignore_errors=True)
            return deleted
        self.store.delete_job(job_hash, account)
        if self.has_defect("deleted-job-still-finished"):
            self._deleted_jobs.add(job_hash)
        return deleted

    def on_check_user(self, request: Request) -> Response:
        try:
            document = self._json_body(request, "check_user")
        except InvalidRequest:
            if self.has_defect("check-user-missing-field-403"):
                raise AuthenticationFailed(AUTHENTICATION_ERROR) from None
            raise
        if not self.config.auth:
            if self.has_defect("check-user-without-accounts-200"):
                unlimited = {"compute_time": 2**31 - 1, "bandwidth_kb": 2**31 - 1}
                return Response(json.dumps(unlimited), mimetype="application/json")
            raise NoAccounts("Error: this server runs without accounts.")
        try:
            account = self._account(document)
        except AuthenticationFailed:
            if not self.has_defect("check-user-accepts-bad-creds"):
                raise
            empty = {"compute_time": 0, "bandwidth_kb": 0}
            return Response(json.dumps(empty), mimetype="application/json")
        assert account is not None
        quota = self.store.quota(account)
        answer = {
            "compute_time": max(0, int(quota.compute_time)),
            "bandwidth_kb": max(0, quota.bandwidth_kb),
        }
        if self.has_defect("check-user-no-quota-fields"):
            answer = {"status": "ok"}
        return Response(json.dumps(answer), mimetype="application/json")


def create_app(config: MockConfig | None = None) -> MockApp:
    """Return the mock server's WSGI application; call ``close()`` when done."""
    return MockApp(config or MockConfig())


@dataclasses.dataclass
class _Upload:
    """What a remote_run body has carried so far, as it is read."""

    params_text: bytes | None = None
    import_seen: bool = False
    staged: StagedImport | None = None
    """The import, extracted as it arrived."""
    spool: BinaryIO | None = None
    """The import kept whole, to be extracted once ``params`` is judged."""
    archive_error: InvalidArchive | None = None
    judged: _Judged | None = None
    """``params``, checked in full before the import was read."""
    refusal: MockServerError | None = None
    """Why ``params`` was refused before the import was read."""
    wrapped_key: bytes | None = None


@dataclasses.dataclass(frozen=True)
class _Judged:
    """A remote_run whose ``params`` passed every check."""

    account: str | None
    job_hash: str
    plan: JobPlan
    manifest: dict[str, Any]
    hash_in_use: bool
    """Only with the defect variant that answers a reused job hash as a new job."""


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
