"""``OraclePolicy``: an offline teacher that writes protocol turns from a QA item's gold plan.

Given the items (``gold_queries`` grouped by turn, ``evidence_titles``, ``golden_answers``
and, for generated items, ``facts`` and ``reasoning``) it plays the model inside the real
graph: one ``<think>...</think><search> ... </search>`` turn per gold turn (multi mode: the
turn's queries joined by ", ", at most ``max_queries`` per turn; single mode: one query per
turn, in order), then ``<think>...</think><answer> gold </answer>``. The ``<information>``
it reads is whatever the real retriever returned through the graph.

Its reasoning reads: after a search, the next ``<think>`` states the facts the last
searches were for, with their values as the passages write them ("La Dolce Vita was
directed by Federico Fellini. Now I need Federico Fellini birth year."), and the answer
turn states every deciding fact and then the item's ``reasoning`` ("1844 is earlier, so
..."), then what kind of answer the question wants: a comparison or fan-out is answered with
the entity's name, never its value; a single-hop relation ("Who discovered X?") is answered with
the name just read, without another search; a bridge states the first hop's answer before it
searches the second. A fact is stated only when its quote is in the retrieved text: with
``grounded=True`` a fact the searches did not bring back ends the episode with the answer
``unknown``, so rejection sampling drops trajectories whose text would not support what
they say. Items without facts (old sets, FanOutQA) get the generic sentences. A seeded
fraction ``no_search_fraction`` of the questions is answered at once "from its own
knowledge" (sample kind 1). The wording comes from a few seeded templates.

Given a tokenizer it is a token-level policy: the prompt goes through the chat template and
every turn's token ids are ``tokenizer(text)`` of that turn alone (the same helpers as
:class:`~langchain_ragr1.policies.token.TokenPolicy`), so the transcript's segments carry ids.
"""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Any, Iterable, Sequence, cast

from langchain_core.runnables import RunnableConfig

from langchain_ragr1.data.facts import RELATIONS
from langchain_ragr1.data.items import QAItem
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.base import Generation, Policy
from langchain_ragr1.policies.token import TokenPolicy
from langchain_ragr1.protocol import (
    DEFAULT_MAX_QUERIES,
    STOP_STRINGS,
    Mode,
    normalize_question,
)
from langchain_ragr1.transcript import Segment

#: What an ungrounded oracle answers (never a gold answer of the generated sets).
UNGROUNDED_ANSWER = "unknown"


_FIRST_SEARCH = (
    "To answer this I need to look up {queries}.",
    "I do not know this for certain. Let me search for {queries}.",
    "The question asks about {entities}. I should search for {queries} first.",
    "I need facts about {entities}, so I will search for {queries}.",
)
_NEXT_SEARCH = (
    "The results mention {found}. Now I still need {queries}.",
    "I found {found}. Next I should search for {queries}.",
    "From the passages on {found}, the next step is to look up {queries}.",
)
#: After a search whose facts were found: ``{facts}`` are their statements.
_NEXT_SEARCH_FACTS = (
    "{facts} Now I need {queries}.",
    "{facts} Next I should search for {queries}.",
    "The results say: {facts} I still need {queries}.",
)
#: The answer turn of an item with facts: ``{facts}`` then the item's ``{reasoning}``.
_ANSWER_FACTS = (
    "{facts} {reasoning}",
    "The results say: {facts} {reasoning}",
    "From the passages: {facts} {reasoning}",
)
#: Answer discipline, said after the reasoning: a comparison or fan-out names the entity, never its value.
_WHICH_ONE = (
    "The question asks which one, so I answer with the name {answer}, not its value.",
    "It asks for the one that fits, so the answer is {answer} itself, not the number.",
    "The answer is the name, {answer}.",
)
#: A single-hop relation ("Who discovered X?"): the name read is the answer; no second search.
_NAME_READ = (
    "That name is what the question asks for, so I answer {answer} without searching again.",
    "The passage names {answer}; that answers the question directly.",
    "{answer} is the answer; nothing more to look up.",
)
_ANSWER_AFTER_SEARCH = (
    "The passages on {found} give what I need. The answer is {answer}.",
    "According to the results about {found}, the answer is {answer}.",
    "I found {found}. Comparing the facts, the answer is {answer}.",
)
_ANSWER_UNGROUNDED = (
    "The results about {found} do not settle the question.",
    "I could not find the facts I need in the results.",
)
_ANSWER_DIRECT = (
    "I know this without searching: the answer is {answer}.",
    "This is well known to me. The answer is {answer}.",
    "I remember the facts about {entities}, so the answer is {answer}.",
)


def _listing(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return "the topic"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"


def _sentences(statements: Iterable[str]) -> str:
    """Statements joined as sentences (each ends with a full stop)."""
    parts = [s.strip() for s in statements if s and s.strip()]
    return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts)


