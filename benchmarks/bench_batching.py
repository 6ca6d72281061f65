"""Batched rollouts: ``agent.batch`` of 8 questions vs 8 sequential ``invoke``s vs raw generate.

All three use the bundled SmolLM2 (transformers, greedy) and a BM25 retriever over the
bundled corpus, measured one after another in one run. Throughput = generated tokens per
second. Targets: batch >= 3x sequential, and >= 70% of a raw batched ``model.generate``
producing the same number of tokens (the physical limit of this machine).

    python benchmarks/bench_batching.py [--new-tokens 64] [--max-turns 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from langchain_ragr1 import BM25Retriever, RagR1Agent, TransformersPolicy, load_bundled_corpus  # noqa: E402
from langchain_ragr1.protocol import make_prompt  # noqa: E402

QUESTIONS = [
    "Who was born first, Marie Curie or Albert Einstein?",
    "Which is older, the Eiffel Tower or the Statue of Liberty?",
    "What river flows through Paris and what sea does it reach?",
    "Which planet is larger, Mars or Venus?",
    "Who wrote Hamlet and when was he born?",
    "Which city is the capital of Australia?",
    "What do Niels Bohr and Werner Heisenberg have in common?",
    "In which country is the Amazon rainforest mostly located?",
]


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64, help="max new tokens per turn")
    parser.add_argument("--max-turns", type=int, default=1)
    args = parser.parse_args()

    policy = TransformersPolicy.from_pretrained(max_new_tokens=args.new_tokens, temperature=0.0)
    retriever = BM25Retriever.from_documents(load_bundled_corpus())
    agent = RagR1Agent(policy, retriever, max_turns=args.max_turns, k=3)
    agent.invoke(QUESTIONS[0])  # warm-up

    def run(fn):
        before = policy.stats
        _, seconds = timed(fn)
        after = policy.stats
        return after.generated_tokens - before.generated_tokens, seconds, after.generate_calls - before.generate_calls

    seq_tokens, seq_s, seq_calls = run(lambda: [agent.invoke(q) for q in QUESTIONS])
    bat_tokens, bat_s, bat_calls = run(lambda: agent.batch(QUESTIONS, config={"max_concurrency": 8}))

    # Raw: one batched generate of the first-turn prompts, forced to the same token count.
    per_row = max(1, round(bat_tokens / len(QUESTIONS)))
    prompts = [policy.render_prompt(make_prompt(q))["token_ids"] for q in QUESTIONS]
    batch = policy.tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt")
    with torch.inference_mode():
        _, raw_s = timed(lambda: policy.model.generate(
            **batch, max_new_tokens=per_row, min_new_tokens=per_row, do_sample=False,
            pad_token_id=policy.tokenizer.pad_token_id))
    raw_tokens = per_row * len(QUESTIONS)
    policy.close()

    seq_rate, bat_rate, raw_rate = seq_tokens / seq_s, bat_tokens / bat_s, raw_tokens / raw_s
    print(f"{'run':<28} | {'tokens':>6} | {'seconds':>7} | {'tok/s':>6} | generate calls")
    print(f"{'8 sequential invokes':<28} | {seq_tokens:>6} | {seq_s:>7.1f} | {seq_rate:>6.1f} | {seq_calls}")
    print(f"{'agent.batch (8 concurrent)':<28} | {bat_tokens:>6} | {bat_s:>7.1f} | {bat_rate:>6.1f} | {bat_calls}")
    print(f"{'raw model.generate batch 8':<28} | {raw_tokens:>6} | {raw_s:>7.1f} | {raw_rate:>6.1f} | 1")
    print(f"batch / sequential throughput: {bat_rate / seq_rate:.2f}x (target >= 3x)")
    print(f"batch / raw generate throughput: {bat_rate / raw_rate:.0%} (target >= 70%)")


if __name__ == "__main__":
    main()
