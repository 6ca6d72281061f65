"""scripts/analyze_predictions.py: each wrong answer is put under its first failing step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from langchain_ragr1.data import QAItem

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "analyze_predictions.py"
_SPEC = importlib.util.spec_from_file_location("analyze_predictions", _PATH)
analyze = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(analyze)

ITEM = QAItem(id="c", question="Who died first, A or B?", golden_answers=["A"], kind="comparison",
              evidence_titles=["A", "B"], gold_queries=[["A death year", "B death year"]])
ITEM.facts = [{"title": "A", "entity": "A", "attribute": "death year", "value": "1851", "quote": "(1797–1851)",
               "statement": "A died in 1851."},
              {"title": "B", "entity": "B", "attribute": "death year", "value": "1857", "quote": "(1789–1857)",
               "statement": "B died in 1857."}]


def record(**overrides):
    base = {"id": "c", "mode": "multi", "em": 0.0, "answer": "B", "turns": 1,
            "queries": [["A death year", "B death year"]], "evidence_recall": 1.0,
            "trace": "<think>A died in 1851 and B in 1857.</think><answer> B </answer>"}
    return {**base, **overrides}


def test_each_failure_gets_its_first_failing_step():
    assert analyze.classify(record(em=1.0, answer="A"), ITEM) is None
    assert analyze.classify(record(answer=None), ITEM) == "no_answer"
    assert analyze.classify(record(queries=[["A death year"]]), ITEM) == "search"
    assert analyze.classify(record(evidence_recall=0.5), ITEM) == "retrieval"
    assert analyze.classify(record(trace="<think>A died in 1897.</think>"), ITEM) == "reading"
    assert analyze.classify(record(), ITEM) == "reasoning"  # both values stated, wrong conclusion
    # naive-rag searches the question once by design: not a search failure
    assert analyze.classify(record(mode="naive-rag", queries=[["Who died first, A or B?"]]), ITEM) == "reasoning"


def test_breakdown_counts_per_mode_and_kind(tmp_path, capsys):
    rows = [record(em=1.0, answer="A"), record(evidence_recall=0.5), record(mode="single", answer=None)]
    assert analyze.breakdown(rows, {"c": ITEM}) == {
        "multi": {"comparison": {"n": 2, "right": 1, "retrieval": 1}, "all": {"n": 2, "right": 1, "retrieval": 1}},
        "single": {"comparison": {"n": 1, "no_answer": 1}, "all": {"n": 1, "no_answer": 1}},
    }
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps(ITEM.to_dict()) + "\n")
    assert analyze.main([str(tmp_path), "--data", str(qa), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["multi"]["all"]["right"] == 1
