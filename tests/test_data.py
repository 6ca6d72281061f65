"""Loaders of the QA formats: RAG-R1 JSON, FlashRAG JSONL, Search-R1 parquet, FanOutQA."""

from __future__ import annotations

import json

import pytest

from langchain_ragr1.data import BENCHMARKS, DataError, load_qa
from langchain_ragr1.data.loaders import fanoutqa_path


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_flashrag_jsonl_with_benchmark_name(tmp_path):
    path = write_lines(tmp_path / "dev.jsonl", [
        {"id": "q1", "question": "who wrote hamlet", "golden_answers": ["Shakespeare", "William Shakespeare"],
         "metadata": {"type": "x"}},
        "",
        {"id": "q2", "question": "capital of france?", "golden_answers": ["Paris"]},
    ])
    items = load_qa(f"hotpotqa:{path}")
    assert [i.id for i in items] == ["q1", "q2"]
    assert items[0].golden_answers == ["Shakespeare", "William Shakespeare"]
    assert {i.source for i in items} == {"hotpotqa"}
    assert load_qa(str(path), limit=1)[0].source is None


def test_ragr1_json_list(tmp_path):
    path = tmp_path / "bamboogle.json"
    path.write_text(json.dumps([{"question": "Q one", "golden_answers": ["a"]},
                                {"question": "Q two", "golden_answers": "b"}]))
    items = load_qa(f"bamboogle:{path}")
    assert [(i.id, i.golden_answers) for i in items] == [("bamboogle-1", ["a"]), ("bamboogle-2", ["b"])]


def test_search_r1_parquet_both_answer_layouts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nq.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"question": "q1", "reward_model": {"ground_truth": {"target": ["x", "y"]}}},
    ]), path)
    assert load_qa(f"nq:{path}")[0].golden_answers == ["x", "y"]
    pq.write_table(pa.Table.from_pylist([{"id": "a", "question": "q2", "golden_answers": ["z"]}]), path)
    assert load_qa(str(path))[0].golden_answers == ["z"]


@pytest.mark.parametrize("record, message", [
    ({"golden_answers": ["a"]}, "line 2: missing field 'question'"),
    ({"question": "q"}, "line 2: missing field 'golden_answers'"),
    ({"question": 5, "golden_answers": ["a"]}, "line 2: 'question' must be a non-empty string"),
    ({"question": "q", "golden_answers": {"a": 1}}, "line 2: 'golden_answers' must be a list"),
    ({"question": "q", "golden_answers": []}, "line 2: 'golden_answers' is empty"),
    ("{not json", "line 2: not valid JSON"),
])
def test_bad_lines_name_file_and_line(tmp_path, record, message):
    path = write_lines(tmp_path / "bad.jsonl", [{"question": "ok", "golden_answers": ["a"]}, record])
    with pytest.raises(DataError) as info:
        load_qa(str(path))
    assert message in str(info.value) and str(path) in str(info.value)


def test_unknown_names_list_the_valid_ones(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [{"question": "q", "golden_answers": ["a"]}])
    with pytest.raises(DataError, match="Unknown benchmark 'squad'.*hotpotqa.*bamboogle"):
        load_qa(f"squad:{path}")
    with pytest.raises(DataError, match="ragr1-dev.*fanoutqa"):
        load_qa("no-such-set")
    assert len(BENCHMARKS) == 7


def test_fanoutqa_dev_with_decompositions():
    items = load_qa("fanoutqa")
    assert len(items) == 310 == len(json.loads(fanoutqa_path().read_text()))
    first = items[0]
    assert first.kind == "fan-out" and first.source == "fanoutqa"
    # the first sub-question (the list of picks) comes before the five parallel lookups
    assert len(first.gold_queries) == 2 and len(first.gold_queries[1]) == 5
    assert first.evidence_titles[0] == "1998 Major League Baseball draft"
    assert all(a and isinstance(a, str) for i in items for a in i.golden_answers)


def test_shipped_sets_load():
    dev, test = load_qa("ragr1-dev"), load_qa("ragr1-test")
    assert len(dev) >= 80 and len(test) >= 80
    assert {i.kind for i in test} == {"comparison", "bridge", "fan-out", "single-hop"}
    assert all(i.gold_queries and i.evidence_titles for i in dev + test)
    train = load_qa("ragr1-train", limit=5)
    assert len(train) == 5 and not {i.id for i in train} & {i.id for i in dev + test}
