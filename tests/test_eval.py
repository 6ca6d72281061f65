"""Evaluation: metrics with the spec's normalisation, resume, reports, and ``ragr1 eval``."""

from __future__ import annotations

import json

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.config import config_for
from langchain_ragr1.data import QAItem, load_qa
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.evaluation import METRIC_KEYS, aggregate, evaluate, read_predictions
from langchain_ragr1.protocol import exact_match, f1_score
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy


@pytest.mark.parametrize("prediction, gold, em", [
    ("The Eiffel Tower", ["eiffel tower"], 1.0),          # article and case
    ("an apple", "Apple", 1.0),
    ("Paris!", ["paris"], 1.0),                           # punctuation
    ("  New   York\tCity ", ["new york city"], 1.0),      # whitespace
    ("NYC", ["New York City", "NYC"], 1.0),               # any of several gold answers
    ("theatre", ["the atre"], 0.0),                       # 'the' only as a word
    (None, ["x"], 0.0),
])
def test_exact_match_normalisation(prediction, gold, em):
    assert exact_match(prediction, gold) == em


def test_f1_takes_the_best_gold_answer():
    assert f1_score("Marie Curie", ["Curie", "Marie Skłodowska Curie"]) == pytest.approx(0.8)
    assert f1_score("the", ["a"]) == 0.0


DOCS = [Document("Paris is the capital of France.", metadata={"title": "Paris"}),
        Document("Berlin is the capital of Germany.", metadata={"title": "Berlin"})]
ITEMS = [QAItem(id=f"q{i}", question=f"Question number {i}", golden_answers=["Paris", "City of Light"])
         for i in range(5)]


def scripted(turns):
    return ScriptedPolicy(turns, token_level=True)


def make_agents(policies):
    retriever = MemoryRetriever(documents=DOCS)

    def make(mode):
        policy = policies[mode]
        return RagR1Agent(policy, retriever, **config_for(mode, max_turns=3).to_dict())
    return make


def test_metrics_of_multi_and_direct(tmp_path):
    policies = {
        "multi": scripted(["oops", "<search> capital of France, Paris </search>", "<answer> the Paris </answer>"]),
        "direct": scripted(["<answer> Berlin </answer>"]),
    }
    metrics = evaluate(ITEMS, ["multi", "direct"], make_agents(policies), tmp_path, batch_size=2)
    multi, direct = metrics["multi"], metrics["direct"]
    assert set(METRIC_KEYS) <= set(multi)
    assert (multi["em"], multi["f1"], multi["n"]) == (1.0, 1.0, 5)
    assert multi["avg_turns"] == 1.0 and multi["avg_queries"] == 2.0
    assert multi["format_ok"] == pytest.approx(2 / 3)      # one invalid of three model turns
    assert multi["avg_generated_tokens"] == len("oops<search> capital of France, Paris </search>"
                                                 "<answer> the Paris </answer>")
    assert (direct["em"], direct["avg_turns"], direct["format_ok"]) == (0.0, 0.0, 1.0)
    assert 0 < multi["avg_seconds"] <= multi["p95_seconds"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    records = read_predictions(tmp_path / "predictions.jsonl")
    assert len(records) == 10 and {r["mode"] for r in records} == {"multi", "direct"}
    first = next(r for r in records if r["mode"] == "multi")
    assert first["queries"] == [["capital of France", "Paris"]] and "<information>" in first["trace"]


def test_score_reads_the_answer_not_the_prompt(tmp_path):
    # The prompt contains "<answer> Beijing </answer>"; a model that never answers scores 0.
    item = QAItem(id="b", question="Capital of China", golden_answers=["Beijing"])
    policies = {"single": scripted(["I do not know"])}
    metrics = evaluate([item], ["single"], make_agents(policies), tmp_path)
    assert metrics["single"]["em"] == 0.0 and metrics["single"]["format_ok"] == 0.0


def test_resume_skips_finished_questions(tmp_path):
    policy = scripted(["<answer> Paris </answer>"])
    evaluate(ITEMS[:3], ["multi"], make_agents({"multi": policy}), tmp_path, batch_size=2)
    with (tmp_path / "predictions.jsonl").open("a") as handle:
        handle.write('{"id": "q3", "mode": "mul')            # a line cut by the interruption
    assert len(policy.calls) == 3
    metrics = evaluate(ITEMS, ["multi"], make_agents({"multi": policy}), tmp_path, batch_size=2)
    assert len(policy.calls) == 5                              # only q3 and q4 ran
    assert metrics["multi"]["n"] == 5 and metrics["multi"]["em"] == 1.0
    assert evaluate(ITEMS, ["multi"], make_agents({"multi": policy}), tmp_path)["multi"]["n"] == 5
    assert len(policy.calls) == 5


def test_errors_are_recorded_not_fatal(tmp_path):
    retriever = MemoryRetriever(documents=DOCS, fail_times=100)
    policy = scripted(["<search> x </search>", "<answer> Paris </answer>"])
    metrics = evaluate(ITEMS[:2], ["multi"], lambda m: RagR1Agent(policy, retriever, retrieval_retries=0),
                       tmp_path)
    assert metrics["multi"]["errors"] == 2 and metrics["multi"]["em"] == 0.0


def test_unknown_mode_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="multi, single, naive-rag, direct"):
        evaluate(ITEMS, ["multi", "rag"], make_agents({}), tmp_path)


