"""Runnable behaviour end to end: invoke/batch/stream in every LangGraph mode, events, config."""

import asyncio

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableLambda
from langgraph.errors import GraphRecursionError

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document("Paris is the capital of France", metadata={"title": "Paris"}),
        Document("Rome is the capital of Italy", metadata={"title": "Rome"})]
SEARCH = "<think>Check both.</think> <search> Paris, Rome </search>"
ANSWER = "<answer> Paris </answer>"


def chat_agent(**kwargs) -> RagR1Agent:
    """A LangChain chat model (streams word by word) as the policy."""
    chat = GenericFakeChatModel(messages=iter([AIMessage(SEARCH), AIMessage(ANSWER)]))
    return RagR1Agent(chat, MemoryRetriever(documents=DOCS), k=1, **kwargs)


def scripted_agent() -> RagR1Agent:
    return RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), MemoryRetriever(documents=DOCS), k=1)


def test_invoke_ainvoke_batch_abatch():
    agent = scripted_agent()
    assert agent.invoke("Capital of France?")["answer"] == "Paris"
    assert asyncio.run(agent.ainvoke("Capital of France?"))["turns"] == 1
    assert [r["answer"] for r in agent.batch(["a?", "b?"])] == ["Paris", "Paris"]
    assert [r["answer"] for r in asyncio.run(agent.abatch(["a?", "b?"]))] == ["Paris", "Paris"]


def test_stream_updates_follow_the_nodes():
    nodes = [next(iter(part)) for part in scripted_agent().stream("Capital of France?")]
    assert nodes == ["prepare", "think", "retrieve", "retrieve", "observe", "think", "finish"]


def test_stream_custom_events_for_turns_searches_and_results():
    events = list(scripted_agent().stream("Capital of France?", stream_mode="custom"))
    searches = sorted((e["turn"], e["query"]) for e in events if e["event"] == "search")
    assert searches == [(1, "Paris"), (1, "Rome")]
    results = [e for e in events if e["event"] == "results"]
    assert [(r["query"], r["titles"], r["error"]) for r in results] == [
        ("Paris", ["Paris"], None), ("Rome", ["Rome"], None)]
    turns = [e for e in events if e["event"] == "turn"]
    assert [(t["step"], t["text"]) for t in turns] == [(1, SEARCH), (2, ANSWER)]


def test_stream_messages_yields_think_node_tokens_of_a_chat_model():
    tokens = []
    for chunk, metadata in chat_agent().stream("Capital of France?", stream_mode="messages"):
        if isinstance(chunk, AIMessageChunk):
            assert metadata["langgraph_node"] == "think"
            tokens.append(chunk.content)
    assert len(tokens) > 10 and "".join(tokens) == SEARCH + ANSWER


def test_astream_with_several_modes():
    async def collect():
        return [part async for part in chat_agent().astream(
            "Capital of France?", stream_mode=["updates", "custom", "messages"])]

    parts = asyncio.run(collect())
    modes = {mode for mode, _ in parts}
    assert modes == {"updates", "custom", "messages"}
    chunks = [part[0] for mode, part in parts if mode == "messages"]
    assert "".join(c.content for c in chunks if isinstance(c, AIMessageChunk)) == SEARCH + ANSWER
    mode, last = parts[-1]
    assert mode == "updates" and last["finish"]["messages"][0].content == "Paris"


def test_astream_events_show_model_retriever_and_graph():
    async def collect():
        return [e async for e in chat_agent().astream_events("Capital of France?", version="v2")]

    events = asyncio.run(collect())
    kinds = {(e["event"], e["name"]) for e in events}
    assert ("on_chain_start", "ragr1") in kinds and ("on_chain_end", "ragr1") in kinds
    assert ("on_retriever_end", "MemoryRetriever") in kinds
    streamed = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(streamed) == SEARCH + ANSWER


class Recorder(BaseCallbackHandler):
    def __init__(self):
        self.runs = []

    def on_chat_model_start(self, serialized, messages, *, tags=None, metadata=None, **kwargs):
        self.runs.append(("chat", tags, metadata))

    def on_retriever_start(self, serialized, query, *, tags=None, metadata=None, **kwargs):
        self.runs.append(("retriever", tags, metadata))


def test_callbacks_tags_metadata_and_recursion_limit_pass_through():
    recorder = Recorder()
    config = {"callbacks": [recorder], "tags": ["exp-7"], "metadata": {"user": "ada"}}
    assert chat_agent().invoke("Capital of France?", config)["answer"] == "Paris"
    assert [kind for kind, _, _ in recorder.runs] == ["chat", "retriever", "retriever", "chat"]
    for _, tags, metadata in recorder.runs:
        assert "exp-7" in tags and metadata["user"] == "ada"
    # A recursion limit smaller than one search episode needs stops it.
    with pytest.raises(GraphRecursionError):
        scripted_agent().invoke("Capital of France?", {"recursion_limit": 3})


def test_agent_in_a_streamed_chain_yields_one_result():
    chain = RunnableLambda(lambda q: q) | scripted_agent() | (lambda r: r["answer"])
    assert list(chain.stream("Capital of France?")) == ["Paris"]
    assert asyncio.run(chain.ainvoke("Capital of France?")) == "Paris"
