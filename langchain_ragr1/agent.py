"""``RagR1Agent``: the RAG-R1 graph as a LangChain ``Runnable``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, AsyncIterator, Iterator, Mapping, Union

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool
from langgraph.types import Command, GraphOutput
from pydantic import BaseModel

from langchain_ragr1.config import CONFIG_FIELDS, RagR1Config, settings_for
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.graph import build_graph, episode_result, recursion_limit
from langchain_ragr1.integrations import (
    TOOL_DESCRIPTION,
    TOOL_NAME,
    RagR1Retriever,
    make_node,
    make_tool,
)
from langchain_ragr1.policies.base import Policy
from langchain_ragr1.policies.langchain import LangChainPolicy
from langchain_ragr1.retrieval import own_k
from langchain_ragr1.schemas import AGENT_INPUT, AGENT_OUTPUT

#: A question, a dict with ``question`` or ``messages``, or ``None`` (resume a checkpointed thread) or
#: a LangGraph ``Command`` (e.g. ``Command(resume=...)``), which go to the graph as they are.
AgentInput = Union[str, Mapping[str, Any], Command, None]


def as_policy(llm: Policy | BaseLanguageModel | Runnable) -> Policy:
    """Our policies pass through; a LangChain LLM or chat model, or a Runnable around one
    (``.with_retry()``, ``.with_fallbacks(...)``, ``.bind(...)``), is wrapped."""
    return llm if isinstance(llm, Policy) else LangChainPolicy(llm)


def _graph_input(value: AgentInput) -> dict[str, Any] | Command | None:
    # The question travels as the input's human message too: the graph then answers it
    # without writing it back, so a "messages" stream does not start by echoing it.
    if value is None or isinstance(value, Command):  # resume the thread in config (a checkpointer's)
        return value
    if isinstance(value, str):
        return {"question": value, "messages": [HumanMessage(value)]}
    if isinstance(value, Mapping) and "messages" in value:
        return dict(value)
    if isinstance(value, Mapping) and isinstance(value.get("question"), str):
        return {**value, "messages": [HumanMessage(value["question"])]}
    if isinstance(value, Mapping) and "question" in value:
        return dict(value)
    raise ConfigError(
        f"RagR1Agent.invoke takes a question string, a dict with 'question' (or 'messages'), or None "
        f"(or a Command) to resume a checkpointed thread; got {type(value).__name__}."
    )


def _state(output: Any) -> Mapping[str, Any]:
    """The final state, whether the graph returned it plainly or as ``version="v2"``'s ``GraphOutput``."""
    return output.value if isinstance(output, GraphOutput) else output


def _join(left: AgentInput, right: AgentInput) -> AgentInput:
    """Join two streamed input chunks (strings concatenate, dicts merge)."""
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return {**left, **right}
    return left + right  # type: ignore[operator]


