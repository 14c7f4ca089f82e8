"""The job the suite submits, and how its results archive is judged.

A job upload is a SiliconCompiler 0.13 manifest plus the import archive the client made
after running the import step locally. The shipped job uses only tool-free built-in
steps so that a real server can run it to completion; users may submit their own.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import posixpath
import tarfile
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SHIPPED_MANIFEST = "manifest.json.gz"
SHIPPED_IMPORT_ARCHIVE = "import.tar.gz"


class JobDefinitionError(ValueError):
    """A manifest or import archive cannot be used as a job upload."""


def manifest_value(manifest: Mapping[str, Any], *keypath: str) -> Any:
    """Return a global manifest value: ``global/global``, else ``default/default``.

    SiliconCompiler 0.13 stores values per node; values that are not per node sit under
    ``global`` (set by the user) or ``default`` (the schema default).
    """
    entry: Any = manifest
    for key in keypath:
        if not isinstance(entry, Mapping) or key not in entry:
            raise JobDefinitionError(f"manifest has no {'/'.join(keypath)}")
        entry = entry[key]
    node_values = entry.get("node") if isinstance(entry, Mapping) else None
    if not isinstance(node_values, Mapping):
        raise JobDefinitionError(
            f"manifest entry {'/'.join(keypath)} has no node values"
        )
    for step, index in (("global", "global"), ("default", "default")):
        value = node_values.get(step, {}).get(index, {}).get("value")
        if value is not None:
            return value
    raise JobDefinitionError(f"manifest entry {'/'.join(keypath)} has no value")


def flowgraph_nodes(
    manifest: Mapping[str, Any], flow: str
) -> tuple[tuple[str, str], ...]:
    """Return the (step, index) nodes of a flow, skipping the schema's placeholders."""
    graph = manifest.get("flowgraph", {}).get(flow)
    if not isinstance(graph, Mapping):
        raise JobDefinitionError(f"manifest has no flowgraph for flow {flow!r}")
    return tuple(
        (step, index)
        for step, indices in graph.items()
        if step != "default" and isinstance(indices, Mapping)
        for index in indices
        if index != "default"
    )


