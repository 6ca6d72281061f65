"""Multi vs single query: the same model on the same questions, side by side.

Runs ``multi`` and ``single`` (configurations of one graph) over the first ``--n`` questions of
the shipped test set with the bundled SmolLM2 (greedy) and BM25 over the bundled corpus, and
prints retrieval turns, generated tokens and wall time per question, plus EM/F1 and their ratio.
Any model folder can be given with ``--model`` (a protocol-trained checkpoint shows the paper's
effect; the base SmolLM2 mostly does not follow the protocol).

    python benchmarks/bench_multi_single.py [--n 8] [--new-tokens 64] [--max-turns 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from langchain_ragr1 import BM25Retriever, RagR1Agent, Sampling, load_bundled_corpus  # noqa: E402
from langchain_ragr1.config import config_for  # noqa: E402
from langchain_ragr1.data import load_qa  # noqa: E402
from langchain_ragr1.evaluation import evaluate  # noqa: E402
from langchain_ragr1.policies.factory import default_policy  # noqa: E402

MODES = ("multi", "single")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="questions from ragr1-test")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--model", help="a transformers model folder (default: bundled SmolLM2)")
    args = parser.parse_args()
    items = load_qa("ragr1-test", limit=args.n)
    retriever = BM25Retriever.from_documents(load_bundled_corpus())
    policy = default_policy(args.model, sampling=Sampling(max_new_tokens=args.new_tokens, temperature=0))
    wall = {}
    with tempfile.TemporaryDirectory() as out:
        def make(mode: str) -> RagR1Agent:
            return RagR1Agent(policy, retriever, **config_for(mode, max_turns=args.max_turns).to_dict())

        metrics = {}
        for mode in MODES:
            started = time.perf_counter()
            metrics.update(evaluate(items, [mode], make, out, batch_size=args.n))
            wall[mode] = time.perf_counter() - started
    policy.close()
    print(f"{len(items)} questions, max_turns={args.max_turns}, max_new_tokens={args.new_tokens}, greedy")
    print(f"{'mode':<7} | {'EM':>5} | {'F1':>5} | {'turns/q':>7} | {'queries/turn':>12} | {'tokens/q':>8} | "
          f"{'episode s':>9} | wall s/q")
    for mode in MODES:
        m = metrics[mode]
        print(f"{mode:<7} | {m['em']:>5.2f} | {m['f1']:>5.2f} | {m['avg_turns']:>7.2f} | {m['avg_queries']:>12.2f} | "
              f"{m['avg_generated_tokens'] or 0:>8.1f} | {m['avg_seconds']:>9.2f} | {wall[mode] / len(items):.2f}")
    multi, single = metrics["multi"], metrics["single"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    print(f"multi / single: turns {ratio(multi['avg_turns'], single['avg_turns'])}, tokens "
          f"{ratio(multi['avg_generated_tokens'] or 0, single['avg_generated_tokens'] or 0)}, wall time "
          f"{ratio(wall['multi'], wall['single'])}")


if __name__ == "__main__":
    main()
