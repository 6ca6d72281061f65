"""Every graph that the root langgraph.json names resolves, as the server does, to a compiled
graph that runs, through the async factories of graphs/ragr1_graphs.py."""

import asyncio
import importlib.util
import inspect
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from langchain_core.documents import Document
from langgraph.pregel import Pregel

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.protocol import make_prompt
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "langgraph.json"
MODES = {"ragr1": "multi", "ragr1_single": "single"}
RUN = SimpleNamespace(execution_runtime=object(), access_context="threads.create_run")
READ = SimpleNamespace(execution_runtime=None, access_context="assistants.read")


def fake_agent(mode: str) -> RagR1Agent:
    docs = [Document("Paris is the capital of France", metadata={"title": "Paris"})]
    policy = ScriptedPolicy(["<search> Paris </search>", "<answer> Paris </answer>"])
    return RagR1Agent(policy, MemoryRetriever(documents=docs), mode=mode, k=1)


def graph_specs() -> dict[str, str]:
    return json.loads(CONFIG.read_text())["graphs"]


def load_module(file: str, monkeypatch, builder=fake_agent):
    """Import ``file`` (relative to the repo root, as ``langgraph dev`` run there does)."""
    module_spec = importlib.util.spec_from_file_location("ragr1_graphs_under_test", ROOT / file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    monkeypatch.setattr(module, "load_agent", builder)  # no real model in tests
    return module


def resolve(spec: str, monkeypatch, runtime=RUN, builder=fake_agent) -> Pregel:
    """Resolve ``./path.py:name`` as the server does: a graph, or a (sync or async) factory."""
    file, _, name = spec.partition(":")
    target = getattr(load_module(file, monkeypatch, builder), name)
    if isinstance(target, Pregel):
        return target
    assert callable(target) and len(inspect.signature(target).parameters) <= 1
    value = target(runtime) if inspect.signature(target).parameters else target()
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def test_root_langgraph_json_is_valid_for_the_cli():
    from langgraph_cli.config import validate_config_file

    config = validate_config_file(CONFIG)
    assert set(config["graphs"]) == set(MODES) and config["dependencies"] == ["."]
    for spec in config["graphs"].values():
        file = spec.partition(":")[0]
        assert file.startswith("./graphs/") and (ROOT / file).is_file()
    assert not (ROOT / "graphs" / "langgraph.json").exists()  # one config, at the root


@pytest.mark.parametrize("graph_id", sorted(MODES))
def test_every_named_graph_is_a_compiled_graph_in_its_mode(graph_id, monkeypatch):
    graph = resolve(graph_specs()[graph_id], monkeypatch)
    assert isinstance(graph, Pregel) and "think" in graph.nodes
    state = graph.invoke({"messages": [("user", "Capital of France?")]})
    assert state["messages"][-1].content == "Paris"
    assert state["segments"][0]["text"] == make_prompt("Capital of France?", MODES[graph_id])


@pytest.mark.parametrize("graph_id", sorted(MODES))
def test_reads_before_the_first_run_get_the_same_topology_without_the_model(
    graph_id, monkeypatch
):
    builds = []

    def counting_agent(mode):
        builds.append(mode)
        return fake_agent(mode)

    file, _, name = graph_specs()[graph_id].partition(":")
    factory = getattr(load_module(file, monkeypatch, counting_agent), name)

    async def read_run_read():
        read = await factory(READ)
        assert builds == []  # Studio's schemas and drawing do not load the model
        run = await factory(RUN)
        return read, run, await factory(READ)

    read, run, read_after = asyncio.run(read_run_read())
    assert builds == [MODES[graph_id]] and read_after is run  # once built, reads get it
    assert read is not run and "think" in read.nodes
    assert read.get_graph().to_json() == run.get_graph().to_json()
    assert set(read.channels) == set(run.channels)
    assert read.builder.state_schema is run.builder.state_schema
    with pytest.raises(RuntimeError, match="inspection only"):
        read.invoke({"question": "Capital of France?"})


def test_graph_schemas_name_the_input_and_output_fields(monkeypatch):
    """Studio's input form: the server serves these (null when pydantic cannot build them)."""
    graph = resolve(graph_specs()["ragr1"], monkeypatch, runtime=READ)
    assert {"messages", "question"} <= set(graph.get_input_jsonschema()["properties"])
    output = graph.get_output_jsonschema()["properties"]
    assert {"messages", "question", "segments", "answer"} <= set(output)


def test_factories_build_once_off_the_event_loop_and_retry_after_a_failure(monkeypatch):
    loop_thread = threading.get_ident()
    calls = []

    def builder(mode):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            raise OSError("model folder missing")
        return fake_agent(mode)

    module = load_module(graph_specs()["ragr1"].partition(":")[0], monkeypatch, builder)

    async def main():
        with pytest.raises(OSError):
            await module.make_multi_graph(RUN)
        return await asyncio.gather(*(module.make_multi_graph(RUN) for _ in range(5)))

    graphs = asyncio.run(main())
    assert len(calls) == 2 and loop_thread not in calls  # once after the failure, in a thread
    assert all(graph is graphs[0] for graph in graphs)


def test_the_two_graphs_build_one_after_the_other(monkeypatch):
    """Two transformers models loading at once race (imports, weight init): never in parallel."""
    running, overlaps = [], []

    def builder(mode):
        running.append(mode)
        overlaps.append(len(running))
        time.sleep(0.2)
        running.remove(mode)
        return fake_agent(mode)

    module = load_module(graph_specs()["ragr1"].partition(":")[0], monkeypatch, builder)

    async def main():
        return await asyncio.gather(module.make_multi_graph(RUN), module.make_single_graph(RUN))

    multi, single = asyncio.run(main())
    assert overlaps == [1, 1] and multi is not single


def test_a_name_that_does_not_resolve_fails(monkeypatch):
    with pytest.raises(AttributeError):
        resolve("./graphs/ragr1_graphs.py:make_missing_graph", monkeypatch)


def test_both_modes_share_one_model_when_they_resolve_to_the_same_folder(monkeypatch, tmp_path):
    """The two graphs over the default (one shipped adapter serves both modes) load it once."""
    import langchain_ragr1.models as models

    module_spec = importlib.util.spec_from_file_location("ragr1_graphs_shared", ROOT / "graphs" / "ragr1_graphs.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    folders = {"multi": tmp_path / "mq", "single": tmp_path / "mq"}
    monkeypatch.setattr(models, "resolve_model_path", lambda model, *, mode, show_progress=True: folders[mode])
    built: list[str] = []

    def from_default(**kwargs):
        built.append(kwargs["mode"])
        return fake_agent(kwargs["mode"])

    monkeypatch.setattr(module.RagR1Agent, "from_default", staticmethod(from_default))
    multi, single = module.load_agent("multi"), module.load_agent("single")
    assert built == ["multi"]  # one model load for the two graphs
    assert single.policy is multi.policy and single.retriever is multi.retriever
    assert (multi.config.mode, single.config.mode) == ("multi", "single")
    assert single.invoke("Capital of France?")["answer"] == "Paris"

    # another folder per mode (a single-query adapter shipped): each mode loads its own
    module.load_agent.cache_clear()
    module._BY_FOLDER.clear()
    folders["single"] = tmp_path / "sq"
    built.clear()
    module.load_agent("multi"), module.load_agent("single")
    assert built == ["multi", "single"]
