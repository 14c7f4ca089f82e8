"""The ``sc-mock-server`` command: serve the mock in the foreground.

Every option also reads an ``SC_MOCK_*`` environment variable as its default, the
same variables the WSGI entry point (``mock_server.wsgi``) uses.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from mock_server.config import MockConfig
from mock_server.config import settings_from_env
from mock_server.defects import DEFECTS
from mock_server.server import MockServer

logger = logging.getLogger(__name__)


DEFAULT_PORT = 8080


def build_parser(defaults: MockConfig, port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sc-mock-server",
        description="Mock SiliconCompiler remote job server (for tests; loopback "
        "by default).",
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind")
    parser.add_argument("--port", type=int, default=port, help="0 picks a free port")
    parser.add_argument(
        "--root",
        type=Path,
        default=defaults.root,
        help="storage root (default: a temporary folder removed at exit)",
    )
    parser.add_argument(
        "--users",
        type=Path,
        default=defaults.users_file,
        help="users.json in the reference format (default: ROOT/users.json)",
    )
    parser.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=defaults.auth,
        help="require username and key on every call",
    )
    parser.add_argument(
        "--node-seconds",
        type=float,
        default=defaults.node_seconds,
        help="simulated duration of each flowgraph node",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=defaults.max_upload_mb,
        help="largest remote_run upload accepted (413 beyond)",
    )
    parser.add_argument(
        "--max-nodes",
        type=int,
        default=defaults.max_nodes,
        help="most flowgraph nodes per job (403 beyond)",
    )
    parser.add_argument(
        "--fail-node",
        action="append",
        dest="fail_nodes",
        default=sorted(defaults.fail_nodes),
        metavar="NODE",
        help="make node NODE (e.g. work1) fail in every job; repeatable",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=defaults.tls,
        help="serve HTTPS with a self-signed certificate made at start",
    )
    parser.add_argument(
        "--defect",
        action="append",
        dest="defects",
        default=sorted(defaults.defects),
        metavar="NAME",
        help="switch on the deliberate flaw NAME (self-validation of the "
        "conformance suite); repeatable; --defect list shows them",
    )
    parser.add_argument(
        "--admin",
        action=argparse.BooleanOptionalAction,
        default=defaults.admin,
        help="serve the admin API under /_admin/ (faults, journal, job scripts, "
        "accounts, reset); anyone who reaches the server can use it",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=defaults.scenario,
        metavar="FILE",
        help="JSON scenario (accounts, faults, job script) applied at start and "
        "on every reset",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off: only lifecycle events are logged)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = settings_from_env()
        defaults = MockConfig(**settings)  # type: ignore[arg-type]
    except ValueError as error:
        print(f"sc-mock-server: {error}", file=sys.stderr)
        return 2
    port = int(settings.get("port", DEFAULT_PORT))  # type: ignore[call-overload]
    arguments = build_parser(defaults, port).parse_args(argv)
    if "list" in arguments.defects:
        for defect in DEFECTS:
            targets = ", ".join(defect.targets)
            print(f"{defect.name:<40} {targets:<22} {defect.description}")
        return 0

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not arguments.access_log:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    try:
        config = replace(
            defaults,
            host=arguments.host,
            port=arguments.port,
            root=arguments.root,
            users_file=arguments.users,
            auth=arguments.auth,
            node_seconds=arguments.node_seconds,
            max_upload_mb=arguments.max_upload_mb,
            max_nodes=arguments.max_nodes,
            fail_nodes=frozenset(arguments.fail_nodes),
            tls=arguments.tls,
            admin=arguments.admin,
            scenario=arguments.scenario,
            defects=frozenset(arguments.defects),
        )
        server = MockServer(config).start()
    except (ValueError, OSError) as error:
        logger.error("cannot start: %s", error)
        return 1

    if server.certificate is not None:
        logger.info("TLS certificate for clients: %s", server.certificate)
    stopped = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
