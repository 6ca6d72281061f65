"""benchmarks/bench_eval.py on 2 questions with scripted policies: the backends alternate chunk by chunk, the
ratio line and the differing answers come from the evaluations' own records."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from langchain_core.documents import Document

from langchain_ragr1.evaluation import read_predictions
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_eval.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_eval", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_eval_alternates_backends_and_reports_what_differs(monkeypatch, tmp_path, capsys):
    from langchain_ragr1.policies import factory as policy_factory
    from langchain_ragr1.retrievers import factory as retriever_factory

    calls: list[tuple[str, str]] = []

    def load(path, *, backend, **kwargs):
        def turn(segments):
            question = "0" if "Question 0" in segments[0]["text"] else "1"
            calls.append((backend, question))
            answer = "Berlin" if backend == "transformers" and question == "1" else "Paris"
            return f"<answer> {answer} </answer>"
        # the eager stand-in is slower, so the ratio is above 1 however loaded the machine is
        return ScriptedPolicy(turn, token_level=True, delay_s=0.2 if backend == "transformers" else 0.0)

    monkeypatch.setattr(policy_factory, "default_policy", load)
    monkeypatch.setattr(retriever_factory, "make_retriever", lambda *a, **kw: MemoryRetriever(documents=[
        Document("Paris is the capital of France.", metadata={"title": "Paris"})]))
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "golden_answers": ["Paris"],
                                        "kind": "single-hop"}) + "\n" for i in range(2)), encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "out"

    results = _bench().main(["--data", str(data), "--limit", "2", "--chunk", "1", "--model", str(model),
                             "--retriever", "bm25", "--out", str(out)])
    printed = capsys.readouterr().out

    assert calls == [("fast", "0"), ("transformers", "0"), ("fast", "1"), ("transformers", "1")]
    fast, eager = results["fast"]["questions_per_min"], results["transformers"]["questions_per_min"]
    assert fast == 60 * 2 / results["seconds"]["fast"] and eager == 60 * 2 / results["seconds"]["transformers"]
    assert results["ratio"] > 1
    assert f"eval questions/min: fast {fast:.3f}, eager {eager:.3f}, ratio {fast / eager:.2f}x" in printed
    assert len(re.findall(r"load \d+\.\d\d -> \d+\.\d\d", printed)) == 4  # before and after each backend's chunks
    assert (results["fast"]["metrics"]["multi"]["em"], results["transformers"]["metrics"]["multi"]["em"]) == (1.0, 0.5)
    assert "same answer: 1/2, identical transcripts: 1/2" in printed
    assert re.search(r"q1 \(single-hop\): fast 'Paris' \(em 1\.0\) vs transformers 'Berlin' \(em 0\.0\)", printed)
    assert "q0 (" not in printed
    assert printed.count("no model calls recorded") == 2  # the scripted stand-ins record none
    for backend in ("fast", "transformers"):  # ragr1 eval's outputs, one record per question
        assert len(read_predictions(out / backend / "predictions.jsonl")) == 2
        assert (out / backend / "report.md").is_file()
        assert json.loads((out / backend / "metrics.json").read_text())["multi"]["n"] == 2


def test_the_time_split_sums_the_recorded_calls(capsys):
    from langchain_ragr1.policies.batching import GenerateCall

    bench = _bench()
    log = bench.CallLog()
    first, second = [], []
    log.extend_from(first)
    log.extend_from(second)  # lists are read when split, as record_calls fills them during the evaluation
    first.append(GenerateCall(prompts=[[1, 2, 3], [4]], steps=5, kept=[5, 2], seconds=2.0, prefill_s=0.5))
    second.append(GenerateCall(prompts=[[1] * 10], steps=3, kept=[3], seconds=1.0, prefill_s=0.25))
    split = log.split(4.0)
    assert split == {"calls": 2, "model_s": 3.0, "prefill_s": 0.75, "decode_s": 2.25, "other_s": 1.0,
                     "prompt_tokens": 14, "prefill_positions": 16, "decode_steps": 8, "kept_tokens": 10}
    line = bench.time_line("fast", split, 4.0)
    assert "4.0 s = prefill 0.8 s (14 prompt tokens, 19 prompt tokens/s; 16 positions as left-padded batches)" in line
    assert "decode 2.2 s (8 steps, 10 tokens kept) + other 1.0 s" in line and "2 model calls" in line
    assert "no model calls recorded" in bench.time_line("fast", bench.CallLog().split(1.0), 1.0)
