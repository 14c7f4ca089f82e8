"""The conformance matrix: per-requirement outcomes, as JSON, Markdown and a summary.

Outcomes are rebuilt from pytest's test reports only (requirement ids and the deciding
exchange travel in ``user_properties``), so the matrix is the same whether the checks
ran in one process or across pytest-xdist workers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sc_conformance import __version__
from sc_conformance import spec

logger = logging.getLogger(__name__)

REQUIREMENT_PROPERTY = "requirement"
EXCHANGE_PROPERTY = "sc_exchange"
TOLERATED_PROPERTY = "sc_tolerated"

OUTCOMES = ("pass", "fail", "error", "skip", "untested")
"""Requirement outcomes, strongest evidence first after the verdicts."""

MESSAGE_LIMIT = 1500


@dataclasses.dataclass
class CheckResult:
    """The outcome of one test (all its phases) for the requirements it declares."""

    nodeid: str
    requirement_ids: tuple[str, ...]
    outcome: str = "pass"
    message: str = ""
    tolerated: str | None = None
    exchange: dict[str, Any] | None = None
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = getattr(report, "wasxfail", "") if report.skipped else ""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = crash.message
    elif not text and report.longrepr is not None:
        text = str(report.longrepr).strip().splitlines()[-1]
    return text[:MESSAGE_LIMIT]


class Recorder:
    """Collects test reports into per-check results."""

    def __init__(self) -> None:
        self.checks: dict[str, CheckResult] = {}

    def add(self, report: pytest.TestReport) -> None:
        properties = list(report.user_properties)
        ids = tuple(
            str(value) for name, value in properties if name == REQUIREMENT_PROPERTY
        )
        if not ids:
            return
        check = self.checks.setdefault(report.nodeid, CheckResult(report.nodeid, ids))
        check.duration += report.duration
        for name, value in properties:
            if name == EXCHANGE_PROPERTY and check.exchange is None:
                check.exchange = json.loads(str(value))
            if name == TOLERATED_PROPERTY:
                check.tolerated = str(value)

        if report.when == "call":
            if check.tolerated is not None and report.skipped:
                check.outcome = "fail"
                check.message = _message(report)
            elif report.failed:
                check.outcome = "fail"
                check.message = _message(report)
            elif report.skipped:
                check.outcome = "skip"
                check.message = _message(report)
        elif report.failed and check.outcome in ("pass", "skip"):
            check.outcome = "error"
            check.message = f"{report.when}: {_message(report)}"
        elif report.skipped and report.when == "setup":
            check.outcome = "skip"
            check.message = _message(report)


@dataclasses.dataclass
class RequirementResult:
    """A requirement's verdict, derived from every check that declares it."""

    requirement: spec.Requirement
    checks: list[CheckResult]
    baseline: str | None

    @property
    def outcome(self) -> str:
        outcomes = {check.outcome for check in self.checks}
        for outcome in ("fail", "error", "pass", "skip"):
            if outcome in outcomes:
                return outcome
        return "untested"

    @property
    def deciding(self) -> CheckResult | None:
        for check in self.checks:
            if check.outcome == self.outcome:
                return check
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.requirement),
            "outcome": self.outcome,
            "baseline": self.baseline,
            "checks": [check.to_dict() for check in self.checks],
        }


@dataclasses.dataclass
class Matrix:
    """The whole conformance picture of a run."""

    requirements: list[RequirementResult]
    baseline: Mapping[str, str]

    @classmethod
    def build(
        cls, checks: Iterable[CheckResult], baseline: Mapping[str, str]
    ) -> Matrix:
        by_id: dict[str, list[CheckResult]] = {}
        for check in checks:
            for requirement_id in check.requirement_ids:
                by_id.setdefault(requirement_id, []).append(check)
        return cls(
            [
                RequirementResult(
                    requirement,
                    by_id.get(requirement.id, []),
                    baseline.get(requirement.id),
                )
                for requirement in spec.requirements()
            ],
            baseline,
        )

    def totals(self) -> dict[str, dict[str, int]]:
        totals = {level: dict.fromkeys(OUTCOMES, 0) for level in ("MUST", "SHOULD")}
        for result in self.requirements:
            totals[result.requirement.level][result.outcome] += 1
        return totals

    def with_outcome(self, *outcomes: str) -> list[RequirementResult]:
        return [result for result in self.requirements if result.outcome in outcomes]

    @property
    def exercised(self) -> bool:
        """True when at least one requirement got a verdict (pass or fail)."""
        return bool(self.with_outcome("pass", "fail"))

    def new_failures(self) -> list[RequirementResult]:
        return [
            result
            for result in self.with_outcome("fail", "error")
            if result.requirement.id not in self.baseline
        ]

    def fixed_baseline_entries(self) -> list[RequirementResult]:
        """Baseline entries that now pass: the baseline is stale and must shrink."""
        return [
            result
            for result in self.with_outcome("pass")
            if result.requirement.id in self.baseline
        ]


