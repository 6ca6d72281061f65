"""Every graph that graphs/langgraph.json names resolves to a compiled graph that runs."""

import importlib.util
import inspect
import json
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langgraph.pregel import Pregel

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.protocol import make_prompt
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"
MODES = {"ragr1": "multi", "ragr1_single": "single"}


def fake_agent(mode: str) -> RagR1Agent:
    docs = [Document("Paris is the capital of France", metadata={"title": "Paris"})]
    policy = ScriptedPolicy(["<search> Paris </search>", "<answer> Paris </answer>"])
    return RagR1Agent(policy, MemoryRetriever(documents=docs), mode=mode, k=1)


def load_graph(spec: str, monkeypatch) -> Pregel:
    """Resolve ``./file.py:name`` as the LangGraph CLI does: a graph, or a factory of one."""
    file, _, name = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("ragr1_graphs_under_test", GRAPHS / file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    monkeypatch.setattr(module, "load_agent", fake_agent)  # no real model in tests
    target = getattr(module, name)
    if isinstance(target, Pregel):
        return target
    assert callable(target) and len(inspect.signature(target).parameters) <= 1
    return target({"configurable": {}})


def test_langgraph_json_is_valid_for_the_cli():
    config = json.loads((GRAPHS / "langgraph.json").read_text())
    assert set(config["graphs"]) == set(MODES) and config["dependencies"] == ["."]
    for spec in config["graphs"].values():
        assert (GRAPHS / spec.partition(":")[0]).is_file()


@pytest.mark.parametrize("graph_id", sorted(MODES))
def test_every_named_graph_is_a_compiled_graph_in_its_mode(graph_id, monkeypatch):
    spec = json.loads((GRAPHS / "langgraph.json").read_text())["graphs"][graph_id]
    graph = load_graph(spec, monkeypatch)
    assert isinstance(graph, Pregel) and "think" in graph.nodes
    state = graph.invoke({"messages": [("user", "Capital of France?")]})
    assert state["messages"][-1].content == "Paris"
    assert state["segments"][0]["text"] == make_prompt("Capital of France?", MODES[graph_id])
