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
import logging
from typing import Annotated, Any, Mapping, Sequence

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.outputs import Generation as LCGeneration
from langchain_core.outputs import LLMResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send
from typing_extensions import TypedDict

from langchain_ragr1.config import RagR1Config, RagR1Context, check_configurable, run_context, settings_for
from langchain_ragr1.corpus import document_contents
from langchain_ragr1.errors import ConfigError, RetrievalError
from langchain_ragr1.policies.base import REPETITION, Generation, Policy, cap_generation, cut_generation
from langchain_ragr1.protocol import (
    INVALID_ACTION_TEXT,
    STOP_STRINGS,
    Action,
    information_block,
    make_prompt,
    normalize_question,
    parse_action,
    reasoning,
    render_documents,
)
from langchain_ragr1.results import distinct_documents
from langchain_ragr1.retrieval import RetrievalRunner
from langchain_ragr1.transcript import Segment, make_segment, transcript_text

logger = logging.getLogger(__name__)

#: Floor of the cap on the characters of one model turn that the graph keeps and parses:
#: ``max(MAX_TURN_CHARS, CHARS_PER_TOKEN_CAP * policy.max_new_tokens)``. A model that honours
#: its token budget never reaches it; an LLM without a token cap that loops on a tag does.
MAX_TURN_CHARS = 100_000
#: Characters per new token allowed before a turn counts as runaway (~8 is typical).
CHARS_PER_TOKEN_CAP = 32


def turn_char_limit(policy: Policy) -> int:
    """Characters of one turn of ``policy`` that the graph keeps; the rest is cut."""
    budget = getattr(policy, "max_new_tokens", None)
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
        return max(MAX_TURN_CHARS, CHARS_PER_TOKEN_CAP * budget)
    return MAX_TURN_CHARS


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


class RagR1Input(TypedDict, total=False):
    """What starts an episode (the graph's input schema): the ``question``, or ``messages`` whose
    last human message is the question (as in a parent graph or a chat UI)."""

    question: str
    messages: Annotated[list[AnyMessage], add_messages]


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
    if messages and not state.get("question"):
        raise ConfigError(
            f"The RAG-R1 graph answers the latest human message, but the last message is "
            f"{type(messages[-1]).__name__}: add a HumanMessage with the question (or pass "
            f"'question' in the input) before this node."
        )
    return state.get("question") or "", False


