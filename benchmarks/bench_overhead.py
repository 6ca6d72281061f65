"""Framework overhead: the LangGraph agent vs a bare Python loop doing the same steps.

Both run the same episode (search, search, answer) with a fake policy of fixed latency and an
in-memory retriever: generate, parse, retrieve, render the information block, append segments.
Prints the per-episode time of each and the graph's overhead. Target: <= 5%.

    python benchmarks/bench_overhead.py [--latency 0.02 0.1 0.5] [--episodes 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.corpus import document_contents
from langchain_ragr1.protocol import STOP_STRINGS, make_prompt, parse_action, render_information
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy
from langchain_ragr1.transcript import make_segment

TURNS = ["<think>a</think><search> first query, second query </search>",
         "<think>b</think><search> third query </search>",
         "<think>c</think><answer> done </answer>"]


def bare_episode(policy: ScriptedPolicy, retriever: MemoryRetriever, question: str, k: int = 3) -> str | None:
    """The same steps as the graph, as a plain loop (sequential retrieval: the fake has no latency)."""
    segments = [policy.render_prompt(make_prompt(question))]
    for _ in range(5):
        generation = policy.generate(segments, stop=STOP_STRINGS)
        action = parse_action(generation.text)
        segments.append(make_segment("policy", generation.text, generation.token_ids, generation.logprobs))
        if action.kind == "answer":
            return action.answer
        docs = [retriever.invoke(q, k=k) for q in action.queries]
        text = render_information(action.queries, [[document_contents(d) for d in ds] for ds in docs])
        segments.append(make_segment("env", text, policy.encode(text)))
    return None


def median_seconds(fn, episodes: int) -> float:
    times = []
    for _ in range(episodes):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.02, 0.1, 0.5],
                        help="seconds per model turn (one row each)")
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    docs = [Document(f"passage {i} about query {i % 3}", metadata={"title": f"T{i}"}) for i in range(50)]
    retriever = MemoryRetriever(documents=docs)
    question = "benchmark question"
    print(f"{'turn latency':>12} | {'bare loop':>10} | {'graph':>10} | {'graph/bare':>10} | graph cost")
    for latency in args.latency:
        policy = ScriptedPolicy(TURNS, token_level=True, delay_s=latency)
        agent = RagR1Agent(policy, retriever)
        assert agent.invoke(question)["answer"] == bare_episode(policy, retriever, question) == "done"
        graph_s = median_seconds(lambda agent=agent: agent.invoke(question), args.episodes)
        bare_s = median_seconds(lambda policy=policy: bare_episode(policy, retriever, question), args.episodes)
        print(f"{latency * 1000:>9.0f} ms | {bare_s * 1000:>7.1f} ms | {graph_s * 1000:>7.1f} ms | "
              f"{graph_s / bare_s:>9.3f}x | {(graph_s - bare_s) * 1000:.1f} ms/episode "
              f"({graph_s / bare_s - 1:+.1%}, target <= +5%)")


if __name__ == "__main__":
    main()
