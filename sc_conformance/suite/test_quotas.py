"""Quota checks: no compute time left, too many flowgraph nodes, too little bandwidth.

They need accounts whose quotas are spent and the server's node limit, which the
suite sets up only on the embedded mock; against a URL they skip with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools

import pytest
import requests

from sc_conformance.client import ServerClient
from sc_conformance.jobs import JobTemplate
from sc_conformance.jobs import JobUpload
from sc_conformance.session import ConformanceSession
from sc_conformance.session import QuotaAccounts
from sc_conformance.suite import expect

pytestmark = pytest.mark.security


@pytest.fixture(scope="session")
def quota_accounts(sc_session: ConformanceSession) -> QuotaAccounts:
    if sc_session.quota_accounts is None:
        pytest.skip(
            "needs accounts with spent quotas and the server's node limit, which the "
            "suite sets up only on the embedded mock (--sc-mock)"
        )
    return sc_session.quota_accounts


METRIC_TABLES = ("weight", "goal")
"""Per-metric node parameters, most of a node's size: left out of the copies so a
flowgraph just over the node limit stays under the upload limit."""


def wide_upload(template: JobTemplate, node_count: int) -> JobUpload:
    """The template's job with its last node repeated until the flowgraph has
    *node_count* nodes; every copy has the same tool, task and inputs, so the job
    stays valid."""
    manifest = copy.deepcopy(dict(template.manifest))
    step, index = template.nodes[-1]
    indices = manifest["flowgraph"][template.flow][step]
    node = {
        name: parameter
        for name, parameter in indices[index].items()
        if name not in METRIC_TABLES
    }
    nodes = list(template.nodes)
    for number in itertools.count():
        if len(nodes) >= node_count:
            break
        if str(number) in indices:
            continue
        indices[str(number)] = copy.deepcopy(node)
        nodes.append((step, str(number)))
    wide = dataclasses.replace(template, manifest=manifest, nodes=tuple(nodes))
    return wide.new_upload()


@pytest.mark.requirement("QTA-01")
@pytest.mark.usefixtures("sc_auth_required")
def test_upload_without_compute_time_left_is_400(
    quota_accounts: QuotaAccounts, sc_session: ConformanceSession
) -> None:
    client = sc_session.client(quota_accounts.no_compute_time)
    job = sc_session.submit(client)
    assert job.response is not None
    expect.status(
        job.response, 400, what="remote_run of an account with no compute time left"
    )


@pytest.mark.requirement("QTA-02")
def test_upload_with_more_nodes_than_allowed_is_403(
    quota_accounts: QuotaAccounts,
    sc_session: ConformanceSession,
    sc_client: ServerClient,
) -> None:
    node_count = quota_accounts.max_nodes + 1
    upload = wide_upload(sc_session.template, node_count)
    job = sc_session.submit(sc_client, upload)
    assert job.response is not None
    expect.status(
        job.response,
        403,
        what=f"remote_run of {node_count} nodes on a server that runs at most "
        f"{quota_accounts.max_nodes}",
    )


@pytest.mark.requirement("QTA-03")
@pytest.mark.usefixtures("sc_auth_required")
def test_results_larger_than_the_bandwidth_left_are_503(
    quota_accounts: QuotaAccounts,
    sc_session: ConformanceSession,
    sc_results: requests.Response,
) -> None:
    """The password account's results of the same upload show that these results
    exceed the account's bandwidth; a larger quota would prove nothing."""
    limit = quota_accounts.low_bandwidth_kb * 1024
    if sc_results.status_code != 200 or len(sc_results.content) <= limit:
        pytest.skip(
            f"the job's results are not known to exceed {limit} bytes: the shared "
            f"job's results answered {expect.answer(sc_results)}"
        )
    client = sc_session.client(quota_accounts.low_bandwidth)
    job = sc_session.submit(client)
    if not job.accepted:
        assert job.response is not None
        pytest.skip(
            "the low-bandwidth account's job was not accepted: remote_run answered "
            f"{expect.answer(job.response)}"
        )
    wait = sc_session.wait_for(client, job.upload)
    if not wait.finished:
        pytest.skip(f"the job did not finish (see PRG-04): {wait.problem}")
    response = client.get_results(job.upload.job_hash)
    expect.status(
        response,
        503,
        what=f"get_results of {len(sc_results.content)} bytes for an account with "
        f"{quota_accounts.low_bandwidth_kb} KiB of bandwidth left",
    )
