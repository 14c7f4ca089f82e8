"""Names of deliberate flaws the mock server can be started with.

The conformance suite proves that it catches broken servers by running against the
mock with one flaw switched on. Each flaw gets a name here and a branch in the code
guarded by ``MockApp.has_defect(name)``; a name not listed is refused at start, so a
misspelt defect cannot silently give a correct server.
"""

from __future__ import annotations

from collections.abc import Iterable

KNOWN_DEFECTS: frozenset[str] = frozenset()


def validate_defects(names: Iterable[str]) -> None:
    """Raise ``ValueError`` when a requested defect has no implementation."""
    unknown = sorted(set(names) - KNOWN_DEFECTS)
    if unknown:
        known = ", ".join(sorted(KNOWN_DEFECTS)) or "none"
        raise ValueError(f"unknown defects {unknown}; known defects: {known}")
