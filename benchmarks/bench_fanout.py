"""Parallel fan-out: a search turn with 1, 2, 3 queries against a 200 ms retriever.

Prints the retrieval time of one turn through the graph next to one retriever call and
next to the same queries run one after another. Target: 3 queries <= 1.3x one call.

    python benchmarks/bench_fanout.py [--latency 0.2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

ANSWER = "<answer> done </answer>"


def episode_seconds(agent: RagR1Agent, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        agent.invoke("benchmark question")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    docs = [Document(f"passage {i}", metadata={"title": f"T{i}"}) for i in range(10)]
    retriever = MemoryRetriever(documents=docs, delay_s=args.latency)

    # Episode with no search: the graph's own overhead, subtracted from each measurement.
    base = episode_seconds(RagR1Agent(ScriptedPolicy([ANSWER]), retriever), args.repeats)
    started = time.perf_counter()
    for _ in range(args.repeats):
        retriever.invoke("one query")
    one_call = (time.perf_counter() - started) / args.repeats

    print(f"one retriever call: {one_call * 1000:.0f} ms (graph overhead per episode {base * 1000:.1f} ms)")
    print(f"{'queries':>7} | {'graph turn':>10} | {'sequential':>10} | {'turn / one call':>15}")
    for n in (1, 2, 3):
        search = "<search> " + ", ".join(f"query {i}" for i in range(n)) + " </search>"
        agent = RagR1Agent(ScriptedPolicy([search, ANSWER]), retriever, max_queries=3)
        turn = episode_seconds(agent, args.repeats) - base
        print(f"{n:>7} | {turn * 1000:>8.0f} ms | {n * one_call * 1000:>7.0f} ms | {turn / one_call:>14.2f}x")


if __name__ == "__main__":
    main()
