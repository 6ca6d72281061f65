"""The agent as LangChain building blocks: a retriever, a tool, a node for any parent graph.

``RagR1Agent.as_retriever()``, ``.as_tool()`` and ``.as_node()`` build these; each runs
one episode per call and passes the caller's config (callbacks, tags) to the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.results import document_key

if TYPE_CHECKING:
    from langchain_ragr1.agent import RagR1Agent

NO_ANSWER = "No answer was found in the knowledge base."
TOOL_NAME = "ragr1_search"
TOOL_DESCRIPTION = (
    "Answers a factual question from the knowledge base. It reasons, searches with several "
    "queries at once (over several rounds when needed) and returns a short answer followed "
    "by the titles of the passages it read. Pass one self-contained question."
)


def gathered_documents(result: dict, k: int | None = None) -> list[Document]:
    """The distinct documents of an episode, in retrieval order, each tagged with the episode.

    Metadata gains ``ragr1_answer`` (str or None), ``ragr1_queries`` (one list per turn) and
    ``ragr1_query`` (the query that found the document); the input documents are not changed.
    """
    documents: list[Document] = []
    seen: set[tuple[str, str]] = set()
    for turn in result["retrievals"]:
        for retrieval in turn:
            for doc in retrieval["documents"]:
                key = document_key(doc)
                if key in seen:
                    continue
                seen.add(key)
                metadata = {
                    **doc.metadata,
                    "ragr1_answer": result["answer"],
                    "ragr1_queries": result["queries"],
                    "ragr1_query": retrieval["query"],
                }
                documents.append(Document(doc.page_content, id=doc.id, metadata=metadata))
    return documents if k is None else documents[:k]


class RagR1Retriever(BaseRetriever):
    """The documents that a RAG-R1 episode gathered for the query (at most ``k``).

    Unlike a plain retriever it lets the model decide what to search, over several turns;
    the answer and the queries travel in each document's metadata. ``invoke(query, k=2)``
    overrides ``k`` for one call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    agent: Runnable = Field(description="The RagR1Agent that runs the episodes.")
    k: int = Field(default=3, ge=1, description="Documents returned at most.")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        result = self.agent.invoke(query, {"callbacks": run_manager.get_child()})
        return gathered_documents(result, k or self.k)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        result = await self.agent.ainvoke(query, {"callbacks": run_manager.get_child()})
        return gathered_documents(result, k or self.k)


class RagR1ToolInput(BaseModel):
    """Arguments of the RAG-R1 tool."""

    question: str = Field(description="A self-contained factual question to answer.")


def tool_content(result: dict) -> str:
    """What the calling model reads: the answer and the titles of the passages read."""
    answer = result["answer"] if result["answer"] is not None else NO_ANSWER
    titles = []
    for doc in result["documents"]:
        title = doc.metadata.get("title")
        if title and title not in titles:
            titles.append(title)
    return f"{answer}\nSources: {'; '.join(titles)}" if titles else answer


def make_tool(
    agent: RagR1Agent,
    *,
    name: str = TOOL_NAME,
    description: str = TOOL_DESCRIPTION,
    args_schema: type[BaseModel] | None = None,
) -> BaseTool:
    """A tool whose content is :func:`tool_content` and whose artifact is the result dict."""

    def run(question: str, config: RunnableConfig, **_: Any) -> tuple[str, dict]:
        result = agent.invoke(question, config)
        return tool_content(result), result

    async def arun(question: str, config: RunnableConfig, **_: Any) -> tuple[str, dict]:
        result = await agent.ainvoke(question, config)
        return tool_content(result), result

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description,
        args_schema=args_schema or RagR1ToolInput,
        response_format="content_and_artifact",
    )


def make_node(
    agent: RagR1Agent,
    *,
    input_key: str = "question",
    output_key: str = "answer",
    documents_key: str | None = None,
    name: str = "ragr1",
) -> RunnableLambda:
    """A node for a parent graph whose state has no ``messages``.

    It reads the question from ``state[input_key]`` and writes the answer (str or None) to
    ``output_key`` and, if ``documents_key`` is given, the documents gathered to it.
    """

    def question_of(state: Any) -> str:
        value = state.get(input_key) if isinstance(state, dict) else getattr(state, input_key, None)
        if not isinstance(value, str):
            raise ConfigError(
                f"The {name} node reads the question from state[{input_key!r}], which is "
                f"{type(value).__name__}; pass as_node(input_key=...) naming a str key."
            )
        return value

    def update(result: dict) -> dict:
        out = {output_key: result["answer"]}
        if documents_key:
            out[documents_key] = gathered_documents(result)
        return out

    def node(state: Any, config: RunnableConfig) -> dict:
        return update(agent.invoke(question_of(state), config))

    async def anode(state: Any, config: RunnableConfig) -> dict:
        return update(await agent.ainvoke(question_of(state), config))

    return RunnableLambda(node, afunc=anode, name=name)
