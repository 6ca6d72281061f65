"""The agent as a LangChain/LangGraph citizen: v2 output, per-call settings, the drawn graph,
async paths end to end, LLM runs for token-level policies, the tool's signature."""

import asyncio
import inspect

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from langgraph.graph import START, MessagesState, StateGraph

from langchain_ragr1 import ConfigError, RagR1Agent
from langchain_ragr1.protocol import make_prompt
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document(f"{city} is a city number {i}", metadata={"title": city})
        for i, city in enumerate(["Paris", "Rome", "Oslo", "Lima"])]
SEARCH = "<think>Check.</think> <search> Paris, Rome, Oslo </search>"
ANSWER = "<answer> Paris </answer>"


def agent(policy=None, **kwargs) -> RagR1Agent:
    return RagR1Agent(policy or ScriptedPolicy([SEARCH, ANSWER]), MemoryRetriever(documents=DOCS), k=1,
                      **kwargs)


def test_invoke_with_version_v2_returns_the_result_dict():
    result = agent().invoke("Capital?", version="v2")
    assert result["answer"] == "Paris" and result["queries"] == [["Paris", "Rome", "Oslo"]]


def test_astream_events_root_output_equals_invoke():
    a = agent()
    expected = a.invoke("Capital?")

    async def root_output():
        async for event in a.astream_events("Capital?", version="v2"):
            if event["event"] == "on_chain_end" and not event["parent_ids"]:
                return event["data"]["output"]

    output = asyncio.run(root_output())
    for key in ("answer", "turns", "steps", "queries", "trace", "stop_reason", "invalid_turns"):
        assert output[key] == expected[key], key


def test_configurable_overrides_k_max_turns_mode_and_max_queries():
    a = agent()
    base = a.invoke("Capital?")
    assert [len(t) for t in base["retrievals"][0:1][0:1]] == [3]
    assert all(len(r["documents"]) == 1 for r in base["retrievals"][0])
    more = a.invoke("Capital?", {"configurable": {"k": 2}})
    assert all(len(r["documents"]) == 2 for r in more["retrievals"][0])
    fewer = a.invoke("Capital?", {"configurable": {"max_queries": 1}})
    assert fewer["queries"] == [["Paris"]]
    no_search = a.invoke("Capital?", {"configurable": {"max_turns": 0}})
    assert no_search["turns"] == 0 and no_search["stop_reason"] == "turn_budget"
    single = agent(ScriptedPolicy(["<search> Paris </search>", ANSWER])).invoke(
        "Capital?", {"configurable": {"mode": "single"}})
    assert single["segments"][0]["text"] == make_prompt("Capital?", "single")
    # the agent's own settings are untouched by a call's overrides
    assert a.invoke("Capital?")["queries"] == base["queries"]


def test_configurable_bad_value_names_the_setting():
    with pytest.raises(ConfigError, match=r'configurable.*k must be a positive integer'):
        agent().invoke("Capital?", {"configurable": {"k": 0}})


def test_a_larger_max_turns_per_call_gets_a_recursion_limit_that_fits():
    looping = ScriptedPolicy(["<search> Paris </search>"])  # never answers
    result = agent(looping).invoke("Capital?", {"configurable": {"max_turns": 12}})
    assert result["turns"] == 12 and result["stop_reason"] == "turn_budget"


def test_get_graph_draws_the_real_nodes():
    nodes = {node.name for node in agent().get_graph().nodes.values()}
    assert {"prepare", "think", "retrieve", "observe", "finish"} <= nodes


def test_input_and_output_json_schemas_exist():
    graph = agent().graph
    assert "question" in graph.get_input_jsonschema()["properties"]
    assert "answer" in graph.get_output_jsonschema()["properties"]


class SyncForbiddenChat(GenericFakeChatModel):
    """A chat model whose sync path fails: only ainvoke works."""

    def _generate(self, *args, **kwargs):
        raise AssertionError("the sync path of the chat model was used under ainvoke")

    def _stream(self, *args, **kwargs):
        raise AssertionError("the sync path of the chat model was used under ainvoke")

    async def _agenerate(self, *args, **kwargs):
        return GenericFakeChatModel._generate(self, *args, **kwargs)

    async def _astream(self, *args, **kwargs):
        for chunk in GenericFakeChatModel._stream(self, *args, **kwargs):
            yield chunk


