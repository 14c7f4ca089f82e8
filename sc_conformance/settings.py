"""The suite's settings: command-line options, ini keys and environment variables.

Each setting is read from the command line first, then the environment, then the ini
file, so that a checkout can set defaults that a user overrides without editing files.
Keys are accepted from the command line and the environment only, never from ini files.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sc_conformance import keys
from sc_conformance import spec
from sc_conformance.client import DEFAULT_REQUEST_TIMEOUT
from sc_conformance.client import Credentials

DEFAULT_JOB_TIMEOUT = 600.0

KEY_ACCOUNT_VARIABLE = "SC_KEY_ACCOUNT_KEY"
"""Variable a reproduced curl line reads the key account's base64 key from."""


class AuthMode(enum.StrEnum):
    REQUIRED = "required"
    OFF = "off"
    AUTO = "auto"


class Level(enum.StrEnum):
    MUST = "must"
    SHOULD = "should"


@dataclasses.dataclass(frozen=True)
class _Setting:
    """One setting: its option, ini key and environment variable (either optional)."""

    option: str
    dest: str
    help: str
    ini: str | None = None
    env: str | None = None
    flag: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


MAX_SECONDS = 7 * 24 * 3600.0
"""A week: the longest timeout a setting takes (and far below what the socket layer
can represent)."""

