"""Self-validation: the suite against the clean mock and every defect variant of it.

A conformance check that never fails proves nothing. The self-test runs the bundled
suite against the clean embedded mock (everything must pass) and, for each named
defect of ``mock_server.defects``, against a mock with that one flaw, running only the
checks of the requirements the flaw breaks. The kill matrix says which requirement ids
failed for each defect; a defect no check catches fails the self-test.

Each run is a pytest subprocess with its own embedded mock and JSON report, so runs
share nothing and go in parallel.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sc_conformance import __version__
from sc_conformance import spec
from sc_conformance.report import write_pair

logger = logging.getLogger(__name__)

SUITE_DIR = Path(__file__).parent / "suite"

SELF_TEST_OPTION = "--sc-self-test"
DEFECT_OPTION = "--sc-mock-defect"
MOCK_SETTING_OPTION = "--sc-mock-setting"
REQUIREMENTS_OPTION = "--sc-requirements"

CLEAN = "clean mock"
CLEAN_WITHOUT_ACCOUNTS = "clean mock without accounts"

MOCK_LIMITS = {
    "MAX_UPLOAD_MB": "2",
    "MAX_EXTRACT_MB": "4",
    "MAX_ARCHIVE_MEMBERS": "200",
}
"""Small limits for every self-test mock, so the limit checks send megabytes only."""

JOB_TIMEOUT_SECONDS = 20
"""A job of the self-test mock takes a fraction of a second; a flaw that keeps it
running must not hold a worker for the default ten minutes."""

RUN_TIMEOUT_SECONDS = 600

VERDICT_LINE = "defects killed: {killed}/{total}"


# Options ------------------------------------------------------------------------------


def add_selftest_options(parser: pytest.Parser) -> None:
    """Register the self-test, requirement selection and embedded mock flaw options."""
    group = parser.getgroup("sc-conformance")
    group.addoption(
        SELF_TEST_OPTION,
        dest="sc_self_test",
        action="store_true",
        default=False,
        help="run the suite against the clean mock and every defect variant of it, "
        "print the kill matrix and fail if a defect is not caught",
    )
    group.addoption(
        "--sc-self-test-defects",
        dest="sc_self_test_defects",
        default=None,
        metavar="NAME,NAME",
        help="with --sc-self-test: only these defects (default: all)",
    )
    group.addoption(
        "--sc-self-test-workers",
        dest="sc_self_test_workers",
        type=int,
        default=None,
        metavar="N",
        help="with --sc-self-test: suite runs at a time (default: CPUs + 1)",
    )
    group.addoption(
        DEFECT_OPTION,
        dest="sc_mock_defects",
        action="append",
        default=[],
        metavar="NAME",
        help="start the embedded mock with the deliberate flaw NAME; repeatable "
        "(sc-mock-server --defect list names them)",
    )
    group.addoption(
        MOCK_SETTING_OPTION,
        dest="sc_mock_settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the embedded mock, named like its SC_MOCK_* variable "
        "without the prefix (AUTH=off, MAX_UPLOAD_MB=2); repeatable",
    )
    group.addoption(
        REQUIREMENTS_OPTION,
        dest="sc_requirements",
        default=None,
        metavar="ID,ID",
        help="run only the checks of these requirement ids",
    )


def mock_settings(config: pytest.Config) -> dict[str, Any]:
    """``MockConfig`` keywords for the embedded mock from the flaw and setting options.

    A bad name or value is a usage error, so a misspelt defect cannot silently give a
    clean mock.
    """
    from mock_server.config import ENV_PREFIX
    from mock_server.config import settings_from_env
    from mock_server.defects import validate_defects

    variables: dict[str, str] = {}
    for entry in config.getoption("sc_mock_settings") or []:
        name, separator, value = str(entry).partition("=")
        if not separator or not name.strip():
            raise pytest.UsageError(
                f"{MOCK_SETTING_OPTION}: expected NAME=VALUE, got {entry!r}"
            )
        variables[ENV_PREFIX + name.strip().upper()] = value.strip()
    try:
        settings = settings_from_env(variables)
        unknown = [
            name.removeprefix(ENV_PREFIX)
            for name, value in variables.items()
            if not settings_from_env({name: value})
        ]
    except ValueError as error:
        raise pytest.UsageError(f"{MOCK_SETTING_OPTION}: {error}") from None
    if unknown:
        raise pytest.UsageError(
            f"{MOCK_SETTING_OPTION}: unknown setting(s) {sorted(unknown)}"
        )

    defects = set(settings.pop("defects", frozenset()))  # type: ignore[arg-type]
    defects.update(config.getoption("sc_mock_defects") or [])
    try:
        validate_defects(defects)
    except ValueError as error:
        raise pytest.UsageError(f"{DEFECT_OPTION}: {error}") from None
    if defects:
        settings["defects"] = frozenset(defects)
    return settings


def selected_requirements(config: pytest.Config) -> frozenset[str] | None:
    """The requirement ids ``--sc-requirements`` asks for; None runs every check."""
    text = config.getoption("sc_requirements")
    if not text:
        return None
    wanted = frozenset(part.strip() for part in str(text).split(",") if part.strip())
    known = {requirement.id for requirement in spec.requirements()}
    unknown = sorted(wanted - known)
    if unknown:
        raise pytest.UsageError(
            f"{REQUIREMENTS_OPTION}: unknown requirement id(s) {unknown}"
        )
    return wanted


class SelfTestPlugin:
    """The hooks behind the options above; registered by the conformance plugin."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> int | None:
        if not config.getoption("sc_self_test"):
            return None
        config._do_configure()
        try:
            writer = config.get_terminal_writer()
            return run_from_pytest(config, writer.line)
        finally:
            config._ensure_unconfigure()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        wanted = selected_requirements(config)
        if wanted is None:
            return
        kept: list[pytest.Item] = []
        deselected: list[pytest.Item] = []
        for item in items:
            ids = {
                str(requirement_id)
                for marker in item.iter_markers("requirement")
                for requirement_id in marker.args
            }
            (kept if ids & wanted else deselected).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept


