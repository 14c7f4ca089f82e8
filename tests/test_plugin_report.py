"""The conformance report, JUnit properties, levels, baselines and marker checks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import pytest

from sc_conformance import spec
from sc_conformance.client import Credentials

CHECKS = """
import pytest

@pytest.mark.requirement("TR-06")
def test_unknown_path_is_404(sc_client):
    assert sc_client.post_json("nowhere/", {}).status_code == 404

@pytest.mark.requirement("PRG-03")
def test_progress_judged_wrongly_on_purpose(sc_client):
    response = sc_client.check_progress("0" * 32, "job0")
    assert response.status_code == 299, "deliberately impossible expectation"

@pytest.mark.requirement("DEL-02")
def test_needs_something_missing():
    pytest.skip("needs a second account")
"""


@pytest.fixture
def report_run(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> tuple[pytest.RunResult, dict, str]:
    sc_pytester.makepyfile(test_checks=CHECKS)
    report_path = sc_pytester.path / "out" / "report.json"
    result = sc_pytester.runpytest(
        *auth_mock_options,
        f"--sc-report={report_path}",
        f"--junitxml={sc_pytester.path / 'junit.xml'}",
        str(sc_pytester.path),
    )
    markdown = report_path.with_suffix(".md").read_text()
    return result, json.loads(report_path.read_text()), markdown


def _entry(document: dict, requirement_id: str) -> dict:
    return next(e for e in document["requirements"] if e["id"] == requirement_id)


def test_report_has_an_outcome_per_requirement(report_run: tuple) -> None:
    result, document, _ = report_run
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert _entry(document, "TR-06")["outcome"] == "pass"
    assert _entry(document, "PRG-03")["outcome"] == "fail"
    assert _entry(document, "DEL-02")["outcome"] == "skip"
    assert _entry(document, "RUN-01")["outcome"] == "untested"
    assert len(document["requirements"]) == len(spec.requirements())


def test_report_totals_count_each_level(report_run: tuple) -> None:
    _, document, _ = report_run
    must, should = document["totals"]["MUST"], document["totals"]["SHOULD"]
    assert should["fail"] == 1 and must["skip"] == 1 and must["pass"] == 1
    assert sum(must.values()) + sum(should.values()) == len(spec.requirements())


def test_report_shows_the_deciding_exchange_and_a_curl_line(report_run: tuple) -> None:
    _, document, markdown = report_run
    check = _entry(document, "PRG-03")["checks"][0]
    assert "deliberately impossible expectation" in check["message"]
    exchange = check["exchange"]
    assert exchange["status"] == 404 and exchange["url"].endswith("/check_progress/")
    assert exchange["curl"].startswith("curl -sS -X POST")
    assert '"$SC_KEY"' in exchange["curl"]
    assert "### PRG-03" in markdown and exchange["curl"] in markdown


def test_report_names_the_target_without_secrets(
    report_run: tuple, plugin_account: Credentials, sc_pytester: pytest.Pytester
) -> None:
    result, document, markdown = report_run
    assert document["target"]["auth"] == "required"
    assert document["target"]["account"] == plugin_account.username
    junit = (sc_pytester.path / "junit.xml").read_text()
    everything = (
        result.stdout.str()
        + result.stderr.str()
        + json.dumps(document)
        + markdown
        + junit
    )
    assert plugin_account.key not in everything


def test_junit_carries_requirement_ids_as_properties(
    report_run: tuple, sc_pytester: pytest.Pytester
) -> None:
    del report_run
    tree = ElementTree.parse(sc_pytester.path / "junit.xml")
    properties = {
        (case.get("name"), prop.get("value"))
        for case in tree.iter("testcase")
        for prop in case.iter("property")
        if prop.get("name") == "requirement"
    }
    assert ("test_unknown_path_is_404", "TR-06") in properties
    assert ("test_progress_judged_wrongly_on_purpose", "PRG-03") in properties


def test_failure_output_shows_the_deciding_exchange(report_run: tuple) -> None:
    result, _, _ = report_run
    result.stdout.fnmatch_lines(
        ["*sc-conformance deciding exchange*", "reproduce: curl*"]
    )


def test_level_must_tolerates_should_failures_as_xfail(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    sc_pytester.makepyfile(test_checks=CHECKS)
    result = sc_pytester.runpytest(*auth_mock_options, "--sc-level=must", "-rx")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*PRG-03 is SHOULD (--sc-level must)*"])


def test_level_must_still_fails_on_must_requirements(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    sc_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requirement("TR-06")
        def test_must_fails():
            assert False
        """
    )
    result = sc_pytester.runpytest(*auth_mock_options, "--sc-level=must")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_baseline_tolerates_listed_failures(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    sc_pytester.makepyfile(test_checks=CHECKS)
    baseline = sc_pytester.path / "baseline.txt"
    baseline.write_text("# known deviations\nPRG-03  # answers 200 for any hash\n")
    result = sc_pytester.runpytest(*auth_mock_options, f"--sc-baseline={baseline}")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)


def test_baseline_entry_that_now_passes_fails_the_run(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    sc_pytester.makepyfile(test_checks=CHECKS)
    baseline = sc_pytester.path / "baseline.txt"
    baseline.write_text("PRG-03\nTR-06  # fixed since\n")
    result = sc_pytester.runpytest(*auth_mock_options, f"--sc-baseline={baseline}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*TR-06 is in the baseline but now passes*"])


def test_baseline_with_an_unknown_id_is_a_usage_error(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    baseline = sc_pytester.path / "baseline.txt"
    baseline.write_text("NOPE-99\n")
    result = sc_pytester.runpytest(*auth_mock_options, f"--sc-baseline={baseline}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown requirement id 'NOPE-99'" in result.stderr.str()


def test_unknown_requirement_id_in_a_marker_is_a_collection_error(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    sc_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requirement("TR-999")
        def test_typo():
            pass
        """
    )
    result = sc_pytester.runpytest(*auth_mock_options)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown requirement id(s) ['TR-999']" in result.stderr.str()


def test_run_that_exercised_no_requirement_fails(
    sc_pytester: pytest.Pytester, auth_mock_options: list[str]
) -> None:
    sc_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requirement("DEL-02")
        def test_skipped():
            pytest.skip("nothing to judge")
        """
    )
    result = sc_pytester.runpytest(*auth_mock_options)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*no requirement was exercised*"])


SKIPPING_CHECK = """
import pytest

@pytest.mark.requirement("{requirement}")
def test_needs_something({fixture}):
    pass

@pytest.mark.requirement("TR-06")
def test_unknown_path_is_404(sc_client):
    assert sc_client.post_json("nowhere/", {{}}).status_code == 404
"""


@pytest.mark.parametrize(
    ("requirement", "fixture", "reason"),
    [
        ("AUTH-05", "sc_other_client", "*no second account given*"),
        ("USR-04", "sc_auth_off", "*the server enforces authentication (detected)*"),
    ],
    ids=["second-account", "auth-off"],
)
def test_checks_needing_what_was_not_given_skip_with_the_reason(
    sc_pytester: pytest.Pytester,
    auth_mock_options: list[str],
    requirement: str,
    fixture: str,
    reason: str,
) -> None:
    sc_pytester.makepyfile(
        SKIPPING_CHECK.format(requirement=requirement, fixture=fixture)
    )
    result = sc_pytester.runpytest(*auth_mock_options, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([reason])
