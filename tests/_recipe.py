"""A tiny model and a tiny SFT data folder for running the shipped recipes end to end.

Used by tests/test_recipe_reproduces.py, and by the script that recorded the numbers it checks
(today's scripts before the TRL-style rewrite, same seed and batch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def make_tiny_model_dir(path: Path, tokenizer: Any) -> Path:
    """A random 2-layer Llama on SmolLM2's tokenizer (seed 0), saved with the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def segment(tokenizer: Any, role: str, text: str) -> dict:
    if role == "prompt":
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                            add_generation_prompt=True, return_dict=False)
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"role": role, "text": text, "token_ids": list(ids)}


def make_sft_dir(path: Path, tokenizer: Any, copies: int = 6) -> Path:
    """``path/trajectories.jsonl``: ``copies`` x 2 kept trajectories (search + answer; direct answer)."""
    info = "\n<information>\nDoc 1: Hamlet is a tragedy by William Shakespeare.\n</information>\n"
    rows = []
    for i in range(copies):
        turns = [("policy", f"<think>I need the author ({i}).</think><search> Hamlet author </search>"), ("env", info),
                 ("policy", "<think>The passage says Shakespeare.</think><answer> William Shakespeare </answer>")]
        for j, chosen in enumerate((turns, turns[2:])):
            question = f"who wrote Hamlet? ({i}.{j})"
            rows.append({"id": f"t{i}.{j}", "question": question, "golden_answers": ["William Shakespeare"],
                         "item_kind": "bridge", "mode": "multi", "answer": "William Shakespeare", "turns": 1 - j,
                         "queries": [], "segments": [segment(tokenizer, "prompt", f"Answer the question. Question: {question}"),
                                                     *(segment(tokenizer, r, t) for r, t in chosen)]})
    path.mkdir(parents=True, exist_ok=True)
    (path / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def logged_rows(csv_path: Path, keys: tuple[str, ...]) -> list[dict[str, float]]:
    """The first rows of a loss.csv / metrics.csv, only ``keys``."""
    import csv

    with open(csv_path, encoding="utf-8") as handle:
        return [{k: float(row[k]) for k in keys if row.get(k) not in (None, "")} for row in csv.DictReader(handle)]
