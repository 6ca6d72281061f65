"""The agent as a LangChain retriever, a tool and a node of a parent graph (fake-backed)."""

import asyncio
from typing import TypedDict

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_tests.integration_tests import RetrieversIntegrationTests, ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from langchain_ragr1 import ConfigError, RagR1Agent
from langchain_ragr1.integrations import RagR1Retriever
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document(f"{city} is the capital of {country}", metadata={"title": city})
        for city, country in [("Paris", "France"), ("Rome", "Italy"), ("Berlin", "Germany"),
                              ("Madrid", "Spain")]]
TURNS = ["<think>Two cities.</think><search> Paris capital, Madrid Spain </search>",
         "<answer> Paris </answer>"]


def make_agent(**kwargs) -> RagR1Agent:
    return RagR1Agent(ScriptedPolicy(TURNS), MemoryRetriever(documents=DOCS), **kwargs)


@pytest.mark.anyio  # runs the async standard test (anyio's pytest plugin, on asyncio)
class TestRagR1RetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagR1Retriever]:
        return RagR1Retriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"agent": make_agent(k=3)}

    @property
    def retriever_query_example(self) -> str:
        return "What is the capital of France?"


class ToolStandardParams:
    @property
    def tool_constructor(self):
        return make_agent().as_tool()

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"question": "What is the capital of France?"}


class TestRagR1ToolUnit(ToolStandardParams, ToolsUnitTests):
    pass


@pytest.mark.anyio
class TestRagR1ToolStandard(ToolStandardParams, ToolsIntegrationTests):
    pass


def test_retriever_documents_carry_the_answer_and_queries():
    agent = make_agent(k=2)  # Paris capital -> Paris, Rome; Madrid Spain -> Madrid, Paris
    docs = agent.as_retriever(k=5).invoke("What is the capital of France?")
    assert [d.metadata["title"] for d in docs] == ["Paris", "Rome", "Madrid"]  # distinct
    assert {d.metadata["ragr1_answer"] for d in docs} == {"Paris"}
    assert docs[0].metadata["ragr1_queries"] == [["Paris capital", "Madrid Spain"]]
    assert [d.metadata["ragr1_query"] for d in docs] == ["Paris capital", "Paris capital", "Madrid Spain"]
    assert "ragr1_answer" not in DOCS[0].metadata  # the retriever's documents are not changed
    assert len(asyncio.run(agent.as_retriever(k=1).ainvoke("France?", k=2))) == 2


def test_tool_schema_is_what_a_tool_calling_model_sees():
    tool = make_agent().as_tool()
    spec = convert_to_openai_tool(tool)["function"]
    assert spec["name"] == "ragr1_search" and "knowledge base" in spec["description"]
    assert spec["parameters"]["required"] == ["question"]
    assert spec["parameters"]["properties"]["question"]["type"] == "string"
    assert make_agent().as_tool(name="wiki", description="Wikipedia.").name == "wiki"


def test_tool_runs_in_a_tool_node_and_returns_answer_sources_and_artifact():
    call = {"name": "ragr1_search", "args": {"question": "Capital of France?"}, "id": "call-1"}
    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([make_agent(k=1).as_tool()]))
    builder.add_edge(START, "tools")
    graph = builder.compile()
    out = graph.invoke({"messages": [AIMessage("", tool_calls=[call])]})
    message = out["messages"][-1]
    assert isinstance(message, ToolMessage) and message.tool_call_id == "call-1"
    assert message.content == "Paris\nSources: Paris; Madrid"
    assert message.artifact["queries"] == [["Paris capital", "Madrid Spain"]]
    out = asyncio.run(graph.ainvoke({"messages": [AIMessage("", tool_calls=[call])]}))
    assert out["messages"][-1].content.startswith("Paris")


class ToolCallingFake(GenericFakeChatModel):
    """A fake chat model that records the tools bound to it."""

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def test_tool_calling_model_loop_with_the_tool():
    tool = make_agent().as_tool()
    call = {"name": tool.name, "args": {"question": "Capital of France?"}, "id": "c1"}
    model = ToolCallingFake(messages=iter([AIMessage("", tool_calls=[call]), AIMessage("It is Paris.")]))
    bound = model.bind_tools([tool])
    assert bound.kwargs["tools"][0]["function"]["name"] == "ragr1_search"

    def call_model(state: MessagesState):
        return {"messages": [bound.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode([tool]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", lambda s: "tools" if s["messages"][-1].tool_calls else END)
    builder.add_edge("tools", "model")
    out = builder.compile().invoke({"messages": [HumanMessage("What is the capital of France?")]})
    assert [type(m).__name__ for m in out["messages"]] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][2].content.startswith("Paris") and out["messages"][-1].content == "It is Paris."


class QAState(TypedDict, total=False):
    query: str
    answer: str | None
    sources: list


def test_node_for_a_parent_without_messages():
    builder = StateGraph(QAState)
    builder.add_node("rag", make_agent().as_node(input_key="query", output_key="answer",
                                                  documents_key="sources"))
    builder.add_edge(START, "rag")
    graph = builder.compile()
    out = graph.invoke({"query": "What is the capital of France?"})
    assert out["answer"] == "Paris" and out["sources"][0].metadata["title"] == "Paris"
    assert "messages" not in out
    assert asyncio.run(graph.ainvoke({"query": "France?"}))["answer"] == "Paris"
    with pytest.raises(ConfigError, match=r"state\['question'\].*input_key"):
        make_agent().as_node().invoke({"query": "France?"})
