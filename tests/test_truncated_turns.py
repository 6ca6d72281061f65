"""A turn cut by the provider's token limit is never taken as final, whatever provider says so."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLLM
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation, LLMResult

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.policies.truncation import TRUNCATION_FIELDS, truncation
from langchain_ragr1.testing import MemoryRetriever

DOCS = [Document("Marie Curie won two Nobel prizes", metadata={"title": "Marie Curie"})]
FULL_ANSWER = "<answer> Marie Curie </answer>"


class ScriptedChat(BaseChatModel):
    """Replays AI messages (content and metadata as a provider's integration would set them)."""

    replies: list[AIMessage]
    max_tokens: int | None = None
    served: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        reply = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return ChatResult(generations=[ChatGeneration(message=reply)])


class ScriptedCompletions(BaseLLM):
    """A completion LLM (like VLLMOpenAI) whose generations carry ``generation_info``."""

    replies: list[tuple[str, dict]]
    served: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-completions"

    def _generate(self, prompts: list[str], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> LLMResult:
        text, info = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return LLMResult(generations=[[Generation(text=text, generation_info=info)]])


# What each provider's LangChain integration puts in response_metadata when max_tokens cut the turn.
PROVIDERS = {
    "openai": {"finish_reason": "length"},
    "openai-responses": {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
    "anthropic": {"stop_reason": "max_tokens", "stop_sequence": None},
    "ollama": {"done": True, "done_reason": "length"},
    "google-genai/vertex": {"finish_reason": "MAX_TOKENS", "safety_ratings": []},
    "bedrock-converse": {"stopReason": "max_tokens", "metrics": {"latencyMs": 9}},
    "bedrock-titan": {"completionReason": "LENGTH"},
    "mistral": {"finish_reason": "model_length"},
    "cohere": {"finish_reason": "MAX_TOKENS"},
}


def ask(chat: BaseChatModel | BaseLLM, retriever: MemoryRetriever | None = None, **kwargs: Any) -> dict:
    agent = RagR1Agent(chat, retriever or MemoryRetriever(documents=DOCS, calls=[]), **kwargs)
    return agent.invoke("Who won two Nobel prizes?")


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_half_answer_cut_by_the_token_limit_is_not_the_answer(provider):
    cut = AIMessage("<think>she won two</think> <answer> Marie Cu", response_metadata=PROVIDERS[provider])
    result = ask(ScriptedChat(replies=[cut, AIMessage(FULL_ANSWER)]))
    assert result["answer"] == "Marie Curie", result["trace"]
    assert result["invalid_turns"] == 1 and result["steps"] == 2
    action = result["segments"][1]["action"]
    assert action["kind"] == "invalid" and "cut by the model's token limit" in action["reason"]
    assert action["thoughts"] == ["she won two"]  # the turn's thoughts are kept, as for a runaway turn


@pytest.mark.parametrize("provider", ["anthropic", "ollama", "google-genai/vertex", "bedrock-converse"])
def test_a_half_query_cut_by_the_token_limit_is_not_searched(provider):
    retriever = MemoryRetriever(documents=DOCS, calls=[])
    cut = AIMessage("<search> Albert Ein", response_metadata=PROVIDERS[provider])
    result = ask(ScriptedChat(replies=[cut, AIMessage(FULL_ANSWER)]), retriever)
    assert retriever.calls == [] and result["queries"] == []
    assert result["answer"] == "Marie Curie"


def test_async_runs_see_the_cut_too():
    cut = AIMessage("<answer> Marie Cu", response_metadata=PROVIDERS["anthropic"])
    agent = RagR1Agent(ScriptedChat(replies=[cut, AIMessage(FULL_ANSWER)]), MemoryRetriever(documents=DOCS))
    result = asyncio.run(agent.ainvoke("Who won two Nobel prizes?"))
    assert result["answer"] == "Marie Curie" and result["invalid_turns"] == 1


def test_a_turn_the_model_ended_itself_still_gets_its_stripped_stop_tag_back():
    # Anthropic strips the stop sequence and says so; a model that ended its turn is not cut.
    for metadata in ({"stop_reason": "stop_sequence"}, {"stop_reason": "end_turn"}, {"finish_reason": "stop"}):
        result = ask(ScriptedChat(replies=[AIMessage("<answer> Marie Curie", response_metadata=metadata)]))
        assert result["answer"] == "Marie Curie" and result["invalid_turns"] == 0, metadata


def test_usage_metadata_at_the_models_cap_means_cut_when_no_stop_reason_is_reported():
    usage = {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48}
    cut = AIMessage("<answer> Marie Cu", usage_metadata=usage)
    result = ask(ScriptedChat(replies=[cut, AIMessage(FULL_ANSWER)], max_tokens=8))
    assert result["answer"] == "Marie Curie" and result["invalid_turns"] == 1
    assert "output_tokens=8 at the model's cap of 8" in result["segments"][1]["action"]["reason"]
    # under the cap, or with no cap to compare with: the model ended the turn itself
    assert ask(ScriptedChat(replies=[cut], max_tokens=9))["answer"] == "Marie Cu"
    assert ask(ScriptedChat(replies=[cut]))["answer"] == "Marie Cu"


def test_a_completion_llm_reports_its_cut_through_generation_info():
    llm = ScriptedCompletions(replies=[(" <answer> Marie Cu", {"finish_reason": "length"}),
                                       (" " + FULL_ANSWER, {"finish_reason": "stop"})])
    result = ask(llm)
    assert result["answer"] == "Marie Curie" and result["invalid_turns"] == 1
    assert asyncio.run(RagR1Agent(ScriptedCompletions(replies=llm.replies), MemoryRetriever(documents=DOCS))
                       .ainvoke("Who won two Nobel prizes?"))["answer"] == "Marie Curie"


def test_the_table_covers_every_provider_of_the_tests_and_reads_values_case_insensitively():
    assert all(truncation(metadata) for metadata in PROVIDERS.values())
    for ended in ({"finish_reason": "stop"}, {"stop_reason": "end_turn"}, {"done_reason": "stop"},
                  {"finish_reason": "STOP"}, {"stopReason": "stop_sequence"}, {}):
        assert truncation(ended) is None, ended
    assert truncation({"stop_reason": "MAX_TOKENS"}) == "stop_reason='MAX_TOKENS'"
    assert len({(key, value.casefold()) for key, value, _ in TRUNCATION_FIELDS}) == len(TRUNCATION_FIELDS)


def test_the_docs_table_lists_exactly_the_fields_of_the_code_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "langchain.md").read_text(encoding="utf-8")
    documented = set()
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.strip().startswith("| `") and len(cells) == 3:
            documented |= {(cells[0], value.strip().strip("`")) for value in cells[1].split(",")}
    assert documented == {(key, value) for key, value, _ in TRUNCATION_FIELDS}
