"""The plugin's options: invisible without a target, strict about bad input."""

from __future__ import annotations

import json

import pytest

from mock_server import MockServer
from sc_conformance.client import Credentials

pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)

ORDINARY_TEST = """
def test_ordinary():
    assert 1 + 1 == 2
"""


def test_without_a_target_the_plugin_changes_nothing(
    sc_pytester: pytest.Pytester,
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "sc-conformance:" not in result.stdout.str()
    assert "= sc-conformance =" not in result.stdout.str()


def test_without_a_target_the_bundled_suite_is_not_collected(
    sc_pytester: pytest.Pytester,
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest("--collect-only", "-q")
    assert "sc_conformance/suite" not in result.stdout.str()
    assert "test_ordinary" in result.stdout.str()


def test_server_url_without_paths_collects_the_bundled_suite(
    sc_pytester: pytest.Pytester,
) -> None:
    result = sc_pytester.runpytest(
        "--server-url=http://127.0.0.1:9/", "--collect-only", "-q"
    )
    output = result.stdout.str()
    assert "test_lifecycle.py::test_upload_is_accepted_and_names_the_job_hash" in output
    assert "test_schema.py::" in output and "test_auth.py::" in output


def test_explicit_paths_are_not_widened_to_the_suite(
    sc_pytester: pytest.Pytester,
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest(
        "--server-url=http://127.0.0.1:9/",
        "--collect-only",
        "-q",
        str(sc_pytester.path),
    )
    assert "test_lifecycle.py" not in result.stdout.str()


def test_help_lists_the_options(sc_pytester: pytest.Pytester) -> None:
    result = sc_pytester.runpytest("--help")
    for option in ("--server-url", "--sc-mock", "--sc-credentials", "--sc-baseline"):
        assert option in result.stdout.str()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--server-url=ftp://example.invalid/"],
            "expected an http:// or https:// URL",
        ),
        (["--server-url=http://127.0.0.1:9/", "--sc-mock"], "name two targets"),
        (["--sc-mock", "--sc-username=alice"], "--sc-username needs --sc-key"),
        (["--sc-mock", "--sc-job-timeout=-3"], "positive number of seconds"),
        (["--sc-mock", "--sc-job-manifest=/no/such/manifest.json"], "no such file"),
    ],
)
def test_bad_options_are_one_usage_error(
    sc_pytester: pytest.Pytester, arguments: list[str], message: str
) -> None:
    result = sc_pytester.runpytest(*arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_key_given_alone_is_refused_without_echoing_it(
    sc_pytester: pytest.Pytester,
) -> None:
    result = sc_pytester.runpytest("--sc-mock", "--sc-key=do-not-print-me-123")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "do-not-print-me-123" not in result.stderr.str() + result.stdout.str()


def test_server_url_can_come_from_the_environment(
    sc_pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    auth_mock: MockServer,
    plugin_account: Credentials,
) -> None:
    monkeypatch.setenv("SC_SERVER_URL", auth_mock.url)
    monkeypatch.setenv("SC_USERNAME", plugin_account.username)
    monkeypatch.setenv("SC_KEY", plugin_account.key)
    sc_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requirement("TR-06")
        def test_unknown_path(sc_client):
            assert sc_client.post_json("nowhere/", {}).status_code == 404
        """
    )
    result = sc_pytester.runpytest("-p", "no:cacheprovider", str(sc_pytester.path))
    result.assert_outcomes(passed=1)
    assert f"target {auth_mock.url}" in result.stdout.str()
    assert "auth required" in result.stdout.str()


def test_server_url_can_come_from_the_ini_file(
    sc_pytester: pytest.Pytester,
    auth_mock: MockServer,
    plugin_account: Credentials,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SC_USERNAME", plugin_account.username)
    monkeypatch.setenv("SC_KEY", plugin_account.key)
    sc_pytester.makeini(f"[pytest]\nserver_url = {auth_mock.url}\n")
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest("-p", "no:cacheprovider", str(sc_pytester.path))
    result.assert_outcomes(passed=1)
    assert f"target {auth_mock.url}" in result.stdout.str()


def test_credentials_file_gives_account_and_address(
    sc_pytester: pytest.Pytester, auth_mock: MockServer, plugin_account: Credentials
) -> None:
    credentials = sc_pytester.path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "address": "http://127.0.0.1",
                "port": auth_mock.port,
                "username": plugin_account.username,
                "password": plugin_account.key,
            }
        )
    )
    sc_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.requirement("USR-01")
        def test_quota(sc_client):
            assert sc_client.check_user().status_code == 200
        """
    )
    result = sc_pytester.runpytest(
        f"--sc-credentials={credentials}",
        "-p",
        "no:cacheprovider",
        str(credentials.parent),
    )
    result.assert_outcomes(passed=1)
    assert plugin_account.key not in result.stdout.str() + result.stderr.str()


def test_wrong_credentials_end_the_session_with_one_line(
    sc_pytester: pytest.Pytester, auth_mock: MockServer, plugin_account: Credentials
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest(
        f"--server-url={auth_mock.url}",
        f"--sc-username={plugin_account.username}",
        "--sc-key=definitely-not-the-key",
        str(sc_pytester.path),
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "refused the credentials of 'alice'" in result.stderr.str()
    assert "definitely-not-the-key" not in result.stderr.str() + result.stdout.str()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--sc-report=.", "is a folder"),
        ("--sc-report=report.md", "give the JSON path"),
        ("--sc-fuzz-examples=-3", "must be positive"),
        ("--sc-fuzz-rate=nan", "not a finite number"),
    ],
)
def test_a_bad_report_or_fuzz_option_is_a_usage_error_before_the_run(
    sc_pytester: pytest.Pytester, option: str, message: str
) -> None:
    sc_pytester.makepyfile(ORDINARY_TEST)
    result = sc_pytester.runpytest("--sc-mock", option, str(sc_pytester.path))

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "passed" not in result.stdout.str()
