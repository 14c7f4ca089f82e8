"""The fuzz and security checks fail against a server that accepts anything.

A careless server answering 200 to every request is started on 127.0.0.1; the
bundled checks run against it through pytester and must report failures.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from sc_conformance.plugin import SUITE_DIR


def _accept_everything(environ: dict, start_response) -> Iterable[bytes]:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module")
def careless_server() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, _accept_everything, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join()


def _run(pytester: pytest.Pytester, url: str, *selection: str) -> pytest.RunResult:
    return pytester.runpytest(
        "--server-url",
        url,
        "--sc-auth",
        "off",
        "--sc-job-timeout",
        "1",
        "--sc-fuzz-examples",
        "5",
        "-p",
        "no:cacheprovider",
        *selection,
    )


def test_fuzz_checks_fail_against_a_server_that_accepts_broken_bodies(
    pytester: pytest.Pytester, careless_server: str
) -> None:
    result = _run(
        pytester,
        careless_server,
        str(SUITE_DIR / "test_fuzz.py"),
        "-k",
        "schema_breaking and delete_job or valid_bodies and check_user",
    )

    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1
    assert outcomes.get("passed") == 1
    result.stdout.fnmatch_lines(["*replay: *curl*--path-as-is*"])


def test_security_checks_fail_against_a_server_that_accepts_hostile_uploads(
    pytester: pytest.Pytester, careless_server: str
) -> None:
    result = _run(
        pytester,
        careless_server,
        str(SUITE_DIR / "test_security.py"),
        "-k",
        "hostile_import and (dotdot or fifo) or generated_results_paths",
    )

    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 3
