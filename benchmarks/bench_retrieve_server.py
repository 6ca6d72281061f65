"""Requests/s and latency of the /retrieve server under concurrent clients on loopback.

Starts ``python -m langchain_ragr1.server --retriever bm25`` (the bundled 10k-passage corpus)
as a subprocess, then ``--clients`` threads send ``--requests`` requests in all, each with
``--queries`` queries (top-3, scores on) through SearchR1HTTPRetriever. Prints throughput
and p50/p95 latency. Usage: .venv/bin/python benchmarks/bench_retrieve_server.py
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever

QUERIES = ["Marie Curie", "capital of France", "Hamlet author", "largest planet", "Nile river",
           "Albert Einstein birthplace", "speed of light", "Mount Everest height"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, timeout_s: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"the server was not ready within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=480, help="total, shared by the clients")
    parser.add_argument("--queries", type=int, default=3, help="queries per request")
    args = parser.parse_args()

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "langchain_ragr1.server", "--retriever", "bm25",
                             "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = _wait_ready(proc, f"http://127.0.0.1:{port}/health")
        client = SearchR1HTTPRetriever(url=f"http://127.0.0.1:{port}/retrieve", k=3, max_retries=0, timeout=30)

        def one(n: int) -> float:
            queries = [QUERIES[(n + i) % len(QUERIES)] for i in range(args.queries)]
            start = time.perf_counter()
            hits = client.retrieve_many(queries)
            assert len(hits) == args.queries and all(hits)
            return time.perf_counter() - start

        one(0)  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            latencies = sorted(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - start
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    q = statistics.quantiles(latencies, n=100)
    print(f"server ready in {ready:.1f} s (bm25, bundled corpus); {args.clients} clients, "
          f"{args.requests} requests x {args.queries} queries, top-3")
    print(f"{args.requests / wall:.1f} requests/s ({args.requests * args.queries / wall:.1f} queries/s), "
          f"latency p50 {q[49] * 1000:.1f} ms, p95 {q[94] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
