"""QA sets as :class:`QAItem` lists, from the formats these benchmarks ship in.

Formats: RAG-R1 JSON (``[{"question", "golden_answers"}]``), FlashRAG JSONL
(``{"id", "question", "golden_answers", ...}`` per line), Search-R1 parquet (``question``
plus ``golden_answers`` or ``reward_model.ground_truth.target``) and the FanOutQA dev JSON of
the ``fanoutqa`` package. Names: ``NAME:PATH`` for the paper's seven benchmarks, the shipped
generated sets (the current generator's ``ragr1-dev-v3``, ``ragr1-test-v3``; the v2 generator's
``ragr1-dev``, ``ragr1-test``; the first one's ``ragr1-dev-v1``, ``ragr1-test-v1``), ``ragr1-train``
(the current generator's train split, made on the fly) and ``fanoutqa``. Nothing is downloaded.

Every loader checks the whole file before anything runs: the file must be UTF-8 and hold at
least one question, ids must be unique, ``kind`` must be one string; a :class:`DataError` names
the file and line (JSON: item and line; parquet: row) and says what to write instead.
"""

from __future__ import annotations

import codecs
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from langchain_ragr1.data.items import FACT_KEYS, SHIPPED_DIR, DataError, QAItem
from langchain_ragr1.errors import MissingResourceError

#: The seven benchmarks of the paper (``--data NAME:PATH``).
BENCHMARKS: tuple[str, ...] = (
    "nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle",
)
#: Sets that need no path: the shipped generated splits and the FanOutQA dev set.
NAMED_SETS: tuple[str, ...] = ("ragr1-dev", "ragr1-test", "ragr1-train", "ragr1-dev-v3", "ragr1-test-v3",
                               "ragr1-dev-v1", "ragr1-test-v1", "fanoutqa")
#: The shipped files among :data:`NAMED_SETS` (``sets/NAME.jsonl``): ``ragr1-dev``/``ragr1-test`` are the
#: v2 generator's sets (kept for comparison), ``-v3`` the current generator's, ``-v1`` the first one's.
SHIPPED_SETS: tuple[str, ...] = ("ragr1-dev", "ragr1-test", "ragr1-dev-v3", "ragr1-test-v3", "ragr1-dev-v1",
                                 "ragr1-test-v1")



def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(data: bytes, path: Path, line: int | None = None) -> str:
    """``data`` as UTF-8 (a leading BOM dropped); otherwise a :class:`DataError` naming the line."""
    start = len(codecs.BOM_UTF8) if line in (None, 1) and data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        number = line if line is not None else data.count(b"\n", 0, offset) + 1
        utf16 = line in (None, 1) and data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        raise DataError(
            f"{path} line {number}: not UTF-8 text (byte {data[offset]:#04x} cannot be decoded"
            f"{'; the file looks like UTF-16' if utf16 else ''}); QA files must be UTF-8: re-save it as UTF-8, "
            f"e.g. `iconv -f {'UTF-16' if utf16 else 'LATIN1'} -t UTF-8 {path.name} > fixed{path.suffix}`."
        ) from None


def _check_items(located: list[tuple[QAItem, str]], name: Any, example: str) -> list[QAItem]:
    """The items of one file, after checking that there is at least one and that ids are unique.

    ``located`` pairs each item with where it is (``"line 3"``, ``"item 2 (line 5)"``, ``"row 4"``)."""
    if not located:
        raise DataError(f"{name}: the file holds no questions; {example}")
    seen: dict[str, str] = {}
    for item, where in located:
        if item.id in seen:
            raise DataError(
                f"{name}: duplicate id {item.id!r} on {seen[item.id]} and {where}; predictions and resume "
                f"are keyed by id, so give every question its own 'id' (or leave 'id' out to number "
                f"questions by position)."
            )
        seen[item.id] = where
    return [item for item, _ in located]


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
    facts = _plain(record.get("facts")) or []
    if not isinstance(facts, list) or not all(
        isinstance(f, dict) and all(isinstance(f.get(k), str) for k in FACT_KEYS)
        and all(isinstance(v, str) for v in f.values()) for f in facts
    ):
        raise DataError(f"{where}: 'facts' must be a list of objects with the string fields "
                        f"{', '.join(FACT_KEYS)} (one per evidence article), got {_short(facts)}; "
                        f"fix it or leave 'facts' out.")
    reasoning = _plain(record.get("reasoning"))
    if reasoning is not None and not isinstance(reasoning, str):
        raise DataError(f"{where}: 'reasoning' must be a string, got {type(reasoning).__name__}; "
                        f"fix it or leave 'reasoning' out.")
    template = _plain(record.get("template"))
    if template is not None and not isinstance(template, str):
        raise DataError(f"{where}: 'template' must be a string (a phrasing id), got {type(template).__name__}; "
                        f"fix it or leave 'template' out.")
    return QAItem(
        id=_id(record.get("id"), where, default_id),
        question=question.strip(),
        golden_answers=_answers(_plain(answers), where),
        kind=_kind(_plain(record.get("kind")), where),
        evidence_titles=[str(t) for t in titles],
        gold_queries=[[str(q) for q in turn] for turn in queries],
        source=source,
        facts=[dict(f) for f in facts],
        reasoning=reasoning,
        template=template,
    )


def _id(value: Any, where: str, default_id: str) -> str:
    """A record's id as a string; a missing (or null) id becomes ``default_id``."""
    value = _plain(value)
    if value is None:
        return default_id
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: 'id' must be a string or number, got {type(value).__name__} {_short(value)}; "
                        f"give each question one id such as \"id\": \"q1\" (or leave 'id' out).")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: 'id' is empty; give each question a non-empty id such as \"id\": \"q1\" "
                        f"(or leave 'id' out to number questions by position).")
    return text


