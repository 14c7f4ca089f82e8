"""Loopback figures of the mock server: polling rate, 1 GiB upload and download.

Starts ``sc-mock-server`` in a subprocess (so its peak RSS can be read from /proc),
then measures check_progress requests per second with 16 concurrent clients,
remote_run uploads and a get_results download of the same size, and two yardsticks:
a raw loopback socket copy of the same bytes, and a plain write of them to a new
file beside the server's storage (the upload is answered once the import is
extracted, so it cannot beat the disk). Everything stays on 127.0.0.1.

Before each step that writes to disk, the script writes and deletes a scratch file
somewhat larger than the step will write, then flushes everything (``sync``). On a
virtual machine the first write to a page of memory the guest has never touched
costs the hypervisor several times the copy itself; that cost belongs to a fresh
machine, not to the server, and would otherwise decide (and scatter) every figure
that writes to disk. ``--no-warm-up`` measures without it. Uploads are repeated
(``--uploads``) and their median reported, with every run shown.

With ``--key-account`` the server requires authentication and every request carries
the username and private key of one key account, so the job is encrypted at rest
and the figures are those of sealed uploads and unsealed downloads.

    python benchmarks/bench_mock.py --size-mb 1024
    python benchmarks/bench_mock.py --size-mb 1024 --key-account
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from mock_server.keyaccount import create_key_account

CHUNK = 1024 * 1024

KEY_USER = "bench"
# Quotas no benchmark size uses up, so no run is refused for bandwidth or time.
UNLIMITED_QUOTA = 2**31 - 1


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _key_account(users_file: Path) -> dict[str, str]:
    """Credentials of a fresh key account registered in *users_file*; its private
    key file sits beside it, so it goes with the scratch folder."""
    account = create_key_account(
        users_file,
        KEY_USER,
        users_file.with_name(f"{KEY_USER}.pem"),
        compute_time=UNLIMITED_QUOTA,
        bandwidth=UNLIMITED_QUOTA,
    )
    return {"username": account.username, "key": account.key}


def _start_server(
    root: Path, users_file: Path | None
) -> tuple[subprocess.Popen[str], str]:
    authentication = (
        [] if users_file is None else ["--auth", "--users", str(users_file)]
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mock_server.cli",
            "--root",
            str(root),
            "--port",
            "0",
            "--node-seconds",
            "0.01",
            "--max-upload-mb",
            "8192",
            *authentication,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SC_MOCK_MAX_EXTRACT_MB": "8192"},
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, url
    raise RuntimeError("the server did not start")


def _make_import(path: Path, size: int) -> None:
    """A stored (uncompressed) gzip tar of random data, so the wire carries *size*."""
    with tarfile.open(path, mode="w:gz", compresslevel=0) as tar:
        info = tarfile.TarInfo("payload/data.bin")
        info.size = size
        with open("/dev/urandom", "rb") as random_source:
            tar.addfile(info, _Limited(random_source, size))


class _Limited(io.RawIOBase):
    def __init__(self, source: io.BufferedReader, size: int) -> None:
        self._source, self._left = source, size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._source.read(size)
        self._left -= len(data)
        return data


def _upload(
    url: str,
    archive: Path,
    manifest: dict,
    job_hash: str,
    credentials: dict[str, str],
) -> float:
    boundary = uuid.uuid4().hex
    params = json.dumps(
        {"chip_cfg": manifest, "params": {"job_hash": job_hash, **credentials}}
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"; '
        f'filename="params"\r\n\r\n{params}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="import"; '
        f'filename="import.tar.gz"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + archive.stat().st_size + len(tail)
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    started = time.perf_counter()
    connection.putrequest("POST", "/remote_run/")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(length))
    connection.endheaders()
    connection.send(head)
    with open(archive, "rb") as source:
        while chunk := source.read(CHUNK):
            connection.send(chunk)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"upload failed: {response.status} {body[:200]!r}")
    return elapsed


def _wait_finished(url: str, job_hash: str, credentials: dict[str, str]) -> None:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        response = requests.post(
            url + "check_progress/",
            data=json.dumps({"job_hash": job_hash, "job_id": "job0", **credentials}),
        )
        # A refused request (say, a rejected key) would otherwise poll for 30 min.
        if response.status_code != 200:
            raise RuntimeError(f"check_progress failed: {response.status_code}")
        if response.text == "Job has no running steps.":
            return
        time.sleep(0.2)
    raise RuntimeError("the job did not finish")


def _download(
    url: str, job_hash: str, credentials: dict[str, str]
) -> tuple[float, int]:
    started = time.perf_counter()
    received = 0
    with requests.post(
        url + f"get_results/{job_hash}.tar.gz",
        data=json.dumps(credentials),
        stream=True,
    ) as r:
        r.raise_for_status()
        for chunk in r.iter_content(CHUNK):
            received += len(chunk)
    return time.perf_counter() - started, received


def _poll_rate(
    url: str,
    job_hash: str,
    credentials: dict[str, str],
    clients: int,
    seconds: float,
) -> float:
    """Requests per second; plain http.client so the client costs little CPU (the
    server closes every connection, so each request is a new connection)."""
    body = json.dumps({"job_hash": job_hash, "job_id": "job0", **credentials})
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    stop = time.perf_counter() + seconds

    def worker() -> int:
        count = 0
        while time.perf_counter() < stop:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            connection.request("POST", "/check_progress/", body=body)
            response = connection.getresponse()
            response.read()
            connection.close()
            assert response.status == 200
            count += 1
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(lambda _: worker(), range(clients)))
    return total / (time.perf_counter() - started)


def _touch_memory(folder: Path, size: int) -> None:
    """Write and delete *size* bytes beside the storage, so that the page cache the
    next step fills is memory the machine has touched before; then flush."""
    scratch = folder / "warm-up.bin"
    block = os.urandom(CHUNK)
    with open(scratch, "wb", buffering=0) as output:
        for _ in range(size // CHUNK + 1):
            output.write(block)
    scratch.unlink()
    os.sync()


def _disk_write(archive: Path, folder: Path) -> float:
    """Seconds to write the same bytes to a new file in *folder* (64 KiB writes,
    as the extraction makes them), without waiting for the disk itself."""
    target = folder / "disk-yardstick.bin"
    started = time.perf_counter()
    with open(archive, "rb") as source, open(target, "wb", buffering=0) as output:
        while chunk := source.read(64 * 1024):
            output.write(chunk)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def _raw_copy(archive: Path) -> float:
    """Throughput of the same bytes through a plain loopback TCP socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def sink() -> None:
        connection, _ = listener.accept()
        with connection:
            while connection.recv(CHUNK):
                pass

    thread = threading.Thread(target=sink)
    thread.start()
    started = time.perf_counter()
    with (
        socket.create_connection(("127.0.0.1", port)) as client,
        open(archive, "rb") as f,
    ):
        while chunk := f.read(CHUNK):
            client.sendall(chunk)
    thread.join()
    listener.close()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument(
        "--uploads", type=int, default=3, help="uploads to measure (the median counts)"
    )
    parser.add_argument(
        "--key-account",
        action="store_true",
        help="authenticate as a key account, so the job is encrypted at rest",
    )
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="measure disk writes on memory the machine may never have touched",
    )
    arguments = parser.parse_args()
    mode = "key account (encrypted at rest)" if arguments.key_account else "plain"

    import gzip
    from importlib import resources

    manifest = json.loads(
        gzip.decompress(
            resources.files("sc_conformance.data")
            .joinpath("manifest.json.gz")
            .read_bytes()
        )
    )
    size = arguments.size_mb * CHUNK
    with tempfile.TemporaryDirectory(prefix="sc-bench-mock-") as scratch:
        scratch_path = Path(scratch)
        archive = scratch_path / "import.tar.gz"
        _make_import(archive, size)
        wire_mib = archive.stat().st_size / CHUNK
        os.sync()
        raw_seconds = statistics.median(_raw_copy(archive) for _ in range(3))

        credentials: dict[str, str] = {}
        users_file = None
        if arguments.key_account:
            users_file = scratch_path / "users.json"
            credentials = _key_account(users_file)
        process, url = _start_server(scratch_path / "root", users_file)
        try:
            small_hash = uuid.uuid4().hex
            tiny = scratch_path / "tiny.tar.gz"
            _make_import(tiny, 1024)
            _upload(url, tiny, manifest, small_hash, credentials)
            _wait_finished(url, small_hash, credentials)
            rate = _poll_rate(
                url,
                small_hash,
                credentials,
                arguments.clients,
                arguments.poll_seconds,
            )

            root = scratch_path / "root"

            def before_writing() -> None:
                if arguments.warm_up:
                    _touch_memory(root, size + size // 4)
                os.sync()

            before_writing()
            disk_seconds = _disk_write(archive, root)
            idle = _rss_mib(process.pid)
            _reset_peak(process.pid)
            upload_runs = []
            for _ in range(max(arguments.uploads, 1)):
                before_writing()
                job_hash = uuid.uuid4().hex
                upload_runs.append(
                    _upload(url, archive, manifest, job_hash, credentials)
                )
                # The job builds its results archive: not while the next uploads.
                _wait_finished(url, job_hash, credentials)
            upload_peak = _peak_rss_mib(process.pid)

            os.sync()
            _reset_peak(process.pid)
            download_seconds, received = _download(url, job_hash, credentials)
            download_peak = _peak_rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)

    upload_seconds = statistics.median(upload_runs)
    runs = ", ".join(f"{wire_mib / seconds:,.0f}" for seconds in upload_runs)
    print(
        f"check_progress, {arguments.clients} clients, {mode}: {rate:,.0f} requests/s"
    )
    print(f"raw loopback copy: {wire_mib / raw_seconds:,.0f} MiB/s (median of 3)")
    warm_up = "after a warm-up" if arguments.warm_up else "without a warm-up"
    print(
        f"plain write to a new file ({warm_up}): {wire_mib / disk_seconds:,.0f} MiB/s"
    )
    print(
        f"remote_run upload of {wire_mib:,.0f} MiB (answer after extraction), "
        f"{mode}: {wire_mib / upload_seconds:,.0f} MiB/s median of {runs} "
        f"({raw_seconds / upload_seconds:.0%} of the raw copy, "
        f"{disk_seconds / upload_seconds:.0%} of the plain write), "
        f"peak RSS {upload_peak - idle:+.1f} MiB above idle ({idle:.1f} MiB)"
    )
    print(
        f"get_results download of {received / CHUNK:,.0f} MiB, {mode}: "
        f"{received / CHUNK / download_seconds:,.0f} MiB/s, "
        f"peak RSS {download_peak - idle:+.1f} MiB above idle"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
