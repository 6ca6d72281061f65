"""The QA item every loader and the generator produce, and its errors and JSONL writer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from langchain_ragr1.errors import RagR1Error

#: The fields of one entry of :attr:`QAItem.facts`, all strings.
FACT_KEYS: tuple[str, ...] = ("title", "entity", "attribute", "value", "quote", "statement")

SHIPPED_DIR = Path(__file__).resolve().parent / "sets"  # package data: ships in the wheel


class DataError(RagR1Error, ValueError):
    """A QA file that cannot be read; the message names the file and line (or row)."""


@dataclass
class QAItem:
    """One question with its gold answers; generated and FanOutQA items carry more.

    ``facts`` (generated items): one dict per evidence article, in hop order, with the string
    fields :data:`FACT_KEYS` (``value`` and ``quote`` are exact substrings of the article's text);
    ``reasoning``: the deciding step in words, with the values; ``template``: which phrasing of
    :mod:`langchain_ragr1.data.phrasings` the question uses.
    """

    id: str
    question: str
    golden_answers: list[str]
    kind: str | None = None
    evidence_titles: list[str] = field(default_factory=list)
    gold_queries: list[list[str]] = field(default_factory=list)
    source: str | None = None
    facts: list[dict[str, str]] = field(default_factory=list)
    reasoning: str | None = None
    template: str | None = None  # generated items (v3): the phrasing, "<kind>/<key>/<index>"

    def to_dict(self) -> dict[str, Any]:
        """The item as plain JSON-ready data."""
        return asdict(self)


def write_jsonl(items: Iterable[QAItem], path: str | Path) -> None:
    """Write items as JSONL (the FlashRAG layout, plus our generated fields)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for item in items:
            record = {k: v for k, v in item.to_dict().items() if k != "source" and (k != "template" or v)}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
