"""Eval under faults: errored questions are redone on resume and counted; bad QA files stop
``ragr1 eval`` before any model loads, with an error naming the file (issue 12, items 3, 5-7)."""

from __future__ import annotations

import json

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.config import config_for
from langchain_ragr1.data import DataError, QAItem
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.evaluation import evaluate, read_predictions, run_eval, write_kind_metrics
from langchain_ragr1.policies import factory as policy_factory
from langchain_ragr1.report import metrics_table
from langchain_ragr1.retrievers import factory as retriever_factory
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document("Paris is the capital of France.", metadata={"title": "Paris"})]
ITEMS = [QAItem(id=f"q{i}", question=f"Question number {i}", golden_answers=["Paris"],
                kind="bridge" if i % 2 else "comparison") for i in range(5)]


class FlakyRetriever(MemoryRetriever):
    """Fails every query containing one of ``down_for`` (every query with ``down=True``)."""

    down: bool = False
    down_for: tuple[str, ...] = ()

    def _get_relevant_documents(self, query, *, run_manager, k=None):
        if self.down or any(word in query for word in self.down_for):
            raise ConnectionError("retriever backend unavailable")
        return super()._get_relevant_documents(query, run_manager=run_manager, k=k)


def naive_rag(policy, retriever):
    """naive-rag retrieves with the question itself, so a query names its question."""
    settings = config_for("naive-rag").to_dict() | {"retrieval_retries": 0, "on_retrieval_error": "raise"}
    return lambda mode: RagR1Agent(policy, retriever, **settings)


def answers(policy_turns=("<answer> Paris </answer>",)):
    return ScriptedPolicy(list(policy_turns), token_level=True)


def test_resume_redoes_errored_questions_and_counts_errors(tmp_path):
    policy = answers()
    outage = FlakyRetriever(documents=DOCS, down_for=("number 1", "number 3"))
    first = evaluate(ITEMS, ["naive-rag"], naive_rag(policy, outage), tmp_path, batch_size=2)["naive-rag"]
    assert (first["n"], first["errors"], first["em"]) == (5, 2, pytest.approx(0.6))
    assert first["em_without_errors"] == 1.0 and first["f1_without_errors"] == 1.0
    table = metrics_table({"naive-rag": first})
    assert table.splitlines()[0].endswith("| n | errors |") and "| 5 | 2 |" in table.splitlines()[2]
    assert "naive-rag: 2 of 5 question(s) ended in an error" in table and "EM over the other 3: 1.000" in table
    by_kind = write_kind_metrics(tmp_path, ITEMS, ["naive-rag"])["naive-rag"]
    assert (by_kind["bridge"]["errors"], by_kind["comparison"]["errors"]) == (2, 0)

    calls = len(policy.calls)
    healthy = FlakyRetriever(documents=DOCS)
    again = evaluate(ITEMS, ["naive-rag"], naive_rag(policy, healthy), tmp_path, batch_size=2)["naive-rag"]
    assert len(policy.calls) - calls == 2                       # only q1 and q3 ran again
    assert sorted(healthy.calls) == ["Question number 1?", "Question number 3?"]
    assert (again["n"], again["errors"], again["em"], again["em_without_errors"]) == (5, 0, 1.0, 1.0)
    records = read_predictions(tmp_path / "predictions.jsonl")
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3", "q4"]   # one each, in place
    assert all(r["error"] is None for r in records)
    assert "errors" in metrics_table({"naive-rag": again}) and "ended in an error" not in metrics_table(
        {"naive-rag": again})


def test_error_records_stay_until_replaced(tmp_path):
    policy = answers()
    evaluate(ITEMS[:3], ["naive-rag"], naive_rag(policy, FlakyRetriever(documents=DOCS, down=True)), tmp_path)
    assert [r["error"] is not None for r in read_predictions(tmp_path / "predictions.jsonl")] == [True] * 3

    def interrupt(n):
        raise KeyboardInterrupt                                 # killed after the first redone question

    with pytest.raises(KeyboardInterrupt):
        evaluate(ITEMS[:3], ["naive-rag"], naive_rag(policy, FlakyRetriever(documents=DOCS)), tmp_path,
                 batch_size=1, progress=interrupt)
    records = read_predictions(tmp_path / "predictions.jsonl")
    assert [(r["id"], r["error"] is None) for r in records] == [
        ("q0", False), ("q1", False), ("q2", False), ("q0", True)]
    healthy = FlakyRetriever(documents=DOCS)
    metrics = evaluate(ITEMS[:3], ["naive-rag"], naive_rag(policy, healthy), tmp_path)["naive-rag"]
    assert sorted(healthy.calls) == ["Question number 1?", "Question number 2?"]   # q0 is done
    assert (metrics["n"], metrics["errors"], metrics["em"]) == (3, 0, 1.0)
    records = read_predictions(tmp_path / "predictions.jsonl")
    assert [(r["id"], r["error"]) for r in records] == [("q0", None), ("q1", None), ("q2", None)]


@pytest.fixture
def fake_models(monkeypatch):
    """``ragr1 eval`` with a scripted policy and a swappable fake retriever; counts model loads."""
    state = {"retriever": FlakyRetriever(documents=DOCS), "loads": 0}

    def policy(*args, **kwargs):
        state["loads"] += 1
        return answers(["<search> capital of France </search>", "<answer> Paris </answer>"])

    monkeypatch.setattr(policy_factory, "default_policy", policy)
    monkeypatch.setattr(retriever_factory, "make_retriever", lambda *a, **kw: state["retriever"])
    return state