# Variants and their runs -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """One suite run: the mock it judges and the requirements whose checks run."""

    name: str
    targets: tuple[str, ...]
    """The requirement ids the defect breaks; empty for a clean mock."""
    accounts: bool
    requirements: tuple[str, ...] | None
    """The ids whose checks run; None runs the whole suite."""
    description: str = ""

    @property
    def clean(self) -> bool:
        return not self.targets


@dataclasses.dataclass
class VariantResult:
    """What one run found: the requirement ids that failed, or why it gave nothing."""

    variant: Variant
    failed: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()
    exit_status: int | None = None
    problem: str | None = None
    seconds: float = 0.0

    @property
    def killed(self) -> bool:
        """True when a check of a requirement the defect breaks failed."""
        return bool(set(self.failed) & set(self.variant.targets))

    @property
    def verdict(self) -> str:
        if self.problem is not None:
            return "error"
        if self.variant.clean:
            return "clean" if not self.failed else "FAILED"
        return "killed" if self.killed else "SURVIVED"

    @property
    def ok(self) -> bool:
        return self.verdict in ("clean", "killed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.variant.name,
            "description": self.variant.description,
            "targets": list(self.variant.targets),
            "accounts": self.variant.accounts,
            "requirements_run": (
                None
                if self.variant.requirements is None
                else list(self.variant.requirements)
            ),
            "failed": list(self.failed),
            "passed": list(self.passed),
            "verdict": self.verdict,
            "exit_status": self.exit_status,
            "problem": self.problem,
            "seconds": round(self.seconds, 2),
        }


