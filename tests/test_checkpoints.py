"""Episodes under LangGraph checkpointers, and resuming an interrupted episode from its thread."""

import sqlite3

import pytest
from langchain_core.documents import Document
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from langchain_ragr1 import RagR1Agent, RetrievalError
from langchain_ragr1.graph import episode_result
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document("Paris is the capital of France", metadata={"title": "Paris"}),
        Document("Rome is the capital of Italy", metadata={"title": "Rome"})]
TURNS = ["<search> Paris, Rome </search>", "<answer> Paris </answer>"]


@pytest.fixture(params=["memory", "sqlite"])
def checkpointer(request, tmp_path):
    if request.param == "memory":
        yield InMemorySaver()
        return
    connection = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
    yield SqliteSaver(connection)
    connection.close()


def test_episode_state_is_checkpointed_per_thread(checkpointer):
    agent = RagR1Agent(ScriptedPolicy(TURNS), MemoryRetriever(documents=DOCS), k=1,
                       checkpointer=checkpointer)
    config = {"configurable": {"thread_id": "t1"}}
    assert agent.invoke("Capital of France?", config)["answer"] == "Paris"
    state = agent.graph.get_state(config)
    assert state.values["answer"] == "Paris" and not state.next
    assert [d.metadata["title"] for d in episode_result(state.values)["documents"]] == ["Paris", "Rome"]
    # A second question on the same thread starts a fresh episode; the chat history grows.
    result = agent.invoke("Capital of Italy?", config)
    assert result["turns"] == 1 and result["question"] == "Capital of Italy?"
    assert [s["role"] for s in result["segments"]] == ["prompt", "policy", "env", "policy"]
    assert len(result["messages"]) == 4


def test_interrupted_episode_resumes_without_redoing_its_turns(checkpointer):
    policy = ScriptedPolicy(TURNS)
    retriever = MemoryRetriever(documents=DOCS, fail_times=1)
    retriever.calls = []
    agent = RagR1Agent(policy, retriever, k=1, retrieval_retries=0, checkpointer=checkpointer)
    config = {"configurable": {"thread_id": "interrupted"}}
    with pytest.raises(RetrievalError):
        agent.invoke("Capital of France?", config)
    assert len(policy.calls) == 1
    assert agent.graph.get_state(config).next == ("retrieve",)  # the failed query only
    result = episode_result(agent.graph.invoke(None, config))
    assert result["answer"] == "Paris" and result["turns"] == 1
    assert len(policy.calls) == 2  # the first think turn was not asked again
    assert len(retriever.calls) == 3  # the failed query once more, the successful one not again
    assert result["queries"] == [["Paris", "Rome"]]
