"""``ragr1 eval`` throughput: ``--backend fast`` (the bf16 engine, the default) vs ``--backend transformers``
(eager fp32 ``model.generate``) on the same questions in one run, interleaved chunk by chunk so that other load
on the machine hits both alike (issue 22: ">= 3x questions/min, the same answers under greedy decoding").

Both backends' models load once, before the first question (timed apart); then the questions run in chunks of
``--chunk`` (default: the batch size, so each chunk is one of ``ragr1 eval``'s own batches): fast on questions
1-8, eager on 1-8, fast on 9-16, ... Each chunk goes through the package's evaluation
(:func:`langchain_ragr1.evaluation.evaluate`, ``agent.batch`` of ``--batch-size`` concurrent episodes, the same
for both), and only those seconds count. The options are ``ragr1 eval``'s, with its defaults (the retriever:
``--store``'s kind, else chroma; ``--backend`` aside), except the questions: 16 stratified ones of ragr1-dev.
Each backend has its own retriever (the same kind), so no query-embedding cache is shared between them.

Printed: per backend, seconds, questions/min, EM, F1, generated tokens per question and format ok, and the
load average before and after each of its chunks; the line ``eval questions/min: fast X, eager Y, ratio Zx``;
the questions whose answers differ (id, kind, both answers, EM each, where the transcripts part) and how many
transcripts are identical. ``--out DIR`` keeps both evaluations in ``ragr1 eval``'s format (``DIR/fast`` and
``DIR/transformers``: predictions.jsonl, metrics.json, metrics_by_kind.json, report.md, metrics.png).

    python benchmarks/bench_eval.py [--data ragr1-dev] [--limit 16] [--sample stratified] [--chunk 8]
                                    [--retriever bm25] [--max-new-tokens 500] [--batch-size 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: The two backends, in the order each chunk runs them, and what the ratio line calls them.
BACKENDS = {"fast": "fast", "transformers": "eager"}


class CallLog:
    """The batched model calls a backend made (``TokenPolicy.record_calls``' lists, filled while evaluating), summed
    into where its evaluation seconds went."""

    def __init__(self) -> None:
        self.lists: list[list[Any]] = []

    def extend_from(self, calls: list[Any]) -> None:
        self.lists.append(calls)

    def split(self, seconds: float) -> dict[str, float]:
        calls = [call for calls in self.lists for call in calls]
        model = sum(call.seconds for call in calls)
        prefill = sum(call.prefill_s for call in calls)
        return {"calls": len(calls), "model_s": model, "prefill_s": prefill, "decode_s": model - prefill,
                "other_s": seconds - model,
                "prompt_tokens": sum(len(p) for call in calls for p in call.prompts),
                "prefill_positions": sum(call.padded_len * len(call.prompts) for call in calls),
                "decode_steps": sum(call.steps for call in calls),
                "kept_tokens": sum(sum(call.kept) for call in calls)}


def time_line(backend: str, split: dict[str, float], seconds: float) -> str:
    """One backend's evaluation seconds split into prefill, decode and the rest (retrieval, the graph, waits)."""
    if not split["calls"]:
        return f"  {backend}: no model calls recorded (its policy does not record them)"
    return (f"  {backend}: {seconds:.1f} s = prefill {split['prefill_s']:.1f} s ({split['prompt_tokens']:.0f} prompt "
            f"tokens, {split['prompt_tokens'] / max(split['prefill_s'], 1e-9):.0f} prompt tokens/s; "
            f"{split['prefill_positions']:.0f} positions as left-padded batches) + decode "
            f"{split['decode_s']:.1f} s ({split['decode_steps']:.0f} steps, {split['kept_tokens']:.0f} tokens kept) "
            f"+ other {split['other_s']:.1f} s (retrieval, graph, batching waits), {split['calls']:.0f} model calls")


def first_difference(a: str, b: str) -> int:
    """The first position where ``a`` and ``b`` differ (the shorter one's length if one starts the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(records: dict[str, dict[tuple[str, str], dict]]) -> tuple[list[dict], int]:
    """The (mode, id) whose answers differ between the backends, then those whose transcripts (``trace``) alone
    differ, each with both records, and how many transcripts are the same."""
    fast, eager = (records[b] for b in BACKENDS)
    differ = [{"key": key, "fast": fast[key], "eager": eager[key], "same_answer": False} for key in fast
              if fast[key].get("answer") != eager[key].get("answer")]
    differ += [{"key": key, "fast": fast[key], "eager": eager[key], "same_answer": True} for key in fast
               if fast[key].get("answer") == eager[key].get("answer") and fast[key].get("trace") != eager[key].get("trace")]
    same = sum(fast[key].get("trace") == eager[key].get("trace") for key in fast)
    return differ, same


def _snippet(text: str, at: int, width: int = 60) -> str:
    return repr(text[max(0, at - 20) : at + width])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from langchain_ragr1.cli import add_eval_options
    from langchain_ragr1.data import NAMED_SETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="ragr1-dev", help=f"ragr1 eval's --data: a QA file, NAME:PATH or one of "
                                                            f"{', '.join(NAMED_SETS)}")
    parser.add_argument("--out", default=None, help="keep both evaluations in DIR/fast and DIR/transformers "
                                                    "(new folders: a resumed evaluation would time only the rest)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="questions per backend turn (default: --batch-size, one ragr1 eval batch; a smaller "
                             "chunk runs fewer episodes at once than ragr1 eval does)")
    add_eval_options(parser, backend=False)
    parser.set_defaults(limit=16, sample="stratified")
    args = parser.parse_args(argv)
    if args.chunk is None:
        args.chunk = args.batch_size
    if args.chunk < 1:
        parser.error(f"--chunk must be >= 1, got {args.chunk}")
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="bench_eval-") as tmp:
            return run(args, Path(tmp))
    return run(args, Path(args.out))


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from langchain_ragr1.agent import RagR1Agent
    from langchain_ragr1.config import config_for
    from langchain_ragr1.data import load_qa
    from langchain_ragr1.evaluation import (
        PREDICTIONS_FILE,
        check_items,
        check_modes,
        evaluate,
        read_predictions,
        select_items,
        write_kind_metrics,
        write_metrics,
    )
    from langchain_ragr1.logs import log_to_stderr, quiet_libraries
    from langchain_ragr1.policies.factory import ModePolicies
    from langchain_ragr1.policies.sampling import Sampling
    from langchain_ragr1.report import write_report
    from langchain_ragr1.retrievers.factory import make_retriever, retriever_kind

    log_to_stderr()
    if not args.verbose:
        quiet_libraries()
    if args.seed is not None:  # as ragr1 eval seeds (sampling only; greedy decoding needs none)
        torch.manual_seed(args.seed)
    modes = check_modes(args.mode)
    decoding = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        repeat_stop_tokens=args.repeat_stop_tokens, repeat_stop_count=args.repeat_stop_count)
    items = select_items(load_qa(args.data), args.limit, args.sample, args.sample_seed)
    check_items(items)
    configs = {m: config_for(m, k=args.k, max_turns=args.max_turns) for m in modes}
    kind = retriever_kind(getattr(args, "retriever", None), args.store, args.corpus)
    folders = {b: out / b for b in BACKENDS}
    for folder in folders.values():
        if (folder / PREDICTIONS_FILE).exists():
            sys.exit(f"{folder / PREDICTIONS_FILE} exists: give a new --out (a resumed evaluation would time "
                     f"only the questions it has not done)")

    load1, load5, load15 = os.getloadavg()
    lookup = "default" if args.prompt_lookup is None else args.prompt_lookup
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {load1:.2f} {load5:.2f} {load15:.2f}")
    print(f"{len(items)} questions of {args.data} ({args.sample}, seed {args.sample_seed}), modes {' '.join(modes)}, "
          f"model {args.model}, retriever {kind} k {args.k}, max turns {args.max_turns}, {args.max_new_tokens} new "
          f"tokens a turn, temperature {args.temperature}, batch size {args.batch_size}, chunks of {args.chunk}, "
          f"fast weights {args.weights or 'default'}, prompt lookup {lookup}", flush=True)

    policies: dict[str, ModePolicies] = {}
    agents: dict[str, dict[str, RagR1Agent]] = {}
    loading: dict[str, float] = {}
    try:
        for backend in BACKENDS:
            started = time.perf_counter()
            fast = {"weights": args.weights, "prompt_lookup_num_tokens": args.prompt_lookup} if backend == "fast" else {}
            fast_only = {key: value for key, value in fast.items() if value is not None}  # None: ragr1 eval's default
            search = make_retriever(kind, k=args.k, store=args.store, corpus=args.corpus, url=args.url)
            policies[backend] = ModePolicies(args.model, sampling=decoding, backend=backend, **fast_only)
            agents[backend] = {m: RagR1Agent(policies[backend](configs[m].mode), search, **configs[m].to_dict())
                               for m in modes}
            loading[backend] = time.perf_counter() - started
        print("loading (retriever and model, not counted): "
              + ", ".join(f"{b} {s:.1f} s" for b, s in loading.items()), flush=True)

        seconds = dict.fromkeys(BACKENDS, 0.0)
        calls = {b: CallLog() for b in BACKENDS}
        loads: dict[str, list[tuple[float, float]]] = {b: [] for b in BACKENDS}
        for start in range(0, len(items), args.chunk):
            chunk = items[start : start + args.chunk]
            parts = []
            for backend in BACKENDS:
                before = os.getloadavg()[0]
                started = time.perf_counter()
                with contextlib.ExitStack() as stack:  # the model calls, for where the time goes
                    for policy in policies[backend].loaded.values():
                        if hasattr(policy, "record_calls"):
                            calls[backend].extend_from(stack.enter_context(policy.record_calls()))
                    evaluate(chunk, modes, agents[backend].__getitem__, folders[backend], batch_size=args.batch_size)
                took = time.perf_counter() - started
                seconds[backend] += took
                loads[backend].append((before, os.getloadavg()[0]))
                parts.append(f"{backend} {took:.1f} s (load {before:.2f} -> {loads[backend][-1][1]:.2f})")
            print(f"  questions {start + 1}-{start + len(chunk)}: " + ", ".join(parts), flush=True)
    finally:
        for mode_policies in policies.values():
            mode_policies.close()

    results: dict[str, Any] = {"loading_s": loading, "seconds": seconds, "loads": loads,
                               "time": {b: calls[b].split(seconds[b]) for b in BACKENDS}}
    records: dict[str, dict[tuple[str, str], dict]] = {}
    episodes = len(items) * len(modes)
    print(f"\n{'backend':<14}{'mode':<11}{'seconds':>9}{'q/min':>9}{'EM':>7}{'F1':>7}{'gen tok/q':>10}"
          f"{'format ok':>10}{'load before/after':>19}")
    for backend in BACKENDS:
        metrics = write_metrics(folders[backend], items, modes)
        settings = {key: value for key, value in vars(args).items() if key not in ("out", "data", "verbose")}
        settings |= {"backend": backend, "retriever": kind, "model_folders": {
            m: policies[backend].folders[configs[m].mode].name for m in modes}}
        write_report(metrics, folders[backend], data=args.data, settings=settings,
                     by_kind=write_kind_metrics(folders[backend], items, modes))
        records[backend] = {(r["mode"], r["id"]): r for r in read_predictions(folders[backend] / PREDICTIONS_FILE)}
        rate = 60 * episodes / seconds[backend]
        results[backend] = {"metrics": metrics, "questions_per_min": rate}
        before = sum(b for b, _ in loads[backend]) / len(loads[backend])
        after = sum(a for _, a in loads[backend]) / len(loads[backend])
        for mode, m in metrics.items():
            tokens = m.get("avg_generated_tokens")
            print(f"{backend:<14}{mode:<11}{seconds[backend]:>9.1f}{rate:>9.3f}{m['em']:>7.3f}{m['f1']:>7.3f}"
                  f"{'-' if tokens is None else f'{tokens:.1f}':>10}{m['format_ok']:>10.3f}"
                  f"{f'{before:.2f}/{after:.2f} (mean)':>19}")
    fast, eager = (results[b]["questions_per_min"] for b in BACKENDS)
    results["ratio"] = fast / eager
    print(f"eval questions/min: fast {fast:.3f}, eager {eager:.3f}, ratio {results['ratio']:.2f}x "
          f"({episodes} episodes each, {seconds['fast']:.1f} s vs {seconds['transformers']:.1f} s of evaluation)")

    print("where the evaluation seconds went (the model calls as recorded by the policies):")
    for backend in BACKENDS:
        print(time_line(backend, results["time"][backend], seconds[backend]))
        reused = sum(p.prefixes.reused_tokens for p in policies[backend].loaded.values() if hasattr(p, "prefixes"))
        if reused:
            print(f"    of the prompt tokens, {reused} came from the prefix cache (not computed)")
    fast_t, eager_t = (results["time"][b] for b in BACKENDS)
    if fast_t["calls"] and eager_t["calls"]:
        print(f"  ratios, eager / fast: prefill {eager_t['prefill_s'] / max(fast_t['prefill_s'], 1e-9):.2f}x, decode "
              f"{eager_t['decode_s'] / max(fast_t['decode_s'], 1e-9):.2f}x, other "
              f"{eager_t['other_s'] / max(fast_t['other_s'], 1e-9):.2f}x")

    rows, same = compare(records)
    differ = [row for row in rows if not row["same_answer"]]
    results["differ"], results["identical_transcripts"] = differ, same
    print(f"same answer: {episodes - len(differ)}/{episodes}, identical transcripts: {same}/{episodes}"
          + ("" if args.temperature == 0 else " (sampling: --temperature > 0, not greedy)"))
    for row in rows:
        (mode, qid), a, b = row["key"], row["fast"], row["eager"]
        at = first_difference(a.get("trace") or "", b.get("trace") or "")
        label = qid if len(modes) == 1 else f"{qid} [{mode}]"
        answers = (f"same answer {a.get('answer')!r} (em {a['em']})" if row["same_answer"] else
                   f"fast {a.get('answer')!r} (em {a['em']}) vs transformers {b.get('answer')!r} (em {b['em']}), "
                   f"gold {a.get('golden_answers')}")
        print(f"  {label} ({a.get('kind')}): {answers}; transcripts part at character {at}: "
              f"fast {_snippet(a.get('trace') or '', at)} vs transformers {_snippet(b.get('trace') or '', at)}")
    if args.out:
        print(f"wrote {folders['fast']} and {folders['transformers']}")
    return results


if __name__ == "__main__":
    main()