def write_qa(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_eval_after_an_outage_reruns_and_shows_errors(tmp_path, fake_models, capsys):
    from langchain_ragr1.cli import main

    data = write_qa(tmp_path / "qa.jsonl", [
        {"id": f"q{i}", "question": f"Question {i}", "golden_answers": ["Paris"],
         "kind": "bridge" if i % 2 else "comparison"} for i in range(4)])
    out = tmp_path / "out"
    argv = ["eval", "--data", str(data), "--mode", "multi", "--out", str(out)]
    fake_models["retriever"] = FlakyRetriever(documents=DOCS, down=True)   # on_retrieval_error="raise"
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| errors |" in printed and "| 4 | 4 |" in printed
    assert "multi: all 4 question(s) ended in an error" in printed
    metrics = json.loads((out / "metrics.json").read_text())["multi"]
    assert (metrics["errors"], metrics["em"], metrics["em_without_errors"]) == (4, 0.0, None)
    by_kind = json.loads((out / "metrics_by_kind.json").read_text())["multi"]
    assert by_kind["bridge"]["errors"] == by_kind["comparison"]["errors"] == 2
    report = (out / "report.md").read_text()
    assert "| multi | bridge | 0.000 | 0.00 | 0.00 | 0.0% | 2 | 2 |" in report and "all 4 question(s)" in report

    fake_models["retriever"] = healthy = FlakyRetriever(documents=DOCS)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 4 | 0 |" in printed and "ended in an error" not in printed
    assert len(healthy.calls) == 4                              # every errored question ran again
    records = read_predictions(out / "predictions.jsonl")
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2", "q3"] and all(r["error"] is None for r in records)
    metrics = json.loads((out / "metrics.json").read_text())["multi"]
    assert (metrics["errors"], metrics["em"], metrics["n"]) == (0, 1.0, 4)
    assert "| multi | bridge | 1.000 | 1.00 | 1.00 | 100.0% | 2 | 0 |" in (out / "report.md").read_text()


OK = {"question": "q", "golden_answers": ["a"]}


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", b"", "the file holds no questions"),
    ("blank.jsonl", b"  \n\n\t\n", "the file holds no questions"),
    ("empty.json", b"", "the file is empty"),
    ("list.json", b"[]", "the file holds no questions"),
    ("latin1.jsonl", json.dumps(OK).encode() + b'\n{"question": "caf\xe9", "golden_answers": ["a"]}\n',
     "line 2: not UTF-8 text"),
    ("utf16.json", json.dumps([OK]).encode("utf-16"), "line 1: not UTF-8 text"),
    ("kind.jsonl", (json.dumps(OK) + "\n" + json.dumps(OK | {"kind": ["bridge", "comparison"]})).encode(),
     "line 2: 'kind' must be one string"),
    ("dup.jsonl", "".join(json.dumps(OK | {"id": i}) + "\n" for i in ["a", "b", "a"]).encode(),
     "duplicate id 'a' on line 1 and line 3"),
])
def test_bad_qa_file_stops_eval_before_any_model_loads(tmp_path, fake_models, monkeypatch, capsys,
                                                       name, content, message):
    from langchain_ragr1.cli import main

    path = tmp_path / name
    path.write_bytes(content)
    built = []
    monkeypatch.setattr(retriever_factory, "make_retriever", lambda *a, **kw: built.append(1))
    with pytest.raises(DataError) as info:
        run_eval(str(path), ["multi"], tmp_path / "out")
    assert str(path) in str(info.value) and message in str(info.value)
    assert fake_models["loads"] == 0 and not built
    assert main(["eval", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and fake_models["loads"] == 0
    assert not (tmp_path / "out").exists()


def test_evaluate_rejects_duplicate_ids_and_list_kinds_by_name(tmp_path):
    twice = [ITEMS[0], ITEMS[1], ITEMS[0]]
    with pytest.raises(ConfigError, match=r"duplicate id 'q0' \(questions 1 and 3\)"):
        evaluate(twice, ["direct"], lambda m: None, tmp_path)
    listed = [QAItem(id="x", question="q", golden_answers=["a"], kind=["a", "b"])]
    with pytest.raises(ConfigError, match="'x': kind must be one string"):
        evaluate(listed, ["direct"], lambda m: None, tmp_path)


def test_limit_samples_first_shuffled_or_stratified_reproducibly():
    from types import SimpleNamespace

    from langchain_ragr1.evaluation import select_items

    items = [SimpleNamespace(id=i, kind="bridge" if i < 60 else "comparison" if i < 90 else "fanout")
             for i in range(100)]
    assert [it.id for it in select_items(items, 5)] == [0, 1, 2, 3, 4]  # the file lists bridge first
    shuffled = select_items(items, 10, "shuffle", seed=3)
    assert shuffled == select_items(items, 10, "shuffle", seed=3) != select_items(items, 10, "shuffle", seed=4)
    assert [it.id for it in shuffled] == sorted(it.id for it in shuffled) and len(shuffled) == 10
    strat = select_items(items, 10, "stratified", seed=1)
    kinds = [it.kind for it in strat]
    assert (kinds.count("bridge"), kinds.count("comparison"), kinds.count("fanout")) == (6, 3, 1)
    assert len({it.id for it in select_items(items, 3, "stratified")}) == 3
    assert {it.kind for it in select_items(items, 3, "stratified")} == {"bridge", "comparison", "fanout"}
    assert len(select_items(items, 2, "stratified")) == 2
    assert select_items(items, 500, "stratified") == items
    with pytest.raises(ConfigError, match="sampling"):
        select_items(items, 3, "random")
