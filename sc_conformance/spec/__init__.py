"""The machine-readable contract: request JSON schemas and the requirement catalogue.

The mock server validates requests with the same schemas the suite derives its checks
and fuzz strategies from, so the two halves of the project cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema

ENDPOINT_SCHEMAS = (
    "remote_run",
    "remote_run_envelope",
    "check_progress",
    "check_user",
    "delete_job",
    "get_results",
)

JOB_HASH_PATTERN = r"^[0-9a-f]{32}$"
USERNAME_PATTERN = r"^[^\s;]*$"


@dataclass(frozen=True)
class Requirement:
    """One rule of the API, as the conformance report names it."""

    id: str
    level: str
    endpoint: str
    section: str
    statement: str


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the JSON schema of one request body (see ``ENDPOINT_SCHEMAS``)."""
    if name not in ENDPOINT_SCHEMAS:
        raise KeyError(f"no request schema named {name!r}")

    text = (
        resources.files(__package__)
        .joinpath("schemas", f"{name}.json")
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a schema pattern with JSON Schema's meaning of a final ``$``.

    In ECMA-262 regular expressions, which JSON Schema uses, ``$`` matches only at
    the very end of the string; Python's ``$`` also matches before a trailing
    newline, which would let ``"<32 hex digits>\\n"`` pass as a job hash.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern_keyword(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(
        instance
    ):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """Return a compiled validator for one request schema."""
    schema = load_schema(name)
    base_class = jsonschema.validators.validator_for(schema)
    validator_class = jsonschema.validators.extend(
        base_class, {"pattern": _pattern_keyword}
    )
    return validator_class(schema, format_checker=base_class.FORMAT_CHECKER)


def first_error(name: str, document: Any) -> str | None:
    """Return a one-line reason why *document* breaks schema *name*, or None."""
    error = jsonschema.exceptions.best_match(validator(name).iter_errors(document))
    if error is None:
        return None

    location = "/".join(str(part) for part in error.absolute_path)
    prefix = f"{location}: " if location else ""
    return f"{prefix}{error.message}"


@functools.cache
def requirements() -> tuple[Requirement, ...]:
    """Return the requirement catalogue in its published order."""
    text = (
        resources.files(__package__)
        .joinpath("requirements.json")
        .read_text(encoding="utf-8")
    )
    return tuple(Requirement(**entry) for entry in json.loads(text)["requirements"])


def requirement(requirement_id: str) -> Requirement:
    """Return one requirement by id; unknown ids are a programming error."""
    for entry in requirements():
        if entry.id == requirement_id:
            return entry
    raise KeyError(f"unknown requirement id {requirement_id!r}")
