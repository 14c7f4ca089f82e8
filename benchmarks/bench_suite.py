"""Wall time of the conformance suite against the embedded mock.

Runs ``pytest --sc-mock`` from a scratch directory (as a user of the installed plugin
would) a few times and prints the median, best and worst wall time.

    python benchmarks/bench_suite.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(extra: list[str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="sc-bench-suite-") as scratch:
        started = time.perf_counter()
        exit_code = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "--sc-mock",
                "-q",
                "-p",
                "no:cacheprovider",
            ]
            + extra,
            cwd=scratch,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started, exit_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    options, extra = parser.parse_known_args()

    timings = []
    for _ in range(options.runs):
        seconds, exit_code = run_once(extra)
        if exit_code != 0:
            print(f"suite run failed with exit code {exit_code}", file=sys.stderr)
            return exit_code
        timings.append(seconds)

    print(
        f"suite vs embedded mock, {options.runs} runs: "
        f"median {statistics.median(timings):.1f} s, "
        f"best {min(timings):.1f} s, worst {max(timings):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
