"""Reading the job plan from manifests, and settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mock_server.config import config_from_env
from mock_server.errors import InvalidRequest
from mock_server.errors import TooManyNodes
from mock_server.manifest import read_plan


def _node(*inputs: tuple[str, str]) -> dict:
    return {
        "input": {"node": {"global": {"global": {"value": [list(i) for i in inputs]}}}}
    }


def _manifest(flowgraph: dict, flow: str = "f") -> dict:
    return {
        "design": {"node": {"global": {"global": {"value": "top"}}}},
        "option": {"flow": {"node": {"global": {"global": {"value": flow}}}}},
        "flowgraph": {flow: flowgraph},
    }


def test_real_manifest_gives_names_and_ordered_nodes(mock_manifest):
    plan = read_plan(mock_manifest, max_nodes=64)
    assert (plan.design, plan.jobname, plan.flow) == (
        "conformance",
        "job0",
        "conformance",
    )
    names = [node.name for node in plan.nodes]
    assert names.index("import0") < names.index("work0") < names.index("merge0")
    assert names.index("work1") < names.index("merge0")
    assert plan.fail_nodes == frozenset()


def test_nodes_follow_their_inputs_whatever_the_manifest_order():
    plan = read_plan(
        _manifest(
            {
                "c": {"0": _node(("b", "0"))},
                "b": {"0": _node(("a", "0"))},
                "a": {"0": _node()},
            }
        ),
        max_nodes=8,
    )
    assert [node.name for node in plan.nodes] == ["a0", "b0", "c0"]


def test_inputs_outside_the_flow_are_ignored():
    plan = read_plan(_manifest({"b": {"0": _node(("elsewhere", "0"))}}), max_nodes=8)
    assert [node.name for node in plan.nodes] == ["b0"]


def test_flow_is_the_first_flowgraph_when_the_option_is_missing():
    manifest = _manifest({"a": {"0": _node()}}, flow="only")
    del manifest["option"]
    assert read_plan(manifest, max_nodes=8).flow == "only"


def test_empty_manifest_gets_default_names_and_no_nodes():
    plan = read_plan({}, max_nodes=8)
    assert (plan.design, plan.jobname, plan.nodes) == ("design", "job0", ())


@pytest.mark.parametrize(
    "flowgraph",
    [
        {"a": {"0": _node(("a", "0"))}},
        {"a": {"0": _node(("b", "0"))}, "b": {"0": _node(("a", "0"))}},
        {"a": {"0": {"input": {"node": {"global": {"global": {"value": "x"}}}}}}},
        {"a": {"0": _node(("b",))}},
        {"../x": {"0": _node()}},
        {"a": {"0/1": _node()}},
    ],
)
def test_unusable_flowgraphs_are_refused(flowgraph):
    with pytest.raises(InvalidRequest):
        read_plan(_manifest(flowgraph), max_nodes=8)


def test_more_nodes_than_allowed_are_refused():
    flowgraph = {"a": {str(index): _node() for index in range(9)}}
    with pytest.raises(TooManyNodes):
        read_plan(_manifest(flowgraph), max_nodes=8)


def test_fail_hint_must_be_a_list_of_names():
    manifest = _manifest({"a": {"0": _node()}})
    manifest["sc_mock"] = {"fail_nodes": "a0"}
    with pytest.raises(InvalidRequest):
        read_plan(manifest, max_nodes=8)


def test_settings_come_from_sc_mock_variables(tmp_path):
    config = config_from_env(
        {
            "SC_MOCK_ROOT": str(tmp_path),
            "SC_MOCK_AUTH": "yes",
            "SC_MOCK_NODE_SECONDS": "0.25",
            "SC_MOCK_MAX_UPLOAD_MB": "3",
            "SC_MOCK_FAIL_NODES": "work0, merge0",
        }
    )
    assert config.root == Path(tmp_path)
    assert config.auth is True
    assert config.node_seconds == 0.25
    assert config.max_upload_mb == 3
    assert config.fail_nodes == frozenset({"work0", "merge0"})


def test_a_malformed_variable_is_named_in_the_error():
    with pytest.raises(ValueError, match="SC_MOCK_AUTH"):
        config_from_env({"SC_MOCK_AUTH": "maybe"})