class AsyncOnlyRetriever(BaseRetriever):
    documents: list[Document]

    def _get_relevant_documents(self, query, *, run_manager):
        raise NotImplementedError("async only")

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun):
        await asyncio.sleep(0)
        return [d for d in self.documents if d.metadata["title"].lower() in query.lower()]


def test_ainvoke_uses_the_chat_models_and_the_retrievers_async_paths():
    chat = SyncForbiddenChat(messages=iter([AIMessage("<search> Paris, Rome </search>"), AIMessage(ANSWER)]))
    a = RagR1Agent(chat, AsyncOnlyRetriever(documents=DOCS), k=2)
    result = asyncio.run(a.ainvoke("Capital?"))
    assert result["answer"] == "Paris"
    assert [[d.metadata["title"] for d in r["documents"]] for r in result["retrievals"][0]] == [["Paris"], ["Rome"]]
    with pytest.raises(Exception, match="async only|sync path"):
        a.invoke("Capital?")


class Recorder(BaseCallbackHandler):
    def __init__(self):
        self.starts, self.ends = [], []

    def on_llm_start(self, serialized, prompts, **kwargs):
        self.starts.append((serialized.get("name"), prompts))

    def on_llm_end(self, response, **kwargs):
        self.ends.append(response)


def test_token_level_policy_turns_are_llm_runs_with_token_counts():
    recorder = Recorder()
    policy = ScriptedPolicy([SEARCH, ANSWER], token_level=True)
    agent(policy).invoke("Capital?", {"callbacks": [recorder]})
    assert [name for name, _ in recorder.starts] == ["ScriptedPolicy", "ScriptedPolicy"]
    assert make_prompt("Capital?", "multi") in recorder.starts[0][1][0]
    assert [end.generations[0][0].text for end in recorder.ends] == [SEARCH, ANSWER]
    usage = recorder.ends[0].llm_output["token_usage"]
    assert usage["completion_tokens"] == len(SEARCH)
    assert usage["prompt_tokens"] == len(make_prompt("Capital?", "multi"))


def test_async_token_level_turns_are_llm_runs_too():
    recorder = Recorder()
    asyncio.run(agent(ScriptedPolicy([SEARCH, ANSWER], token_level=True)).ainvoke(
        "Capital?", {"callbacks": [recorder]}))
    assert len(recorder.starts) == len(recorder.ends) == 2


def test_first_messages_part_is_not_the_question_echoed():
    chat = GenericFakeChatModel(messages=iter([AIMessage(SEARCH), AIMessage(ANSWER)]))
    parts = list(RagR1Agent(chat, MemoryRetriever(documents=DOCS), k=1).stream(
        "Capital of France?", stream_mode="messages"))
    first, metadata = parts[0]
    assert not isinstance(first, HumanMessage) and metadata["langgraph_node"] == "think"
    assert isinstance(first, AIMessageChunk)


def test_as_tool_keeps_runnable_as_tools_signature():
    ours = inspect.signature(RagR1Agent.as_tool)
    theirs = inspect.signature(Runnable.as_tool)
    assert list(ours.parameters) == list(theirs.parameters)
    assert all(ours.parameters[p].kind == theirs.parameters[p].kind for p in theirs.parameters)
    tool = agent().as_tool(name="wiki", description="Answers from the wiki.")
    assert tool.name == "wiki" and tool.description == "Answers from the wiki."
    assert tool.invoke({"question": "Capital?"}).startswith("Paris")
    with pytest.raises(ConfigError, match="question"):
        agent().as_tool(arg_types={"query": str})


def test_parent_graph_whose_last_message_is_ai_gets_an_error_that_says_so():
    parent = StateGraph(MessagesState)
    parent.add_node("ragr1", agent().graph)
    parent.add_edge(START, "ragr1")
    app = parent.compile()
    with pytest.raises(ConfigError, match="last message is AIMessage"):
        app.invoke({"messages": [HumanMessage("Capital?"), AIMessage("Paris?")]})
    assert app.invoke({"messages": [HumanMessage("Capital?")]})["messages"][-1].content == "Paris"
