"""QA sets as :class:`QAItem` lists, from the formats these benchmarks ship in.

Formats: RAG-R1 JSON (``[{"question", "golden_answers"}]``), FlashRAG JSONL
(``{"id", "question", "golden_answers", ...}`` per line), Search-R1 parquet (``question``
plus ``golden_answers`` or ``reward_model.ground_truth.target``) and the FanOutQA dev JSON of
the ``fanoutqa`` package. Names: ``NAME:PATH`` for the paper's seven benchmarks, the shipped
generated sets (``ragr1-dev``, ``ragr1-test``), ``ragr1-train`` (generated on the fly) and
``fanoutqa``. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from langchain_ragr1.errors import MissingResourceError, RagR1Error

#: The seven benchmarks of the paper (``--data NAME:PATH``).
BENCHMARKS: tuple[str, ...] = (
    "nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle",
)
#: Sets that need no path: the shipped generated splits and the FanOutQA dev set.
NAMED_SETS: tuple[str, ...] = ("ragr1-dev", "ragr1-test", "ragr1-train", "fanoutqa")

SHIPPED_DIR = Path(__file__).resolve().parent / "sets"  # package data: ships in the wheel


class DataError(RagR1Error, ValueError):
    """A QA file that cannot be read; the message names the file and line (or row)."""


@dataclass
class QAItem:
    """One question with its gold answers; generated and FanOutQA items carry more."""

    id: str
    question: str
    golden_answers: list[str]
    kind: str | None = None
    evidence_titles: list[str] = field(default_factory=list)
    gold_queries: list[list[str]] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The item as plain JSON-ready data."""
        return asdict(self)