def to_document(
    matrix: Matrix,
    target: Mapping[str, Any],
    profile: Mapping[str, Any],
    leftovers: Iterable[Mapping[str, str]],
    exit_status: int,
) -> dict[str, Any]:
    return {
        "tool": "sc-conformance",
        "version": __version__,
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "target": dict(target),
        "profile": dict(profile),
        "exit_status": exit_status,
        "totals": matrix.totals(),
        "requirements": [result.to_dict() for result in matrix.requirements],
        "baseline_fixed": [
            result.requirement.id for result in matrix.fixed_baseline_entries()
        ],
        "leftover_jobs": list(leftovers),
    }


def write(path: Path, document: Mapping[str, Any]) -> Path:
    """Write the JSON report to *path* and the Markdown one beside it; return it."""
    return write_pair(path, document, to_markdown(document), "conformance report")


def write_pair(
    path: Path, document: Mapping[str, Any], markdown: str, what: str
) -> Path:
    """Write *document* as JSON to *path* and *markdown* beside it (``.md``);
    return the Markdown file's path. Shared by every report the project writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    markdown_path = path.with_suffix(".md")
    if markdown_path == path:
        markdown_path = path.with_name(f"{path.name}.md")
    markdown_path.write_text(markdown, encoding="utf-8")
    logger.info("%s written to %s and %s", what, path, markdown_path)
    return markdown_path


_SYMBOL = {
    "pass": "pass",
    "fail": "**FAIL**",
    "error": "**ERROR**",
    "skip": "skip",
    "untested": "untested",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(document: Mapping[str, Any]) -> str:
    """Render the JSON report as Markdown for people."""
    target = document["target"]
    profile = document["profile"]
    lines = [
        "# SiliconCompiler server conformance report",
        "",
        f"- Server: `{target['url']}` ({target['kind']})",
        f"- Authentication: {target['auth']} ({target['auth_source']})",
    ]
    lines += [
        f"- {_cell(str(name))}: {_cell(str(value))}" for name, value in profile.items()
    ]
    lines += [
        f"- Generated: {document['generated']} by sc-conformance {document['version']}",
        f"- Exit status: {document['exit_status']}",
        "",
        "## Totals",
        "",
        "| level | " + " | ".join(OUTCOMES) + " |",
        "| --- | " + " | ".join("---" for _ in OUTCOMES) + " |",
    ]
    for level, counts in document["totals"].items():
        lines.append(
            f"| {level} | " + " | ".join(str(counts[name]) for name in OUTCOMES) + " |"
        )

    lines += [
        "",
        "## Requirements",
        "",
        "| id | level | outcome | statement |",
        "| --- | --- | --- | --- |",
    ]
    for entry in document["requirements"]:
        outcome = _SYMBOL[entry["outcome"]]
        if entry["baseline"] is not None:
            outcome += " (baseline)"
        lines.append(
            f"| {entry['id']} | {entry['level']} | {outcome} | "
            f"{_cell(entry['statement'])} |"
        )

    problems = [
        entry
        for entry in document["requirements"]
        if entry["outcome"] in ("fail", "error")
    ]
    if problems:
        lines += ["", "## Failures", ""]
    for entry in problems:
        lines += [f"### {entry['id']} ({entry['level']}): {entry['statement']}", ""]
        if entry["baseline"] is not None:
            lines += [
                f"Expected by the baseline: {entry['baseline'] or 'no reason given'}",
                "",
            ]
        for check in entry["checks"]:
            if check["outcome"] not in ("fail", "error"):
                continue
            lines += [f"- `{check['nodeid']}`: {check['outcome']}"]
            if check["tolerated"]:
                lines += [f"  (tolerated: {check['tolerated']})"]
            lines += ["", "```text", check["message"] or "(no message)", "```"]
            exchange = check["exchange"]
            if exchange is not None:
                answer = (
                    str(exchange["status"])
                    if exchange["error"] is None
                    else f"no answer: {exchange['error']}"
                )
                lines += [
                    "",
                    "```text",
                    f"{exchange['method']} {exchange['url']}",
                    exchange["request_summary"],
                    f"-> {answer}",
                    exchange["response_body"],
                    "```",
                    "",
                    "Reproduce:",
                    "",
                    "```sh",
                    exchange["curl"],
                    "```",
                    "",
                ]

    skipped = [
        entry for entry in document["requirements"] if entry["outcome"] == "skip"
    ]
    if skipped:
        lines += ["", "## Skipped", ""]
        for entry in skipped:
            reasons = sorted({check["message"] for check in entry["checks"]})
            lines.append(f"- {entry['id']}: {_cell('; '.join(reasons))}")

    untested = [
        entry["id"]
        for entry in document["requirements"]
        if entry["outcome"] == "untested"
    ]
    if untested:
        lines += ["", "## Untested", "", ", ".join(untested)]

    if document["baseline_fixed"]:
        lines += [
            "",
            "## Baseline entries that now pass",
            "",
            ", ".join(document["baseline_fixed"]),
        ]

    lines += ["", "## Jobs left on the server", ""]
    if document["leftover_jobs"]:
        lines += [
            f"- `{leftover['job_hash']}` (account {leftover['account']}): "
            f"{leftover['reason']}"
            for leftover in document["leftover_jobs"]
        ]
    else:
        lines.append("None: every job this run created was deleted.")
    return "\n".join(lines) + "\n"
