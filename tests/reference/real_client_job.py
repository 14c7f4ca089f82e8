"""Drive the real SiliconCompiler 0.13 client through a remote run of a tool-free flow.

Run as a script by ``test_real_client.py`` with an interpreter that has
``siliconcompiler==0.13.0``. Arguments: the client credentials file, then ``run`` (a
full remote job: upload, poll, fetch, extract, delete) or ``ping`` (``check_user``
through the client's own ``remote_ping``). The client waits 30 s between progress
polls; the wait is shortened here so that the test is quick, nothing else changes.
"""

from __future__ import annotations

import json
import sys
import time
import types
import urllib.parse

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def shorten_poll_interval() -> None:
    from siliconcompiler.remote import client

    client.time = types.SimpleNamespace(
        sleep=lambda seconds: time.sleep(min(seconds, 0.2)),
        monotonic=time.monotonic,
    )


def build_chip(credentials: str):
    import siliconcompiler
    from siliconcompiler.tools.builtin import join
    from siliconcompiler.tools.builtin import nop

    chip = siliconcompiler.Chip("conformance")
    chip.set("option", "flow", "conformance")
    chip.node("conformance", "import", nop)
    chip.node("conformance", "work", nop)
    chip.node("conformance", "work", nop, index=1)
    chip.node("conformance", "merge", join)
    chip.edge("conformance", "import", "work", head_index=0)
    chip.edge("conformance", "import", "work", head_index=1)
    chip.edge("conformance", "work", "merge", tail_index=0)
    chip.edge("conformance", "work", "merge", tail_index=1)
    chip.set("option", "mode", "asic")
    chip.set("option", "quiet", True)
    chip.set("option", "remote", True)
    chip.set("option", "credentials", credentials)
    return chip


def load_loopback_credentials(path: str) -> dict:
    """Read the credentials file and refuse any server that is not on loopback.

    Without a readable credentials file the client falls back to its public default
    server; this guard makes sure a test can never reach it.
    """
    with open(path, encoding="utf-8") as credentials_file:
        remote_config = json.load(credentials_file)

    host = urllib.parse.urlsplit(remote_config["address"]).hostname
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to contact a non-loopback server: {host}")
    return remote_config


def main() -> int:
    credentials, action = sys.argv[1], sys.argv[2]
    remote_config = load_loopback_credentials(credentials)
    shorten_poll_interval()
    chip = build_chip(credentials)

    if action == "ping":
        from siliconcompiler.remote.client import remote_ping

        chip.status["remote_cfg"] = remote_config
        remote_ping(chip)
        return 0

    chip.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