def variants(defect_names: Iterable[str] | None = None) -> list[Variant]:
    """The clean runs and one variant per defect (all, or the ones named).

    The clean mock runs the whole suite with accounts; a second clean run without
    accounts covers the checks of the defects that only show there.
    """
    from mock_server.defects import DEFECTS
    from mock_server.defects import DEFECTS_BY_NAME

    if defect_names is None:
        chosen = list(DEFECTS)
    else:
        names = list(dict.fromkeys(defect_names))
        unknown = sorted(set(names) - set(DEFECTS_BY_NAME))
        if unknown:
            raise ValueError(
                f"unknown defects {unknown}; known defects: "
                f"{', '.join(sorted(DEFECTS_BY_NAME))}"
            )
        chosen = [DEFECTS_BY_NAME[name] for name in names]

    runs = [Variant(CLEAN, (), True, None, "the mock as shipped, whole suite")]
    without_accounts = sorted(
        {
            target
            for defect in chosen
            if not defect.accounts
            for target in defect.targets
        }
    )
    if without_accounts:
        runs.append(
            Variant(
                CLEAN_WITHOUT_ACCOUNTS,
                (),
                False,
                tuple(without_accounts),
                "the mock as shipped, without accounts",
            )
        )
    runs += [
        Variant(
            defect.name,
            defect.targets,
            defect.accounts,
            defect.targets,
            defect.description,
        )
        for defect in chosen
    ]
    return runs


def suite_command(
    variant: Variant, report_path: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The pytest command line of one variant's run."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE_DIR),
        "--sc-mock",
        "--sc-auth",
        "required" if variant.accounts else "off",
        "--sc-report",
        str(report_path),
        "--sc-job-timeout",
        str(JOB_TIMEOUT_SECONDS),
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-o",
        "addopts=",
    ]
    settings = dict(MOCK_LIMITS)
    if not variant.accounts:
        settings["AUTH"] = "off"
    for name, value in settings.items():
        command += [MOCK_SETTING_OPTION, f"{name}={value}"]
    if not variant.clean:
        command += [DEFECT_OPTION, variant.name]
    if variant.requirements is not None:
        command += [REQUIREMENTS_OPTION, ",".join(variant.requirements)]
    return [*command, *extra]


