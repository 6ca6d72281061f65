"""Typed JSON schemas of :class:`~langchain_ragr1.agent.RagR1Agent`: what ``invoke`` takes and
returns, for ``get_input_jsonschema()``/``get_output_jsonschema()``, LangServe-style servers and
tool builders. (The compiled graph's own schemas are its :class:`~langchain_ragr1.graph.RagR1Input`,
:class:`~langchain_ragr1.graph.RagR1State` and :class:`~langchain_ragr1.config.RagR1Context`.)"""

from __future__ import annotations

from typing import Annotated, Any, Union, get_type_hints

from langchain_core.documents import Document
from langchain_core.messages import AnyMessage
from pydantic import BaseModel, Field, RootModel, create_model
from typing_extensions import TypedDict

from langchain_ragr1.graph import RagR1Input, RetrievalResult
from langchain_ragr1.transcript import Segment


class RagR1Result(TypedDict):
    """What :meth:`RagR1Agent.invoke` returns (:func:`~langchain_ragr1.graph.episode_result`)."""

    question: Annotated[str | None, Field(description="the question as asked (normalised: stripped, ending in ?)")]
    answer: Annotated[str | None, Field(description="the answer; None when the episode ended without one "
                                                    "(see stop_reason)")]
    turns: Annotated[int, Field(description="retrieval turns")]
    steps: Annotated[int, Field(description="model turns")]
    invalid_turns: Annotated[int, Field(description="model turns that did not parse")]
    queries: Annotated[list[list[str]], Field(description="one list per retrieval turn")]
    documents: Annotated[list[Document], Field(description="each retrieved document once, in first-retrieved order")]
    retrievals: Annotated[list[list[RetrievalResult]],
                          Field(description="per turn, per query: the query, its documents, an error")]
    trace: Annotated[str, Field(description="the whole transcript as text")]
    segments: Annotated[list[Segment],
                        Field(description="the transcript's pieces, with token ids and the policy mask where given")]
    stop_reason: Annotated[str | None, Field(description="why it ended: answer, turn_budget, context_overflow, ...")]
    messages: Annotated[list[AnyMessage], Field(description="the question and the answer as chat messages")]


def model_of(name: str, typed_dict: Any) -> type[BaseModel]:
    """A pydantic model with the fields of ``typed_dict`` (required ones required), named ``name``."""
    required: frozenset[str] = getattr(typed_dict, "__required_keys__", frozenset())
    hints = get_type_hints(typed_dict, include_extras=True)
    fields: dict[str, Any] = {key: (hint, ... if key in required else None) for key, hint in hints.items()}
    return create_model(name, __doc__=typed_dict.__doc__, **fields)


_QUESTION = model_of("RagR1Question", RagR1Input)
#: The agent's input: a question string, or ``{"question": ...}`` / ``{"messages": [...]}``.
AGENT_INPUT: type[BaseModel] = create_model(
    "RagR1AgentInput", __base__=RootModel[Union[str, _QUESTION]],  # type: ignore[valid-type]
    __doc__="A question string, or a dict with 'question' or 'messages' (the last human message is asked).",
)
#: The agent's output: :class:`RagR1Result`.
AGENT_OUTPUT: type[BaseModel] = model_of("RagR1AgentOutput", RagR1Result)