class RagR1Nodes:
    """The nodes of the RAG-R1 graph over one policy and retriever, each a method that takes the
    state (or a ``Send`` payload) and the call's ``RunnableConfig``; :func:`build_graph` wires them.

    ``defaults`` holds the settings; a call may override the fields in
    :data:`~langchain_ragr1.config.CONFIGURABLE_FIELDS` through ``config["configurable"]``.
    """

    def __init__(self, policy: Policy, retriever: BaseRetriever, defaults: RagR1Config, *, name: str = "ragr1"):
        self.policy = policy
        self.defaults = defaults
        self.name = name
        self.retrieve_one = RetrievalRunner(
            retriever, k=defaults.k, timeout_s=defaults.retrieval_timeout_s, retries=defaults.retrieval_retries,
        )
        # Every policy gets the node's config, so callbacks (``stream_mode="messages"``, tracing,
        # tags) reach a chat model even when it runs outside this thread's context; the node
        # reports the turns of the others (token-level policies) as LLM runs itself.
        self.report_llm_run = not getattr(policy, "reports_own_runs", False)
        _check_policy_interface(policy)
        self.turn_limit = turn_char_limit(policy)
        self.adapter_checked: set[str] = set()

    def check_adapter(self, mode: str) -> None:
        """Warn once per mode when the policy is a shipped default (``from_default``, ``--model
        default``) whose adapter is not the one shipped for this run's ``mode`` (a per-run
        ``configurable``/``context`` mode): the run goes on, on the adapter the policy carries."""
        adapter = getattr(self.policy, "default_adapter", None)  # duck-typed policies may lack it
        if adapter is None or mode in self.adapter_checked:
            return
        self.adapter_checked.add(mode)
        from langchain_ragr1.models import default_adapter_dir

        own = default_adapter_dir(mode)
        if own != adapter:
            logger.warning("This run's mode=%r has its own shipped adapter (%s), but this agent's model carries %s: "
                           "the run uses the model it has. For %s-query's trained policy build the agent with "
                           "RagR1Agent.from_default(mode=%r) (ragr1: --mode %s).", mode, own.name, adapter.name,
                           mode, mode, mode)

    def settings(self, config: RunnableConfig | None) -> RagR1Config:
        """The episode's settings: the defaults with the run's ``configurable`` and ``context`` overrides."""
        return settings_for(self.defaults, config, run_context(config))

    def env_segment(self, text: str, **fields: Any) -> Segment:
        return {**make_segment("env", text, self.policy.encode(text)), **fields}  # type: ignore[typeddict-item]

    # --- start ------------------------------------------------------------------------------

    def prepare(self, state: RagR1State, config: RunnableConfig) -> dict:
        """Start an episode: the question (from ``question`` or the latest human message) and its prompt."""
        check_configurable((config or {}).get("configurable") or {})
        settings = self.settings(config)
        self.check_adapter(settings.mode)
        raw_question, from_messages = _latest_question(state)
        question = normalize_question(raw_question)
        prompt = {**self.policy.render_prompt(make_prompt(question, settings.mode)), "question": question}
        update: dict[str, Any] = {
            "question": question,
            "segments": Replace([prompt]),
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

    def start_route(self, state: RagR1State, config: RunnableConfig) -> str | list[Send]:
        if self.settings(config).initial_search:  # naive RAG: the question is the first query
            return [Send("retrieve", RetrieveTask(query=state["question"], index=0, turn=1))]
        return "think"

    # --- think: one model turn, parsed once -------------------------------------------------

    def cut(self, generation: Generation) -> Generation:
        """Cut a turn after its first stop string (whatever the backend did with them), then bound
        what is kept and parsed (a text-level LLM with no token cap can loop on a tag for megabytes)."""
        generation = cut_generation(generation, STOP_STRINGS, self.policy.decode)
        return cap_generation(generation, self.turn_limit, self.policy.decode)

    def think(self, state: RagR1State, config: RunnableConfig) -> dict:
        run = _llm_run_start(self.policy, state["segments"], config) if self.report_llm_run else None
        try:
            generation = self.cut(self.policy.generate(state["segments"], stop=STOP_STRINGS, config=config))
        except BaseException as exc:
            if run is not None:
                run.on_llm_error(exc)
            raise
        if run is not None:
            run.on_llm_end(_llm_result(generation, state["segments"]))
        return self.after_turn(state, generation, self.settings(config))

    async def athink(self, state: RagR1State, config: RunnableConfig) -> dict:
        run = await _allm_run_start(self.policy, state["segments"], config) if self.report_llm_run else None
        try:
            generation = self.cut(await self.policy.agenerate(state["segments"], stop=STOP_STRINGS, config=config))
        except BaseException as exc:
            if run is not None:
                await run.on_llm_error(exc)
            raise
        if run is not None:
            await run.on_llm_end(_llm_result(generation, state["segments"]))
        return self.after_turn(state, generation, self.settings(config))

    def after_turn(self, state: RagR1State, generation: Generation, settings: RagR1Config) -> dict:
        """The state update of one model turn: its segment with the parsed action, counts, the stop."""
        final = state["steps"] >= settings.max_turns
        action = _parse_turn(generation, settings)
        parsed = {**action.to_dict(), "final": final}
        get_stream_writer()({"event": "turn", "step": state["steps"] + 1, "text": generation.text,
                             "action": action.kind, "queries": parsed["queries"], "answer": action.answer,
                             "thoughts": parsed["thoughts"], "final": final})
        # the segment keeps what was parsed: consumers read fields, never re-parse the text
        segment = {**make_segment("policy", generation.text, generation.token_ids, generation.logprobs),
                   "action": parsed, "finish_reason": generation.finish_reason}
        update: dict[str, Any] = {"segments": [segment], "steps": state["steps"] + 1, "action": dict(parsed)}
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
            update["segments"].append(self.env_segment(INVALID_ACTION_TEXT))
        return update

    def route(self, state: RagR1State) -> str | list[Send]:
        """After a turn: finish, fan a search out as one ``Send`` per query, or think again."""
        action = state["action"] or {}
        if state.get("stop_reason"):
            return "finish"
        if action.get("kind") == "search":
            return [Send("retrieve", RetrieveTask(query=q, index=i, turn=state["turns"] + 1))
                    for i, q in enumerate(action["queries"])]
        return "think"

    # --- retrieve: one query, in parallel with the turn's others ----------------------------

    def retrieve(self, task: RetrieveTask, config: RunnableConfig) -> dict:
        settings = self.settings(config)
        _search_event(task)
        try:
            documents, error = self.retrieve_one(task["query"], config, k=settings.k), None
        except RetrievalError as exc:
            if settings.on_retrieval_error == "raise":
                raise
            documents, error = [], str(exc)
        return _retrieved(task, documents, error)

    async def aretrieve(self, task: RetrieveTask, config: RunnableConfig) -> dict:
        settings = self.settings(config)
        _search_event(task)
        try:
            documents, error = await self.retrieve_one.acall(task["query"], config, k=settings.k), None
        except RetrievalError as exc:
            if settings.on_retrieval_error == "raise":
                raise
            documents, error = [], str(exc)
        return _retrieved(task, documents, error)

    # --- observe: the turn's results joined in query order ----------------------------------

    def observe(self, state: RagR1State, config: RunnableConfig) -> dict:
        settings = self.settings(config)
        results = sorted(state["results"], key=lambda r: r["index"])
        turn = state["turns"] + 1
        writer = get_stream_writer()
        for r in results:
            writer({"event": "results", "turn": turn, "query": r["query"],
                    "titles": [d.metadata.get("title") for d in r["documents"]], "error": r["error"]})
        queries = [r["query"] for r in results]
        shown = [render_documents([document_contents(d) for d in r["documents"]], settings.doc_max_tokens,
                                  self.policy.truncate) for r in results]
        information = information_block(queries, shown, settings.mode)
        # the segment keeps what it shows: the retrieval turn, its queries and each query's passages
        segment = self.env_segment(information, retrieval={"turn": turn, "queries": queries, "documents": shown})
        return {"segments": [segment], "turns": turn, "retrievals": [results], "results": Replace()}

    def finish(self, state: RagR1State) -> dict:
        answer = state.get("answer")
        content = answer if answer is not None else "I could not find an answer."
        return {"messages": [AIMessage(content, name=self.name)]}


def _check_policy_interface(policy: Policy) -> None:
    """A policy written for the interface before ``config`` joined ``generate``'s signature fails
    here, with what to change, instead of with a TypeError on its first turn."""
    for method in ("generate", "agenerate"):
        parameters = inspect.signature(getattr(policy, method)).parameters
        if "config" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            raise ConfigError(
                f"{type(policy).__name__}.{method} takes no 'config': the graph calls "
                f"{method}(segments, *, stop=..., config=...) with the node's RunnableConfig; add "
                f"'config: RunnableConfig | None = None' to its signature (a policy may ignore it).")


def _parse_turn(generation: Generation, settings: RagR1Config) -> Action:
    """The turn's action; a turn that was cut (runaway, stopped for repeating itself, or at the model's
    token limit) is invalid, not parsed: its open tag holds half an answer or half a query."""
    metadata = generation.metadata or {}
    cut_at = metadata.get("turn_cut_at_chars")
    if cut_at is not None:  # a runaway turn: not parsed, whatever its first part holds
        return Action("invalid", reason=(f"turn of {metadata.get('turn_chars')} characters, over the "
                                         f"{cut_at}-character cap of one turn: cut there and not parsed"),
                      thoughts=reasoning(generation.text))
    if generation.finish_reason == REPETITION:  # the policy's repetition stop: the turn looped
        stop = metadata.get("repeat_stop") or {}
        return Action("invalid", reason=(f"turn repeated a span of {stop.get('tokens')} tokens {stop.get('count')} "
                                         f"times (the repetition stop): stopped there and not parsed"),
                      thoughts=reasoning(generation.text))
    if generation.finish_reason == "length":  # the token limit came before any stop string
        cause = metadata.get("truncated_by") or "finish_reason='length'"
        return Action("invalid", reason=f"turn cut by the model's token limit ({cause}) before it closed "
                                        f"its tag: not parsed", thoughts=reasoning(generation.text))
    return parse_action(generation.text, settings.mode, settings.max_queries)


def _search_event(task: RetrieveTask) -> None:
    get_stream_writer()({"event": "search", "turn": task.get("turn"), "index": task["index"], "query": task["query"]})


def _retrieved(task: RetrieveTask, documents: list[Document], error: str | None) -> dict:
    return {"results": [RetrievalResult(index=task["index"], query=task["query"], documents=documents, error=error)]}


def build_graph(
    policy: Policy,
    retriever: BaseRetriever,
    config: RagR1Config | None = None,
    *,
    checkpointer: Any = None,
    name: str = "ragr1",
):
    """Compile the RAG-R1 state machine for ``policy`` and ``retriever`` (the nodes of
    :class:`RagR1Nodes`).

    ``config`` holds the defaults; a call may override the fields in
    :data:`~langchain_ragr1.config.CONFIGURABLE_FIELDS` through ``config["configurable"]``.
    Every node has a sync and an async path: ``ainvoke``/``astream`` use the policy's
    ``agenerate`` and the retriever's ``ainvoke``.
    """
    defaults = config or RagR1Config()
    nodes = RagR1Nodes(policy, retriever, defaults, name=name)
    builder = StateGraph(RagR1State, context_schema=RagR1Context, input_schema=RagR1Input)
    builder.add_node("prepare", nodes.prepare)
    builder.add_node("think", RunnableLambda(nodes.think, afunc=nodes.athink, name="think"))
    builder.add_node("retrieve", RunnableLambda(nodes.retrieve, afunc=nodes.aretrieve, name="retrieve"))
    builder.add_node("observe", nodes.observe)
    builder.add_node("finish", nodes.finish)
    builder.add_edge(START, "prepare")
    builder.add_conditional_edges("prepare", nodes.start_route, ["retrieve", "think"])
    builder.add_conditional_edges("think", nodes.route, ["retrieve", "think", "finish"])
    builder.add_edge("retrieve", "observe")
    builder.add_edge("observe", "think")
    builder.add_edge("finish", END)
    graph = builder.compile(checkpointer=checkpointer, name=name)
    return graph.with_config(recursion_limit=recursion_limit(defaults))


def _llm_run_args(policy: Policy, segments: Sequence[Segment]) -> tuple[tuple, dict]:
    """What ``on_llm_start`` gets for a token-level policy's turn: its name, the transcript, settings."""
    name = type(policy).__name__
    params = {"max_new_tokens": getattr(policy, "max_new_tokens", None),
              "temperature": getattr(policy, "temperature", None)}
    return ({"name": name, "id": ["langchain_ragr1", name]}, [transcript_text(segments)]), {
        "name": name, "invocation_params": params}


def _llm_run_start(policy: Policy, segments: Sequence[Segment], config: RunnableConfig):
    """Open an LLM run for a token-level policy's turn, so callback handlers see it."""
    args, kwargs = _llm_run_args(policy, segments)
    runs = get_callback_manager_for_config(config).on_llm_start(*args, **kwargs)
    return runs[0] if runs else None


async def _allm_run_start(policy: Policy, segments: Sequence[Segment], config: RunnableConfig):
    args, kwargs = _llm_run_args(policy, segments)
    runs = await get_async_callback_manager_for_config(config).on_llm_start(*args, **kwargs)
    return runs[0] if runs else None


def _llm_result(generation: Generation, segments: Sequence[Segment]) -> LLMResult:
    """The turn as LangChain's ``LLMResult``, with token counts when the policy gives ids."""
    context = [s.get("token_ids") for s in segments]
    prompt_tokens = sum(len(ids) for ids in context if ids is not None) if all(
        ids is not None for ids in context) else None
    completion_tokens = len(generation.token_ids) if generation.token_ids is not None else None
    usage = {"completion_tokens": completion_tokens, "prompt_tokens": prompt_tokens}
    if completion_tokens is not None and prompt_tokens is not None:
        usage["total_tokens"] = prompt_tokens + completion_tokens
    return LLMResult(
        generations=[[LCGeneration(text=generation.text,
                                   generation_info={"finish_reason": generation.finish_reason})]],
        llm_output={"token_usage": {k: v for k, v in usage.items() if v is not None}},
    )


def recursion_limit(config: RagR1Config) -> int:
    """Supersteps one episode can need: prepare, 3 per search turn, the final turn, finish."""
    return max(25, 3 * (config.max_turns + 1) + 5)


def episode_result(state: Mapping[str, Any]) -> dict[str, Any]:
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
        "documents": distinct_documents(retrievals),  # each once, first-retrieved order
        "retrievals": list(retrievals),
        "trace": transcript_text(segments),
        "segments": list(segments),
        "stop_reason": state.get("stop_reason"),
        "messages": list(state.get("messages") or []),
    }
