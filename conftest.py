"""Checkout-only glue for running the project's tests with plain ``pytest``.

In a checkout, ``pytest`` runs the bundled conformance suite against the embedded mock
plus the project's own tests: ``pyproject.toml`` lists both in ``testpaths`` and sets
the ini key ``sc_mock = true`` (``--server-url`` or ``SC_SERVER_URL`` take precedence).
The fixtures here serve the plugin's own pytester tests in ``tests/test_plugin_*.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mock_server import MockConfig
from mock_server import MockServer
from sc_conformance.client import Credentials

PLUGIN_TEST_NODE_SECONDS = 0.05

ACCOUNT = Credentials("alice", "alice-secret-key-0123", key_variable="SC_KEY")
OTHER_ACCOUNT = Credentials("bob", "bob-secret-key-4567", key_variable="SC_OTHER_KEY")


@pytest.fixture
def sc_pytester(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A pytester whose inner runs see none of the caller's ``SC_*`` settings."""
    for name in list(os.environ):
        if name.startswith("SC_"):
            monkeypatch.delenv(name)
    # The outer run already imported the plugin's packages, so inner runs cannot
    # rewrite their asserts; that is expected and not worth a warning per test.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-W ignore::pytest.PytestAssertRewriteWarning")
    return pytester


def write_users_file(path: Path) -> Path:
    users = [
        {
            "username": account.username,
            "password": account.key,
            "compute_time": 100_000,
            "bandwidth": 100_000,
        }
        for account in (ACCOUNT, OTHER_ACCOUNT)
    ]
    path.write_text(json.dumps({"users": users}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def auth_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    """A mock with authentication on and the accounts ``ACCOUNT``/``OTHER_ACCOUNT``."""
    state = tmp_path_factory.mktemp("auth-mock")
    config = MockConfig(
        root=state / "root",
        auth=True,
        users_file=write_users_file(state / "users.json"),
        node_seconds=PLUGIN_TEST_NODE_SECONDS,
    )
    with MockServer(config) as server:
        yield server


@pytest.fixture
def plugin_account() -> Credentials:
    """The account of ``auth_mock`` that inner runs use; its key must never leak."""
    return ACCOUNT


@pytest.fixture
def auth_mock_options(auth_mock: MockServer, sc_pytester: pytest.Pytester) -> list[str]:
    """Options that point an inner run at ``auth_mock`` as ``ACCOUNT``.

    The inner run collects only the checks written into the pytester directory, not
    the bundled suite that a target without test paths would bring in.
    """
    return [
        str(sc_pytester.path),
        f"--server-url={auth_mock.url}",
        f"--sc-username={ACCOUNT.username}",
        f"--sc-key={ACCOUNT.key}",
        "-p",
        "no:cacheprovider",
    ]