def _answers(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [str(value)]
    if not isinstance(value, list):
        raise DataError(f"{where}: 'golden_answers' must be a list of strings, got {type(value).__name__}.")
    answers = [str(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in value]
    if not answers:
        raise DataError(f"{where}: 'golden_answers' is empty; give at least one gold answer.")
    for answer in answers:
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{where}: every gold answer must be a non-empty string, got {answer!r}.")
    return answers


def item_from_record(record: Any, where: str, default_id: str, source: str | None) -> QAItem:
    """Validate one record (dict) into a :class:`QAItem`; ``where`` is e.g. ``"file.jsonl line 3"``."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with 'question' and 'golden_answers', got {type(record).__name__}.")
    question = record.get("question")
    if question is None:
        raise DataError(f"{where}: missing field 'question'.")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: 'question' must be a non-empty string, got {question!r}.")
    if "golden_answers" in record:
        answers = record["golden_answers"]
    else:
        answers = ((record.get("reward_model") or {}).get("ground_truth") or {}).get("target")
        if answers is None:
            raise DataError(f"{where}: missing field 'golden_answers' (or reward_model.ground_truth.target).")
    queries = record.get("gold_queries") or []
    titles = record.get("evidence_titles") or []
    if not isinstance(queries, list) or not all(isinstance(t, list) for t in queries):
        raise DataError(f"{where}: 'gold_queries' must be a list of lists of strings (one list per turn).")
    if not isinstance(titles, list):
        raise DataError(f"{where}: 'evidence_titles' must be a list of strings.")
    return QAItem(
        id=str(record.get("id", default_id)),
        question=question.strip(),
        golden_answers=_answers(_plain(answers), where),
        kind=record.get("kind"),
        evidence_titles=[str(t) for t in titles],
        gold_queries=[[str(q) for q in turn] for turn in queries],
        source=source,
    )


def _plain(value: Any) -> Any:
    """numpy arrays (from parquet) as lists."""
    return value.tolist() if hasattr(value, "tolist") else value


def load_jsonl(path: str | Path, source: str | None = None) -> list[QAItem]:
    """FlashRAG (and our generated) JSONL: one object per line; blank lines are skipped."""
    path = Path(path)
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}).") from None
            items.append(item_from_record(record, where, f"{path.stem}-{number}", source))
    return items


def load_json(path: str | Path, source: str | None = None) -> list[QAItem]:
    """RAG-R1 JSON (a list of ``{"question", "golden_answers"}``) or the FanOutQA JSON."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}).") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of question objects, got {type(records).__name__}.")
    if records and isinstance(records[0], dict) and "decomposition" in records[0]:
        return [fanout_item(r, f"{path} item {i}") for i, r in enumerate(records, start=1)]
    return [item_from_record(r, f"{path} item {i}", f"{path.stem}-{i}", source)
            for i, r in enumerate(records, start=1)]


def load_parquet(path: str | Path, source: str | None = None) -> list[QAItem]:
    """Search-R1 parquet: ``question`` plus ``golden_answers`` or ``reward_model.ground_truth.target``."""
    import pyarrow.parquet as pq

    path = Path(path)
    rows = pq.read_table(path).to_pylist()
    return [item_from_record(r, f"{path} row {i}", f"{path.stem}-{i}", source)
            for i, r in enumerate(rows, start=1)]


def _fanout_answers(answer: Any) -> list[str]:
    if isinstance(answer, dict):
        return [", ".join(f"{k}: {v}" for k, v in answer.items())]
    if isinstance(answer, list):
        return [", ".join(map(str, answer))]
    return [str(answer)]


def _fanout_turns(decomposition: list[dict]) -> list[list[str]]:
    """Sub-questions grouped by dependency depth: those that depend on nothing come first."""
    depth: dict[str, int] = {}
    for node in decomposition:
        depth[node["id"]] = 1 + max((depth.get(d, 0) for d in node.get("depends_on") or []), default=0)
    turns: dict[int, list[str]] = {}
    for node in decomposition:
        turns.setdefault(depth[node["id"]], []).append(node["question"])
    return [turns[d] for d in sorted(turns)]


def fanout_item(record: dict, where: str) -> QAItem:
    """One FanOutQA question; its decomposition becomes ``gold_queries`` and ``evidence_titles``."""
    if not isinstance(record, dict) or "question" not in record or "answer" not in record:
        raise DataError(f"{where}: a FanOutQA item needs 'question' and 'answer'.")
    decomposition = record.get("decomposition") or []
    return QAItem(
        id=str(record.get("id", where)),
        question=record["question"],
        golden_answers=_fanout_answers(record["answer"]),
        kind="fan-out",
        evidence_titles=[n["evidence"]["title"] for n in decomposition if n.get("evidence")],
        gold_queries=_fanout_turns(decomposition),
        source="fanoutqa",
    )


def fanoutqa_path() -> Path:
    """The FanOutQA dev set inside the installed ``fanoutqa`` package (not imported)."""
    spec = importlib.util.find_spec("fanoutqa")
    path = Path(spec.submodule_search_locations[0]) / "data" / "fanout-final-dev.json" if spec else None
    if path is None or not path.is_file():
        raise MissingResourceError("The FanOutQA dev set is missing: run `pip install --no-deps fanoutqa`.")
    return path


def load_file(path: str | Path, source: str | None = None) -> list[QAItem]:
    """A QA file by extension: ``.jsonl``, ``.json`` or ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such QA file.")
    loaders = {".jsonl": load_jsonl, ".json": load_json, ".parquet": load_parquet}
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise DataError(f"{path}: unknown QA format {path.suffix!r}; use .jsonl, .json or .parquet.")
    return loader(path, source)


def load_qa(spec: str, limit: int | None = None) -> list[QAItem]:
    """Load a QA set by ``spec``: a file, ``BENCHMARK:PATH``, or a named set (see :data:`NAMED_SETS`)."""
    items = _load_spec(spec)
    return items[:limit] if limit else items


def _load_spec(spec: str) -> list[QAItem]:
    if spec in ("ragr1-dev", "ragr1-test"):
        path = SHIPPED_DIR / f"{spec}.jsonl"
        if not path.is_file():
            raise MissingResourceError(
                f"{path} is missing (the shipped sets live in the repository's data/ folder): "
                f"regenerate them with `python -m langchain_ragr1.data.generate`."
            )
        return load_jsonl(path, spec)
    if spec == "ragr1-train":
        from langchain_ragr1.data.generate import generate_splits

        return generate_splits()["train"]
    if spec == "fanoutqa":
        return load_json(fanoutqa_path(), "fanoutqa")
    name, sep, rest = spec.partition(":")
    if sep and name and not Path(spec).exists() and len(name) > 1:
        if name.lower() not in BENCHMARKS:
            raise DataError(
                f"Unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)} as NAME:PATH, "
                f"or a named set ({', '.join(NAMED_SETS)})."
            )
        return load_file(rest, name.lower())
    if Path(spec).exists():
        return load_file(spec)
    raise DataError(
        f"{spec!r} is neither a QA file nor a known set: give a path, BENCHMARK:PATH with BENCHMARK one of "
        f"{', '.join(BENCHMARKS)}, or one of {', '.join(NAMED_SETS)}."
    )


def write_jsonl(items: Iterable[QAItem], path: str | Path) -> None:
    """Write items as JSONL (the FlashRAG layout, plus our generated fields)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for item in items:
            record = {k: v for k, v in item.to_dict().items() if k != "source"}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
