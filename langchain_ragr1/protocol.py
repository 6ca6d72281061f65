"""The RAG-R1 text protocol as pure functions.

Prompts (byte-exact with the paper's code), parsing one model turn into an
:class:`Action`, rendering the ``<information>`` observation, neutralising protocol
tags inside retrieved text, and the answer normalisation / exact match / F1 used for
scoring. Nothing here knows about models, retrievers or graphs.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Literal, Sequence, get_args

from langchain_ragr1.errors import ProtocolError

Mode = Literal["multi", "single"]
MODES: tuple[str, ...] = get_args(Mode)

#: Strings that end a model turn; the agent cuts every turn at the first of them.
STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")

#: Tags of the protocol (plain text, not special tokens).
PROTOCOL_TAGS: tuple[str, ...] = ("think", "search", "information", "answer")

#: The paper's cap on queries per multi-query search turn.
DEFAULT_MAX_QUERIES = 3

#: Per-query truncation of retrieved text in the information block (tokens).
DEFAULT_DOC_MAX_TOKENS = 1000

MULTI_QUERY_PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query_1,query_2 </search> and it will return the "
    "top searched results for each query between <information> and </information>. You can "
    "search as many times as you want, using up to three queries each time. If you find no "
    "further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. "
    "Question: {question}\n"
)

SINGLE_QUERY_PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query </search> and it will return the top "
    "searched results between <information> and </information>. You can search as many times as "
    "your want. If you find no further external knowledge needed, you can directly provide the "
    "answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)

INVALID_ACTION_TEXT = (
    "\nMy previous action is invalid. If I want to search, I should put the query between "
    "<search> and </search>. If I want to give the final answer, I should put the answer between "
    "<answer> and </answer>. Let me try again.\n"
)

#: What a query with no retrieved passage shows the model.
NO_RESULTS_TEXT = "No results."

#: Any protocol tag, loosely spelt (``< /Information >``). Possessive quantifiers: the old
#: ``<\s*/?\s*`` tried every split of a whitespace run between its two ``\s*`` (quadratic).
_ANY_TAG_RE = re.compile(
    r"<\s*+(?:/\s*+)?(?:think|search|information|answer)\s*+>", re.IGNORECASE
)
#: The same, capturing what lies between the brackets (neutralising splits on it).
_TAG_INSIDE_RE = re.compile(
    r"<(\s*+(?:/\s*+)?(?:think|search|information|answer)\s*+)>", re.IGNORECASE
)
_QUOTES = {'"': '"', "\u201c": "\u201d"}
#: One non-empty comma-separated part of search content: plain text and quoted strings (a
#: quote left open runs to the end). Possessive all the way, it never backtracks: one pass.
_QUERY_PART_RE = re.compile(r'(?:[^,"\u201c]++|"[^"]*+"?|\u201c[^\u201d]*+\u201d?)++')
_CLOSED_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_ACTION_TAGS = ("search", "answer")


@dataclass(frozen=True)
class Action:
    """One parsed model turn: ``search`` (with queries), ``answer`` (with text) or ``invalid``."""

    kind: Literal["search", "answer", "invalid"]
    queries: tuple[str, ...] = ()
    answer: str | None = None
    reason: str | None = None
    dropped_queries: tuple[str, ...] = field(default=())
    #: the turn's ``<think>`` contents, in order (an unclosed one runs to the end of the turn)
    thoughts: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Every field as a JSON mapping, tuples as lists: the ``action`` the graph keeps on a
        policy segment (with its ``final``) and saved trajectories carry."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values}


def normalize_question(question: object) -> str:
    """Strip the question and append ``?`` if missing, as the reference does.

    Raises :class:`ProtocolError` for a non-string or empty question.
    """
    if not isinstance(question, str):
        raise ProtocolError(f"The question must be a string, got {type(question).__name__}.")
    question = question.strip()
    if not question:
        raise ProtocolError("The question is empty: pass a non-empty question string.")
    if not question.endswith("?"):
        question += "?"
    return question


def make_prompt(question: str, mode: Mode = "multi") -> str:
    """The user message for ``question`` in ``mode`` ("multi" or "single"), byte-exact."""
    template = {"multi": MULTI_QUERY_PROMPT, "single": SINGLE_QUERY_PROMPT}.get(mode)
    if template is None:
        raise ProtocolError(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    return template.format(question=normalize_question(question))


def cut_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> tuple[str, bool]:
    """Cut ``text`` right after the first stop string; returns ``(text, stopped)``."""
    ends = [text.find(s) + len(s) for s in stops if s in text]
    if not ends:
        return text, False
    return text[: min(ends)], True


def split_queries(content: str) -> list[str]:
    """Split search content on commas, except commas inside double quotes.

    Each part is stripped; a part wrapped entirely in quotes loses the quotes; empty parts
    are dropped. One pass (``str.split`` or one non-backtracking regex), linear in the content.
    """
    if '"' not in content and "\u201c" not in content:  # no quotes: all at C speed
        return list(filter(None, map(str.strip, content.split(","))))
    queries = []
    for part in _QUERY_PART_RE.findall(content):  # the non-empty parts, quotes kept
        part = part.strip()
        closing = _QUOTES.get(part[:1])
        if closing is not None and len(part) >= 2 and part[-1] == closing:
            part = part[1:-1].strip()
        if part:
            queries.append(part)
    return queries


def _strip_closed_think(text: str) -> str:
    """``text`` with each closed ``<think>...</think>`` replaced by a space, in linear time.

    The lazy regex alone is quadratic on unclosed ``<think>``: from every one it scans to the
    end for a ``</think>`` that is not there. Applied only up to the last ``</think>``, every
    ``<think>`` it meets has a ``</think>`` after it, so each attempt succeeds and the scans
    are disjoint; after the last ``</think>`` nothing can match. Same result as the regex.
    """
    end = text.rfind(_THINK_CLOSE)
    if end < 0:
        return text
    end += len(_THINK_CLOSE)
    return _CLOSED_THINK_RE.sub(" ", text[:end]) + text[end:]


def reasoning(text: str) -> tuple[str, ...]:
    """The contents of the ``<think>`` blocks of a turn, in order; an unclosed one runs to the
    end. Linear (``str.find`` scans), like :func:`parse_action`."""
    thoughts: list[str] = []
    position = 0
    while (start := text.find(_THINK_OPEN, position)) >= 0:
        start += len(_THINK_OPEN)
        end = text.find(_THINK_CLOSE, start)
        thoughts.append(text[start:] if end < 0 else text[start:end])
        if end < 0:
            break
        position = end + len(_THINK_CLOSE)
    return tuple(thoughts)


def _first_closed_action(visible: str) -> tuple[str, str] | None:
    """``(tag, content)`` of the first ``<search>...</search>`` or ``<answer>...</answer>``.

    Same as ``re.search(r"<(search|answer)>(.*?)</\\1>", visible, re.DOTALL)``: the leftmost
    opening tag that has its closing tag somewhere after it, up to the first such closing tag.
    Only the first opening tag of each kind can be that one (a later one has fewer closing
    tags after it), so a few ``str.find``/``rfind`` calls decide it: linear.
    """
    best: tuple[int, str] | None = None
    for tag in _ACTION_TAGS:
        opening, closing = f"<{tag}>", f"</{tag}>"
        start = visible.find(opening)
        if start >= 0 and visible.rfind(closing) >= start + len(opening):
            if best is None or start < best[0]:
                best = (start, tag)
    if best is None:
        return None
    start, tag = best
    begin = start + len(tag) + 2
    return tag, visible[begin: visible.find(f"</{tag}>", begin)]


def parse_action(
    text: str, mode: Mode = "multi", max_queries: int = DEFAULT_MAX_QUERIES
) -> Action:
    """Parse one model turn into an :class:`Action`; never raises.

    Like the reference: the first ``<search>...</search>`` or ``<answer>...</answer>`` wins,
    and multi-query content is split on commas. Better than the reference: tags inside a
    closed ``<think>...</think>`` are reasoning, not actions; a quoted query may contain
    commas; duplicates are dropped; at most ``max_queries`` queries are kept (the rest are
    reported in ``dropped_queries``); content holding another protocol tag is invalid.
    In ``single`` mode the whole search content is one query, as in Search-R1.

    Linear in ``len(text)``: plain ``str.find`` scans and regexes that cannot backtrack (a
    1 MB turn of unclosed tags parses in milliseconds).
    """
    if not isinstance(text, str):
        return Action("invalid", reason=f"model output is {type(text).__name__}, not text")
    thoughts = reasoning(text)
    found = _first_closed_action(_strip_closed_think(text))
    if found is None:
        return Action("invalid", reason="no closed <search> or <answer> tag", thoughts=thoughts)
    tag, content = found
    if _ANY_TAG_RE.search(content):
        return Action("invalid", reason=f"nested protocol tag inside <{tag}>", thoughts=thoughts)
    if tag == "answer":
        answer = content.strip()
        if not answer:
            return Action("invalid", reason="empty <answer>", thoughts=thoughts)
        return Action("answer", answer=answer, thoughts=thoughts)
    if mode == "single":
        queries = [content.strip()] if content.strip() else []
    else:
        queries = list(dict.fromkeys(split_queries(content)))
    if not queries:
        return Action("invalid", reason="<search> without a query", thoughts=thoughts)
    limit = max(1, max_queries)
    return Action("search", queries=tuple(queries[:limit]), dropped_queries=tuple(queries[limit:]),
                  thoughts=thoughts)


def neutralize_tags(text: str) -> str:
    """Escape protocol tags in retrieved text so a document can never act for the model."""
    # split and join: ~40% faster than a sub() callback per tag (a megabyte of tags: ~0.07 s)
    parts = _TAG_INSIDE_RE.split(text)
    parts[1::2] = [f"&lt;{inside}&gt;" for inside in parts[1::2]]
    return "".join(parts)


def _truncate_words(text: str, max_tokens: int) -> str:
    words = text.split(" ")
    return text if len(words) <= max_tokens else " ".join(words[:max_tokens])


def render_documents(
    contents: Iterable[str],
    max_tokens: int = DEFAULT_DOC_MAX_TOKENS,
    truncate: Callable[[str, int], str | None] | None = None,
) -> str:
    """``Doc 1: ...\\nDoc 2: ...`` for one query's passages, neutralised and truncated.

    ``truncate(text, max_tokens)`` cuts by the policy's tokenizer; when it is absent or
    returns ``None``, by words. A query with no passages renders as :data:`NO_RESULTS_TEXT`.
    """
    body = "\n".join(f"Doc {i}: {c}" for i, c in enumerate(contents, start=1)).strip()
    if not body:
        return NO_RESULTS_TEXT
    body = neutralize_tags(body)
    truncated = truncate(body, max_tokens) if truncate is not None else None
    return truncated if truncated is not None else _truncate_words(body, max_tokens)


def render_information(
    queries: Sequence[str],
    documents: Sequence[Sequence[str]],
    mode: Mode = "multi",
    max_tokens: int = DEFAULT_DOC_MAX_TOKENS,
    truncate: Callable[[str, int], str | None] | None = None,
) -> str:
    """The observation appended after a search turn, byte-exact with the spec.

    ``documents[i]`` holds the passage contents retrieved for ``queries[i]``. Every text in
    the block, queries and documents alike, has its protocol tags neutralised.
    """
    if len(queries) != len(documents):
        raise ProtocolError("render_information needs one document list per query.")
    return information_block(queries, [render_documents(docs, max_tokens, truncate) for docs in documents], mode)


def information_block(queries: Sequence[str], rendered: Sequence[str], mode: Mode = "multi") -> str:
    """The ``<information>`` block of one retrieval turn from each query's rendered passages
    (:func:`render_documents`); :func:`render_information` renders and joins in one call."""
    if len(queries) != len(rendered):
        raise ProtocolError("information_block needs one rendered passage list per query.")
    if mode == "single":  # Search-R1's block shows the documents only, not the query
        body = "\n".join(rendered)
    else:
        # The queries are neutralised like the documents: naive RAG sends the user's
        # question itself, which may hold "</information><answer>...".
        shown = [neutralize_tags(q) for q in queries]
        body = json.dumps({"query": shown, "documents": list(rendered)}, indent=2)
    return f"\n<information>\n{body}\n</information>\n"


# --- scoring ---------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _golds(gold: str | Sequence[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def exact_match(prediction: str | None, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(gold)))


def f1_score(prediction: str | None, gold: str | Sequence[str]) -> float:
    """Best token-level F1 of the normalised prediction against any gold answer."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for g in _golds(gold):
        gold_tokens = normalize_answer(g).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
