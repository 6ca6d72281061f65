"""The RAG-R1 loop as one LangGraph state machine.

    START -> prepare -> think --(route)--> Send("retrieve") x N -> observe -> think ...
                                  \\-> finish -> END

``think`` asks the policy for one turn and parses it; ``route`` fans a search out as one
``Send`` per query so the retrievals of a turn run in parallel; ``observe`` joins them in
query order and appends the ``<information>`` block; after ``max_turns`` model turns one
final turn may only answer. The same compiled graph serves users, evaluation and training.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Sequence, TypedDict

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send

from langchain_ragr1.config import RagR1Config
from langchain_ragr1.corpus import document_contents
from langchain_ragr1.errors import RetrievalError
from langchain_ragr1.policies.base import Policy, cut_generation
from langchain_ragr1.protocol import (
    INVALID_ACTION_TEXT,
    STOP_STRINGS,
    make_prompt,
    normalize_question,
    parse_action,
    render_information,
)
from langchain_ragr1.retrieval import RetrievalRunner
from langchain_ragr1.transcript import Segment, make_segment, transcript_text


class RetrievalResult(TypedDict):
    """What one ``retrieve`` task found for query ``index`` of the current turn."""

    index: int
    query: str
    documents: list[Document]
    error: str | None


class Replace(list):
    """A list update that replaces a channel instead of extending it (a new episode)."""


def extend_or_replace(left: list | None, right: list | None) -> list:
    """Reducer of list channels: extend, unless the update is a :class:`Replace`."""
    if isinstance(right, Replace):
        return list(right)
    return (left or []) + (right or [])


class RagR1State(TypedDict, total=False):
    """State of one episode. ``messages`` makes the graph usable as a subgraph."""

    messages: Annotated[list[AnyMessage], add_messages]
    question: str
    segments: Annotated[list[Segment], extend_or_replace]
    steps: int  # model turns so far
    turns: int  # retrieval turns so far
    invalid_turns: int
    retrievals: Annotated[list[list[RetrievalResult]], extend_or_replace]  # one list per turn
    results: Annotated[list[RetrievalResult], extend_or_replace]  # fan-in of the current turn
    action: dict[str, Any] | None
    answer: str | None
    stop_reason: str | None


class RetrieveTask(TypedDict, total=False):
    """Payload of one ``Send("retrieve", ...)``: a single query of the current turn."""

    query: str
    index: int
    turn: int  # the retrieval turn it belongs to (1-based), for stream events


def _latest_question(state: RagR1State) -> tuple[str, bool]:
    """The question to answer and whether it came from a new human message.

    A parent graph hands the question over as its latest human message; a direct call
    passes ``question``.
    """
    messages = state.get("messages") or []
    if messages and isinstance(messages[-1], HumanMessage):
        return messages[-1].text, True
    return state.get("question") or "", False


def build_graph(
    policy: Policy,
    retriever: BaseRetriever,
    config: RagR1Config | None = None,
    *,
    checkpointer: Any = None,
    name: str = "ragr1",
):
    """Compile the RAG-R1 state machine for ``policy`` and ``retriever``."""
    settings = config or RagR1Config()
    retrieve_one = RetrievalRunner(
        retriever,
        k=settings.k,
        timeout_s=settings.retrieval_timeout_s,
        retries=settings.retrieval_retries,
    )

    # LangChain policies take the node's config, so callbacks (``stream_mode="messages"``,
    # tracing, tags) reach the chat model even when it runs outside this thread's context.
    policy_takes_config = "config" in inspect.signature(policy.generate).parameters

    def env_segment(text: str) -> Segment:
        return make_segment("env", text, policy.encode(text))

    def prepare(state: RagR1State) -> dict:
        raw_question, from_messages = _latest_question(state)
        question = normalize_question(raw_question)
        update: dict[str, Any] = {
            "question": question,
            "segments": Replace([policy.render_prompt(make_prompt(question, settings.mode))]),
            "retrievals": Replace(),
            "results": Replace(),
            "steps": 0,
            "turns": 0,
            "invalid_turns": 0,
            "answer": None,
            "action": None,
            "stop_reason": None,
        }
        if not from_messages:
            update["messages"] = [HumanMessage(question)]
        return update

    def start_route(state: RagR1State):
        if settings.initial_search:  # naive RAG: the question is the first query
            return [Send("retrieve", RetrieveTask(query=state["question"], index=0, turn=1))]
        return "think"

    def think(state: RagR1State, config: RunnableConfig) -> dict:
        final = state["steps"] >= settings.max_turns
        extra = {"config": config} if policy_takes_config else {}
        # Cut here whatever the backend did with the stop strings.
        generation = cut_generation(
            policy.generate(state["segments"], stop=STOP_STRINGS, **extra),
            STOP_STRINGS,
            policy.decode,
        )
        text = generation.text
        get_stream_writer()({"event": "turn", "step": state["steps"] + 1, "text": text})
        action = parse_action(text, settings.mode, settings.max_queries)
        segment = make_segment("policy", text, generation.token_ids, generation.logprobs)
        update: dict[str, Any] = {
            "segments": [segment],
            "steps": state["steps"] + 1,
            "action": {
                "kind": action.kind,
                "queries": list(action.queries),
                "answer": action.answer,
                "reason": action.reason,
                "final": final,
            },
        }
        if action.kind == "invalid":  # counted on every turn, the final one included
            update["invalid_turns"] = state["invalid_turns"] + 1
        if action.kind == "answer":
            update["answer"] = action.answer
            update["stop_reason"] = "answer"
        elif generation.finish_reason == "context_overflow":
            update["stop_reason"] = "context_overflow"
        elif final:
            update["stop_reason"] = "turn_budget"
        elif action.kind == "invalid":
            update["segments"].append(env_segment(INVALID_ACTION_TEXT))
        return update

    def route(state: RagR1State):
        action = state["action"]
        if state.get("stop_reason"):
            return "finish"
        if action["kind"] == "search":
            return [
                Send("retrieve", RetrieveTask(query=q, index=i, turn=state["turns"] + 1))
                for i, q in enumerate(action["queries"])
            ]
        return "think"

    def retrieve(task: RetrieveTask, config: RunnableConfig) -> dict:
        writer = get_stream_writer()
        writer({"event": "search", "turn": task.get("turn"), "index": task["index"],
                "query": task["query"]})
        try:
            documents, error = retrieve_one(task["query"], config), None
        except RetrievalError as exc:
            if settings.on_retrieval_error == "raise":
                raise
            documents, error = [], str(exc)
        result = RetrievalResult(
            index=task["index"], query=task["query"], documents=documents, error=error
        )
        return {"results": [result]}

    def observe(state: RagR1State) -> dict:
        results = sorted(state["results"], key=lambda r: r["index"])
        writer = get_stream_writer()
        for r in results:
            titles = [d.metadata.get("title") for d in r["documents"]]
            writer({"event": "results", "turn": state["turns"] + 1, "query": r["query"],
                    "titles": titles, "error": r["error"]})
        queries = [r["query"] for r in results]
        contents = [[document_contents(d) for d in r["documents"]] for r in results]
        information = render_information(
            queries, contents, settings.mode, settings.doc_max_tokens, policy.truncate
        )
        return {
            "segments": [env_segment(information)],
            "turns": state["turns"] + 1,
            "retrievals": [results],
            "results": Replace(),
        }

    def finish(state: RagR1State) -> dict:
        answer = state.get("answer")
        content = answer if answer is not None else "I could not find an answer."
        return {"messages": [AIMessage(content, name=name)]}

    builder = StateGraph(RagR1State)
    builder.add_node("prepare", prepare)
    builder.add_node("think", think)
    builder.add_node("retrieve", retrieve)
    builder.add_node("observe", observe)
    builder.add_node("finish", finish)
    builder.add_edge(START, "prepare")
    builder.add_conditional_edges("prepare", start_route, ["retrieve", "think"])
    builder.add_conditional_edges("think", route, ["retrieve", "think", "finish"])
    builder.add_edge("retrieve", "observe")
    builder.add_edge("observe", "think")
    builder.add_edge("finish", END)
    graph = builder.compile(checkpointer=checkpointer, name=name)
    return graph.with_config(recursion_limit=recursion_limit(settings))


def recursion_limit(config: RagR1Config) -> int:
    """Supersteps one episode can need: prepare, 3 per search turn, the final turn, finish."""
    return max(25, 3 * (config.max_turns + 1) + 5)


def episode_result(state: RagR1State) -> dict[str, Any]:
    """The public result of an episode, read from its final state."""
    segments: Sequence[Segment] = state.get("segments") or []
    retrievals = state.get("retrievals") or []
    return {
        "question": state.get("question"),
        "answer": state.get("answer"),
        "turns": state.get("turns", 0),
        "steps": state.get("steps", 0),
        "invalid_turns": state.get("invalid_turns", 0),
        "queries": [[r["query"] for r in turn] for turn in retrievals],
        "documents": [d for turn in retrievals for r in turn for d in r["documents"]],
        "retrievals": list(retrievals),
        "trace": transcript_text(segments),
        "segments": list(segments),
        "stop_reason": state.get("stop_reason"),
        "messages": list(state.get("messages") or []),
    }