SETTINGS = (
    _Setting(
        "--server-url",
        "sc_server_url",
        "base URL of the SiliconCompiler remote server to judge; runs the bundled "
        "conformance suite when no test paths are given",
        ini="server_url",
        env="SC_SERVER_URL",
        metavar="URL",
    ),
    _Setting(
        "--sc-mock",
        "sc_mock",
        "judge the bundled mock server, started on 127.0.0.1 for the session",
        ini="sc_mock",
        env="SC_MOCK",
        flag=True,
    ),
    _Setting(
        "--sc-ca-bundle",
        "sc_ca_bundle",
        "CA bundle to verify the server's TLS certificate with",
        ini="sc_ca_bundle",
        env="SC_CA_BUNDLE",
        metavar="PATH",
    ),
    _Setting(
        "--sc-insecure",
        "sc_insecure",
        "do not verify the server's TLS certificate",
        ini="sc_insecure",
        env="SC_INSECURE",
        flag=True,
    ),
    _Setting(
        "--sc-username",
        "sc_username",
        "account name (also SC_USERNAME)",
        env="SC_USERNAME",
        metavar="NAME",
    ),
    _Setting(
        "--sc-key",
        "sc_key",
        "account password or base64 private key (prefer the SC_KEY variable: "
        "command lines are visible to other users)",
        env="SC_KEY",
        metavar="KEY",
    ),
    _Setting(
        "--sc-credentials",
        "sc_credentials",
        "SiliconCompiler client credentials file (address, port, username, password)",
        ini="sc_credentials",
        env="SC_CREDENTIALS",
        metavar="PATH",
    ),
    _Setting(
        "--sc-other-username",
        "sc_other_username",
        "a second account, for checks that one account cannot touch another's jobs",
        env="SC_OTHER_USERNAME",
        metavar="NAME",
    ),
    _Setting(
        "--sc-other-key",
        "sc_other_key",
        "the second account's key (also SC_OTHER_KEY)",
        env="SC_OTHER_KEY",
        metavar="KEY",
    ),
    _Setting(
        "--sc-key-username",
        "sc_key_username",
        "an account registered with a public key, for the key account checks",
        env="SC_KEY_USERNAME",
        metavar="NAME",
    ),
    _Setting(
        "--sc-key-file",
        "sc_key_file",
        "the key account's private key (unencrypted PEM or OpenSSH file), sent "
        "base64-encoded; reproduced requests read that from SC_KEY_ACCOUNT_KEY",
        ini="sc_key_file",
        env="SC_KEY_FILE",
        metavar="PATH",
    ),
    _Setting(
        "--sc-auth",
        "sc_auth",
        "whether the server enforces authentication: required, off, or auto "
        "(detect; default)",
        ini="sc_auth",
        env="SC_AUTH",
        choices=tuple(mode.value for mode in AuthMode),
    ),
    _Setting(
        "--sc-level",
        "sc_level",
        "must: only MUST requirements fail the run (SHOULD failures are reported as "
        "xfail); should: both do (default)",
        ini="sc_level",
        env="SC_LEVEL",
        choices=tuple(level.value for level in Level),
    ),
    _Setting(
        "--sc-job-timeout",
        "sc_job_timeout",
        f"seconds a submitted job may take to finish (default {DEFAULT_JOB_TIMEOUT:g})",
        ini="sc_job_timeout",
        env="SC_JOB_TIMEOUT",
        metavar="SECONDS",
    ),
    _Setting(
        "--sc-request-timeout",
        "sc_request_timeout",
        "seconds to wait for any single answer; the reference server answers nothing "
        f"while a job runs (default {DEFAULT_REQUEST_TIMEOUT:g})",
        ini="sc_request_timeout",
        env="SC_REQUEST_TIMEOUT",
        metavar="SECONDS",
    ),
    _Setting(
        "--sc-job-manifest",
        "sc_job_manifest",
        "submit this manifest (JSON, optionally gzip) instead of the shipped job",
        ini="sc_job_manifest",
        env="SC_JOB_MANIFEST",
        metavar="PATH",
    ),
    _Setting(
        "--sc-job-archive",
        "sc_job_archive",
        "submit this import archive (gzip tar) instead of the shipped one",
        ini="sc_job_archive",
        env="SC_JOB_ARCHIVE",
        metavar="PATH",
    ),
    _Setting(
        "--sc-report",
        "sc_report",
        "write the conformance report as JSON to PATH and as Markdown beside it",
        ini="sc_report",
        env="SC_REPORT",
        metavar="PATH",
    ),
    _Setting(
        "--sc-baseline",
        "sc_baseline",
        "requirement ids expected to fail ('ID  # reason' per line); the run then "
        "fails only on new failures and on listed ids that now pass",
        ini="sc_baseline",
        env="SC_BASELINE",
        metavar="FILE",
    ),
)

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def add_options(parser: pytest.Parser) -> None:
    """Register each setting as a option and, where it has one, ini key."""
    group = parser.getgroup("sc-conformance", "SiliconCompiler server conformance")
    for setting in SETTINGS:
        if setting.flag:
            group.addoption(
                setting.option,
                dest=setting.dest,
                action="store_true",
                default=None,
                help=setting.help,
            )
        else:
            group.addoption(
                setting.option,
                dest=setting.dest,
                default=None,
                choices=setting.choices,
                metavar=setting.metavar,
                help=setting.help,
            )
        if setting.ini is not None:
            parser.addini(
                setting.ini,
                help=setting.help,
                type="bool" if setting.flag else "string",
                default=None,
            )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the suite was told, resolved and validated once per session."""

    server_url: str | None
    mock: bool
    explicit_target: bool
    verify: bool | str
    credentials: Credentials | None
    other_credentials: Credentials | None
    key_credentials: Credentials | None
    auth: AuthMode
    level: Level
    job_timeout: float
    request_timeout: float
    job_manifest: Path | None
    job_archive: Path | None
    report: Path | None
    baseline: Mapping[str, str]

    @property
    def active(self) -> bool:
        """True when a target is set: only then does the plugin act at all."""
        return self.mock or self.server_url is not None


INACTIVE = Settings(
    server_url=None,
    mock=False,
    explicit_target=False,
    verify=True,
    credentials=None,
    other_credentials=None,
    key_credentials=None,
    auth=AuthMode.AUTO,
    level=Level.SHOULD,
    job_timeout=DEFAULT_JOB_TIMEOUT,
    request_timeout=DEFAULT_REQUEST_TIMEOUT,
    job_manifest=None,
    job_archive=None,
    report=None,
    baseline={},
)
"""Settings of a run without a target: the plugin then stays out of the way."""


class _Source:
    """Reads one setting from the command line, the environment or the ini file."""

    def __init__(self, config: pytest.Config, environ: Mapping[str, str]) -> None:
        self.config = config
        self.environ = environ
        self.by_dest = {setting.dest: setting for setting in SETTINGS}

    def origin(self, dest: str) -> str | None:
        setting = self.by_dest[dest]
        if self.config.getoption(dest) is not None:
            return "option"
        if setting.env is not None and self.environ.get(setting.env, "") != "":
            return "environment"
        if setting.ini is not None and self.config.getini(setting.ini) not in (
            None,
            "",
        ):
            return "ini"
        return None

    def raw(self, dest: str) -> Any:
        setting = self.by_dest[dest]
        origin = self.origin(dest)
        if origin == "option":
            return self.config.getoption(dest)
        if origin == "environment":
            assert setting.env is not None
            return self.environ[setting.env]
        if origin == "ini":
            assert setting.ini is not None
            return self.config.getini(setting.ini)
        return None

    def text(self, dest: str) -> str | None:
        value = self.raw(dest)
        return None if value is None else str(value)

    def flag(self, dest: str) -> bool:
        value = self.raw(dest)
        if value is None or isinstance(value, bool):
            return bool(value)
        word = str(value).strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        setting = self.by_dest[dest]
        raise pytest.UsageError(
            f"{setting.env or setting.ini}: not a boolean: {value!r}"
        )

    def path(self, dest: str) -> Path | None:
        value = self.text(dest)
        if value is None:
            return None
        path = Path(value).expanduser()
        if self.origin(dest) == "ini" and self.config.inipath is not None:
            path = self.config.inipath.parent / path
        return path

    def seconds(self, dest: str, default: float) -> float:
        value = self.text(dest)
        if value is None:
            return default
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SECONDS:
            raise pytest.UsageError(
                f"{self.by_dest[dest].option}: expected a positive number of seconds, "
                f"at most {MAX_SECONDS:g}, "
                f"got {value!r}"
            )
        return seconds

    def choice(self, dest: str, kind: type[enum.StrEnum], default: str) -> Any:
        value = self.text(dest) or default
        try:
            return kind(value.lower())
        except ValueError:
            choices = ", ".join(member.value for member in kind)
            raise pytest.UsageError(
                f"{self.by_dest[dest].option}: expected one of {choices}, got {value!r}"
            ) from None


def resolve(
    config: pytest.Config, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, check and combine every setting; bad input is a ``pytest.UsageError``."""
    source = _Source(config, os.environ if environ is None else environ)

    server_url, mock, explicit = _target(source)
    credentials_file = source.path("sc_credentials")
    if credentials_file is None or (
        server_url is None and not mock and source.origin("sc_credentials") != "option"
    ):
        file_credentials, file_url = None, None
    else:
        file_credentials, file_url = _read_credentials_file(credentials_file)
    if server_url is None and not mock and file_url is not None:
        server_url, explicit = file_url, True
    if server_url is None and not mock:
        return INACTIVE
    server_url = _check_url(server_url) if server_url is not None else None

    credentials = _credentials(
        source, "sc_username", "sc_key", "SC_KEY", fallback=file_credentials
    )
    other_credentials = _credentials(
        source, "sc_other_username", "sc_other_key", "SC_OTHER_KEY", fallback=None
    )
    key_credentials = _key_account(source)

    ca_bundle = source.path("sc_ca_bundle")
    if ca_bundle is not None and not ca_bundle.is_file():
        raise pytest.UsageError(f"--sc-ca-bundle: no such file: {ca_bundle}")
    verify: bool | str = str(ca_bundle) if ca_bundle is not None else True
    if source.flag("sc_insecure"):
        verify = False

    job_manifest = _existing(source.path("sc_job_manifest"), "--sc-job-manifest")
    job_archive = _existing(source.path("sc_job_archive"), "--sc-job-archive")
    baseline_path = _existing(source.path("sc_baseline"), "--sc-baseline")

    return Settings(
        server_url=server_url,
        mock=mock,
        explicit_target=explicit,
        verify=verify,
        credentials=credentials,
        other_credentials=other_credentials,
        key_credentials=key_credentials,
        auth=source.choice("sc_auth", AuthMode, AuthMode.AUTO),
        level=source.choice("sc_level", Level, Level.SHOULD),
        job_timeout=source.seconds("sc_job_timeout", DEFAULT_JOB_TIMEOUT),
        request_timeout=source.seconds("sc_request_timeout", DEFAULT_REQUEST_TIMEOUT),
        job_manifest=job_manifest,
        job_archive=job_archive,
        report=source.path("sc_report"),
        baseline=read_baseline(baseline_path) if baseline_path is not None else {},
    )


