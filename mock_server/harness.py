"""The client-developer controls of one mock server, as one Python object.

``Harness`` is what the pytest fixture, the admin API and scenario files drive:
faults, the journal, job scripts, extra accounts, authentication on or off, and a
reset back to the start-up state. Everything it changes lives in the storage root,
so every process serving that root follows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

from mock_server.accounts import Account
from mock_server.accounts import Accounts
from mock_server.control import JobControl
from mock_server.control import JobScript
from mock_server.controldb import ControlDatabase
from mock_server.faults import Fault
from mock_server.faults import FaultBook
from mock_server.journal import Journal
from mock_server.scenario import AccountSpec
from mock_server.scenario import Scenario

if TYPE_CHECKING:
    from mock_server.app import MockApp

logger = logging.getLogger(__name__)

AUTH_SETTING = "auth"
BOOT_SETTING = "boot"
_BOOT_LOCK = "control.lock"


class Harness:
    """Faults, journal, job control, accounts and reset for one ``MockApp``.

    *boot* names this start of the server: the first process to start with a new
    name clears the controls left in the storage root and applies the scenario;
    processes starting with the same name (gunicorn workers) join what it set up.
    """

    def __init__(self, app: MockApp, boot: str | None = None) -> None:
        self.app = app
        self.database: ControlDatabase = app.control_database
        self.jobs: JobControl = app.job_control
        self.faults = FaultBook(self.database)
        self.journal = Journal(self.database)
        self.scenario = (
            Scenario.load(app.config.scenario) if app.config.scenario else None
        )
        self._base_accounts = app.accounts
        self._base_config = app.config
        self._revision: int | None = None
        self._lock = threading.Lock()
        self._boot(boot or uuid.uuid4().hex)
        self.sync()

    @property
    def admin(self) -> bool:
        return self._base_config.admin

    # -- start-up and reset ------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with open(self.app.root / _BOOT_LOCK, "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _boot(self, boot: str) -> None:
        with self._exclusive():
            if self.database.setting(BOOT_SETTING) == boot:
                return
            self._clear_controls()
            self._apply_scenario()
            with self.database.transaction() as connection:
                self.database.put_setting(connection, BOOT_SETTING, boot)
        logger.debug("controls set up for this start (%s)", boot)

    def reset(self) -> None:
        """Back to the start-up state: no job, no fault, an empty journal, the
        scenario's (or the server's) accounts, script and settings."""
        with self._exclusive():
            self.app.store.purge_jobs()
            self.jobs.forget_jobs()
            self._clear_controls()
            self.app.store.set_quotas(self._base_accounts)
            self._apply_scenario()
        self.sync()
        logger.info("controls reset")

    def _clear_controls(self) -> None:
        self.faults.clear()
        self.journal.clear()
        self.jobs.set_default_script(None)
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM accounts")
            self.database.put_setting(connection, AUTH_SETTING, None)
            self.database.bump_revision(connection)

    def _apply_scenario(self) -> None:
        if self.scenario is not None:
            self.apply(self.scenario)

    def apply(self, scenario: Scenario) -> None:
        """Add a scenario's accounts and faults, and set its script and auth."""
        if scenario.auth is not None:
            self.set_auth(scenario.auth)
        for account in scenario.accounts:
            self.add_account(account)
        for fault in scenario.faults:
            self.faults.add(fault)
        if scenario.jobs is not None:
            self.jobs.set_default_script(scenario.jobs)

    # -- accounts and settings ---------------------------------------------------

    def add_account(self, account: AccountSpec) -> None:
        """Add (or replace) an account and give it its starting quota."""
        with self.database.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO accounts "
                "(username, password, compute_time, bandwidth_kb) VALUES (?, ?, ?, ?)",
                (
                    account.username,
                    account.password,
                    account.compute_time,
                    account.bandwidth,
                ),
            )
            self.database.bump_revision(connection)
        self.app.store.set_quotas(Accounts({account.username: _account(account)}))
        logger.info("account %s added", account.username)

    def remove_account(self, username: str) -> bool:
        """Remove an account added here (accounts of the users file stay)."""
        with self.database.transaction() as connection:
            removed = connection.execute(
                "DELETE FROM accounts WHERE username = ?", (username,)
            ).rowcount
            self.database.bump_revision(connection)
        self.sync()
        return bool(removed)

    def accounts(self) -> list[dict[str, Any]]:
        """Every account this server knows, with its live quota (no secrets)."""
        self.sync()
        listing = []
        for account in self.app.accounts:
            quota = self.app.store.quota(account.username)
            listing.append(
                {
                    "username": account.username,
                    # Whole seconds, as check_user answers it.
                    "compute_time": max(0, int(quota.compute_time)),
                    "bandwidth_kb": quota.bandwidth_kb,
                }
            )
        return listing

    def set_auth(self, enabled: bool | None) -> None:
        """Require credentials (True), not (False), or as started (None)."""
        with self.database.transaction() as connection:
            self.database.put_setting(connection, AUTH_SETTING, enabled)
            self.database.bump_revision(connection)
        self.sync()

    @property
    def auth(self) -> bool:
        self.sync()
        return self.app.config.auth

    def sync(self) -> None:
        """Follow account and setting changes made by any process; cheap when
        nothing changed (one read)."""
        revision = self.database.revision()
        if revision == self._revision:
            return
        with self._lock:
            with self.database.connection() as connection:
                rows = connection.execute("SELECT * FROM accounts").fetchall()
            added = {
                row["username"]: Account(
                    row["username"],
                    row["password"],
                    row["compute_time"],
                    row["bandwidth_kb"],
                )
                for row in rows
            }
            known = {account.username: account for account in self._base_accounts}
            self.app.accounts = Accounts({**known, **added})
            auth = self.database.setting(AUTH_SETTING)
            self.app.config = (
                self._base_config
                if auth is None
                else dataclasses.replace(self._base_config, auth=bool(auth))
            )
            self._revision = revision

    # -- job scripts -------------------------------------------------------------

    def script_jobs(self, script: JobScript | None) -> None:
        self.jobs.set_default_script(script)

    def add_fault(self, fault: Fault) -> int:
        return self.faults.add(fault)


def _account(spec: AccountSpec) -> Account:
    return Account(spec.username, spec.password, spec.compute_time, spec.bandwidth)
