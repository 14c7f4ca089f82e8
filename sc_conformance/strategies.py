"""Hypothesis strategies for fuzzing the API, derived from the request JSON schemas.

Valid bodies come from the same schemas the mock validates with; broken bodies are
valid ones with exactly one flaw, so a shrunk failure names the flaw it carries.
Every generated request is a ``FuzzRequest`` that can be replayed with curl.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shlex
import string
import urllib.parse
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from sc_conformance import hostile
from sc_conformance.spec import JOB_HASH_PATTERN
from sc_conformance.spec import first_error
from sc_conformance.spec import load_schema

JSON_ENDPOINTS = ("check_progress", "check_user", "delete_job", "get_results")
"""Endpoints with a JSON body (remote_run is multipart, see ``remote_run_uploads``)."""

HUGE_STRING_SIZES = (64 * 1024, 512 * 1024)
"""Below the 1 MiB a server may cap JSON bodies at, so the flaw itself is judged."""

DEEP_NESTING_DEPTHS = (64, 1_000, 10_000, 100_000)

INLINE_BODY_LIMIT = 8 * 1024
"""Bodies longer than this are replayed from a file rather than inline."""

REDACTED_KEY = b"***"

KEY_VARIABLE = "SC_KEY"

BOUNDARY = "sc-conformance-fuzz-7c1e"

CONTENT_TYPES = (
    None,
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
)
"""The real client sends no Content-Type; a server must parse JSON whatever it says."""

UNICODE_SPACES = (" ", "\t", "\n", "\u00a0", "\u2003", "\u3000")
"""Whitespace on which JSON Schema (ECMA-262) and Python regexes agree."""

_KEY_VALUE = re.compile(rb'("key"\s*:\s*")((?:[^"\\]|\\.)*)(")')

_JOB_HASH = re.compile(JOB_HASH_PATTERN)


@dataclasses.dataclass(frozen=True)
class FuzzRequest:
    """One request exactly as sent, with the flaw it carries (or "valid")."""

    method: str
    path: str
    """Request target relative to the base URL, already percent-encoded."""
    body: bytes
    flaw: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    job_hash: str | None = None
    """The job hash the request names, for checks that no job appeared."""

    def __repr__(self) -> str:
        preview = redact_key_values(self.body[:160])
        return (
            f"FuzzRequest({self.method} {self.path!r}, flaw={self.flaw!r}, "
            f"{len(self.body)} bytes: {preview!r})"
        )

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.path}"

    def curl(self, base_url: str) -> str:
        return curl_line(self.method, self.url(base_url), self.body, self.headers)

    def describe(self, base_url: str) -> str:
        """A few lines for a failure message: flaw, body preview and curl line."""
        preview = redact_key_values(self.body)[:600].decode("utf-8", "backslashreplace")
        more = len(self.body) - 600
        suffix = f"... [{more} more bytes]" if more > 0 else ""
        return (
            f"flaw: {self.flaw}\n"
            f"request: {self.method} {self.url(base_url)} "
            f"({len(self.body)} bytes, headers {dict(self.headers)})\n"
            f"body: {preview}{suffix}\n"
            f"replay: {self.curl(base_url)}"
        )


# Replaying a request -----------------------------------------------------------------


def redact_key_values(body: bytes, replacement: bytes = REDACTED_KEY) -> bytes:
    """Replace the value of every JSON ``"key"`` field in *body*, at any depth."""
    return _KEY_VALUE.sub(lambda match: match[1] + replacement + match[3], body)


def _printf_escape(body: bytes) -> str:
    """Escape *body* for ``printf '%b'`` inside single quotes, byte for byte."""
    escaped: list[str] = []
    printable = set(string.printable.encode("ascii")) - set(b"\\'\t\n\r\x0b\x0c")
    for byte in body:
        escaped.append(chr(byte) if byte in printable else f"\\x{byte:02x}")
    return "".join(escaped).replace("\\x5c", "\\\\")


def curl_line(
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    body_file: str | None = None,
) -> str:
    """Return a shell line that sends the same bytes with curl.

    Key values are never shown: inline bodies read them from ``$SC_KEY``, and a
    body too long to inline is expected in *body_file* (written with
    ``redact_key_values``). ``--path-as-is`` keeps ``..`` in the URL as sent.
    """
    words = ["curl", "-sS", "--path-as-is", "-X", method]
    for name, value in (headers or {}).items():
        if name.lower() != "content-length":
            words += ["-H", f"{name}: {value}"]

    if body_file is not None:
        return shlex.join([*words, "--data-binary", f"@{body_file}", url])
    if len(body) > INLINE_BODY_LIMIT:
        size = len(body)
        return (
            shlex.join([*words, "--data-binary", "@request-body.bin", url])
            + f"  # request-body.bin: the {size}-byte body, key values as ***"
        )
    if not body:
        return shlex.join([*words, "--data-binary", "", url])

    marker = b"\x00SCKEY\x00"
    escaped = _printf_escape(redact_key_values(body, marker))
    escaped = escaped.replace(_printf_escape(marker), f"'\"${{{KEY_VARIABLE}}}\"'")
    escaped = escaped.replace("%", "%%")
    return f"printf '{escaped}' | " + shlex.join([*words, "--data-binary", "@-", url])


# Valid bodies ------------------------------------------------------------------------


def unknown_job_hashes() -> st.SearchStrategy[str]:
    """Job hashes that exist nowhere: uuid4 hex, as the real client makes them."""
    return st.uuids(version=4).map(lambda job_uuid: job_uuid.hex)


def _property(name: str, schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    if name == "job_hash":
        return unknown_job_hashes()
    return from_schema(dict(schema))


def _schema_facts(schema_name: str) -> tuple[list[str], list[str], list[str]]:
    """Properties, required properties and properties with a pattern to break."""
    schema = load_schema(schema_name)
    properties = sorted(schema.get("properties", {}))
    required = sorted(schema.get("required", ()))
    patterned = [name for name in properties if _pattern_breaker(name) is not None]
    return properties, required, patterned


def _together(schema: Mapping[str, Any], name: str) -> frozenset[str]:
    """The optional properties that must appear with *name* (dependentRequired)."""
    group = {name}
    dependent = schema.get("dependentRequired", {})
    while True:
        grown = group | {
            other for member in group for other in dependent.get(member, ())
        }
        if grown == group:
            return frozenset(group)
        group = grown


@functools.cache
def documents(schema_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects valid under one request schema, with unknown job hashes.

    Objects are assembled here from per-property ``from_schema`` strategies, following
    ``required`` and ``dependentRequired``; every result is checked with the schema.
    """
    schema = load_schema(schema_name)
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    groups = sorted(
        {_together(schema, name) for name in properties if name not in required},
        key=sorted,
    )

    parts = [
        st.fixed_dictionaries(
            {name: _property(name, properties[name]) for name in sorted(required)}
        )
    ]
    for group in groups:
        members = {name: _property(name, properties[name]) for name in sorted(group)}
        parts.append(st.just({}) | st.fixed_dictionaries(members))

    def merge(pieces: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {name: value for piece in pieces for name, value in piece.items()}

    return (
        st.tuples(*parts)
        .map(merge)
        .filter(lambda document: first_error(schema_name, document) is None)
    )


def valid_documents(
    schema_name: str, credentials: Mapping[str, str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid objects; with *credentials*, some carry the real account's fields."""
    generated = documents(schema_name)
    if credentials is None:
        return generated
    return st.one_of(
        generated,
        generated.map(lambda document: {**document, **credentials}),
    )


def _path(endpoint: str, job_hash: str) -> str:
    if endpoint == "get_results":
        return f"get_results/{job_hash}.tar.gz"
    return f"{endpoint}/"


def _json_request(
    endpoint: str,
    body: bytes,
    flaw: str,
    content_type: str | None,
    job_hash: str,
) -> FuzzRequest:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return FuzzRequest(
        "POST", _path(endpoint, job_hash), body, flaw, headers, job_hash=job_hash
    )


def valid_requests(
    endpoint: str, credentials: Mapping[str, str] | None = None
) -> st.SearchStrategy[FuzzRequest]:
    """Schema-valid requests to a JSON endpoint, naming no existing job."""

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        document = draw(valid_documents(endpoint, credentials))
        job_hash = document.get("job_hash") or draw(unknown_job_hashes())
        body = json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8")
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        return _json_request(endpoint, body, "valid", content_type, job_hash)

    return build()


# Bodies that break the schema --------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)

json_values: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=24,
)

non_strings = json_values.filter(lambda value: not isinstance(value, str))

LOOKALIKES = {
    "fullwidth": {
        **{digit: chr(0xFF10 + int(digit)) for digit in "0123456789"},
        **{letter: chr(0xFF41 + ord(letter) - ord("a")) for letter in "abcdef"},
    },
    "arabic-indic": {digit: chr(0x0660 + int(digit)) for digit in "0123456789"},
    "cyrillic": {"a": "\u0430", "c": "\u0441", "e": "\u0435"},
}
"""Characters that look like (or are digits like) the hex digits of a job hash."""


def lookalike(job_hash: str, table: str) -> str:
    """*job_hash* with every character that has a look-alike replaced by it."""
    mapping = LOOKALIKES[table]
    return "".join(mapping.get(character, character) for character in job_hash)


@st.composite
def malformed_job_hashes(draw: st.DrawFn) -> str:
    """Strings that must not pass as a job hash, built around a real-looking one."""
    job_hash = draw(unknown_job_hashes())
    cut = draw(st.integers(min_value=0, max_value=31))
    flaws = [
        job_hash.upper(),
        job_hash[:cut],
        job_hash + job_hash[: draw(st.integers(1, 32))],
        job_hash[:cut] + draw(st.sampled_from("gxzG-_./ ")) + job_hash[cut + 1 :],
        job_hash[:cut] + "\x00" + job_hash[cut:],
        f"../{job_hash}",
        f"{job_hash}/../{job_hash}",
        lookalike(job_hash, draw(st.sampled_from(sorted(LOOKALIKES)))),
        f" {job_hash}",
        f"{job_hash}\n",
    ]
    candidate = draw(st.sampled_from(flaws) | st.text())
    return candidate if not _JOB_HASH.fullmatch(candidate) else job_hash.upper()


@st.composite
def malformed_usernames(draw: st.DrawFn) -> str:
    """Usernames with whitespace or ``;`` somewhere in them."""
    name = draw(st.text(alphabet=string.ascii_letters, min_size=1, max_size=12))
    cut = draw(st.integers(min_value=0, max_value=len(name)))
    separator = draw(st.sampled_from((";", *UNICODE_SPACES)))
    return name[:cut] + separator + name[cut:]


def _pattern_breaker(name: str) -> st.SearchStrategy[str] | None:
    if name == "job_hash":
        return malformed_job_hashes()
    if name == "username":
        return malformed_usernames()
    return None


DOCUMENT_FLAWS = (
    "wrong-type",
    "extra-key",
    "nested-garbage",
    "huge-string",
    "nul-byte",
    "pattern",
    "unicode",
    "missing-required",
    "lone-credential",
)
RAW_FLAWS = (
    "invalid-utf8",
    "binary",
    "truncated-json",
    "trailing-garbage",
    "deep-nesting",
    "non-finite-number",
    "empty",
    "non-object",
)


def body_flaws(schema_name: str) -> tuple[str, ...]:
    """The flaws that apply to one request schema (not every schema has a pattern)."""
    properties, required, patterned = _schema_facts(schema_name)
    skipped = set()
    if not patterned:
        skipped |= {"pattern", "unicode"}
    if not required:
        skipped.add("missing-required")
    if "username" not in properties:
        skipped.add("lone-credential")
    return tuple(flaw for flaw in DOCUMENT_FLAWS + RAW_FLAWS if flaw not in skipped)


@st.composite
def _mutated(draw: st.DrawFn, schema_name: str, flaw: str) -> dict[str, Any]:
    """A valid document with one flaw at the JSON level."""
    properties, required, patterned = _schema_facts(schema_name)
    document = dict(draw(documents(schema_name)))

    if flaw == "wrong-type":
        name = draw(st.sampled_from(properties))
        document[name] = draw(non_strings)
    elif flaw == "extra-key":
        extra = draw(st.text(min_size=1).filter(lambda key: key not in properties))
        document[extra] = draw(json_values)
    elif flaw == "nested-garbage":
        name = draw(st.sampled_from(properties))
        document[name] = draw(
            st.recursive(
                st.lists(_SCALARS, min_size=1, max_size=2),
                lambda children: (
                    st.lists(children, min_size=1, max_size=3)
                    | st.dictionaries(st.text(max_size=4), children, min_size=1)
                ),
                max_leaves=40,
            )
        )
    elif flaw == "huge-string":
        size = draw(st.sampled_from(HUGE_STRING_SIZES))
        fill = draw(st.sampled_from("0aé\u4e2d"))
        target = draw(st.sampled_from([*patterned, "(extra)"]))
        if target == "username":
            document.update(username=fill * size + ";", key=document.get("key", "k"))
        elif target == "job_hash":
            document["job_hash"] = fill * size
        else:
            document["x" * 8] = fill * size
    elif flaw == "nul-byte":
        if "job_hash" in properties:
            document["job_hash"] = draw(unknown_job_hashes())[:16] + "\x00" * 16
        else:
            document["user\x00name"] = "x"
    elif flaw == "pattern":
        name = draw(st.sampled_from(patterned))
        breaker = _pattern_breaker(name)
        assert breaker is not None
        document[name] = draw(breaker)
        if name == "username":
            document.setdefault("key", "not-a-key")
    elif flaw == "unicode":
        if "job_hash" in patterned:
            table = draw(st.sampled_from(sorted(LOOKALIKES)))
            document["job_hash"] = lookalike(draw(unknown_job_hashes()), table)
        else:
            space = draw(st.sampled_from(UNICODE_SPACES[3:]))
            document.update(username=f"user{space}name", key="not-a-key")
    elif flaw == "missing-required":
        del document[draw(st.sampled_from(required))]
    else:
        document.pop("key", None)
        document.pop("username", None)
        document[draw(st.sampled_from(("username", "key")))] = "lonely"
    return document


@st.composite
def _raw_flaw(draw: st.DrawFn, schema_name: str, flaw: str) -> bytes:
    """A body broken below the JSON level: bytes a JSON parser must refuse."""
    document = draw(documents(schema_name))
    text = json.dumps(document).encode("utf-8")
    if flaw == "invalid-utf8":
        cut = draw(st.integers(min_value=1, max_value=max(1, len(text) - 1)))
        bad = draw(
            st.sampled_from((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"))
        )
        return text[:cut] + bad + text[cut:]
    if flaw == "binary":
        garbage = draw(
            st.binary(min_size=1, max_size=64).filter(lambda raw: not _is_json(raw))
        )
        return garbage
    if flaw == "truncated-json":
        cut = draw(st.integers(min_value=1, max_value=len(text) - 1))
        return text[:cut]
    if flaw == "trailing-garbage":
        return text + draw(st.sampled_from((b"}", b"x", b"{}", b"\x00", b"]")))
    if flaw == "deep-nesting":
        depth = draw(st.sampled_from(DEEP_NESTING_DEPTHS))
        opener, closer = draw(st.sampled_from(((b"[", b"]"), (b'{"a":', b"}"))))
        nested = opener * depth + b"0" + closer * depth
        where = draw(st.sampled_from(("whole-body", "extra-key")))
        if where == "whole-body":
            return nested
        return text[:-1] + (b", " if document else b"") + b'"deep": ' + nested + b"}"
    if flaw == "non-finite-number":
        token = draw(st.sampled_from((b"NaN", b"Infinity", b"-Infinity")))
        return b'{"job_hash": ' + token + b"}"
    return b""


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


non_objects: st.SearchStrategy[Any] = st.one_of(
    _SCALARS, st.lists(json_values, max_size=4)
)
"""JSON documents that are not objects: a request body must be a single object."""


def invalid_requests(
    endpoint: str, flaws: Sequence[str] | None = None
) -> st.SearchStrategy[FuzzRequest]:
    """Requests to a JSON endpoint whose body breaks the schema or is not JSON.

    *flaws* narrows the flaws drawn from (default: all of ``body_flaws``).
    """
    chosen = tuple(flaws) if flaws is not None else body_flaws(endpoint)

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        job_hash = draw(unknown_job_hashes())
        flaw = draw(st.sampled_from(chosen))
        if flaw in DOCUMENT_FLAWS:
            document = draw(_mutated(endpoint, flaw))
            if first_error(endpoint, document) is None:
                raise AssertionError(f"mutation {flaw} left a valid {endpoint} body")
            body = json.dumps(document, ensure_ascii=draw(st.booleans())).encode(
                "utf-8", "surrogatepass"
            )
        else:
            body = draw(_raw_flaw(endpoint, flaw))
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        return _json_request(endpoint, body, flaw, content_type, job_hash)

    return build()


# Job hashes in the results URL -------------------------------------------------------

STORED_FILE_NAMES = ("users.json", "users.json.tar.gz", "server.log", "config.json")
"""Files a server may keep in its storage root (the reference keeps users.json)."""


def url_hash_attacks(known_job_hash: str | None = None) -> list[tuple[str, str]]:
    """Named ``get_results/<segment>`` targets that must never serve a file.

    With *known_job_hash* (an existing job), the variants also aim at that job.
    """
    attacks = [
        ("encoded-dotdot", "%2e%2e%2f%2e%2e%2fusers.json"),
        ("encoded-dotdot-suffix", "%2e%2e%2fusers.json%00.tar.gz"),
        ("mixed-dotdot", "..%2f..%2fusers.json"),
        ("double-encoded", "%252e%252e%252fusers.json"),
        ("backslash", "..%5c..%5cusers.json"),
        ("plain-dotdot", "../users.json"),
        ("dotdot-tar", "..%2f.tar.gz"),
        ("dot", ".tar.gz"),
        ("empty", ""),
        ("slash", "%2f.tar.gz"),
        ("absolute", "%2fetc%2fpasswd"),
    ]
    attacks += [(f"stored-{name}", name) for name in STORED_FILE_NAMES]
    if known_job_hash is not None:
        known = known_job_hash
        encoded = {
            table: urllib.parse.quote(lookalike(known, table)) for table in LOOKALIKES
        }
        attacks += [
            ("uppercase", f"{known.upper()}.tar.gz"),
            ("too-short", f"{known[:-1]}.tar.gz"),
            ("too-long", f"{known}0.tar.gz"),
            ("doubled", f"{known}{known}.tar.gz"),
            ("no-suffix", known),
            ("job-folder", f"{known}/"),
            ("encoded-slash", f"{known}%2f..%2f{known}.tar.gz"),
            ("dotdot-job", f"%2e%2e%2f{known}.tar.gz"),
            ("nul-suffix", f"{known}%00.tar.gz"),
            ("trailing-dot", f"{known}.tar.gz."),
            *(
                (f"lookalike-{table}", f"{text}.tar.gz")
                for table, text in encoded.items()
            ),
        ]
    return attacks


def url_hash_segments() -> st.SearchStrategy[str]:
    """Arbitrary non-hash segments, percent-encoded, with or without the suffix."""
    return st.tuples(
        st.text(min_size=0, max_size=40).filter(
            lambda text: not _JOB_HASH.fullmatch(text)
        ),
        st.booleans(),
    ).map(
        lambda pair: (
            urllib.parse.quote(pair[0], safe="") + (".tar.gz" if pair[1] else "")
        )
    )


# remote_run multipart uploads --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body."""

    name: str
    content: bytes
    filename: str | None = None
    content_type: str | None = None


def multipart_body(parts: Sequence[Part], boundary: str = BOUNDARY) -> bytes:
    """Encode *parts* as multipart/form-data by hand, duplicates and all."""
    chunks: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        )
        if part.content_type is not None:
            chunks.append(f"Content-Type: {part.content_type}\r\n".encode())
        chunks.append(b"\r\n" + part.content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


PARAMS_FLAWS = (
    "params-not-json",
    "params-not-object",
    "params-invalid-utf8",
    "manifest-missing",
    "manifest-not-object",
    "job-hash-missing",
    "job-hash-malformed",
    "envelope-extra-key",
    "params-extra-key",
)
IMPORT_FLAWS = tuple(f"import-{kind}" for kind in hostile.BROKEN_UPLOADS)
STRUCTURE_FLAWS = (
    "import-missing",
    "params-missing",
    "no-parts",
    "not-multipart",
    "no-boundary",
    "multipart-truncated",
)
UPLOAD_FLAWS = PARAMS_FLAWS + IMPORT_FLAWS + STRUCTURE_FLAWS


@st.composite
def _params_part(
    draw: st.DrawFn,
    flaw: str,
    manifest: Mapping[str, Any],
    job_hash: str,
    credentials: Mapping[str, str] | None,
) -> bytes:
    params: dict[str, Any] = {"job_hash": job_hash, **(credentials or {})}
    envelope: dict[str, Any] = {"chip_cfg": manifest, "params": params}
    if flaw == "params-not-json":
        text = json.dumps(envelope).encode("utf-8")
        return draw(st.sampled_from((b"not json", b"", text[: len(text) // 2])))
    if flaw == "params-not-object":
        return json.dumps(draw(non_objects)).encode("utf-8")
    if flaw == "params-invalid-utf8":
        return b'{"chip_cfg": {"\xff\xfe": 1}, "params": {"job_hash": "\xc3\x28"}}'
    if flaw == "manifest-missing":
        del envelope["chip_cfg"]
    elif flaw == "manifest-not-object":
        envelope["chip_cfg"] = draw(non_objects)
    elif flaw == "job-hash-missing":
        del params["job_hash"]
    elif flaw == "job-hash-malformed":
        params["job_hash"] = draw(malformed_job_hashes())
    elif flaw == "envelope-extra-key":
        envelope[draw(st.text(min_size=1).filter(lambda key: key not in envelope))] = 1
    elif flaw == "params-extra-key":
        params[draw(st.text(min_size=1).filter(lambda key: key not in params))] = 1
    return json.dumps(envelope).encode("utf-8")


def remote_run_uploads(
    manifest: Mapping[str, Any],
    import_archive: bytes,
    credentials: Mapping[str, str] | None = None,
) -> st.SearchStrategy[FuzzRequest]:
    """Broken ``remote_run`` uploads: each has a flaw in every copy of one part.

    Duplicated parts are identical copies, so a server that picks any one of them
    still meets the flaw and must answer 4xx without creating the job.
    """

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        job_hash = draw(unknown_job_hashes())
        flaw = draw(st.sampled_from(UPLOAD_FLAWS))
        params_flaw = flaw if flaw in PARAMS_FLAWS else "none"
        params = draw(_params_part(params_flaw, manifest, job_hash, credentials))
        archive = import_archive
        if flaw in IMPORT_FLAWS:
            archive = hostile.BROKEN_UPLOADS[flaw.removeprefix("import-")]()

        params_as_file = draw(st.booleans())
        parts = [
            Part("import", archive, "import.tar.gz", "application/octet-stream"),
            Part(
                "params",
                params,
                "params.json" if params_as_file else None,
                "application/json" if params_as_file else None,
            ),
        ]
        if flaw in ("import-missing", "no-parts"):
            parts = [part for part in parts if part.name != "import"]
        if flaw in ("params-missing", "no-parts"):
            parts = [part for part in parts if part.name != "params"]
        if parts and draw(st.booleans()):
            parts.append(draw(st.sampled_from(parts)))
        if draw(st.booleans()):
            parts.append(Part("comment", b"an unexpected extra field"))
        parts = draw(st.permutations(parts))

        body = multipart_body(parts)
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        if flaw == "not-multipart":
            body, content_type = params, "application/json"
        elif flaw == "no-boundary":
            content_type = "multipart/form-data"
        elif flaw == "multipart-truncated":
            body = multipart_body(
                [parts_named(parts, "params"), Part("import", archive, "import.tar.gz")]
            )
            body = body[: len(body) - len(archive) // 2]
        headers = {"Content-Type": content_type}
        return FuzzRequest(
            "POST", "remote_run/", body, flaw, headers, job_hash=job_hash
        )

    return build()


def parts_named(parts: Sequence[Part], name: str) -> Part:
    """The first part called *name*, or an empty one when there is none."""
    for part in parts:
        if part.name == name:
            return part
    return Part(name, b"")