def _environment() -> dict[str, str]:
    """The caller's environment without settings that would point the suite
    elsewhere (``SC_*``) or change pytest's behaviour (``PYTEST_ADDOPTS``)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SC_") and name != "PYTEST_ADDOPTS"
    }


def run_variant(
    variant: Variant, workdir: Path, extra: Sequence[str] = ()
) -> VariantResult:
    """Run the suite for one variant in a subprocess and read its JSON report."""
    folder = workdir / variant.name.replace(" ", "-")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    report_path = folder / "report.json"
    command = suite_command(variant, report_path, extra)
    command += ["-c", str(folder / "pytest.ini"), "--rootdir", str(folder)]
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            cwd=folder,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return VariantResult(
            variant,
            problem=f"the suite run took over {RUN_TIMEOUT_SECONDS} s",
            seconds=time.monotonic() - started,
        )
    seconds = time.monotonic() - started
    (folder / "output.txt").write_text(
        completed.stdout + completed.stderr, encoding="utf-8"
    )
    if not report_path.is_file():
        last_lines = (completed.stdout + completed.stderr).strip().splitlines()[-3:]
        return VariantResult(
            variant,
            exit_status=completed.returncode,
            problem="no report (exit status "
            f"{completed.returncode}): {' | '.join(last_lines)}",
            seconds=seconds,
        )
    return result_from_report(
        variant, json.loads(report_path.read_text("utf-8")), seconds
    )


def result_from_report(
    variant: Variant, document: dict[str, Any], seconds: float = 0.0
) -> VariantResult:
    """Read the failed and passed requirement ids from a conformance report."""
    outcomes = {entry["id"]: entry["outcome"] for entry in document["requirements"]}
    return VariantResult(
        variant,
        failed=tuple(
            sorted(i for i, outcome in outcomes.items() if outcome in ("fail", "error"))
        ),
        passed=tuple(sorted(i for i, outcome in outcomes.items() if outcome == "pass")),
        exit_status=int(document.get("exit_status", 0)),
        seconds=seconds,
    )


def run_all(
    runs: Sequence[Variant],
    workdir: Path,
    workers: int,
    progress: Callable[[VariantResult], None] | None = None,
    extra: Sequence[str] = (),
) -> list[VariantResult]:
    """Run every variant, *workers* at a time, the whole-suite runs first."""
    ordered = sorted(runs, key=lambda variant: variant.requirements is not None)
    results: dict[str, VariantResult] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(run_variant, variant, workdir, extra): variant
            for variant in ordered
        }
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[result.variant.name] = result
            if progress is not None:
                progress(result)
    return [results[variant.name] for variant in runs]


# The kill matrix ----------------------------------------------------------------------


@dataclasses.dataclass
class KillMatrix:
    """Every variant's result, and per requirement the defects that target it."""

    results: list[VariantResult]
    seconds: float = 0.0

    @property
    def defects(self) -> list[VariantResult]:
        return [result for result in self.results if not result.variant.clean]

    @property
    def cleans(self) -> list[VariantResult]:
        return [result for result in self.results if result.variant.clean]

    @property
    def killed(self) -> int:
        return sum(result.killed for result in self.defects)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def verdict_line(self) -> str:
        return VERDICT_LINE.format(killed=self.killed, total=len(self.defects))

    def by_requirement(self) -> list[dict[str, Any]]:
        """Per catalogue requirement: the defects aimed at it and which it caught."""
        rows = []
        for requirement in spec.requirements():
            aimed = [r for r in self.defects if requirement.id in r.variant.targets]
            rows.append(
                {
                    "id": requirement.id,
                    "level": requirement.level,
                    "defects": [r.variant.name for r in aimed],
                    "caught": [
                        r.variant.name for r in aimed if requirement.id in r.failed
                    ],
                    "status": "no defect"
                    if not aimed
                    else (
                        "caught"
                        if any(requirement.id in r.failed for r in aimed)
                        else "missed"
                    ),
                }
            )
        return rows

    def to_document(self) -> dict[str, Any]:
        return {
            "tool": "sc-conformance self-test",
            "version": __version__,
            "generated": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
            "killed": self.killed,
            "defects_total": len(self.defects),
            "verdict": self.verdict_line(),
            "clean_runs": [result.to_dict() for result in self.cleans],
            "defects": [result.to_dict() for result in self.defects],
            "requirements": self.by_requirement(),
        }

    def lines(self) -> list[str]:
        """The kill matrix as terminal lines, ending with the verdict line."""
        lines = []
        for result in self.cleans:
            detail = result.problem or (
                f"{len(result.passed)} requirements passed"
                + (f", failed: {', '.join(result.failed)}" if result.failed else "")
            )
            lines.append(f"{result.variant.name}: {result.verdict} ({detail})")
        width = max((len(result.variant.name) for result in self.defects), default=6)
        lines.append(
            f"{'defect':<{width}}  {'targets':<22}  {'verdict':<8}  failed requirements"
        )
        for result in self.defects:
            failed = result.problem or (", ".join(result.failed) or "none")
            lines.append(
                f"{result.variant.name:<{width}}  "
                f"{', '.join(result.variant.targets):<22}  "
                f"{result.verdict:<8}  {failed}"
            )
        uncovered = [
            row["id"] for row in self.by_requirement() if row["status"] == "no defect"
        ]
        if uncovered:
            lines.append(f"requirements with no defect: {', '.join(uncovered)}")
        lines.append(self.verdict_line())
        return lines


