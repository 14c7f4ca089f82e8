"""Run the conformance suite against the reference ``sc-server`` of SiliconCompiler.

Starts the server twice on 127.0.0.1 with a fresh storage folder -- once without
authentication and once with a ``users.json`` of two accounts -- runs the whole suite
against it with ``--server-url`` and the baseline of its known deviations, and stops
it. The suite runs from a scratch directory, exactly as an operator would run the
installed plugin. Needs ``siliconcompiler==0.13.0`` in the running interpreter (the
``reference-0.13`` tox environment provides it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("run_reference")

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "launch_sc_server.py"
BASELINES = {
    False: HERE / "baseline-sc-server-0.13-open.txt",
    True: HERE / "baseline-sc-server-0.13-auth.txt",
}
ABSOLUTE_CANARY = Path("/tmp/sc-conformance-canary.txt")
"""Where the suite's absolute-path archive writes on a server that extracts naively."""

ACCOUNTS = {
    "users": [
        {
            "username": "alice",
            "password": "alice-secret",
            "compute_time": 3600,
            "bandwidth": 1048576,
        },
        {
            "username": "bob",
            "password": "bob-secret",
            "compute_time": 3600,
            "bandwidth": 1048576,
        },
    ]
}

LOOPBACK_ADDRESSES = {"0100007F", "00000000000000000000000001000000"}


def free_loopback_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Return the hex local addresses of every socket listening on *port*.

    Read from ``/proc/net/tcp*`` so that the check sees what the kernel sees,
    whatever the server claims about itself.
    """
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, port_hex = fields[1].split(":")
                if int(port_hex, 16) == port and fields[3] == "0A":
                    addresses.add(address)
    return addresses


def wait_until_listening(port: int, server: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sc-server exited early with code {server.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.2)
    raise RuntimeError(f"sc-server did not listen on 127.0.0.1:{port} in time")


@contextlib.contextmanager
def reference_server(storage_root: Path, auth: bool) -> Iterator[str]:
    """Run the reference server on loopback for the duration of the block."""
    port = free_loopback_port()
    command = [
        sys.executable,
        str(LAUNCHER),
        "-port",
        str(port),
        "-nfs_mount",
        str(storage_root),
        "-cluster",
        "local",
    ]
    if auth:
        (storage_root / "users.json").write_text(json.dumps(ACCOUNTS))
        command.append("-auth")

    log_path = storage_root.parent / f"sc-server-{'auth' if auth else 'open'}.log"
    with open(log_path, "wb") as server_log:
        server = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)
        try:
            wait_until_listening(port, server, time.monotonic() + 60)

            addresses = listening_addresses(port)
            if not addresses or not addresses <= LOOPBACK_ADDRESSES:
                raise RuntimeError(
                    f"sc-server listens beyond loopback on port {port}: {addresses}"
                )
            logger.info("sc-server listening on 127.0.0.1:%d only", port)

            yield f"http://127.0.0.1:{port}/"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def leftovers(storage_root: Path) -> dict[str, list[str]]:
    """Sort what the server kept in its storage root, apart from the account file.

    sc-server stages every upload as a file named by a random hex id and removes it
    only after a successful extraction; a job is a folder named by its job hash,
    its results a ``<job_hash>.tar.gz`` beside it.
    """
    kept: dict[str, list[str]] = {"job folders": [], "results": [], "staged": []}
    for path in sorted(storage_root.iterdir()):
        if path.name == "users.json":
            continue
        if path.is_dir():
            kept["job folders"].append(path.name)
        elif path.name.endswith(".tar.gz"):
            kept["results"].append(path.name)
        else:
            kept["staged"].append(path.name)
    return {kind: names for kind, names in kept.items() if names}


def run_suite(
    url: str, auth: bool, report: Path, extra: list[str], output: Path
) -> int:
    """Run the installed plugin from a scratch folder; its output goes to *output*."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        f"--server-url={url}",
        f"--sc-baseline={BASELINES[auth]}",
        f"--sc-report={report}",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    if auth:
        command += [
            "--sc-auth=required",
            "--sc-username=alice",
            "--sc-key=alice-secret",
            "--sc-other-username=bob",
            "--sc-other-key=bob-secret",
        ]
    else:
        command.append("--sc-auth=off")

    with (
        tempfile.TemporaryDirectory(prefix="sc-suite-") as scratch,
        open(output, "wb") as log,
    ):
        logger.info("running the suite against %s (auth %s)", url, auth)
        return subprocess.call(
            command, cwd=scratch, stdout=log, stderr=subprocess.STDOUT
        )


def run_mode(auth: bool, report_dir: Path, extra: list[str]) -> tuple[int, Path]:
    """One server, one suite run, and what the server kept on disk afterwards."""
    label = "auth" if auth else "open"
    output = report_dir / f"sc-server-0.13-{label}.log"
    with tempfile.TemporaryDirectory(prefix="sc-server-") as workspace:
        storage_root = Path(workspace) / "storage"
        storage_root.mkdir()
        with reference_server(storage_root, auth) as url:
            report = report_dir / f"sc-server-0.13-{label}.json"
            exit_code = run_suite(url, auth, report, extra, output)
        for kind, names in leftovers(storage_root).items():
            logger.info(
                "sc-server (%s) kept %d %s on disk: %s",
                label,
                len(names),
                kind,
                ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""),
            )
    return exit_code, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=("open", "auth", "both"),
        default="both",
        help="run without authentication, with it, or both (default)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        help="where to write the conformance reports (default: ./reports)",
    )
    options, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    options.report_dir.mkdir(parents=True, exist_ok=True)

    modes = {"open": [False], "auth": [True], "both": [False, True]}[options.mode]
    canary_before = ABSOLUTE_CANARY.exists()
    # The two servers are independent: judge them side by side. The reference
    # server is single-threaded and blocks while a job runs, so this halves the wait.
    report_dir = options.report_dir.resolve()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(modes)) as pool:
        runs = list(pool.map(lambda auth: run_mode(auth, report_dir, extra), modes))
    for _, output in runs:
        sys.stdout.write(output.read_text(errors="replace"))
    sys.stdout.flush()
    exit_codes = [exit_code for exit_code, _ in runs]

    if ABSOLUTE_CANARY.exists() and not canary_before:
        logger.info(
            "sc-server extracted an absolute archive member to %s; removed it",
            ABSOLUTE_CANARY,
        )
        ABSOLUTE_CANARY.unlink()

    return max(exit_codes)


if __name__ == "__main__":
    sys.exit(main())
