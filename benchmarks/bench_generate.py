"""Decode speed: eager transformers (``model.generate``, what ``TransformersPolicy`` runs) vs the
lean engine of ``FastPolicy`` (:class:`~langchain_ragr1.policies.decoder.LlamaDecoder`), on the
same prompts, at batch 1 and batch 8, interleaved round by round in one run so that other load
on the machine hits both paths alike.

Every run generates exactly ``--new-tokens`` tokens per row (no end token, no stop string), from
RAG-R1 prompts of the trained default (the multi-query instruction around a question). Decode
tokens/s = rows x (new tokens - 1) / (wall time - time to the first token). The best of
``--rounds`` rounds is kept for each path (the least disturbed by other processes).

The roofline: one decode step reads every weight once (the engine's own count of bytes, plus
the KV cache at the mean context) and does 2 FLOPs per weight per row plus attention; this
machine's read bandwidth (a sum over a 256 MB tensor) and matrix-multiply peak (a 2048^3 matmul
in the engine's dtype) are measured in the same run. ``limit tok/s`` = min(bandwidth / bytes
per step x rows, peak FLOP/s / FLOPs per token).

    python benchmarks/bench_generate.py [--model default] [--new-tokens 64] [--rounds 2]
                                        [--weights bfloat16 int8 float32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from bench_batching import QUESTIONS  # noqa: E402  (the same 8 questions as the batching benchmark)

from langchain_ragr1.policies.decoder import LlamaDecoder, flops_per_token, kv_bytes_per_token  # noqa: E402
from langchain_ragr1.policies.profiling import FirstLogitsTimer, left_pad  # noqa: E402
from langchain_ragr1.protocol import make_prompt  # noqa: E402


def eager(model, pad_id: int, prompts: list[list[int]], new: int) -> tuple[float, float]:
    """(seconds, seconds to the first token) of ``model.generate`` forced to ``new`` tokens, greedy."""
    ids, mask = left_pad(prompts, pad_id)
    timer = FirstLogitsTimer()
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, pad_token_id=pad_id, logits_processor=[timer],
                       return_dict_in_generate=True, output_logits=True)
    ended = time.perf_counter()
    return ended - started, (timer.first or ended) - started


def engine(decoder: LlamaDecoder, prompts: list[list[int]], new: int) -> tuple[float, float]:
    """The same for the engine (greedy, no end ids: exactly ``new`` tokens, log-probs included)."""
    first: list[float] = []
    started = time.perf_counter()
    decoder.generate(prompts, new, on_first_token=lambda: first.append(time.perf_counter()))
    ended = time.perf_counter()
    return ended - started, (first[0] if first else ended) - started


def measure_bandwidth() -> float:
    """Bytes/s of reading a 256 MB fp32 tensor (best of 5 sums)."""
    big = torch.ones(64 * 1024 * 1024)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        big.sum()
        best = min(best, time.perf_counter() - started)
    return big.numel() * 4 / best


def measure_peak(dtype: torch.dtype) -> float:
    """FLOP/s of a 2048^3 matmul in ``dtype`` (best of 3)."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 2048**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--weights", nargs="+", default=["bfloat16", "int8"],
                        help="the engine's weight kinds to measure (the first is 'new' in the summary line)")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.policies.token import render_user_message

    path = resolve_model_path(args.model, show_progress=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    decoders = {kind: LlamaDecoder(model, weights=kind) for kind in args.weights}
    prompts = [render_user_message(tokenizer, make_prompt(q))[1] for q in QUESTIONS]
    pad = tokenizer.pad_token_id or tokenizer.eos_token_id
    new = args.new_tokens
    batches = {1: prompts[:1], 8: prompts[:8]}
    print(f"model {path.name}: prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"{new} new tokens per row, {args.rounds} rounds interleaved, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    # how idle OpenMP threads wait between parallel regions: at batch 1 a step has ~150 of them (4 matrix products
    # and the attention per layer), so this setting alone moves the batch-1 step by ~25% here (README)
    print(f"OpenMP waiting: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}")

    best: dict[tuple[str, int], tuple[float, float]] = {}
    for _ in range(args.rounds):
        for size, rows in batches.items():
            runs = {"eager fp32": lambda rows=rows: eager(model, pad, rows, new)}
            runs.update({f"engine {k}": (lambda d=d, rows=rows: engine(d, rows, new)) for k, d in decoders.items()})
            for name, run in runs.items():
                seconds, prefill = run()
                rate = size * (new - 1) / (seconds - prefill)
                if rate > best.get((name, size), (0.0, 0.0))[0]:
                    best[(name, size)] = (rate, prefill)
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    bandwidth = measure_bandwidth()
    peaks = {torch.float32: measure_peak(torch.float32), torch.bfloat16: measure_peak(torch.bfloat16)}
    context = sum(map(len, prompts)) / len(prompts) + new / 2
    eager_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"\nmachine: read bandwidth {bandwidth / 1e9:.1f} GB/s (256 MB sum), matmul peak "
          f"{peaks[torch.float32] / 1e9:.0f} GFLOP/s fp32, {peaks[torch.bfloat16] / 1e9:.0f} GFLOP/s bf16 (2048^3)")
    print(f"{'path':<18}{'batch':>6}{'tok/s':>9}{'vs eager':>9}{'prefill s':>10}{'MB/step':>9}"
          f"{'GFLOP/tok':>10}{'limit tok/s':>12}{'of limit':>9}")
    for size in batches:
        base = best[("eager fp32", size)][0]
        for name in ["eager fp32", *(f"engine {k}" for k in decoders)]:
            rate, prefill = best[(name, size)]
            decoder = decoders.get(name.removeprefix("engine "))
            reference = decoder or decoders[args.weights[0]]
            kv = kv_bytes_per_token(reference, int(context), element=4 if decoder is None else None)
            step_bytes = (decoder.weight_bytes if decoder else eager_bytes) + kv * size
            flops = flops_per_token(reference, int(context))
            peak = peaks[decoder.dtype if decoder else torch.float32]
            limit = min(bandwidth / step_bytes * size, peak / flops)
            print(f"{name:<18}{size:>6}{rate:>9.1f}{rate / base:>8.2f}x{prefill:>10.2f}{step_bytes / 1e6:>9.0f}"
                  f"{flops / 1e9:>10.3f}{limit:>12.0f}{rate / limit:>8.0%}")
    first = f"engine {args.weights[0]}"
    for size in batches:
        new_rate, old_rate = best[(first, size)][0], best[("eager fp32", size)][0]
        print(f"decode batch {size}: new {new_rate:.1f} tok/s, eager {old_rate:.1f} tok/s, "
              f"ratio {new_rate / old_rate:.2f}x ({args.weights[0]} engine vs eager fp32)")


if __name__ == "__main__":
    main()