def to_markdown(document: dict[str, Any]) -> str:
    """Render the self-test document for people."""
    lines = [
        "# sc-conformance self-test: kill matrix",
        "",
        f"- Generated: {document['generated']} by sc-conformance {document['version']}",
        f"- Wall time: {document['seconds']} s",
        f"- Result: {'pass' if document['ok'] else '**FAIL**'}",
        "",
        "## Clean mock",
        "",
        "| run | verdict | failed requirements |",
        "| --- | --- | --- |",
    ]
    for run in document["clean_runs"]:
        failed = run["problem"] or (", ".join(run["failed"]) or "none")
        lines.append(f"| {run['name']} | {run['verdict']} | {_cell(failed)} |")
    lines += [
        "",
        "## Defects",
        "",
        "| defect | targets | verdict | failed requirements | flaw |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in document["defects"]:
        failed = run["problem"] or (", ".join(run["failed"]) or "none")
        verdict = (
            run["verdict"] if run["verdict"] == "killed" else f"**{run['verdict']}**"
        )
        lines.append(
            f"| `{run['name']}` | {', '.join(run['targets'])} | {verdict} | "
            f"{_cell(failed)} | {_cell(run['description'])} |"
        )
    lines += [
        "",
        "## Requirements",
        "",
        "| id | level | defects | caught by the suite |",
        "| --- | --- | --- | --- |",
    ]
    for row in document["requirements"]:
        defects = ", ".join(f"`{name}`" for name in row["defects"]) or "no defect"
        caught = (
            row["status"]
            if row["status"] != "caught"
            else ", ".join(f"`{name}`" for name in row["caught"])
        )
        lines.append(f"| {row['id']} | {row['level']} | {defects} | {caught} |")
    lines += ["", document["verdict"]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(path: Path, document: dict[str, Any]) -> Path:
    """Write the JSON report to *path* and the Markdown one beside it; return it."""
    return write_pair(path, document, to_markdown(document), "self-test report")


# Entry points -------------------------------------------------------------------------


def default_workers() -> int:
    """Runs mostly wait on the network and the mock's simulated nodes, so one more
    run than there are CPUs keeps them busy."""
    return (os.cpu_count() or 1) + 1


def self_test(
    write: Callable[[str], None],
    *,
    defect_names: Iterable[str] | None = None,
    workers: int | None = None,
    report: Path | None = None,
    extra: Sequence[str] = (),
) -> KillMatrix:
    """Run the self-test, writing progress and the kill matrix through *write*."""
    runs = variants(defect_names)
    workers = workers or default_workers()
    defect_count = sum(not variant.clean for variant in runs)
    write(
        f"sc-conformance self-test: {defect_count} defects, "
        f"{len(runs) - defect_count} clean runs, {workers} at a time"
    )
    started = time.monotonic()

    def progress(result: VariantResult) -> None:
        write(f"  {result.variant.name}: {result.verdict} ({result.seconds:.1f} s)")

    with tempfile.TemporaryDirectory(prefix="sc-self-test-") as workdir:
        results = run_all(runs, Path(workdir), workers, progress, extra)
    matrix = KillMatrix(results, time.monotonic() - started)
    for line in matrix.lines():
        write(line)
    if report is not None:
        markdown = write_report(report, matrix.to_document())
        write(f"report: {report}")
        write(f"report: {markdown}")
    return matrix


def run_from_pytest(config: pytest.Config, write: Callable[[str], None]) -> int:
    """``pytest --sc-self-test``: exit status 0 when every defect is killed and the
    clean mock passes, 1 otherwise."""
    names = config.getoption("sc_self_test_defects")
    defect_names = (
        [name.strip() for name in names.split(",") if name.strip()] if names else None
    )
    report = config.getoption("sc_report", None)
    try:
        matrix = self_test(
            write,
            defect_names=defect_names,
            workers=config.getoption("sc_self_test_workers"),
            report=Path(report) if report else None,
            extra=_forwarded_options(config),
        )
    except ValueError as error:
        raise pytest.UsageError(f"--sc-self-test-defects: {error}") from None
    return 0 if matrix.ok else 1


def _forwarded_options(config: pytest.Config) -> list[str]:
    """Options of the caller that every run should share (the fuzz seed)."""
    seed = config.getoption("sc_fuzz_seed", None)
    return [f"--sc-fuzz-seed={seed}"] if seed is not None else []


def main(argv: Sequence[str] | None = None) -> int:
    """``sc-conformance-selftest [DEFECT ...]``: the self-test without pytest."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="sc-conformance-selftest",
        description="Run the conformance suite against the clean mock and its defect "
        "variants; print the kill matrix.",
    )
    parser.add_argument("defects", nargs="*", help="defects to run (default: all)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--report", type=Path, default=None, help="JSON report path")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        matrix = self_test(
            lambda line: print(line, flush=True),
            defect_names=arguments.defects or None,
            workers=arguments.workers,
            report=arguments.report,
        )
    except ValueError as error:
        parser.error(str(error))
    return 0 if matrix.ok else 1


if __name__ == "__main__":
    sys.exit(main())
