"""What the mock needs from a job's manifest: names, flow and the node plan.

A manifest is the client's SiliconCompiler configuration (``chip_cfg``). Values sit
under ``[param]["node"][step][index]["value"]``, with ``global``/``default`` keys for
values that are not per node. Missing names fall back to defaults so older or
trimmed manifests still run; names that would be unsafe as directory names are
refused, because they become paths on the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mock_server.errors import InvalidRequest
from mock_server.errors import TooManyNodes

DEFAULT_DESIGN = "design"
DEFAULT_JOBNAME = "job0"

FAIL_HINT_KEY = "sc_mock"
"""Top-level manifest key a client may add to ask for failures:
``{"sc_mock": {"fail_nodes": ["work1"]}}`` makes node ``work1`` end in error."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]{0,127}$")


@dataclass(frozen=True)
class Node:
    """One flowgraph node and the nodes whose outputs it consumes."""

    step: str
    index: str
    inputs: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return f"{self.step}{self.index}"


@dataclass(frozen=True)
class JobPlan:
    """The parts of a manifest that decide where a job lives and what it runs."""

    design: str
    jobname: str
    flow: str | None
    nodes: tuple[Node, ...]
    fail_nodes: frozenset[str]


def parameter_value(
    manifest: Any, keypath: tuple[str, ...], step: str = "global", index: str = "global"
) -> Any:
    """Return a parameter's value, preferring the node's own, then global, default.

    Anything that is not shaped like a parameter counts as unset rather than an
    error, so a manifest lacking a value behaves like one that leaves it empty.
    """
    parameter = manifest
    for key in keypath:
        if not isinstance(parameter, dict) or key not in parameter:
            return None
        parameter = parameter[key]
    if not isinstance(parameter, dict):
        return None

    if "node" not in parameter:
        return parameter.get("value")

    per_node = parameter["node"]
    if not isinstance(per_node, dict):
        return None
    for step_key, index_key in (
        (step, index),
        ("global", "global"),
        ("default", "default"),
    ):
        entry = per_node.get(step_key)
        if isinstance(entry, dict):
            entry = entry.get(index_key)
        if isinstance(entry, dict) and entry.get("value") not in (None, [], ""):
            return entry["value"]
    return None


def read_plan(manifest: dict[str, Any], max_nodes: int) -> JobPlan:
    """Read the job plan from a manifest; raise ``InvalidRequest`` when unusable."""
    design = _safe_name(
        "design", parameter_value(manifest, ("design",)), DEFAULT_DESIGN
    )
    jobname = _safe_name(
        "jobname",
        parameter_value(manifest, ("option", "jobname")),
        DEFAULT_JOBNAME,
    )
    flow = _flow_name(manifest)
    nodes = _flowgraph_nodes(manifest, flow, max_nodes)
    return JobPlan(
        design=design,
        jobname=jobname,
        flow=flow,
        nodes=_in_dependency_order(nodes),
        fail_nodes=_requested_failures(manifest),
    )


def _safe_name(what: str, value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise InvalidRequest(f"Error: the manifest's {what} is not a valid name.")
    return value


def _flow_name(manifest: dict[str, Any]) -> str | None:
    flow = parameter_value(manifest, ("option", "flow"))
    if isinstance(flow, str):
        return flow

    flowgraphs = manifest.get("flowgraph")
    if isinstance(flowgraphs, dict):
        for name in flowgraphs:
            if name != "default":
                return name
    return None


def _flowgraph(manifest: dict[str, Any], flow: str | None) -> dict[str, Any]:
    flowgraphs = manifest.get("flowgraph")
    if flow is None or not isinstance(flowgraphs, dict):
        return {}
    flowgraph = flowgraphs.get(flow)
    return flowgraph if isinstance(flowgraph, dict) else {}


def _node_entries(flowgraph: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for step, indices in flowgraph.items():
        if step == "default" or not isinstance(indices, dict):
            continue
        entries.append(
            (
                step,
                {index: node for index, node in indices.items() if index != "default"},
            )
        )
    return entries


def _flowgraph_nodes(
    manifest: dict[str, Any], flow: str | None, max_nodes: int
) -> list[Node]:
    entries = _node_entries(_flowgraph(manifest, flow))
    if sum(len(indices) for _, indices in entries) > max_nodes:
        raise TooManyNodes(
            f"Error: the flowgraph has more than {max_nodes} nodes, "
            "the most this server runs."
        )

    nodes = []
    for step, indices in entries:
        for index, node in indices.items():
            _safe_name("flowgraph step", step, DEFAULT_DESIGN)
            _safe_name("flowgraph index", index, DEFAULT_DESIGN)
            inputs = parameter_value(node, ("input",), step, index) or []
            nodes.append(Node(step, index, _input_pairs(inputs)))
    return nodes


def _input_pairs(inputs: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(inputs, list):
        raise InvalidRequest("Error: a flowgraph node's input is not a list.")

    pairs = []
    for pair in inputs:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(part, str) for part in pair)
        ):
            raise InvalidRequest(
                "Error: a flowgraph input is not a [step, index] pair."
            )
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _in_dependency_order(nodes: list[Node]) -> tuple[Node, ...]:
    """Order nodes so each follows its inputs, keeping manifest order among peers.

    Inputs naming nodes outside the flow are ignored: the client may list nodes it
    ran itself.
    """
    keys = [(node.step, node.index) for node in nodes]
    known = set(keys)
    waiting_on = {
        (node.step, node.index): {pair for pair in node.inputs if pair in known}
        for node in nodes
    }
    by_key = dict(zip(keys, nodes, strict=True))
    ordered: list[Node] = []
    while waiting_on:
        ready = [key for key in keys if key in waiting_on and not waiting_on[key]]
        if not ready:
            raise InvalidRequest("Error: the flowgraph has a cycle.")
        for key in ready:
            del waiting_on[key]
            ordered.append(by_key[key])
        for dependencies in waiting_on.values():
            dependencies.difference_update(ready)
    return tuple(ordered)


def _requested_failures(manifest: dict[str, Any]) -> frozenset[str]:
    hint = manifest.get(FAIL_HINT_KEY)
    if not isinstance(hint, dict):
        return frozenset()
    names = hint.get("fail_nodes")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidRequest(
            f"Error: {FAIL_HINT_KEY}.fail_nodes must be a list of names."
        )
    return frozenset(names)


def mark_node_status(
    manifest: dict[str, Any], flow: str | None, step: str, index: str, status: str
) -> None:
    """Record a node's status where SiliconCompiler keeps it (flowgraph status)."""
    if flow is None:
        return
    node = _flowgraph(manifest, flow).get(step, {}).get(index)
    if not isinstance(node, dict):
        return
    parameter = node.setdefault("status", {})
    if not isinstance(parameter, dict):
        return
    per_node = parameter.setdefault("node", {})
    if isinstance(per_node, dict):
        per_node.setdefault("global", {})["global"] = {
            "signature": None,
            "value": status,
        }
