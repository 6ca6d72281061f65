"""Batched rollouts against the real limit: ``agent.batch`` of 8 vs 8 sequential ``invoke``s vs
a replay of exactly the generate calls the episodes made.

All runs use the trained default (transformers, greedy) and a BM25 retriever over the bundled
corpus, measured one after another in one run. Every batched model call is recorded
(``policy.record_calls()``: rows' input ids, decode steps, kept tokens, prefill time) and then
replayed as bare ``model.generate`` (same ids, same batch composition and left padding, forced
to the same number of steps, without stop strings or log-probs): the replay is what the same
work costs this machine, so ``agent / replay`` is the agent's efficiency. The table splits
time into prefill and decode and counts padding and wasted decode positions; ``idle`` is the
wall time the batcher had no model call running (retrieval, graph, waiting for company).
Throughput = kept tokens per second. Targets: batch >= 3x sequential, and >= 70% of the
replayed limit. The old baseline (one generate of the 8 first-turn prompts, forced to the
batch's tokens per row) is printed last, labelled for what it is: it skips every later
turn's prefill.

    python benchmarks/bench_batching.py [--new-tokens 192] [--max-turns 2] [--model default]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from langchain_ragr1 import BM25Retriever, RagR1Agent, Sampling, TransformersPolicy, load_bundled_corpus  # noqa: E402
from langchain_ragr1.policies.batching import GenerateCall  # noqa: E402
from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy  # noqa: E402
from langchain_ragr1.policies.profiling import profile_calls, replay_calls  # noqa: E402
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


def measure(policy: TransformersPolicy, fn) -> dict:
    """Run ``fn`` recording its calls; the profile of its calls plus wall and batcher idle time."""
    before = policy.stats
    with policy.record_calls() as calls:
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
    after = policy.stats
    summary = profile_calls(calls)
    summary.update(wall_s=wall, idle_s=wall - (after.busy_s - before.busy_s),
                   fill_wait_s=after.fill_wait_s - before.fill_wait_s, calls_list=calls,
                   reused_prompt_tokens=after.reused_prompt_tokens - before.reused_prompt_tokens)
    return summary


def replay(policy: TransformersPolicy, summary: dict) -> dict:
    timings = replay_calls(policy.model, policy.tokenizer.pad_token_id, summary["calls_list"])
    return profile_calls(summary["calls_list"], timings)


def _cell(value: float | None, width: int) -> str:
    return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"


def row(name: str, s: dict, seconds: float, prefill: float | None, idle: float | None) -> str:
    decode = None if prefill is None else seconds - prefill - (idle or 0.0)
    return (f"{name:<34} | {s['kept_tokens']:>6} | {seconds:>7.1f} | {s['kept_tokens'] / seconds:>6.1f} | "
            f"{_cell(prefill, 7)} | {_cell(decode, 6)} | {_cell(idle, 6)} | {s['calls']:>5} | {s['mean_batch']:>5.2f} | "
            f"{s['prompt_tokens']:>7} | {s['prompt_pad_tokens'] / max(1, s['prompt_tokens'] + s['prompt_pad_tokens']):>5.0%} | "
            f"{s['decode_waste_tokens'] / max(1, s['decode_positions']):>5.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=192, help="max new tokens per turn")
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--model", default="default", help="default (trained), base, or a model folder")
    parser.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16)")
    parser.add_argument("--no-continuous", action="store_true", help="skip the continuous-batching policy")
    parser.add_argument("--cb-max-batch-tokens", type=int, default=512,
                        help="continuous batching: tokens per forward pass (prefill chunks + decode rows)")
    args = parser.parse_args()

    greedy = Sampling(max_new_tokens=args.new_tokens, temperature=0)  # one object for both policies
    policy = TransformersPolicy.from_pretrained(args.model, dtype=args.dtype, sampling=greedy)
    retriever = BM25Retriever.from_documents(load_bundled_corpus())
    agent = RagR1Agent(policy, retriever, max_turns=args.max_turns, k=3)
    agent.invoke(QUESTIONS[0])  # warm-up

    seq = measure(policy, lambda: [agent.invoke(q) for q in QUESTIONS])
    bat = measure(policy, lambda: agent.batch(QUESTIONS, config={"max_concurrency": len(QUESTIONS)}))
    seq_replay, bat_replay = replay(policy, seq), replay(policy, bat)

    # The old baseline: one generate of the first-turn prompts only, forced to the same tokens per row.
    per_row = max(1, round(bat["kept_tokens"] / len(QUESTIONS)))
    prompts = [policy.render_prompt(make_prompt(q))["token_ids"] for q in QUESTIONS]
    first_turn = GenerateCall(prompts=prompts, steps=per_row, kept=[per_row] * len(prompts), seconds=0.0,
                              prefill_s=0.0)
    first_turn_s = replay_calls(policy.model, policy.tokenizer.pad_token_id, [first_turn])[0].seconds
    policy.close()

    cont = None
    if not args.no_continuous:  # the same model and episodes through continuous batching
        cb_policy = ContinuousTransformersPolicy.from_pretrained(
            args.model, dtype=args.dtype, sampling=greedy, max_batch_size=len(QUESTIONS),
            max_batch_tokens=args.cb_max_batch_tokens, seed=0)
        cb_agent = RagR1Agent(cb_policy, retriever, max_turns=args.max_turns, k=3)
        cb_agent.invoke(QUESTIONS[0])  # warm-up
        cont = measure(cb_policy, lambda: cb_agent.batch(QUESTIONS, config={"max_concurrency": len(QUESTIONS)}))
        cb_policy.close()

    print(f"{args.model} ({args.dtype}), {len(QUESTIONS)} episodes, max_turns {args.max_turns}, "
          f"{args.new_tokens} new tokens per turn, greedy, BM25 k 3")
    print(f"{'run':<34} | {'kept':>6} | {'seconds':>7} | {'tok/s':>6} | {'prefill':>7} | {'decode':>6} | "
          f"{'idle':>6} | {'calls':>5} | {'batch':>5} | {'prompt':>7} | {'pad':>5} | {'waste':>5}")
    print(row("8 sequential invokes", seq, seq["wall_s"], seq["prefill_s"], seq["idle_s"]))
    print(row("  replay of their calls", seq_replay, seq_replay["replay_s"], seq_replay["replay_prefill_s"], None))
    print(row("agent.batch (8 concurrent)", bat, bat["wall_s"], bat["prefill_s"], bat["idle_s"]))
    print(row("  replay of its calls (the limit)", bat_replay, bat_replay["replay_s"],
              bat_replay["replay_prefill_s"], None))
    old = profile_calls([first_turn])
    if cont is not None:
        print(row("agent.batch, continuous batching", cont, cont["wall_s"], None, None))
    print(row("first-turn prompts only (old)", old, first_turn_s, None, None))
    seq_rate = seq["kept_tokens"] / seq["wall_s"]
    bat_rate = bat["kept_tokens"] / bat["wall_s"]
    print(f"batch / sequential throughput: {bat_rate / seq_rate:.2f}x (target >= 3x)")
    print(f"batch / replayed limit: {bat_replay['replay_s'] / bat['wall_s']:.0%} (target >= 70%); "
          f"inside model calls only: {bat_replay['replay_s'] / bat['seconds']:.0%}")
    print(f"sequential / its replay: {seq_replay['replay_s'] / seq['wall_s']:.0%}")
    limit_rate = bat["kept_tokens"] / bat_replay["replay_s"]
    if cont is not None:
        cont_rate = cont["kept_tokens"] / cont["wall_s"]
        print(f"continuous batching / sequential throughput: {cont_rate / seq_rate:.2f}x (target >= 3x); "
              f"/ replayed static limit: {cont_rate / limit_rate:.0%} (target >= 70%); "
              f"/ static agent.batch: {cont_rate / bat_rate:.2f}x")
        print(f"continuous batching: {cont['reused_prompt_tokens']} of {cont['prompt_tokens']} prompt tokens "
              f"({cont['reused_prompt_tokens'] / max(1, cont['prompt_tokens']):.0%}) came from shared KV pages "
              f"(the prompt's instruction, the transcript a previous turn computed), not prefilled")
    print(f"batch / first-turn-only generate (old, not the same work): "
          f"{bat_rate / (per_row * len(QUESTIONS) / first_turn_s):.0%}")
    print(f"batcher: {bat['fill_wait_s']:.2f} s held back for company over {bat['calls']} calls")


if __name__ == "__main__":
    main()