def test_aggregate_empty_and_p95():
    assert aggregate([])["n"] == 0
    records = [{"em": 0, "f1": 0, "turns": 0, "steps": 1, "invalid_turns": 0, "queries": [],
                "seconds": float(s), "answer": None} for s in range(1, 21)]
    assert aggregate(records)["p95_seconds"] == 19.0


def test_report_has_table_and_png(tmp_path):
    from langchain_ragr1.report import write_report

    policies = {"multi": scripted(["<answer> Paris </answer>"]), "naive-rag": scripted(["<answer> x </answer>"])}
    metrics = evaluate(ITEMS[:2], ["multi", "naive-rag"], make_agents(policies), tmp_path)
    report = write_report(metrics, tmp_path, data="test").read_text()
    assert "| multi | 1.000 |" in report and "| naive-rag | 0.000 |" in report
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_cli_eval_on_real_model_direct_and_multi(tmp_path, default_model_dir):
    """ragr1 eval on 3 shipped test questions (SmolLM2, BM25, 16 new tokens)."""
    from langchain_ragr1.cli import main

    out = tmp_path / "out"
    argv = ["eval", "--data", "ragr1-test", "--limit", "3", "--mode", "direct", "multi",
            "--retriever", "bm25", "--model", str(default_model_dir), "--max-new-tokens", "16",
            "--max-turns", "1", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["direct"]["n"] == metrics["multi"]["n"] == 3 and metrics["direct"]["avg_turns"] == 0
    assert metrics["multi"]["avg_generated_tokens"] > 0
    assert len(read_predictions(out / "predictions.jsonl")) == 6
    assert "| direct |" in (out / "report.md").read_text()


def test_flashrag_file_through_evaluate(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"id": "a", "question": "capital of france", "golden_answers": ["Paris"], "x": 1}\n')
    policies = {"naive-rag": scripted(["<answer> Paris </answer>"])}
    metrics = evaluate(load_qa(f"hotpotqa:{path}"), ["naive-rag"], make_agents(policies), tmp_path)
    record = read_predictions(tmp_path / "predictions.jsonl")[0]
    assert metrics["naive-rag"]["em"] == 1.0 and metrics["naive-rag"]["avg_turns"] == 1.0
    assert record["queries"] == [["capital of france?"]] and record["documents"][0] == "Paris"


def test_cli_eval_flashrag_file_and_bad_data(tmp_path, capsys):
    from langchain_ragr1.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "golden_answers": []}\n')
    assert main(["eval", "--data", f"nq:{bad}", "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "line 1: 'golden_answers' is empty" in captured.err and captured.out == ""
    with pytest.raises(SystemExit):
        main(["eval", "--data", "ragr1-dev", "--mode", "rag", "--out", str(tmp_path / "o")])
    assert "naive-rag" in capsys.readouterr().err
    assert len(load_qa("ragr1-dev", limit=2)) == 2


def test_metrics_by_question_kind(tmp_path):
    from langchain_ragr1.evaluation import write_kind_metrics
    from langchain_ragr1.report import write_report

    items = [QAItem(id="c1", question="Q1", golden_answers=["Paris"], kind="comparison"),
             QAItem(id="s1", question="Q2", golden_answers=["Rome"], kind="single-hop")]
    policies = {"multi": scripted(["<search> a, b </search>", "<answer> Paris </answer>"])}
    metrics = evaluate(items, ["multi"], make_agents(policies), tmp_path)
    by_kind = write_kind_metrics(tmp_path, items, ["multi"])
    assert json.loads((tmp_path / "metrics_by_kind.json").read_text()) == by_kind
    assert by_kind["multi"]["comparison"]["n"] == by_kind["multi"]["single-hop"]["n"] == 1
    assert by_kind["multi"]["comparison"]["em"] == 1.0 and by_kind["multi"]["single-hop"]["em"] == 0.0
    report = write_report(metrics, tmp_path, by_kind=by_kind).read_text()
    assert "| multi | comparison | 1.000 | 1.00 | 2.00 |" in report


def test_evidence_recall_splits_em(tmp_path):
    items = [QAItem(id="e1", question="Q1", golden_answers=["Paris"], evidence_titles=["Paris", "Rome"]),
             QAItem(id="e2", question="Q2", golden_answers=["Paris"], evidence_titles=["Atlantis"])]
    policies = {"multi": scripted(["<search> Paris, Rome </search>", "<answer> Paris </answer>"])}
    metrics = evaluate(items, ["multi"], make_agents(policies), tmp_path)["multi"]
    records = {r["id"]: r for r in read_predictions(tmp_path / "predictions.jsonl")}
    titles = set(records["e1"]["documents"])
    expected = sum(t in titles for t in ["Paris", "Rome"]) / 2
    assert records["e1"]["evidence_recall"] == expected and records["e2"]["evidence_recall"] == 0
    assert metrics["evidence_recall"] == expected / 2
    assert metrics["em_evidence_missed"] == 1.0  # both answered Paris; e2's evidence was never retrievable


def test_questions_per_minute_from_the_chunks_wall_time(tmp_path):
    policy = scripted(["<answer> Paris </answer>"])
    metrics = evaluate(ITEMS, ["multi"], make_agents({"multi": policy}), tmp_path, batch_size=2)
    records = read_predictions(tmp_path / "predictions.jsonl")
    shares = [r["wall_share_s"] for r in records]
    assert all(s > 0 for s in shares) and len(set(shares[:2])) == 1  # one chunk of two shares its wall time
    assert metrics["multi"]["questions_per_min"] == pytest.approx(60 * 5 / sum(shares))
    old = [{k: v for k, v in r.items() if k != "wall_share_s"} for r in records]  # written before the field
    assert aggregate(old)["questions_per_min"] is None


def test_unknown_backend_is_refused_before_anything_loads(tmp_path):
    from langchain_ragr1.evaluation import run_eval
    from langchain_ragr1.policies.factory import default_policy

    with pytest.raises(ConfigError, match="backend='vlm' is unknown: use one of fast, transformers, continuous, vllm"):
        default_policy(backend="vlm")
    with pytest.raises(ConfigError, match="--backend 'tgi' is unknown"):
        run_eval("ragr1-dev", ["multi"], tmp_path, backend="tgi", retriever="bm25")


def test_vllm_backend_without_vllm_says_how_to_install():
    import importlib.util

    from langchain_ragr1.errors import MissingResourceError
    from langchain_ragr1.policies.factory import default_policy

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(MissingResourceError, match="vllm_cpu_env.sh"):
        default_policy(backend="vllm")
