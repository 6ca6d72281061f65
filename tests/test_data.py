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
    assert len(dev) == 100 and len(test) == 100
    assert {i.kind for i in test} == {"comparison", "bridge", "fan-out", "single-hop"}
    assert all(i.gold_queries and i.evidence_titles and i.facts and i.reasoning for i in dev + test)
    assert len(load_qa("ragr1-dev-v1")) == 91 and len(load_qa("ragr1-test-v1")) == 93
    train = load_qa("ragr1-train", limit=5)
    assert len(train) == 5 and not {i.id for i in train} & {i.id for i in dev + test}


OK = {"question": "q", "golden_answers": ["a"]}


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("latin1.jsonl", json.dumps(OK).encode() + b'\n{"question": "caf\xe9", "golden_answers": ["a"]}\n',
     "line 2: not UTF-8 text (byte 0xe9"),
    ("utf16.jsonl", (json.dumps(OK) + "\n").encode("utf-16"), "line 1: not UTF-8 text (byte 0xff"),
    ("latin1.json", b'[\n {"question": "q", "golden_answers": ["a"]},\n {"question": "\xe9t\xe9", '
                    b'"golden_answers": ["a"]}\n]', "line 3: not UTF-8 text"),
    ("utf16.json", json.dumps([OK]).encode("utf-16"), "the file looks like UTF-16"),
])
def test_non_utf8_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_qa(str(path))
    text = str(info.value)
    assert str(path) in text and message in text and "must be UTF-8" in text and "iconv" in text


def test_utf8_bom_is_accepted(tmp_path):
    for name, body in [("bom.jsonl", json.dumps(OK) + "\n"), ("bom.json", json.dumps([OK]))]:
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert load_qa(str(tmp_path / name))[0].question == "q"


@pytest.mark.parametrize("kind", [["bridge", "comparison"], {"type": "bridge"}, True])
def test_kind_must_be_one_string_in_every_format(tmp_path, kind):
    jsonl = write_lines(tmp_path / "k.jsonl", [OK, OK | {"kind": kind}])
    json_file = tmp_path / "k.json"
    json_file.write_text(json.dumps([OK, OK | {"kind": kind}], indent=1))
    cases = [(jsonl, "line 2"), (json_file, "item 2 (line 8)")]
    if not isinstance(kind, dict):  # a parquet column of structs is another type; lists and bools fit
        cases.append((write_parquet(tmp_path / "k.parquet", [OK | {"kind": None}, OK | {"kind": kind}]), "row 2"))
    for path, where in cases:
        with pytest.raises(DataError) as info:
            load_qa(str(path))
        assert f"{path} {where}: 'kind' must be one string" in str(info.value)
        assert '"kind": "comparison"' in str(info.value)


def test_kind_numbers_and_blank_kinds_and_null_ids(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [OK | {"kind": 2, "id": None}, OK | {"kind": " ", "id": None}])
    items = load_qa(str(path))
    assert [(i.id, i.kind) for i in items] == [("n-1", "2"), ("n-2", None)]
    with pytest.raises(DataError, match=r"n.jsonl line 1: 'id' must be a string or number, got list"):
        load_qa(str(write_lines(path, [OK | {"id": ["a"]}])))


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", "", "the file holds no questions"),
    ("blank.jsonl", " \n\n\t\n", "the file holds no questions"),
    ("empty.json", "", "the file is empty"),
    ("blank.json", "  \n ", "the file is empty"),
    ("list.json", "[ ]", "the file holds no questions"),
    ("empty.parquet", "", "not a readable Parquet file"),
    ("text.parquet", "question,golden_answers\n", "not a readable Parquet file"),
])
def test_empty_or_unreadable_files_are_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_qa(str(path))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_parquet_without_rows_is_an_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"question": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match="none.parquet: the file holds no questions"):
        load_qa(str(path))


def test_duplicate_ids_name_file_id_and_both_places(tmp_path):
    jsonl = write_lines(tmp_path / "d.jsonl", [OK | {"id": "a"}, OK | {"id": "b"}, "", OK | {"id": "a"}])
    json_file = tmp_path / "d.json"
    json_file.write_text(json.dumps([OK | {"id": 7}, OK | {"id": "7"}], indent=1))
    parquet = write_parquet(tmp_path / "d.parquet", [OK | {"id": "x"}, OK | {"id": "y"}, OK | {"id": "x"}])
    auto = write_lines(tmp_path / "auto.jsonl", [OK | {"id": "auto-2"}, OK])   # line 2 is numbered auto-2
    for path, message in [(jsonl, "duplicate id 'a' on line 1 and line 4"),
                          (json_file, "duplicate id '7' on item 1 (line 2) and item 2 (line 9)"),
                          (parquet, "duplicate id 'x' on row 1 and row 3"),
                          (auto, "duplicate id 'auto-2' on line 1 and line 2")]:
        with pytest.raises(DataError) as info:
            load_qa(str(path))
        assert str(info.value).startswith(f"{path}: {message}") and "give every question its own 'id'" in str(
            info.value)


def test_fanoutqa_shaped_file_checks(tmp_path):
    node = {"id": "n1", "question": "sub?", "decomposition": [], "evidence": {"title": "T"}}
    item = {"id": "f1", "question": "Q?", "answer": "A", "decomposition": [node]}
    path = tmp_path / "fan.json"
    path.write_text(json.dumps([item, item | {"id": "f2"}]))
    assert [i.id for i in load_qa(str(path))] == ["f1", "f2"]
    path.write_text(json.dumps([item, item]))
    with pytest.raises(DataError, match=r"duplicate id 'f1' on item 1 \(line 1\) and item 2 \(line 1\)"):
        load_qa(str(path))
    path.write_text(json.dumps([item | {"decomposition": [{"question": "no id"}]}]))
    with pytest.raises(DataError, match=r"fan.json item 1 \(line 1\): 'decomposition' must be a list"):
        load_qa(str(path))


FACT = {"title": "Accra", "entity": "Accra", "attribute": "population", "value": "284,124",
        "quote": "a population of 284,124", "statement": "Accra has a population of 284,124."}


def test_facts_and_reasoning_round_trip(tmp_path):
    from langchain_ragr1.data.items import QAItem, write_jsonl

    item = QAItem(id="a", question="What is the population of Accra?", golden_answers=["284,124", "284124"],
                  kind="single-hop", evidence_titles=["Accra"], gold_queries=[["Accra population"]],
                  facts=[FACT], reasoning="The passage says Accra has a population of 284,124.")
    path = tmp_path / "f.jsonl"
    write_jsonl([item], path)
    back = load_qa(str(path))[0]
    assert back == item
    plain = load_qa(str(write_lines(tmp_path / "p.jsonl", [OK])))[0]
    assert plain.facts == [] and plain.reasoning is None


@pytest.mark.parametrize("facts", [
    {"title": "x"}, ["Accra"], [FACT | {"value": 284124}], [{k: v for k, v in FACT.items() if k != "quote"}],
    [FACT | {"extra": 1}],
])
def test_malformed_facts_name_file_and_line(tmp_path, facts):
    path = write_lines(tmp_path / "bad.jsonl", [OK, OK | {"facts": facts}])
    with pytest.raises(DataError) as info:
        load_qa(str(path))
    assert f"{path} line 2: 'facts' must be a list of objects" in str(info.value)
    path = write_lines(tmp_path / "bad.jsonl", [OK | {"reasoning": ["x"]}])
    with pytest.raises(DataError, match="line 1: 'reasoning' must be a string"):
        load_qa(str(path))