@dataclasses.dataclass(frozen=True)
class JobUpload:
    """One submission: a fresh job hash plus the manifest and import archive."""

    job_hash: str
    design: str
    job_id: str
    nodes: tuple[tuple[str, str], ...]
    manifest: Mapping[str, Any] = dataclasses.field(repr=False)
    import_archive: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class JobTemplate:
    """A job definition from which any number of uploads with new hashes are made."""

    manifest: Mapping[str, Any] = dataclasses.field(repr=False)
    import_archive: bytes = dataclasses.field(repr=False)
    design: str
    job_id: str
    flow: str
    nodes: tuple[tuple[str, str], ...]
    source: str

    def new_upload(self, job_hash: str | None = None) -> JobUpload:
        """Return an upload with a fresh ``uuid4().hex`` job hash, as clients pick."""
        return JobUpload(
            job_hash=job_hash if job_hash is not None else uuid.uuid4().hex,
            design=self.design,
            job_id=self.job_id,
            nodes=self.nodes,
            manifest=self.manifest,
            import_archive=self.import_archive,
        )


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest file, gzip-compressed or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        manifest = json.loads(raw)
    except ValueError as error:
        raise JobDefinitionError(f"{path}: not JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise JobDefinitionError(f"{path}: the manifest is not a JSON object")
    return manifest


def load_job(
    manifest_path: Path | None = None, import_archive_path: Path | None = None
) -> JobTemplate:
    """Return the job to submit: the shipped one, or the user's own files."""
    data = resources.files("sc_conformance.data")
    if manifest_path is None:
        manifest = json.loads(
            gzip.decompress(data.joinpath(SHIPPED_MANIFEST).read_bytes())
        )
        manifest_source = "shipped manifest"
    else:
        manifest = load_manifest(manifest_path)
        manifest_source = str(manifest_path)

    if import_archive_path is None:
        import_archive = data.joinpath(SHIPPED_IMPORT_ARCHIVE).read_bytes()
        archive_source = "shipped import archive"
    else:
        import_archive = import_archive_path.read_bytes()
        archive_source = str(import_archive_path)
    _require_gzip_tar(import_archive, archive_source)

    flow = str(manifest_value(manifest, "option", "flow"))
    template = JobTemplate(
        manifest=manifest,
        import_archive=import_archive,
        design=str(manifest_value(manifest, "design")),
        job_id=str(manifest_value(manifest, "option", "jobname")),
        flow=flow,
        nodes=flowgraph_nodes(manifest, flow),
        source=f"{manifest_source} + {archive_source}",
    )
    if not template.nodes:
        raise JobDefinitionError(f"flow {flow!r} of the manifest has no nodes")
    logger.debug("job template %s: %s nodes", template.source, len(template.nodes))
    return template


def _require_gzip_tar(archive: bytes, source: str) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise JobDefinitionError(f"{source}: not a gzip tar ({error})") from None


@dataclasses.dataclass(frozen=True)
class ResultsInspection:
    """What a results archive holds and what is wrong with it."""

    members: tuple[str, ...]
    confinement_problems: tuple[str, ...]
    missing_node_manifests: tuple[str, ...]
    error: str | None = None
    has_final_manifest: bool = False


def inspect_results(archive: bytes, upload: JobUpload) -> ResultsInspection:
    """Judge a results archive: confined to ``<job_hash>/``, a manifest per node."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as error:
        return ResultsInspection((), (), (), error=f"not a gzip tar: {error}")

    problems = [
        problem
        for member in members
        if (problem := _confinement_problem(member, upload.job_hash)) is not None
    ]
    names = {
        posixpath.normpath(member.name)
        for member in members
        if member.isfile() or member.islnk()
    }
    missing = tuple(path for path in node_manifest_paths(upload) if path not in names)
    return ResultsInspection(
        members=tuple(member.name for member in members),
        confinement_problems=tuple(problems),
        missing_node_manifests=missing,
        has_final_manifest=final_manifest_path(upload) in names,
    )


def node_manifest_paths(upload: JobUpload) -> tuple[str, ...]:
    """Paths every results archive must hold: one node manifest per flowgraph node."""
    return tuple(
        f"{upload.job_hash}/{upload.design}/{upload.job_id}/{step}/{index}/outputs/"
        f"{upload.design}.pkg.json"
        for step, index in upload.nodes
    )


def final_manifest_path(upload: JobUpload) -> str:
    """Where a successful job's final manifest lies in its results archive."""
    return f"{upload.job_hash}/{upload.design}/{upload.job_id}/{upload.design}.pkg.json"


RUN_ONLY_SUFFIXES = (".log",)
"""Files that record a run (times, hosts, process ids) rather than the job's
results: two runs of one upload must both have them, with any content."""

RUN_RECORD_KEY = "record"
"""The manifest section SiliconCompiler fills per run (start and end times, the
machine, the user): left out when the manifests of two runs are compared."""

JOB_HASH_MASK = b"<job_hash>"


def results_fingerprint(archive: bytes, job_hash: str) -> dict[str, str]:
    """What two runs of the same upload must agree on, member by member.

    Keys are member paths below ``<job_hash>/``; values are the member's kind and a
    digest of its content with the job hash masked (the one thing two uploads of the
    same job differ in). Logs count by name only, and manifests (``*.pkg.json``)
    without their run record. Raises ``ValueError`` for an unreadable archive.
    """
    fingerprint: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                path = name.removeprefix(job_hash).lstrip("/") or "."
                fingerprint[path] = _member_fingerprint(tar, member, job_hash)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"not a gzip tar: {error}") from None
    return fingerprint


def _member_fingerprint(
    tar: tarfile.TarFile, member: tarfile.TarInfo, job_hash: str
) -> str:
    mask = job_hash.encode("ascii")
    if member.issym() or member.islnk():
        target = member.linkname.encode("utf-8", "surrogateescape")
        return f"link to {target.replace(mask, JOB_HASH_MASK).decode()}"
    if not member.isreg():
        return "directory" if member.isdir() else f"special ({member.type!r})"
    if member.name.endswith(RUN_ONLY_SUFFIXES):
        return "file (a log: any content)"
    stream = tar.extractfile(member)
    content = stream.read().replace(mask, JOB_HASH_MASK) if stream else b""
    if member.name.endswith(".pkg.json"):
        content = _without_run_record(content)
    return f"file {hashlib.sha256(content).hexdigest()[:16]}"


def _without_run_record(manifest_text: bytes) -> bytes:
    try:
        manifest = json.loads(manifest_text)
    except ValueError:
        return manifest_text
    if isinstance(manifest, dict):
        manifest.pop(RUN_RECORD_KEY, None)
    return json.dumps(manifest, sort_keys=True).encode("utf-8")


def _confinement_problem(member: tarfile.TarInfo, job_hash: str) -> str | None:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"{name!r} is an absolute path"
    if ".." in name.split("/"):
        return f"{name!r} has a '..' component"
    normalised = posixpath.normpath(name)
    if normalised != job_hash and not normalised.startswith(f"{job_hash}/"):
        return f"{name!r} is not under {job_hash}/"
    if member.isdev() or member.isfifo():
        return f"{name!r} is a device or FIFO"
    if member.issym() or member.islnk():
        base = posixpath.dirname(normalised) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if member.linkname.startswith("/") or not (
            target == job_hash or target.startswith(f"{job_hash}/")
        ):
            return f"{name!r} links outside the job ({member.linkname!r})"
    return None
