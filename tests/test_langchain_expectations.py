"""What a LangChain / LangGraph user expects of the agent: wrapped chat models, per-run settings through
``context=`` or ``configurable``, typed schemas, the retriever's own ``k``, distinct JSON-ready documents,
resuming through the agent, retrievers that return strings, and one error family."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from langchain_ragr1 import ConfigError, RagR1Agent
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document(f"{city} is a city number {i}", metadata={"title": city})
        for i, city in enumerate(["Paris", "Rome", "Oslo", "Lima"])]
SEARCH = "<think>Check.</think> <search> Paris, Rome </search>"
ANSWER = "<answer> Paris </answer>"


def chat(*turns: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(t) for t in turns]))


class FailingChat(GenericFakeChatModel):
    def _generate(self, *args, **kwargs):
        raise ConnectionError("provider down")


@pytest.mark.parametrize("wrap", [
    lambda m: m.with_retry(stop_after_attempt=2),
    lambda m: m.bind(temperature=0),
    lambda m: m.with_config(tags=["ragr1"]),
    lambda m: FailingChat(messages=iter([])).with_fallbacks([m]),
    lambda m: m.with_retry().with_fallbacks([m]),
], ids=["with_retry", "bind", "with_config", "with_fallbacks", "retry_then_fallbacks"])
def test_a_runnable_around_a_chat_model_is_accepted_and_gets_chat_messages(wrap):
    model = chat(SEARCH, ANSWER)
    result = RagR1Agent(wrap(model), MemoryRetriever(documents=DOCS), k=1).invoke("Capital?")
    assert result["answer"] == "Paris" and result["queries"] == [["Paris", "Rome"]]


class RecordingLLM(FakeListLLM):
    prompts: list = []

    def _call(self, prompt, stop=None, run_manager=None, **kwargs):
        self.prompts.append(prompt)
        return super()._call(prompt, stop, run_manager, **kwargs)


def test_a_runnable_around_a_text_llm_gets_the_transcript_string():
    llm = RecordingLLM(responses=[SEARCH, ANSWER], prompts=[])
    result = RagR1Agent(llm.with_retry().with_config(tags=["x"]), MemoryRetriever(documents=DOCS), k=1).invoke("Capital?")
    assert result["answer"] == "Paris"
    # the transcript as one string, not chat messages flattened into "Human: ..." lines
    assert "Capital?" in llm.prompts[0] and "Human:" not in llm.prompts[0]


def test_a_runnable_without_a_model_is_refused_naming_what_to_pass():
    with pytest.raises(ConfigError, match=r"with_retry.*got RunnableLambda"):
        RagR1Agent(RunnableLambda(lambda x: x), MemoryRetriever(documents=DOCS))
    with pytest.raises(ConfigError, match="both chat models and text LLMs"):
        RagR1Agent(chat(ANSWER).with_fallbacks([FakeListLLM(responses=[ANSWER])]), MemoryRetriever(documents=DOCS))


def test_an_empty_question_is_a_ragr1_error_exported_at_the_top():
    from langchain_ragr1 import ProtocolError, RagR1Error

    agent = RagR1Agent(ScriptedPolicy([ANSWER]), MemoryRetriever(documents=DOCS))
    with pytest.raises(RagR1Error, match="question is empty") as caught:
        agent.invoke("   ")
    assert isinstance(caught.value, ProtocolError) and isinstance(caught.value, ValueError)


def test_from_default_decodes_greedily_like_ragr1_ask(monkeypatch):
    import langchain_ragr1.defaults as defaults
    from langchain_ragr1 import cli

    seen = {}

    def fake_policy(model_path, **kwargs):
        seen.update(kwargs)
        return ScriptedPolicy([ANSWER])

    monkeypatch.setattr(defaults, "default_policy", fake_policy)
    RagR1Agent.from_default(retriever=MemoryRetriever(documents=DOCS))
    assert seen["sampling"].temperature == 0.0 and seen["sampling"].greedy
    assert cli._parser().parse_args(["ask", "Who?"]).temperature == seen["sampling"].temperature


def test_agent_invoke_none_resumes_a_checkpointed_thread():
    from langgraph.checkpoint.memory import InMemorySaver

    from langchain_ragr1 import RetrievalError

    policy = ScriptedPolicy([SEARCH, ANSWER])
    retriever = MemoryRetriever(documents=DOCS, fail_times=1)
    retriever.calls = []
    agent = RagR1Agent(policy, retriever, k=1, retrieval_retries=0, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    with pytest.raises(RetrievalError):
        agent.invoke("Capital?", config)
    result = agent.invoke(None, config)
    assert result["answer"] == "Paris" and result["queries"] == [["Paris", "Rome"]]
    assert len(policy.calls) == 2  # the first turn was not asked again


class StringRetriever(MemoryRetriever):
    def _get_relevant_documents(self, query, *, run_manager, k=None):
        return [d.page_content for d in super()._get_relevant_documents(query, run_manager=run_manager, k=k)]


def test_a_retriever_returning_plain_strings_works():
    agent = RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), StringRetriever(documents=DOCS), k=1)
    result = agent.invoke("Capital?")
    assert result["answer"] == "Paris"
    assert [d.page_content for d in result["documents"]] == ["Paris is a city number 0", "Rome is a city number 1"]
    assert "Paris is a city number 0" in result["trace"]


def test_documents_are_distinct_in_first_seen_order_and_episode_json_dumps():
    import json

    from langchain_ragr1 import episode_json

    docs = [Document("Paris is in France", id="p"), Document("Paris Texas is in the US", id="t"),
            Document("Rome is in Italy")]
    turns = ["<search> Paris France, Paris Texas </search>", "<search> Paris France, Rome Italy </search>", ANSWER]
    result = RagR1Agent(ScriptedPolicy(turns), MemoryRetriever(documents=docs), k=1).invoke("Where?")
    assert sum(len(hit["documents"]) for turn in result["retrievals"] for hit in turn) == 4
    assert [d.page_content for d in result["documents"]] == ["Paris is in France", "Paris Texas is in the US", "Rome is in Italy"]
    with pytest.raises(TypeError):
        json.dumps(result)
    data = json.loads(json.dumps(episode_json(result)))
    assert [Document(**d) for d in data["documents"]] == result["documents"]
    assert data["retrievals"][1][1]["documents"][0]["page_content"] == "Rome is in Italy"
    assert data["messages"][-1]["data"]["content"] == "Paris" and data["answer"] == "Paris"


def test_the_retrievers_own_k_wins_unless_the_agent_sets_k():
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore.from_documents(DOCS, DeterministicFakeEmbedding(size=8))
    retriever = store.as_retriever(search_kwargs={"k": 1})
    turns = [SEARCH, ANSWER]
    own = RagR1Agent(ScriptedPolicy(turns), retriever)
    assert own.config.k == 1
    assert [len(hit["documents"]) for hit in own.invoke("Capital?")["retrievals"][0]] == [1, 1]
    agent_k = RagR1Agent(ScriptedPolicy(turns), retriever, k=2)
    assert [len(hit["documents"]) for hit in agent_k.invoke("Capital?")["retrievals"][0]] == [2, 2]
    per_call = own.invoke("Capital?", {"configurable": {"k": 3}})
    assert [len(hit["documents"]) for hit in per_call["retrievals"][0]] == [3, 3]
    field_k = RagR1Agent(ScriptedPolicy(turns), MemoryRetriever(documents=DOCS, k=1))
    assert field_k.config.k == 1 and RagR1Agent(ScriptedPolicy(turns), MemoryRetriever(documents=DOCS)).config.k == 3
    from langchain_ragr1.config import RagR1Config

    whole = RagR1Agent(ScriptedPolicy(turns), retriever, RagR1Config(max_turns=2))  # a config is taken whole
    assert whole.config == RagR1Config(max_turns=2) and whole.config.k == 3


def per_query(result) -> list[int]:
    return [len(hit["documents"]) for hit in result["retrievals"][0]]


def context_agent(**kwargs) -> RagR1Agent:
    return RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), MemoryRetriever(documents=DOCS), k=1, **kwargs)


def test_per_run_settings_through_langgraph_context():
    import asyncio

    agent = context_agent()
    assert per_query(agent.invoke("Capital?", context={"k": 2})) == [2, 2]
    assert asyncio.run(agent.ainvoke("Capital?", context={"k": 3}))["retrievals"][0][0]["documents"].__len__() == 3
    state = agent.graph.invoke({"question": "Capital?"}, context={"max_queries": 1})
    assert [[r["query"] for r in turn] for turn in state["retrievals"]] == [["Paris"]]
    # configurable keeps working; where both give a key, the context wins
    assert per_query(agent.invoke("Capital?", {"configurable": {"k": 2}})) == [2, 2]
    assert per_query(agent.invoke("Capital?", {"configurable": {"k": 2}}, context={"k": 3})) == [3, 3]
    looping = RagR1Agent(ScriptedPolicy(["<search> Paris </search>"]), MemoryRetriever(documents=DOCS))
    assert looping.invoke("Capital?", context={"max_turns": 12})["turns"] == 12  # a recursion limit that fits


def test_bad_context_is_a_config_error_naming_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"context: k must be a positive integer"):
        context_agent().invoke("Capital?", context={"k": 0})
    with pytest.raises(ConfigError, match=r"'max_turn' \(did you mean 'max_turns'\?\): use doc_max_tokens, initial_search, k"):
        context_agent().invoke("Capital?", context={"max_turn": 2})


def test_context_schema_is_typed_for_studio_forms():
    from langchain_ragr1.config import CONFIGURABLE_FIELDS

    schema = context_agent().graph.get_context_jsonschema()
    assert tuple(schema["properties"]) == CONFIGURABLE_FIELDS
    assert schema["properties"]["mode"]["enum"] == ["multi", "single"]
    assert schema["properties"]["k"]["type"] == "integer" and schema["properties"]["k"]["minimum"] == 1
    assert schema["properties"]["initial_search"]["type"] == "boolean"


def test_a_misspelt_configurable_key_warns_naming_the_valid_keys():
    from langchain_ragr1.config import SettingWarning

    with pytest.warns(SettingWarning, match=r"\[.max_turn.\].*did you mean 'max_turns'\?.*mode, k, max_turns"):
        context_agent().invoke("Capital?", {"configurable": {"max_turn": 0}})
    with pytest.warns(SettingWarning, match=r"did you mean 'k'\?"):
        context_agent().invoke("Capital?", {"configurable": {"K": 2}})


def test_langgraph_and_other_runnables_configurable_keys_pass_quietly():
    import warnings

    from langgraph.checkpoint.memory import InMemorySaver

    agent = context_agent(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "model": "gpt-x", "user_id": "u1",
                               "langgraph_auth_user": None}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agent.invoke("Capital?", config)["answer"] == "Paris"


def test_an_agent_only_setting_per_run_is_refused():
    with pytest.raises(ConfigError, match=r'\["retrieval_timeout_s"\].*fixed when the agent is built'):
        context_agent().invoke("Capital?", {"configurable": {"retrieval_timeout_s": 1}})


def test_input_and_output_json_schemas_are_typed():
    agent = context_agent()
    given = agent.get_input_jsonschema()
    question = next(s for s in given["anyOf"] if s.get("type") != "string")
    question = given["$defs"][question["$ref"].split("/")[-1]] if "$ref" in question else question
    assert {"type": "string"} in given["anyOf"] and set(question["properties"]) == {"question", "messages"}
    out = agent.get_output_jsonschema()
    props = out["properties"]
    assert {"answer", "turns", "steps", "queries", "documents", "retrievals", "trace", "stop_reason"} <= set(props)
    assert props["turns"]["type"] == "integer" and props["queries"]["items"]["items"]["type"] == "string"
    assert props["answer"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert props["documents"]["items"]["$ref"].endswith("/Document")
    assert set(agent.graph.get_input_jsonschema()["properties"]) == {"question", "messages"}
    assert set(out["properties"]) == set(agent.invoke("Capital?"))  # the schema is what invoke returns
