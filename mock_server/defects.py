"""Deliberate flaws the mock can be started with, and the requirements they break.

The conformance suite proves that it catches broken servers by running against the
mock with one flaw switched on (``sc-mock-server --defect NAME``,
``MockConfig(defects=...)``). Each flaw is a small branch in the mock guarded by
``MockApp.has_defect(name)``, written the way real servers go wrong; a name not
listed here is refused at start, so a misspelt defect cannot silently give a correct
server. The helpers below rewrite archives for the flaws that concern them, so the
mock's own extraction and results code stays free of deliberate mistakes.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import re
import tarfile
import tempfile
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from typing import BinaryIO

from werkzeug.wrappers import Response

from mock_server import crypto

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Defect:
    """One deliberate flaw: what it does and the requirement ids it breaks.

    ``accounts`` says on which kind of server the flaw shows: with accounts
    (authentication on, the embedded default) or without them.
    """

    name: str
    description: str
    targets: tuple[str, ...]
    accounts: bool = True


DEFECTS: tuple[Defect, ...] = (
    # Transport -------------------------------------------------------------------
    Defect(
        "check-server-instead-of-check-user",
        "serves the later revision's check_server/ and answers 404 at check_user/",
        ("TR-01",),
    ),
    Defect(
        "content-type-must-be-json",
        "refuses JSON bodies sent with a Content-Type other than application/json",
        ("TR-02",),
    ),
    Defect(
        "error-body-not-json",
        "answers errors with a text/plain reason instead of a JSON message",
        ("TR-03", "FUZ-01"),
    ),
    Defect(
        "malformed-json-500",
        "lets the JSON parser's exception escape: malformed bodies get 500",
        ("TR-04", "TR-07", "FUZ-02"),
    ),
    Defect(
        "deep-json-500",
        "does not catch the recursion error of deeply nested JSON: 500",
        ("TR-04", "FUZ-02"),
    ),
    Defect(
        "malformed-json-422",
        "answers unparseable or non-object bodies 422, as a framework default does",
        ("TR-07",),
    ),
    Defect(
        "get-method-allowed",
        "routes GET like POST, so other methods are not refused with 405",
        ("TR-05",),
    ),
    Defect(
        "unknown-path-400",
        "answers unknown paths 400 from a catch-all handler instead of 404",
        ("TR-06",),
    ),
    Defect(
        "serve-files-by-get",
        "serves the storage root as static files to GET and HEAD",
        ("RES-08",),
    ),
    # Fields ----------------------------------------------------------------------
    Defect(
        "uppercase-job-hash",
        "accepts job hashes in upper-case hex",
        ("FLD-01",),
    ),
    Defect(
        "short-job-hash",
        "accepts lower-case hex job hashes of any length up to 32",
        ("FLD-01",),
    ),
    Defect(
        "job-hash-dollar-newline",
        "checks the job hash with a '$' that also matches before a final newline",
        ("FLD-01",),
    ),
    Defect(
        "username-pattern-unchecked",
        "accepts usernames with whitespace or ';'",
        ("FLD-02",),
    ),
    Defect(
        "no-type-check",
        "turns fields of the wrong JSON type into strings instead of refusing them",
        ("FLD-03",),
    ),
    Defect(
        "ignore-unknown-properties",
        "drops unknown properties instead of refusing the request",
        ("FLD-04",),
    ),
    Defect(
        "username-without-key",
        "takes a missing key (or username) as empty instead of refusing with 400",
        ("FLD-05",),
    ),
    Defect(
        "missing-job-id-defaults",
        "takes a missing job_id as 'job0' instead of refusing with 400",
        ("FLD-06",),
    ),
    # Authentication --------------------------------------------------------------
    Defect(
        "missing-credentials-anonymous",
        "serves calls without username and key as an anonymous account",
        ("AUTH-01",),
    ),
    Defect(
        "no-key-check",
        "accepts any key for a known username",
        ("AUTH-02",),
    ),
    Defect(
        "unknown-users-registered",
        "creates an account for an unknown username on first contact",
        ("AUTH-03",),
    ),
    Defect(
        "auth-failure-200-text",
        "answers authentication failures 200 with a text body",
        ("AUTH-02", "AUTH-03", "TR-03"),
    ),
    Defect(
        "username-oracle",
        "tells an unknown username apart from a wrong key in its refusal",
        ("AUTH-04",),
    ),
    Defect(
        "serve-other-accounts-jobs",
        "serves, polls and deletes a job for any account",
        ("AUTH-05",),
    ),
    Defect(
        "credentials-required-without-accounts",
        "refuses calls without credentials with 400 although it has no accounts",
        ("AUTH-06",),
        accounts=False,
    ),
    # remote_run ------------------------------------------------------------------
    Defect(
        "run-answer-without-hash",
        "accepts an upload with a body that does not name the job hash",
        ("RUN-01",),
    ),
    Defect(
        "params-form-field-only",
        "reads params only from a form field, not from the file part clients send",
        ("RUN-01", "RUN-02"),
    ),
    Defect(
        "params-file-part-only",
        "reads params only from a file part, not from a form field",
        ("RUN-02",),
    ),
    Defect(
        "missing-part-500",
        "looks up the import and params parts without checking: a missing one is 500",
        ("RUN-03", "FUZ-03"),
    ),
    Defect(
        "manifest-not-checked",
        "takes a chip_cfg that is missing or not an object as an empty manifest",
        ("RUN-04",),
    ),
    Defect(
        "non-gzip-import-500",
        "lets the gzip error of an import that is not gzip escape: 500",
        ("RUN-05", "TR-04"),
    ),
    Defect(
        "reused-hash-accepted",
        "answers a job hash in use 200 'Starting job' again, dropping the upload",
        ("RUN-06",),
    ),
    Defect(
        "upload-into-memory-no-limit",
        "reads uploads whatever their size, so an oversized one never gets 413",
        ("RUN-07",),
    ),
    Defect(
        "traversal-members-skipped",
        "skips import members with absolute paths or '..' and accepts the job",
        ("RUN-08",),
    ),
    Defect(
        "escaping-links-skipped",
        "skips import links pointing outside the job and accepts the job",
        ("RUN-09",),
    ),
    Defect(
        "device-members-skipped",
        "skips device and FIFO import members and accepts the job",
        ("RUN-10",),
    ),
    Defect(
        "unchecked-extraction",
        "skips every hostile import member (paths, links, devices), accepts the job",
        ("RUN-08", "RUN-09", "RUN-10"),
    ),
    Defect(
        "archive-member-limit-ignored",
        "extracts import archives whatever their member count",
        ("RUN-11",),
    ),
    # check_progress --------------------------------------------------------------
    Defect(
        "finished-immediately",
        "reports a just-submitted job as finished while its nodes still run",
        ("PRG-01", "RES-01"),
    ),
    Defect(
        "finished-text-trailing-newline",
        "ends the finished text with a newline, so it is not exactly the text",
        ("PRG-02",),
    ),
    Defect(
        "unknown-job-no-running-steps",
        "answers 'Job has no running steps.' for any unknown job hash",
        ("PRG-03",),
    ),
    Defect(
        "never-reports-finished",
        "keeps answering the running text for a job that has finished",
        ("PRG-04",),
    ),
    # get_results -----------------------------------------------------------------
    Defect(
        "results-uncompressed-tar",
        "serves the results as a plain tar under the .tar.gz name",
        ("RES-01",),
    ),
    Defect(
        "truncated-results",
        "serves only the first half of the results archive",
        ("RES-01",),
    ),
    Defect(
        "results-without-attachment-headers",
        "serves results as application/octet-stream without Content-Disposition",
        ("RES-02",),
    ),
    Defect(
        "results-outside-job-hash",
        "roots the results archive at the design folder, not at <job_hash>/",
        ("RES-03",),
    ),
    Defect(
        "results-missing-node-manifest",
        "leaves the nodes' outputs/<design>.pkg.json out of the results",
        ("RES-04",),
    ),
    Defect(
        "results-missing-final-manifest",
        "leaves the job's final manifest <design>.pkg.json out of the results",
        ("RES-09",),
    ),
    Defect(
        "unknown-results-500",
        "fails with 500 on results of an unknown or deleted job, as the reference",
        ("RES-05", "FUZ-01"),
    ),
    Defect(
        "results-while-running-partial",
        "serves an archive of whatever a running job has written so far",
        ("RES-06",),
    ),
    Defect(
        "results-hash-case-folded",
        "lower-cases the job hash in the results path, so look-alikes serve a job",
        ("RES-07",),
    ),
    # delete_job ------------------------------------------------------------------
    Defect(
        "delete-leaves-results",
        "answers 'Job deleted.' but keeps the job record and its results archive",
        ("DEL-01",),
    ),
    Defect(
        "delete-while-running",
        "answers 'Job deleted.' for a running job, which goes on running",
        ("DEL-02",),
    ),
    Defect(
        "delete-unknown-200",
        "answers 'Job deleted.' for an unknown job hash, as the reference",
        ("DEL-03",),
    ),
    Defect(
        "deleted-job-still-finished",
        "answers the finished text for a job after it was deleted",
        ("DEL-04",),
    ),
    # check_user ------------------------------------------------------------------
    Defect(
        "check-user-no-quota-fields",
        "answers check_user 200 without compute_time and bandwidth_kb",
        ("USR-01",),
    ),
    Defect(
        "check-user-accepts-bad-creds",
        "answers check_user 200 with an empty quota for any credentials",
        ("USR-02",),
    ),
    Defect(
        "check-user-missing-field-403",
        "answers check_user without username or key 403 instead of 400",
        ("USR-03",),
    ),
    Defect(
        "check-user-without-accounts-200",
        "answers check_user 200 with an unlimited quota on a server without accounts",
        ("USR-04",),
        accounts=False,
    ),
    # Key accounts ----------------------------------------------------------------
    Defect(
        "key-account-any-key",
        "accepts any well-formed private key for a key account, not only its own",
        ("KEY-01",),
    ),
    Defect(
        "key-results-ciphertext",
        "serves a key account's results with each file as stored, still encrypted",
        ("KEY-02",),
    ),
    Defect(
        "key-not-a-key-403",
        "refuses a key that is no private key with 403, like another account's key",
        ("KEY-03",),
    ),
    # Quotas and limits -----------------------------------------------------------
    Defect(
        "quota-compute-ignored",
        "starts jobs for accounts with no compute time left",
        ("QTA-01",),
    ),
    Defect(
        "node-limit-ignored",
        "runs flowgraphs of any size, past its max_nodes",
        ("QTA-02",),
    ),
    Defect(
        "bandwidth-ignored",
        "serves results larger than the account's remaining bandwidth, uncharged",
        ("QTA-03",),
    ),
)

DEFECTS_BY_NAME: dict[str, Defect] = {defect.name: defect for defect in DEFECTS}

KNOWN_DEFECTS: frozenset[str] = frozenset(DEFECTS_BY_NAME)


def validate_defects(names: Iterable[str]) -> None:
    """Raise ``ValueError`` when a requested defect has no implementation."""
    unknown = sorted(set(names) - KNOWN_DEFECTS)
    if unknown:
        known = ", ".join(sorted(KNOWN_DEFECTS)) or "none"
        raise ValueError(f"unknown defects {unknown}; known defects: {known}")


# Import archives: the extraction flaws ----------------------------------------------

MemberFilter = Callable[[tarfile.TarInfo], bool]


def _leaves_job(name: str) -> bool:
    return name.startswith(("/", "\\")) or ".." in name.split("/")


def is_traversal(member: tarfile.TarInfo) -> bool:
    return _leaves_job(member.name)


def is_escaping_link(member: tarfile.TarInfo) -> bool:
    if not (member.issym() or member.islnk()):
        return False
    return _leaves_job(member.linkname) or member.linkname.startswith("/")


def is_device(member: tarfile.TarInfo) -> bool:
    return member.ischr() or member.isblk() or member.isfifo()


def hostile_member(member: tarfile.TarInfo) -> bool:
    return is_traversal(member) or is_escaping_link(member) or is_device(member)


def without_members(archive: BinaryIO, skipped: MemberFilter) -> BinaryIO:
    """Return a copy of a gzip tar without the members *skipped* picks.

    This is how the extraction flaws behave like a server that quietly drops what
    it does not like and accepts the job, without the mock ever writing a hostile
    member. An archive that cannot be read is returned as it is, so the mock's own
    extraction refuses it as usual.
    """
    copy = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115
    archive.seek(0)
    try:
        with (
            tarfile.open(fileobj=archive, mode="r|gz") as source,
            tarfile.open(fileobj=copy, mode="w:gz", compresslevel=1) as target,
        ):
            for member in source:
                if skipped(member):
                    logger.debug("defect: skipping import member %r", member.name)
                    continue
                content = source.extractfile(member) if member.isreg() else None
                target.addfile(member, content)
    except (tarfile.TarError, EOFError, OSError):
        copy.close()
        archive.seek(0)
        return archive
    copy.seek(0)
    return copy  # type: ignore[return-value]


# Results archives: the results flaws -------------------------------------------------


def rewrite_results(
    results: bytes, rename: Callable[[tarfile.TarInfo], str | None]
) -> bytes:
    """Rebuild a results archive, renaming members or leaving them out (None)."""
    output = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(results), mode="r:gz") as source,
        tarfile.open(fileobj=output, mode="w:gz", compresslevel=1) as target,
    ):
        for member in source:
            name = rename(member)
            if name is None:
                continue
            content = source.extractfile(member) if member.isreg() else None
            member.name = name
            target.addfile(member, content)
    return output.getvalue()


def outside_job_hash(member: tarfile.TarInfo) -> str | None:
    """Strip the ``<job_hash>/`` root, as a server archiving its work folder does."""
    _, _, rest = member.name.partition("/")
    return rest or None


def without_node_manifests(member: tarfile.TarInfo) -> str | None:
    parts = member.name.split("/")
    is_node_manifest = len(parts) == 7 and parts[5] == "outputs"
    return None if is_node_manifest and parts[6].endswith(".pkg.json") else member.name


def without_final_manifest(member: tarfile.TarInfo) -> str | None:
    parts = member.name.split("/")
    is_final = len(parts) == 4 and parts[3] == f"{parts[1]}.pkg.json"
    return None if is_final else member.name


def with_stored_contents(results: bytes, job_dir: Path) -> bytes:
    """Rebuild a results archive with each file's bytes as stored under *job_dir*,
    as a server that archives its storage without decrypting it does."""
    output = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(results), mode="r:gz") as source,
        tarfile.open(fileobj=output, mode="w:gz", compresslevel=1) as target,
    ):
        for member in source:
            _, _, below_job = member.name.partition("/")
            stored = job_dir / below_job
            if member.isreg() and below_job and stored.is_file():
                content = stored.read_bytes()
                member.size = len(content)
                target.addfile(member, io.BytesIO(content))
                continue
            target.addfile(
                member, source.extractfile(member) if member.isreg() else None
            )
    return output.getvalue()


def uncompressed(results: bytes) -> bytes:
    return gzip.decompress(results)


def truncated(results: bytes) -> bytes:
    return results[: len(results) // 2]


IMPORT_FLAWS: dict[str, MemberFilter] = {
    "traversal-members-skipped": is_traversal,
    "escaping-links-skipped": is_escaping_link,
    "device-members-skipped": is_device,
    "unchecked-extraction": hostile_member,
}
"""Extraction flaws and the import members each one drops without refusing."""

RESULTS_FLAWS: dict[str, Callable[[bytes], bytes]] = {
    "results-uncompressed-tar": uncompressed,
    "truncated-results": truncated,
    "results-outside-job-hash": lambda results: rewrite_results(
        results, outside_job_hash
    ),
    "results-missing-node-manifest": lambda results: rewrite_results(
        results, without_node_manifests
    ),
    "results-missing-final-manifest": lambda results: rewrite_results(
        results, without_final_manifest
    ),
}
"""Results flaws and how each one spoils the archive as it is served."""


# Keys: the key account flaws --------------------------------------------------------


def is_any_private_key(key: str) -> bool:
    """Whether *key* decodes to some private key, whoever it belongs to."""
    try:
        crypto.load_private_key(key)
    except crypto.KeyFormatError:
        return False
    return True


# Requests: the validation flaws ------------------------------------------------------

PLACEHOLDER_JOB_HASH = "0" * 32

_LOOSE_JOB_HASHES = {
    "uppercase-job-hash": re.compile(r"[0-9a-fA-F]{32}"),
    "short-job-hash": re.compile(r"[0-9a-f]{1,32}"),
    "job-hash-dollar-newline": re.compile(r"[0-9a-f]{32}\n?"),
}


def loosen_request(
    document: Any, properties: Iterable[str], active: frozenset[str]
) -> tuple[Any, Any]:
    """Return (the request as a flawed server uses it, the copy it validates).

    Each validation flaw changes what the schema gets to see, the way a server
    that coerces, defaults or drops fields before checking them behaves.
    """
    if not isinstance(document, dict) or not active:
        return document, document
    used = dict(document)
    if "ignore-unknown-properties" in active:
        used = {name: value for name, value in used.items() if name in properties}
    if "no-type-check" in active:
        used = {
            name: value if isinstance(value, str | dict) else str(value)
            for name, value in used.items()
        }
    if "username-without-key" in active and ("username" in used or "key" in used):
        used = {"username": "", "key": "", **used}
    if "missing-job-id-defaults" in active and "job_id" in properties:
        used.setdefault("job_id", "job0")

    checked = dict(used)
    job_hash = used.get("job_hash")
    for name, pattern in _LOOSE_JOB_HASHES.items():
        if name in active and isinstance(job_hash, str) and pattern.fullmatch(job_hash):
            checked["job_hash"] = PLACEHOLDER_JOB_HASH
    username = used.get("username")
    if "username-pattern-unchecked" in active and isinstance(username, str):
        checked["username"] = "".join(char for char in username if char.isalnum())
    return used, checked


# Serving: the transport flaws --------------------------------------------------------


def stored_file(root: Path, url_path: str) -> Path | None:
    """The stored file a static-file route would serve for *url_path*, if any.

    The lookup stays inside the storage root: the flaw exposes the server's own
    files, never the rest of the machine.
    """
    base = root.resolve()
    candidate = (base / url_path.lstrip("/")).resolve()
    if candidate.is_relative_to(base) and candidate.is_file():
        return candidate
    return None


def as_text_error(response: Response) -> Response:
    """Turn a JSON ``{"message"}`` error into a text/plain body of the message."""
    if response.status_code < 400 or response.mimetype != "application/json":
        return response
    try:
        message = json.loads(response.get_data())["message"]
    except (ValueError, KeyError, TypeError):
        return response
    response.set_data(str(message).encode("utf-8"))
    response.mimetype = "text/plain"
    return response