class RagR1Agent(Runnable[AgentInput, dict]):
    """Answers questions by reasoning, searching with several queries at once, and answering.

    Example:
        .. code-block:: python

            agent = RagR1Agent(llm=chat_model, retriever=vectorstore.as_retriever(),
                               mode="multi", k=3, max_turns=4)
            result = agent.invoke("Who was born first, Marie Curie or Albert Einstein?")
            result["answer"], result["turns"], result["queries"], result["documents"]

    ``llm`` is any LangChain LLM or chat model (or a Runnable around one: ``.with_retry()``,
    ``.with_fallbacks([...])``, ``.bind(...)``), or a token-level policy such as
    :class:`~langchain_ragr1.policies.TransformersPolicy`; ``retriever`` is any LangChain
    retriever. ``invoke`` returns a dict with ``answer`` (str or None), ``turns`` (retrieval
    turns), ``queries`` (one list per turn), ``documents``, ``trace`` (the transcript),
    ``segments`` (with token ids and the policy mask where the policy gives them) and more.
    ``batch``/``abatch`` run episodes concurrently; a token-level policy batches their
    generation. ``stream``/``astream`` yield the graph's LangGraph stream parts (see
    ``docs/langchain.md``); ``as_retriever``, ``as_tool`` and ``as_node`` plug the agent
    into LangChain chains, tool-calling models and parent graphs.
    """

    def __init__(
        self,
        llm: Policy | BaseLanguageModel | Runnable,
        retriever: BaseRetriever,
        config: RagR1Config | None = None,
        *,
        checkpointer: Any = None,
        **settings: Any,
    ) -> None:
        """``config`` (a :class:`RagR1Config`, default ``RagR1Config()``) with ``settings`` (its
        field names: ``mode``, ``k``, ``max_turns``, ``max_queries``, ``doc_max_tokens``,
        ``retrieval_timeout_s``, ``retrieval_retries``, ``on_retrieval_error``, ``initial_search``)
        applied on top with ``dataclasses.replace``, validated once.

        ``k`` (passages per query): the agent's ``k`` when given (``k=...``, or any ``config``: a
        :class:`RagR1Config` is taken whole), else the retriever's own (``as_retriever(search_kwargs={"k": 1})``,
        ``BM25Retriever(..., k=1)``), else 3. A call's ``configurable``/``context`` ``k`` wins over both."""
        explicit_k = config is not None or "k" in settings
        config = RagR1Config() if config is None else config
        if not isinstance(config, RagR1Config):
            raise ConfigError(f"config must be a RagR1Config, got {type(config).__name__}: pass settings as "
                              f"keywords (mode=..., k=...) or RagR1Config(...).")
        unknown = sorted(set(settings) - set(CONFIG_FIELDS))
        if unknown:
            raise ConfigError(f"RagR1Agent got unknown setting(s) {', '.join(map(repr, unknown))}: use "
                              f"{', '.join(CONFIG_FIELDS)} (or checkpointer).")
        retriever_k = own_k(retriever)
        if retriever_k is not None and not explicit_k:
            settings["k"] = retriever_k  # the retriever's own k wins over the agent's default
        self.config = replace(config, **settings) if settings else config
        self.policy = as_policy(llm)
        self.retriever = retriever
        self.graph = build_graph(self.policy, retriever, self.config, checkpointer=checkpointer)

    @classmethod
    def from_default(cls, **kwargs: Any) -> "RagR1Agent":
        """The bundled offline default: SmolLM2-135M-Instruct (with the shipped SFT adapter of the
        agent's ``mode``: multi-query by default, single-query for ``mode="single"``, which uses the
        multi-query adapter while the package ships no single-query one) over the Wikipedia
        summaries, with Chroma.

        Converts the model and builds the Chroma index on first use (cached afterwards).
        Keyword arguments: those of :func:`langchain_ragr1.defaults.default_components`
        (``model_path``, ``retriever``, ``store``, ``corpus``, ``url``, ``max_new_tokens``,
        ``temperature``, ``show_progress``, ``backend``) and the agent's settings (``mode``,
        ``k``, ...); every one is checked before the model loads. ``temperature`` is 0 (greedy)
        unless given, as in ``ragr1 ask`` and the README's numbers.
        """
        from langchain_ragr1.defaults import default_components
        from langchain_ragr1.timings import phase

        policy, retriever, settings = default_components(**kwargs)
        with phase("graph build"):
            return cls(policy, retriever, **settings)

    def _call_config(self, config: RunnableConfig | None, context: Any = None) -> RunnableConfig | None:
        """``config`` with a recursion limit that fits a per-run ``max_turns`` (configurable or context)."""
        configurable = (config or {}).get("configurable") or {}
        given = "max_turns" in configurable or (isinstance(context, Mapping) and "max_turns" in context)
        if not given or "recursion_limit" in (config or {}):
            return config
        settings = settings_for(self.config, config, context)
        return {**(config or {}), "recursion_limit": recursion_limit(settings)}

    def invoke(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict:
        """Run one episode and return its result dict.

        ``config["configurable"]`` may override ``mode``, ``k``, ``max_turns``,
        ``max_queries``, ``doc_max_tokens``, ``on_retrieval_error`` and ``initial_search``
        for this call; ``version="v2"`` is accepted (the result is the same dict). With a
        checkpointer, ``invoke(None, {"configurable": {"thread_id": ...}})`` resumes that thread
        from its last checkpoint (an interrupted or failed episode goes on where it stopped).
        """
        config = self._call_config(config, kwargs.get("context"))
        output = self.graph.invoke(_graph_input(input), config, **kwargs)
        return episode_result(_state(output))

    async def ainvoke(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict:
        """Async :meth:`invoke`: the policy's and the retriever's async paths are used."""
        config = self._call_config(config, kwargs.get("context"))
        output = await self.graph.ainvoke(_graph_input(input), config, **kwargs)
        return episode_result(_state(output))

    def stream(
        self,
        input: AgentInput,
        config: RunnableConfig | None = None,
        *,
        stream_mode: Any = "updates",
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Run one episode, yielding what ``self.graph.stream`` yields for ``stream_mode``.

        ``"updates"`` (node by node), ``"values"``, ``"messages"`` (tokens of a LangChain
        chat model in ``think``), ``"custom"`` (``turn``/``search``/``results`` events) or a
        list of modes; other keyword arguments (``subgraphs``, ...) go to the graph.
        """
        yield from self.graph.stream(
            _graph_input(input), self._call_config(config, kwargs.get("context")), stream_mode=stream_mode, **kwargs
        )

    async def astream(
        self,
        input: AgentInput,
        config: RunnableConfig | None = None,
        *,
        stream_mode: Any = "updates",
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        async for part in self.graph.astream(
            _graph_input(input), self._call_config(config, kwargs.get("context")), stream_mode=stream_mode, **kwargs
        ):
            yield part

    async def astream_events(  # type: ignore[override]  # LangChain's overloads add v3 (an awaitable); ours streams
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """LangChain's event stream of one episode: the graph's node, LLM and retriever
        events inside a root run whose output is what :meth:`invoke` returns."""
        root = RunnableLambda(self.invoke, afunc=self.ainvoke, name=self.get_name())
        async for event in root.astream_events(input, config, **kwargs):
            yield event

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """A question string, or ``{"question": str}`` / ``{"messages": [...]}`` (typed JSON schema)."""
        return AGENT_INPUT

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The result dict: ``answer``, ``turns``, ``queries``, ``documents``, ... (:class:`RagR1Result`)."""
        return AGENT_OUTPUT

    def get_graph(self, config: RunnableConfig | None = None) -> Any:
        """The graph's own drawable structure (prepare, think, retrieve, observe, finish)."""
        return self.graph.get_graph(config)

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return super().get_name(suffix, name=name or "RagR1Agent")

    def transform(
        self, input: Iterator[AgentInput], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict]:
        """Inside a streamed chain the agent joins its input chunks and yields one result dict."""
        final = None
        for chunk in input:
            final = chunk if final is None else _join(final, chunk)
        if final is not None:
            yield self.invoke(final, config, **kwargs)

    async def atransform(
        self,
        input: AsyncIterator[AgentInput],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[dict]:
        """Async :meth:`transform`."""
        final = None
        async for chunk in input:
            final = chunk if final is None else _join(final, chunk)
        if final is not None:
            yield await self.ainvoke(final, config, **kwargs)

    def as_retriever(self, k: int = 3) -> RagR1Retriever:
        """A LangChain retriever returning up to ``k`` documents this agent gathered per query.

        Each document's metadata carries ``ragr1_answer``, ``ragr1_queries`` and
        ``ragr1_query``; ``retriever.invoke(query, k=5)`` overrides ``k`` for one call.
        """
        return RagR1Retriever(agent=self, k=k)

    def as_tool(
        self,
        args_schema: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """A tool ``name(question: str)`` for tool-calling models and LangGraph's ``ToolNode``.

        Same signature as :meth:`Runnable.as_tool`. The tool takes one argument, ``question``:
        ``args_schema`` may be a pydantic model with a ``question`` string field (extra fields
        are ignored), ``arg_types`` must be ``{"question": str}``. ``name`` defaults to
        ``ragr1_search``. Its content is the answer and the titles of the passages read; its
        artifact is the full result dict.
        """
        if arg_types is not None and dict(arg_types) != {"question": str}:
            raise ConfigError(f"arg_types={arg_types!r}: the RAG-R1 tool takes exactly {{'question': str}}.")
        if args_schema is not None and "question" not in getattr(args_schema, "model_fields", {}):
            raise ConfigError(
                f"args_schema {getattr(args_schema, '__name__', args_schema)!r} has no 'question' field: "
                "the RAG-R1 tool passes one question string to the agent."
            )
        return make_tool(
            self, name=name or TOOL_NAME, description=description or TOOL_DESCRIPTION,
            args_schema=args_schema,
        )

    def as_node(
        self,
        input_key: str = "question",
        output_key: str = "answer",
        *,
        documents_key: str | None = None,
        name: str = "ragr1",
    ) -> RunnableLambda:
        """A node for parent graphs without ``messages``: ``state[input_key]`` -> ``output_key``.

        With ``documents_key`` it also writes the documents gathered. (Parents whose state
        has ``messages`` can add ``self.graph`` itself as a node.)
        """
        return make_node(
            self, input_key=input_key, output_key=output_key, documents_key=documents_key,
            name=name,
        )


def default_agent(**kwargs: Any) -> RagR1Agent:
    """:meth:`RagR1Agent.from_default` as a function (the bundled offline default agent)."""
    return RagR1Agent.from_default(**kwargs)
