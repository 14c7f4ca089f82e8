"""Settings of the fuzz and security categories: seed, budget, pace, upload size.

Each setting is a CLI option, an ini key and an environment variable, resolved in
that order, so a CI job can pin them without editing the command line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from typing import Any

import pytest

SEED_OPTION = "--sc-fuzz-seed"

DEFAULT_EXAMPLES = 25
"""Examples per endpoint and check: enough to find the usual crashes in seconds."""

DEFAULT_URL_RATE = 20.0
"""Requests per second against a server given by URL, so a real deployment copes."""

DEFAULT_MAX_EXTRACT_MB = 1024
"""Bomb threshold against a URL: a job import expanding past 1 GiB is refused."""

RANDOM_SEED = "random"


@dataclasses.dataclass(frozen=True)
class _Setting:
    option: str
    ini: str
    env: str
    metavar: str
    help: str


_SEED = _Setting(
    SEED_OPTION,
    "sc_fuzz_seed",
    "SC_FUZZ_SEED",
    "SEED",
    "hypothesis seed of the fuzz checks, shown with every fuzz failure so a run "
    "can be replayed with it; 'random' draws a new one (default: 0).",
)
_EXAMPLES = _Setting(
    "--sc-fuzz-examples",
    "sc_fuzz_examples",
    "SC_FUZZ_EXAMPLES",
    "COUNT",
    f"examples per endpoint and fuzz check (default: {DEFAULT_EXAMPLES}).",
)
_RATE = _Setting(
    "--sc-fuzz-rate",
    "sc_fuzz_rate",
    "SC_FUZZ_RATE",
    "PER_SECOND",
    "most fuzz and security requests per second (0: no limit; default: "
    f"{DEFAULT_URL_RATE:g} against a URL, no limit against the embedded mock).",
)
_UPLOAD = _Setting(
    "--sc-max-upload-mb",
    "sc_max_upload_mb",
    "SC_MAX_UPLOAD_MB",
    "MIB",
    "the server's upload limit in MiB; an upload just over it must get 413 "
    "(known for the embedded mock; without it the check is skipped).",
)
_EXTRACT = _Setting(
    "--sc-max-extract-mb",
    "sc_max_extract_mb",
    "SC_MAX_EXTRACT_MB",
    "MIB",
    "the expanded size in MiB above which an import archive counts as a "
    "decompression bomb the server must refuse (default: the embedded mock's "
    f"limit, or {DEFAULT_MAX_EXTRACT_MB} against a URL).",
)
_SETTINGS = (_SEED, _EXAMPLES, _RATE, _UPLOAD, _EXTRACT)


def add_fuzz_options(parser: pytest.Parser) -> None:
    """Register the fuzz and security options (called from the plugin's addoption)."""
    group = parser.getgroup("sc-conformance")
    for setting in _SETTINGS:
        group.addoption(
            setting.option,
            dest=setting.ini,
            default=None,
            metavar=setting.metavar,
            help=f"{setting.help} [env {setting.env}, ini {setting.ini}]",
        )
        parser.addini(setting.ini, setting.help, default=None)


@dataclasses.dataclass(frozen=True)
class FuzzSettings:
    """The resolved fuzz settings of one session."""

    seed: int
    examples: int
    rate: float | None
    """Most requests per second, or None for no limit."""
    max_upload_mb: int | None
    max_extract_mb: int | None
    """The bomb threshold given by the user, or None for the default."""


def _raw(config: pytest.Config, setting: _Setting) -> str | None:
    value: Any = config.getoption(setting.ini, default=None)
    if value is None:
        value = os.environ.get(setting.env)
    if value is None:
        value = config.getini(setting.ini) or None
    return None if value is None else str(value).strip()


def _positive(setting: _Setting, text: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise pytest.UsageError(f"{setting.option}: not a number: {text!r}") from None
    if not math.isfinite(value):
        raise pytest.UsageError(f"{setting.option}: not a finite number: {text!r}")
    if value < 0 or (kind is int and value == 0 and setting is not _RATE):
        raise pytest.UsageError(f"{setting.option}: must be positive, got {text!r}")
    return value


def parse_seed(text: str, *, shared_entropy: str | None = None) -> int:
    """Turn a seed as printed (decimal) or 'random' into the hypothesis seed.

    Under pytest-xdist every worker resolves the seed on its own; *shared_entropy*
    (the run's id, the same on all workers) makes 'random' agree between them.
    """
    if text.lower() == RANDOM_SEED:
        if shared_entropy:
            return int.from_bytes(shared_entropy.encode("utf-8")[-8:], "big") % (10**9)
        return secrets.randbelow(10**9)
    try:
        return int(text)
    except ValueError:
        raise pytest.UsageError(
            f"{SEED_OPTION}: expected an integer or 'random', got {text!r}"
        ) from None


def fuzz_settings(config: pytest.Config, *, embedded_mock: bool) -> FuzzSettings:
    """Resolve the session's fuzz settings from options, env and ini.

    The result is cached on *config* so every check and the report header agree.
    """
    cached = config.stash.get(_STASH_KEY, None)
    if cached is not None:
        return cached

    seed_text = _raw(config, _SEED) or "0"
    seed = parse_seed(
        seed_text, shared_entropy=os.environ.get("PYTEST_XDIST_TESTRUNUID")
    )

    examples_text = _raw(config, _EXAMPLES)
    examples = (
        DEFAULT_EXAMPLES
        if examples_text is None
        else _positive(_EXAMPLES, examples_text, int)
    )

    rate_text = _raw(config, _RATE)
    if rate_text is None:
        rate: float | None = None if embedded_mock else DEFAULT_URL_RATE
    else:
        rate = _positive(_RATE, rate_text, float) or None

    upload_text = _raw(config, _UPLOAD)
    max_upload_mb = (
        None if upload_text is None else _positive(_UPLOAD, upload_text, int)
    )

    extract_text = _raw(config, _EXTRACT)
    max_extract_mb = (
        None if extract_text is None else _positive(_EXTRACT, extract_text, int)
    )

    settings = FuzzSettings(
        seed=seed,
        examples=examples,
        rate=rate,
        max_upload_mb=max_upload_mb,
        max_extract_mb=max_extract_mb,
    )
    config.stash[_STASH_KEY] = settings
    return settings


def report_header(settings: FuzzSettings) -> str:
    """The line that tells a user how to replay this run's fuzz examples."""
    pace = "unlimited" if settings.rate is None else f"{settings.rate:g} req/s"
    return (
        f"sc-conformance fuzz: {SEED_OPTION}={settings.seed} "
        f"--sc-fuzz-examples={settings.examples} (pace {pace})"
    )


_STASH_KEY = pytest.StashKey[FuzzSettings]()