def _kind(value: Any, where: str) -> str | None:
    """A record's question kind: one string (a number is written as one); empty means none."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(
            f"{where}: 'kind' must be one string naming the question's kind, got {type(value).__name__} "
            f"{_short(value)}; write e.g. \"kind\": \"comparison\" (one kind per question) or leave 'kind' out."
        )
    return value.strip() or None


def _plain(value: Any) -> Any:
    """numpy arrays (from parquet) as lists."""
    return value.tolist() if hasattr(value, "tolist") else value


def load_jsonl(path: str | Path, source: str | None = None) -> list[QAItem]:
    """FlashRAG (and our generated) JSONL: one object per line; blank lines are skipped."""
    path = Path(path)
    located = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        line = _decode(raw, path, number)
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg}).") from None
        located.append((item_from_record(record, where, f"{path.stem}-{number}", source), f"line {number}"))
    return _check_items(located, path, 'write one JSON object per line, e.g. '
                        '{"id": "q1", "question": "...", "golden_answers": ["..."]}.')


def load_json(path: str | Path, source: str | None = None) -> list[QAItem]:
    """RAG-R1 JSON (a list of ``{"question", "golden_answers"}``) or the FanOutQA JSON."""
    path = Path(path)
    text = _decode(path.read_bytes(), path)
    example = 'write a JSON list of questions, e.g. [{"question": "...", "golden_answers": ["..."]}].'
    if not text.strip():
        raise DataError(f"{path}: the file is empty, it holds no questions; {example}")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}).") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of question objects, got {type(records).__name__}.")
    places = [f"item {i} (line {line})" for i, line in enumerate(_array_item_lines(text), start=1)]
    if len(places) != len(records):  # the scan is only for messages; never let it decide
        places = [f"item {i}" for i in range(1, len(records) + 1)]
    if records and isinstance(records[0], dict) and "decomposition" in records[0]:
        items = [fanout_item(r, f"{path} {place}") for r, place in zip(records, places)]
    else:
        items = [item_from_record(r, f"{path} {place}", f"{path.stem}-{i}", source)
                 for i, (r, place) in enumerate(zip(records, places), start=1)]
    return _check_items(list(zip(items, places)), path, example)


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, i: int) -> int:
    """The index of the first non-whitespace character of ``text`` from ``i`` on."""
    match = _JSON_SPACE.match(text, i)
    assert match is not None  # the pattern matches the empty string anywhere
    return match.end()


def _array_item_lines(text: str) -> list[int]:
    """The line each element of the (valid) JSON array ``text`` starts on."""
    decoder = json.JSONDecoder()
    lines: list[int] = []
    try:
        i = _skip_space(text, 0) + 1  # past "["
        i = _skip_space(text, i)
        line, counted = 1, 0
        while i < len(text) and text[i] != "]":
            line += text.count("\n", counted, i)
            counted = i
            lines.append(line)
            _, i = decoder.raw_decode(text, i)
            i = _skip_space(text, i)
            if text[i : i + 1] == ",":
                i = _skip_space(text, i + 1)
    except (json.JSONDecodeError, IndexError):
        return []
    return lines


def load_parquet(path: str | Path, source: str | None = None) -> list[QAItem]:
    """Search-R1 parquet: ``question`` plus ``golden_answers`` or ``reward_model.ground_truth.target``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); write it again with pyarrow or pandas "
                        f"(`df.to_parquet(path)`), or use .jsonl.") from None
    located = [(item_from_record(r, f"{path} row {i}", f"{path.stem}-{i}", source), f"row {i}")
               for i, r in enumerate(rows, start=1)]
    return _check_items(located, path, "write at least one row with 'question' and 'golden_answers'.")


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
    if not isinstance(record["question"], str) or not record["question"].strip():
        raise DataError(f"{where}: 'question' must be a non-empty string, got {_short(record['question'])}.")
    decomposition = record.get("decomposition") or []
    try:
        evidence = [n["evidence"]["title"] for n in decomposition if n.get("evidence")]
        turns = _fanout_turns(decomposition)
    except (KeyError, TypeError, AttributeError):
        raise DataError(f"{where}: 'decomposition' must be a list of sub-questions, each with 'id', 'question' "
                        f"and optional 'depends_on' (ids) and 'evidence' ({{\"title\": ...}}), as in FanOutQA."
                        ) from None
    return QAItem(
        id=_id(record.get("id"), where, where),
        question=record["question"],
        golden_answers=_fanout_answers(record["answer"]),
        kind="fan-out",
        evidence_titles=evidence,
        gold_queries=turns,
        source="fanoutqa",
    )


def fanoutqa_path() -> Path:
    """The FanOutQA dev set inside the installed ``fanoutqa`` package (not imported)."""
    spec = importlib.util.find_spec("fanoutqa")
    locations = spec.submodule_search_locations if spec else None
    path = Path(locations[0]) / "data" / "fanout-final-dev.json" if locations else None
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
    if spec in SHIPPED_SETS:
        path = SHIPPED_DIR / f"{spec}.jsonl"
        if not path.is_file():
            raise MissingResourceError(
                f"{path} is missing (the shipped sets live in the repository's data/ folder): "
                f"regenerate them with `python -m langchain_ragr1.data.generate`."
            )
        return load_jsonl(path, spec)
    if spec == "ragr1-train":
        from langchain_ragr1.data.generate import generate_train

        items = generate_train()
        return _check_items([(item, f"item {i}") for i, item in enumerate(items, start=1)], spec,
                            "regenerate it with `python -m langchain_ragr1.data.generate`.")
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
