"""scripts/repetition_stats.py: saved traces split into model turns, and what the stop would have done."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from langchain_ragr1.protocol import INVALID_ACTION_TEXT, information_block

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "repetition_stats.py"
_SPEC = importlib.util.spec_from_file_location("repetition_stats", _PATH)
stats = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(stats)

HEADER = "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
SEARCH = "<think>a b</think><search> x </search>"
LOOP = "<think>" + "x y z w " * 10  # ran to its budget (40 words): 4 words a copy, no tag closed
ANSWER = "<think>done</think><answer> A </answer>"


def encode(text: str) -> list[int]:
    """One id per word: enough for the detector."""
    return [hash(word) % 1000 for word in text.split()]


def trace(*turns_and_blocks: str) -> str:
    return HEADER + "".join(turns_and_blocks)


def test_a_trace_splits_into_its_model_turns():
    block = information_block(["x"], ["Doc 1: </information> text"], "multi")
    assert stats.model_turns(trace(SEARCH, block, LOOP, INVALID_ACTION_TEXT, ANSWER)) == [SEARCH, LOOP, ANSWER]
    assert stats.model_turns("no template here") is None


def test_counts_stops_tokens_saved_and_false_stops(tmp_path):
    records = [
        {"id": "right", "mode": "multi", "em": 1.0, "trace": trace(LOOP, INVALID_ACTION_TEXT, ANSWER)},
        {"id": "wrong", "mode": "multi", "em": 0.0, "trace": trace(SEARCH, INVALID_ACTION_TEXT, LOOP)},
        {"id": "clean", "mode": "multi", "em": 1.0, "trace": trace(SEARCH, INVALID_ACTION_TEXT, ANSWER)},
        {"id": "no-header", "mode": "multi", "em": 0.0, "trace": "no assistant header"},
    ]
    path = tmp_path / "predictions.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in records))
    episodes = stats.tokenised_episodes(stats.read_records(path), encode)
    assert [e["id"] for e in episodes] == ["right", "wrong", "clean"] and episodes[0]["budget"] == 40
    result = stats.measure(episodes, 4, 3)  # "x y z w" three times: the 13th word of the loop turn
    assert (result["turns"], result["unclosed"], result["at_budget"], result["stopped"]) == (6, 2, 2, 2)
    assert (result["stopped_closed"], result["questions_stopped"], result["saved"]) == (0, 2, 2 * (40 - 13))
    assert (result["false_stops"], result["false_stops_closed"]) == (1, 0)  # "right" had its loop stopped
    assert result["stop_at"] == {"min": 13, "median": 13, "max": 13}
    assert stats.measure(episodes, 0, 3)["stopped"] == 0 and stats.measure(episodes, 24, 4)["stopped"] == 0
    assert "right (multi, EM 1) turn 1: stopped at token 13 of 40" in stats.listed_turns(episodes, 4, 3, str)
    assert "| x | 3 | 6 | 2 | 2 | 2 | 2 | 0 | 2 | 54 |" in stats.table([("x", result)])