def _strip_tags(text: str) -> str:
    """Reasoning text must never hold a protocol tag (it would end or fake an action)."""
    return text.replace("<", "(").replace(">", ")")


def information_text(segments: Sequence[Segment]) -> str:
    """The retrieved passages of every ``<information>`` segment, as shown to the model (read
    from the ``retrieval`` field the graph puts on them, not parsed back out of the text)."""
    texts: list[str] = []
    for segment in segments:
        if segment["role"] != "env":
            continue
        if "retrieval" not in segment:
            if "<information>" in segment["text"]:  # built outside the graph: its passages would be missed
                raise ValueError("OraclePolicy reads the passages from the 'retrieval' field that the RAG-R1 "
                                 "graph puts on <information> segments; this transcript's have none.")
            continue
        texts.extend(segment["retrieval"]["documents"])
    return "\n".join(texts)


def item_facts(item: QAItem) -> list[dict[str, str]]:
    """The item's facts (generated items carry them; others have none)."""
    return list(getattr(item, "facts", None) or [])


def fact_found(fact: dict[str, str], info: str) -> bool:
    """Whether the retrieved text holds the fact's quote (so the value is read, not known)."""
    quote = fact.get("quote") or fact.get("value") or ""
    return bool(quote) and quote in info


def _discipline(item: QAItem, rng: random.Random) -> str:
    """The closing sentence of an answer turn that says what kind of answer the question wants."""
    facts = item_facts(item)
    answer = item.golden_answers[0]
    if item.kind in ("comparison", "fan-out"):
        return rng.choice(_WHICH_ONE).format(answer=answer)
    if item.kind == "single-hop" and facts and facts[0].get("attribute") in RELATIONS:
        return rng.choice(_NAME_READ).format(answer=answer)
    return ""


