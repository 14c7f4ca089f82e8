"""Start the reference ``sc-server`` of SiliconCompiler bound to loopback only.

The reference server hands ``aiohttp.web.run_app`` no host, which binds every
interface. Tests must never expose a server beyond loopback, so this launcher pins
the host to 127.0.0.1 before handing over to the real ``sc-server`` entry point.
Arguments are passed through unchanged (``-port``, ``-nfs_mount``, ``-auth`` ...).
"""

from __future__ import annotations

import functools
import sys

from aiohttp import web


def main() -> int:
    original_run_app = web.run_app
    web.run_app = functools.partial(original_run_app, host="127.0.0.1")

    from siliconcompiler.apps import sc_server

    sys.argv = ["sc-server", *sys.argv[1:]]
    return sc_server.main() or 0


if __name__ == "__main__":
    sys.exit(main())
