"""Throughput and peak memory of encryption at rest for a large job file.

Streams a generated plaintext (never held in memory) through the mock's chunked AES-GCM
to a file on disk and back, next to a plain copy of the same size as the baseline, and
prints MiB/s for each and the process's peak RSS.

    python benchmarks/bench_crypto.py --size-mib 1024
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mock_server import crypto

MIB = 1024 * 1024


class GeneratedPlaintext(io.RawIOBase):
    """``size`` bytes of repeating random data, produced on demand."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._pattern = os.urandom(MIB)
        self._remaining = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self._remaining, len(self._pattern))
        buffer[:size] = self._pattern[:size]
        self._remaining -= size
        return size


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, size: int, step: Callable[[], None]) -> None:
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    print(
        f"{label:<22} {size / MIB / seconds:8.0f} MiB/s  ({seconds:6.2f} s)"
        f"  peak RSS so far {peak_rss_mib():6.1f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    options = parser.parse_args()
    size = options.size_mib * MIB
    data_key = crypto.new_data_key()

    print(f"{options.size_mib} MiB, chunk {crypto.CHUNK_SIZE // 1024} KiB")
    print(f"baseline RSS before streaming {peak_rss_mib():6.1f} MiB")
    with tempfile.TemporaryDirectory(prefix="sc-bench-crypto-", dir=options.dir) as d:
        plain_file = Path(d) / "plain.bin"
        sealed_file = Path(d) / "sealed.bin"

        def plain_write() -> None:
            with plain_file.open("wb") as dst:
                shutil.copyfileobj(GeneratedPlaintext(size), dst, crypto.CHUNK_SIZE)

        def plain_read() -> None:
            with plain_file.open("rb") as src:
                while src.read(crypto.CHUNK_SIZE):
                    pass

        def sealed_write() -> None:
            with sealed_file.open("wb") as dst:
                crypto.encrypt_stream(GeneratedPlaintext(size), dst, data_key)

        def sealed_read() -> None:
            with sealed_file.open("rb") as src:
                total = sum(len(c) for c in crypto.decrypt_stream(src, data_key))
            if total != size:
                raise RuntimeError(f"decrypted {total} bytes, expected {size}")

        timed("plain write", size, plain_write)
        timed("plain read", size, plain_read)
        plain_file.unlink()
        timed("encrypt to disk", size, sealed_write)
        timed("decrypt from disk", size, sealed_read)
        overhead = sealed_file.stat().st_size - size
        print(f"on-disk overhead {overhead} bytes ({overhead / size:.3%})")
    print(f"peak RSS of the process {peak_rss_mib():6.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
