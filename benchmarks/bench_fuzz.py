"""Fuzz examples per second against the mock server, with no request pacing.

Starts ``MockServer`` on 127.0.0.1 (a free port), then draws and sends the suite's
generated requests for every endpoint and prints examples per second for each kind
and overall: the figure that sizes ``--sc-fuzz-examples`` for a time budget.

    python benchmarks/bench_fuzz.py --examples 200
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

from hypothesis import strategies as st

from mock_server import MockConfig
from mock_server import MockServer
from sc_conformance import strategies
from sc_conformance.client import ServerClient
from sc_conformance.fuzz_options import FuzzSettings
from sc_conformance.fuzzing import FuzzRun
from sc_conformance.jobs import load_job
from sc_conformance.pacing import TokenBucket
from sc_conformance.strategies import FuzzRequest


def measure(
    run: FuzzRun, strategy: st.SearchStrategy[FuzzRequest]
) -> tuple[int, float]:
    """Send every example of *strategy*; return the count and the seconds taken."""
    sent = 0

    def judge(request: FuzzRequest) -> None:
        nonlocal sent
        response = run.send(request)
        if response.status_code >= 500:
            run.fail(request, "no 5xx", response)
        sent += 1

    started = time.perf_counter()
    run.run(strategy, judge)
    return sent, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    template = load_job(None, None)
    kinds: dict[str, Callable[[], st.SearchStrategy[FuzzRequest]]] = {}
    for endpoint in strategies.JSON_ENDPOINTS:
        kinds[f"{endpoint} valid"] = lambda e=endpoint: strategies.valid_requests(e)
        kinds[f"{endpoint} invalid"] = lambda e=endpoint: strategies.invalid_requests(e)
    kinds["remote_run malformed"] = lambda: strategies.remote_run_uploads(
        template.manifest, template.import_archive
    )

    config = MockConfig(host="127.0.0.1", port=0, node_seconds=0.05)
    total_sent, total_seconds = 0, 0.0
    with MockServer(config) as server:
        run = FuzzRun(
            client=ServerClient(server.url),
            settings=FuzzSettings(
                seed=options.seed,
                examples=options.examples,
                rate=None,
                max_upload_mb=None,
                max_extract_mb=None,
            ),
            bucket=TokenBucket(None),
        )
        for name, strategy in kinds.items():
            sent, seconds = measure(run, strategy())
            total_sent += sent
            total_seconds += seconds
            print(f"{name:28} {sent:5d} examples  {sent / seconds:7.1f} /s")

    print(
        f"{'all':28} {total_sent:5d} examples  "
        f"{total_sent / total_seconds:7.1f} /s (seed {options.seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
