"""GRPO rollouts of the rl_cpu step: the graph rollout (``GraphRollout``) over the shipped default with
rl_cpu's LoRA (r 8 on all 7 projections, fp32), 1 question x 4 generations, temperature 1.0, top_p
0.95, 96 new tokens per turn, 2 retrieval turns, with ``model.generate`` (``backend="transformers"``,
the rl_cpu default until now) and with the fast engine at fp32 (the RL default: the training pass's
own numbers) and at bf16, interleaved question by question in one run.

For every episode the log-probs the rollout returned for its policy tokens are compared with the
training pass's: a teacher-forced forward of the fp32 model over prompt + completion (what GRPO's
loss computes), so the table says how far each path's sampling log-probs are from training's, and
what TRL's importance-sampling correction (which the trainer applies to rollouts from rounded weights)
makes of that: the per-episode ratio exp(sum(train - sampling)) under TRL's default sequence_mask mode
(episodes with a ratio above 3.0 masked out), and the seconds of that teacher-forced pass (the
correction's extra forward; batch 1 here, the trainer's runs per_device_train_batch_size at once).
Retrieval is BM25 over the bundled corpus (rl_cpu uses Chroma; retrieval is a small share either way).

    python benchmarks/bench_rollout.py [--questions 3] [--generations 4] [--paths "fast float32,fast bfloat16"]
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def training_logprobs(model, sample: dict) -> list[float]:
    """The fp32 model's log-probs of the completion's policy tokens, teacher-forced (GRPO's training pass)."""
    prompt, completion = sample["prompt_ids"], sample["completion_ids"]
    ids = torch.tensor([prompt + completion])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    lps = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)
    return [lp for lp, m in zip(lps.tolist(), sample["env_mask"]) if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--paths", default="transformers,fast float32,fast bfloat16",
                        help="comma-separated: transformers, fast float32, fast bfloat16, fast int8")
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1 import BM25Retriever, RagR1Config, Sampling, load_bundled_corpus
    from langchain_ragr1.data import load_qa
    from langchain_ragr1.models import default_model_path
    from langchain_ragr1.policies.fast import FastPolicy
    from langchain_ragr1.policies.transformers import TransformersPolicy
    from langchain_ragr1.tuning.rl_rollout import GraphRollout, RolloutSettings

    path = default_model_path(show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    retriever = BM25Retriever.from_documents(load_bundled_corpus(), k=3)
    sampling = Sampling(max_new_tokens=96, temperature=1.0, top_p=0.95)
    settings = RolloutSettings(agent=RagR1Config(mode="multi", k=3, max_turns=2), max_new_tokens=96,
                               max_batch_size=8, max_completion_length=1536)
    questions = [item.question for item in load_qa("ragr1-train")[: args.questions]]

    def make(name: str, seed: int):
        if name == "transformers":
            return TransformersPolicy(model, tokenizer, sampling=sampling, max_batch_size=8)
        return FastPolicy(model, tokenizer, sampling=sampling, max_batch_size=8, seed=seed,
                          weights=name.removeprefix("fast "))

    paths = [p.strip() for p in args.paths.split(",")]
    totals = {p: {"s": 0.0, "tokens": 0, "gap": 0.0, "gap_max": 0.0, "n": 0, "ratios": [], "train_s": 0.0}
              for p in paths}
    print(f"{len(questions)} questions x {args.generations} generations, load average {os.getloadavg()[0]:.2f}")
    for i, question in enumerate(questions):
        for name in paths:
            torch.manual_seed(i)
            started = time.perf_counter()
            policy = make(name, seed=i)  # built per step, as the trainer's rollout does (new weights each step)
            try:
                out = GraphRollout(retriever, settings, policy=policy)([question] * args.generations)
            finally:
                policy.close()
            seconds = time.perf_counter() - started
            t = totals[name]
            t["s"] += seconds
            t["tokens"] += sum(out["response_tokens"])
            for k in range(len(out["prompt_ids"])):
                sample = {key: out[key][k] for key in ("prompt_ids", "completion_ids", "env_mask", "logprobs")}
                started = time.perf_counter()
                ref = training_logprobs(model, sample)
                t["train_s"] += time.perf_counter() - started
                got = [lp for lp, m in zip(sample["logprobs"], sample["env_mask"]) if m]
                t["ratios"].append(math.exp(sum(a - b for a, b in zip(ref, got))))
                gaps = [abs(a - b) for a, b in zip(got, ref)]
                t["gap"] += sum(gaps)
                t["gap_max"] = max(t["gap_max"], max(gaps, default=0.0))
                t["n"] += len(gaps)
            print(f"  question {i} {name:<14} {seconds:6.1f} s, {sum(out['response_tokens'])} policy tokens")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    first = paths[0]
    base_s = totals[first]["s"] / len(questions)
    print(f"{'path':<16}{'s/rollout':>10}{'vs ' + first[-7:]:>11}{'tok/s':>8}{'mean |dlogp|':>13}{'max |dlogp|':>12}"
          f"{'seq IS ratio min/mean/max':>27}{'masked':>7}{'fwd s':>7}")
    for name in paths:
        t = totals[name]
        per = t["s"] / len(questions)
        ratios = t["ratios"]
        print(f"{name:<16}{per:>10.1f}{base_s / per:>10.2f}x{t['tokens'] / t['s']:>8.1f}"
              f"{t['gap'] / max(t['n'], 1):>13.2e}{t['gap_max']:>12.2e}"
              f"{f'{min(ratios):.3f}/{sum(ratios) / len(ratios):.3f}/{max(ratios):.3f}':>27}"
              f"{sum(r > 3.0 for r in ratios):>4}/{len(ratios):<2}{t['train_s'] / len(questions):>7.1f}")
    for name in paths[1:]:
        print(f"rollout seconds per step: {name} {totals[name]['s'] / len(questions):.1f} s, {first} "
              f"{base_s:.1f} s, ratio {base_s / (totals[name]['s'] / len(questions)):.2f}x")


if __name__ == "__main__":
    main()
