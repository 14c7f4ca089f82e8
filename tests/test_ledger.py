"""The cleanup ledger lists each job that may remain once, however often it was sent."""

from __future__ import annotations

import socket

from sc_conformance.client import ServerClient
from sc_conformance.ledger import JobLedger


def test_a_job_hash_sent_twice_is_one_possible_leftover_and_refusals_none() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = JobLedger()
    ledger.record("a" * 32, "job0", None).accepted = True
    ledger.record("a" * 32, "job0", None).accepted = False
    ledger.record("b" * 32, "job0", None).accepted = False

    leftovers = ledger.clean_up(
        ServerClient(f"http://127.0.0.1:{port}/", request_timeout=2), timeout=5
    )

    assert [leftover.job_hash for leftover in leftovers] == ["a" * 32]
    assert "no answer from the server" in leftovers[0].reason
