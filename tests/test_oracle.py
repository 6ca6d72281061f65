"""The oracle teacher's reasoning reads: it states the facts the passages hold, the first
hop's answer before the second search, and answers ``unknown`` when a fact is not retrieved."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.data import QAItem
from langchain_ragr1.protocol import parse_action
from langchain_ragr1.testing import MemoryRetriever
from langchain_ragr1.tuning import OraclePolicy, make_trajectories
from langchain_ragr1.tuning.oracle import UNGROUNDED_ANSWER

DOCS = [
    Document(page_content="English writer (1797–1851). Mary Shelley wrote Frankenstein.",
             metadata={"title": "Mary Shelley"}),
    Document(page_content="French mathematician (1789–1857). Augustin-Louis Cauchy studied calculus.",
             metadata={"title": "Augustin-Louis Cauchy"}),
    Document(page_content="1960 film by Federico Fellini. La Dolce Vita is a comedy-drama film.",
             metadata={"title": "La Dolce Vita"}),
    Document(page_content="Italian film director (1920–1993). Federico Fellini was known for his style.",
             metadata={"title": "Federico Fellini"}),
]

COMPARISON = QAItem(
    id="c1", question="Who died last, Mary Shelley or Augustin-Louis Cauchy?",
    golden_answers=["Augustin-Louis Cauchy"], kind="comparison",
    evidence_titles=["Mary Shelley", "Augustin-Louis Cauchy"],
    gold_queries=[["Mary Shelley death year", "Augustin-Louis Cauchy death year"]],
)
COMPARISON.facts = [
    {"title": "Mary Shelley", "entity": "Mary Shelley", "attribute": "death year", "value": "1851",
     "quote": "English writer (1797–1851)", "statement": "Mary Shelley died in 1851."},
    {"title": "Augustin-Louis Cauchy", "entity": "Augustin-Louis Cauchy", "attribute": "death year",
     "value": "1857", "quote": "French mathematician (1789–1857)",
     "statement": "Augustin-Louis Cauchy died in 1857."},
]
COMPARISON.reasoning = "1857 is later than 1851, so the answer is Augustin-Louis Cauchy."

BRIDGE = QAItem(
    id="b1", question="In what year was the director of La Dolce Vita born?",
    golden_answers=["1920"], kind="bridge", evidence_titles=["La Dolce Vita", "Federico Fellini"],
    gold_queries=[["La Dolce Vita"], ["Federico Fellini birth year"]],
)
BRIDGE.facts = [
    {"title": "La Dolce Vita", "entity": "La Dolce Vita", "attribute": "director",
     "value": "Federico Fellini", "quote": "1960 film by Federico Fellini",
     "statement": "La Dolce Vita was directed by Federico Fellini."},
    {"title": "Federico Fellini", "entity": "Federico Fellini", "attribute": "birth year", "value": "1920",
     "quote": "Italian film director (1920–1993)", "statement": "Federico Fellini was born in 1920."},
]
BRIDGE.reasoning = "Federico Fellini, the director of La Dolce Vita, was born in 1920."


def _run(items, mode, docs=DOCS):
    teacher = OraclePolicy(items, mode=mode, no_search_fraction=0.0)
    agent = RagR1Agent(teacher, MemoryRetriever(documents=docs, k=1), mode=mode, k=1, max_turns=4)
    return [agent.invoke(item.question) for item in items]


def _turns(result):
    return [s["text"] for s in result["segments"] if s["role"] == "policy"]


def _think(turn: str) -> str:
    return turn.split("<think>", 1)[1].split("</think>", 1)[0]


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_answer_turn_states_the_deciding_facts_then_the_reasoning(mode):
    (result,) = _run([COMPARISON], mode)
    assert result["answer"] == "Augustin-Louis Cauchy"
    final = _think(_turns(result)[-1])
    assert "Mary Shelley died in 1851." in final
    assert "Augustin-Louis Cauchy died in 1857." in final
    assert COMPARISON.reasoning in final  # then the answer discipline (a name, not a value)
    assert result["turns"] == (1 if mode == "multi" else 2)


def test_single_mode_states_the_first_fact_before_the_second_search():
    (result,) = _run([COMPARISON], "single")
    second = parse_action(_turns(result)[1], "single")
    assert second.kind == "search" and second.queries == ("Augustin-Louis Cauchy death year",)
    think = _think(_turns(result)[1])
    assert "Mary Shelley died in 1851." in think
    assert "Cauchy died in 1857" not in think  # not yet retrieved


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_bridge_states_the_first_hops_answer_before_searching_the_second(mode):
    (result,) = _run([BRIDGE], mode)
    assert result["answer"] == "1920" and result["turns"] == 2
    second = parse_action(_turns(result)[1], mode)
    assert second.kind == "search" and second.queries == ("Federico Fellini birth year",)
    assert "La Dolce Vita was directed by Federico Fellini." in _think(_turns(result)[1])


def test_a_fact_missing_from_the_results_is_rejected_not_stated():
    # Without Fellini's article the second hop's quote is never retrieved.
    docs = [d for d in DOCS if d.metadata["title"] != "Federico Fellini"]
    teacher = OraclePolicy([BRIDGE], mode="multi", no_search_fraction=0.0)
    agent = RagR1Agent(teacher, MemoryRetriever(documents=docs, k=1), mode="multi", k=1, max_turns=4)
    result = agent.invoke(BRIDGE.question)
    assert result["answer"] == UNGROUNDED_ANSWER
    assert "1920" not in " ".join(_turns(result))
    kept, counts = make_trajectories(agent, [BRIDGE], progress=False, allow_empty=True)
    assert kept == [] and counts.rejected == 1


def test_a_quote_must_be_in_the_passage_not_only_the_value():
    # The passage names 1851 elsewhere but not as the lifespan the fact quotes.
    docs = [Document(page_content="English writer. In 1851 a book appeared.", metadata={"title": "Mary Shelley"})] + DOCS[1:]
    teacher = OraclePolicy([COMPARISON], mode="multi", no_search_fraction=0.0)
    agent = RagR1Agent(teacher, MemoryRetriever(documents=docs, k=1), mode="multi", k=1, max_turns=4)
    assert agent.invoke(COMPARISON.question)["answer"] == UNGROUNDED_ANSWER


def test_items_without_facts_keep_the_generic_reasoning():
    plain = QAItem(id="p", question=COMPARISON.question, golden_answers=COMPARISON.golden_answers,
                   kind="comparison", evidence_titles=COMPARISON.evidence_titles,
                   gold_queries=COMPARISON.gold_queries)
    (result,) = _run([plain], "multi")
    assert result["answer"] == "Augustin-Louis Cauchy"
    assert "died in" not in _think(_turns(result)[-1])


def test_a_reasoning_that_states_the_chain_does_not_repeat_the_facts():
    item = QAItem(id="b2", question=BRIDGE.question, golden_answers=BRIDGE.golden_answers, kind="bridge",
                  evidence_titles=BRIDGE.evidence_titles, gold_queries=BRIDGE.gold_queries)
    item.facts = BRIDGE.facts
    item.reasoning = "La Dolce Vita was directed by Federico Fellini. Federico Fellini was born in 1920. So the answer is 1920."
    (result,) = _run([item], "multi")
    final = _think(_turns(result)[-1])
    assert final.count("Federico Fellini was born in 1920") == 1
    assert final.count("directed by Federico Fellini") == 1
    assert "  " not in final and final == final.strip()


def test_the_oracle_refuses_an_information_block_without_its_fields():
    from langchain_ragr1.transcript import make_segment
    from langchain_ragr1.tuning.oracle import information_text

    shown = {**make_segment("env", "\n<information>\nDoc 1: x\n</information>\n"),
             "retrieval": {"turn": 1, "queries": ["q"], "documents": ["Doc 1: x"]}}
    assert information_text([make_segment("prompt", "p"), shown]) == "Doc 1: x"
    with pytest.raises(ValueError, match="'retrieval' field"):
        information_text([make_segment("env", "\n<information>\nDoc 1: x\n</information>\n")])


DISCOVERY_DOCS = DOCS + [Document(
    page_content="Radioactive element. Polonium was discovered in 1898 by Marie Curie and named after Poland.",
    metadata={"title": "Polonium"})]
DISCOVERER = QAItem(
    id="s1", question="Who discovered Polonium?", golden_answers=["Marie Curie"], kind="single-hop",
    evidence_titles=["Polonium"], gold_queries=[["Polonium discoverer"]],
)
DISCOVERER.facts = [
    {"title": "Polonium", "entity": "Polonium", "attribute": "discoverer", "value": "Marie Curie",
     "quote": "Polonium was discovered in 1898 by Marie Curie", "statement": "Polonium was discovered by Marie Curie."},
]
DISCOVERER.reasoning = "Polonium was discovered by Marie Curie, so the answer is Marie Curie."


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_a_comparison_is_answered_with_the_entity_never_its_value(mode):
    (result,) = _run([COMPARISON], mode)
    final = _turns(result)[-1]
    action = parse_action(final, mode)
    assert action.kind == "answer" and action.answer == "Augustin-Louis Cauchy"
    assert _think(final).rstrip().endswith(("not its value.", "not the number.", "name, Augustin-Louis Cauchy."))


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_a_who_discovered_question_is_answered_after_one_search(mode):
    (result,) = _run([DISCOVERER], mode, docs=DISCOVERY_DOCS)
    turns = _turns(result)
    assert [parse_action(t, mode).kind for t in turns] == ["search", "answer"]
    assert result["answer"] == "Marie Curie" and result["turns"] == 1
    final = _think(turns[-1])
    assert "Polonium was discovered by Marie Curie" in final
    assert any(s in final for s in ("without searching again", "answers the question directly", "nothing more"))


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_a_bridge_searches_the_first_hops_answer_not_the_question_again(mode):
    (result,) = _run([BRIDGE], mode)
    first, second, last = (parse_action(t, mode) for t in _turns(result))
    assert first.kind == "search" and second.kind == "search" and last.kind == "answer"
    assert all("Federico Fellini" in q for q in second.queries)
    assert not any("La Dolce Vita" in q for q in second.queries)
    assert last.answer == "1920"