class OraclePolicy(Policy):
    """A teacher that follows each item's gold search plan through the real graph.

    Args:
        items: the QA items it may be asked about (looked up by their normalised question).
        tokenizer: a Hugging Face tokenizer with a chat template (token-level), or ``None``.
        mode: ``"multi"`` or ``"single"`` (must match the agent's mode).
        no_search_fraction: share of questions answered at once without searching.
        grounded: answer the gold answer only when every evidence article was retrieved.
        max_queries: queries per multi-query turn (longer gold turns are split).
        seed: seeds the choice of no-search questions and of the reasoning templates.
    """

    def __init__(
        self,
        items: Iterable[QAItem],
        tokenizer: Any = None,
        *,
        mode: Mode = "multi",
        no_search_fraction: float = 0.1,
        grounded: bool = True,
        max_queries: int = DEFAULT_MAX_QUERIES,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= no_search_fraction <= 1.0:
            raise ConfigError(f"no_search_fraction must be in [0, 1], got {no_search_fraction!r}.")
        if max_queries < 1:
            raise ConfigError(f"max_queries must be >= 1, got {max_queries!r}.")
        self.items = {normalize_question(item.question): item for item in items}
        self.tokenizer = tokenizer
        self.mode = mode
        self.no_search_fraction = no_search_fraction
        self.grounded = grounded
        self.max_queries = max_queries
        self.seed = seed
        self._tok_lock = threading.RLock()

    # --- text level unless a tokenizer is given; TokenPolicy's helpers need only
    # ``self.tokenizer`` and ``self._tok_lock`` -------------------------------------------

    def _as_token_policy(self) -> TokenPolicy:
        # what TokenPolicy's helpers below read of ``self``, this policy has (a cast, not a conversion)
        return cast(TokenPolicy, self)

    def render_prompt(self, prompt: str) -> Segment:
        if self.tokenizer is None:
            return Policy.render_prompt(self, prompt)
        return TokenPolicy.render_prompt(self._as_token_policy(), prompt)

    def encode(self, text: str) -> list[int] | None:
        return None if self.tokenizer is None else TokenPolicy.encode(self._as_token_policy(), text)

    def decode(self, token_ids: Sequence[int]) -> str | None:
        return None if self.tokenizer is None else TokenPolicy.decode(self._as_token_policy(), token_ids)

    def truncate(self, text: str, max_tokens: int) -> str | None:
        return None if self.tokenizer is None else TokenPolicy.truncate(self._as_token_policy(), text, max_tokens)

    # --- the plan -------------------------------------------------------------------------

    def item_for(self, segments: Sequence[Segment]) -> QAItem:
        """The item whose question the prompt segment asks: its ``question`` field (set by the graph)."""
        question = segments[0].get("question") if segments else None
        if question is None:
            raise KeyError("OraclePolicy needs the prompt segment the RAG-R1 graph builds (it carries the question).")
        item = self.items.get(normalize_question(question))
        if item is None:
            raise KeyError(f"OraclePolicy has no item for the question {question!r}.")
        return item

    def plan(self, item: QAItem) -> list[list[str]]:
        """The search turns for ``item`` in this mode; empty for a no-search question."""
        if self.searches_not(item):
            return []
        if self.mode == "single":
            return [[q] for turn in item.gold_queries for q in turn]
        return [
            turn[i : i + self.max_queries]
            for turn in item.gold_queries
            for i in range(0, len(turn), self.max_queries)
        ]

    def searches_not(self, item: QAItem) -> bool:
        """Whether ``item`` is one of the (seeded) questions answered without searching."""
        if not item.gold_queries:
            return True
        digest = hashlib.sha256(f"{self.seed}|{item.question}".encode("utf-8")).hexdigest()
        return int(digest[:8], 16) / 0xFFFFFFFF < self.no_search_fraction

    def _search_content(self, queries: Sequence[str]) -> str:
        if self.mode == "single":
            return queries[0]
        # A comma inside a query would split it: quote such queries (the parser keeps them whole).
        return ", ".join(f'"{q}"' if "," in q else q for q in queries)

    def facts_by_turn(self, item: QAItem) -> list[list[dict[str, str]]]:
        """The facts each search turn of the plan looks for (one fact per gold query, in order).

        Empty lists when the item has no facts or they do not pair one to one with its queries."""
        plan = self.plan(item)
        facts = item_facts(item)
        if len(facts) != sum(len(turn) for turn in plan):
            return [[] for _ in plan]
        grouped, start = [], 0
        for turn in plan:
            grouped.append(facts[start : start + len(turn)])
            start += len(turn)
        return grouped

    def turn_text(self, item: QAItem, segments: Sequence[Segment]) -> str:
        """The next turn for ``item`` after ``segments``."""
        done = sum(1 for s in segments if s["role"] == "policy")
        plan = self.plan(item)
        rng = random.Random(f"{self.seed}|{item.question}|{done}")
        # Only what the question names: a bridge's second entity is unknown before searching.
        named = [t.split(" (")[0] for t in item.evidence_titles]
        entities = _listing([n for n in named if n in item.question] or (plan[0] if plan else named))
        info = information_text(segments)
        found = _listing([t.split(" (")[0] for t in item.evidence_titles if t in info])
        by_turn = self.facts_by_turn(item)
        # The facts the searches so far were for, and whether the results hold them all.
        wanted = [fact for turn in by_turn[:done] for fact in turn]
        missing = [fact for fact in wanted if not fact_found(fact, info)]
        if self.grounded and missing:
            think = rng.choice(_ANSWER_UNGROUNDED).format(found=found)
            return f"<think>{_strip_tags(think)}</think><answer> {UNGROUNDED_ANSWER} </answer>"
        last = _sentences(fact["statement"] for fact in (by_turn[done - 1] if 0 < done <= len(plan) else []))
        if done < len(plan):
            queries = plan[done]
            listed = _listing(queries)
            if done == 0:
                think = rng.choice(_FIRST_SEARCH).format(queries=listed, entities=entities)
            elif last:
                think = rng.choice(_NEXT_SEARCH_FACTS).format(facts=last, queries=listed)
            else:
                think = rng.choice(_NEXT_SEARCH).format(queries=listed, found=found)
            action = f"<search> {self._search_content(queries)} </search>"
        else:
            answer = item.golden_answers[0]
            reasoning = getattr(item, "reasoning", None)
            if not plan:
                think = rng.choice(_ANSWER_DIRECT).format(answer=answer, entities=entities)
            elif wanted and reasoning:
                # A reasoning that already states a fact (a bridge's chain) does not get it twice.
                stated = [f["statement"] for f in wanted if f["statement"].rstrip(".") not in reasoning]
                think = rng.choice(_ANSWER_FACTS).format(facts=_sentences(stated), reasoning=reasoning)
                think = " ".join(f"{think} {_discipline(item, rng)}".split())
            elif not self.grounded or all(t in info for t in item.evidence_titles):
                think = rng.choice(_ANSWER_AFTER_SEARCH).format(answer=answer, found=found)
            else:
                think = rng.choice(_ANSWER_UNGROUNDED).format(found=found)
                answer = UNGROUNDED_ANSWER
            action = f"<answer> {answer} </answer>"
        return f"<think>{_strip_tags(think)}</think>{action}"

    def generate(self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
                 config: RunnableConfig | None = None) -> Generation:
        text = self.turn_text(self.item_for(segments), segments)
        ids = self.encode(text)
        return Generation(text=text, token_ids=ids, logprobs=None, finish_reason="stop")