def _target(source: _Source) -> tuple[str | None, bool, bool]:
    """Return (server URL, mock?, explicit?) in the documented precedence."""
    url_origin = source.origin("sc_server_url")
    mock_origin = source.origin("sc_mock")
    mock_wanted = source.flag("sc_mock") if mock_origin is not None else False
    for origin in ("option", "environment", "ini"):
        url_here = url_origin == origin
        mock_here = mock_origin == origin and mock_wanted
        if url_here and mock_here:
            raise pytest.UsageError(
                "--server-url and --sc-mock name two targets; give one"
            )
        if url_here:
            return source.text("sc_server_url"), False, origin != "ini"
        if mock_here:
            return None, True, origin != "ini"
    return None, False, False


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:
        raise pytest.UsageError(f"--server-url: not a URL ({error})") from None
    if parts.query or parts.fragment:
        raise pytest.UsageError(
            "--server-url: give the base URL without a query or fragment"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise pytest.UsageError(
            f"--server-url: expected an http:// or https:// URL, got {parts.scheme!r} "
            "scheme or no host"
        )
    try:
        parts.port  # noqa: B018 - raises for a port that is not 0-65535
    except ValueError:
        raise pytest.UsageError(
            f"--server-url: {parts.netloc.rsplit('@', 1)[-1]!r} has no valid port "
            "(0-65535)"
        ) from None
    return url if url.endswith("/") else f"{url}/"


def _credentials(
    source: _Source,
    username_dest: str,
    key_dest: str,
    key_variable: str,
    *,
    fallback: Credentials | None,
) -> Credentials | None:
    username = source.text(username_dest)
    key = source.text(key_dest)
    if username is None and key is None:
        return fallback
    if username is None or key is None:
        given, missing = (
            (username_dest, key_dest) if key is None else (key_dest, username_dest)
        )
        raise pytest.UsageError(
            f"{source.by_dest[given].option} needs {source.by_dest[missing].option} "
            f"(or {source.by_dest[missing].env})"
        )
    _check_username(source, username_dest, username)
    return Credentials(username, key, key_variable=key_variable)


def _check_username(source: _Source, dest: str, username: str) -> None:
    if re.search(spec.USERNAME_PATTERN, username) is None:
        raise pytest.UsageError(
            f"{source.by_dest[dest].option}: usernames may not contain "
            "whitespace or ';'"
        )


def _key_account(source: _Source) -> Credentials | None:
    """The key account: its username and the base64 of its private key file.

    The file is checked here so that a passphrase-protected or mistaken file is one
    usage error rather than a run of failed key checks; its contents are never
    quoted.
    """
    username = source.text("sc_key_username")
    key_file = source.path("sc_key_file")
    if username is None and key_file is None:
        return None
    if username is None or key_file is None:
        given, missing = (
            ("--sc-key-file", "--sc-key-username (or SC_KEY_USERNAME)")
            if username is None
            else ("--sc-key-username", "--sc-key-file (or SC_KEY_FILE)")
        )
        raise pytest.UsageError(f"{given} needs {missing}")
    _check_username(source, "sc_key_username", username)
    try:
        key_text = key_file.read_bytes()
    except OSError as error:
        raise pytest.UsageError(
            f"--sc-key-file: cannot read {key_file}: {error.strerror}"
        ) from None
    if not keys.is_private_key(key_text):
        raise pytest.UsageError(
            f"--sc-key-file: {key_file} is not an unencrypted PEM or OpenSSH "
            "private key"
        )
    return Credentials(
        username, keys.encode_key(key_text), key_variable=KEY_ACCOUNT_VARIABLE
    )


def _read_credentials_file(path: Path) -> tuple[Credentials | None, str | None]:
    """Read the SiliconCompiler client's credentials file: account and address."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise pytest.UsageError(
            f"--sc-credentials: cannot read {path}: {error.strerror}"
        ) from None
    except ValueError:
        raise pytest.UsageError(f"--sc-credentials: {path} is not JSON") from None
    if not isinstance(document, dict):
        raise pytest.UsageError(f"--sc-credentials: {path} is not a JSON object")

    credentials = None
    username, password = document.get("username"), document.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        credentials = Credentials(username, password, key_variable="SC_KEY")

    url = None
    address = document.get("address")
    if isinstance(address, str) and address:
        url = address if "://" in address else f"http://{address}"
        port = document.get("port")
        if port not in (None, "") and urllib.parse.urlsplit(url).port is None:
            url = f"{url.rstrip('/')}:{port}"
    return credentials, url


def _existing(path: Path | None, option: str) -> Path | None:
    if path is not None and not path.is_file():
        raise pytest.UsageError(f"{option}: no such file: {path}")
    return path


BASELINE_LINE = re.compile(r"^\s*(?P<id>[A-Z]+-\d+)\s*(?:#\s*(?P<reason>.*))?$")


def read_baseline(path: Path) -> dict[str, str]:
    """Read a baseline file: one requirement id per line, ``ID  # reason``.

    Blank lines and lines starting with ``#`` are ignored; an unknown id is an error so
    that a typo cannot silently hide a failure.
    """
    known = {requirement.id for requirement in spec.requirements()}
    baseline: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = BASELINE_LINE.match(line)
        if match is None:
            raise pytest.UsageError(
                f"--sc-baseline: {path}:{number}: expected 'ID  # reason'"
            )
        requirement_id = match["id"]
        if requirement_id not in known:
            raise pytest.UsageError(
                f"--sc-baseline: {path}:{number}: unknown requirement id "
                f"{requirement_id!r}"
            )
        baseline[requirement_id] = (match["reason"] or "").strip()
    return baseline
