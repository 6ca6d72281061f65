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

Prompt lookup (``--lookup K``, issue 22): the first weight kind's engine with prompt-lookup speculative
decoding (drafts of up to K tokens from the row's own context) is one more batch-1 path on the same prompt.
Forced to ``--new-tokens`` tokens a row decodes past its end token, where a small model loops and lookup
thrives, so a second measurement runs each of the prompts at batch 1 to its natural end (the model's end
ids, at most ``--new-tokens``): engine vs engine + lookup vs eager forced to the same number of tokens,
with the lookup's forward passes per token, the accepted tokens per pass, and how many turns have the
same tokens with and without lookup (bf16: a pass over several positions rounds differently).
``--prompts second-turn`` replaces the questions' first-turn prompts by real RAG-R1 second turns: the
question, the engine's own (greedy) first turn up to its ``</search>``, and the ``<information>`` block of
BM25 passages from the bundled corpus for its queries. ``--temperature T --top-p P`` makes the natural-end
turns sample (seeded; temperature then top-p, as RL rollouts do) instead of decoding greedily.

    python benchmarks/bench_generate.py [--model default] [--new-tokens 64] [--rounds 2]
                                        [--weights bfloat16 int8 float32] [--lookup 8]
                                        [--prompts questions|second-turn] [--batches 1 8]
                                        [--temperature 0 --top-p 1.0]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from bench_batching import QUESTIONS  # noqa: E402  (the same 8 questions as the batching benchmark)

from langchain_ragr1.policies.decoder import LlamaDecoder, Sampler, flops_per_token, kv_bytes_per_token  # noqa: E402
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


def engine(decoder: LlamaDecoder, prompts: list[list[int]], new: int, lookup: int = 0) -> tuple[float, float]:
    """The same for the engine (greedy, no end ids: exactly ``new`` tokens, log-probs included)."""
    first: list[float] = []
    started = time.perf_counter()
    decoder.generate(prompts, new, on_first_token=lambda: first.append(time.perf_counter()),
                     prompt_lookup_num_tokens=lookup)
    ended = time.perf_counter()
    return ended - started, (first[0] if first else ended) - started


def natural(decoder: LlamaDecoder, prompt: list[int], new: int, end_ids: list[int], lookup: int,
            sampler: Sampler | None = None):
    """(decode seconds, the row) of one prompt at batch 1, to its end id or ``new`` tokens."""
    first: list[float] = []
    if sampler is not None:
        sampler.generator = torch.Generator().manual_seed(len(prompt))
    started = time.perf_counter()
    row = decoder.generate([prompt], new, end_ids=end_ids, on_first_token=lambda: first.append(time.perf_counter()),
                           prompt_lookup_num_tokens=lookup, pick=sampler)[0]
    return time.perf_counter() - (first[0] if first else started), row


def second_turns(decoder: LlamaDecoder, tokenizer, prompts: list[list[int]], end_ids: list[int]) -> list[list[int]]:
    """RAG-R1 second-turn prompts: each prompt + the engine's greedy first turn cut after its ``</search>`` +
    the ``<information>`` block of 3 BM25 passages per query (bundled corpus), as the agent appends it."""
    import re

    from langchain_ragr1 import BM25Retriever, load_bundled_corpus
    from langchain_ragr1.policies.token import encode_plain
    from langchain_ragr1.protocol import render_information, split_queries

    retriever = BM25Retriever.from_documents(load_bundled_corpus(), k=3)
    out = []
    for prompt in prompts:
        row = decoder.generate([prompt], 128, end_ids=end_ids,
                               should_stop=lambda _, ids: "</search>" in tokenizer.decode(ids))[0]
        text = tokenizer.decode(row.token_ids)
        found = re.search(r"<search>(.*?)</search>", text, re.S)
        if found is None:  # answered without searching: its first turn is all there is
            continue
        ids = row.token_ids
        queries = split_queries(found.group(1))
        info = render_information(queries, [[d.page_content for d in retriever.invoke(q)] for q in queries])
        out.append(prompt + ids + encode_plain(tokenizer, info))
    return out


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
    parser.add_argument("--lookup", type=int, default=8, help="prompt lookup's longest draft (0: no lookup rows)")
    parser.add_argument("--prompts", choices=["questions", "second-turn"], default="questions")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes of the forced rows")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="> 0: the natural-end turns sample (then top-p; seeded), as RL rollouts do; the forced rows "
                             "stay greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
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
    end_ids = sorted({i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if i is not None})
    if args.prompts == "second-turn":
        prompts = second_turns(decoders[args.weights[0]], tokenizer, prompts, end_ids)
    lookup_name = f"engine {args.weights[0]}+lookup{args.lookup}"
    lookup_decoder = decoders[args.weights[0]]
    new = args.new_tokens
    batches = {size: prompts[:size] for size in args.batches}
    sizes = f"{min(map(len, prompts))}-{max(map(len, prompts))}"
    print(f"model {path.name}: {len(prompts)} {args.prompts} prompts of {sizes} tokens, "
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
            if args.lookup and size == 1:
                runs[lookup_name] = lambda rows=rows: engine(lookup_decoder, rows, new, args.lookup)
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
        for name in ["eager fp32", *(f"engine {k}" for k in decoders), lookup_name]:
            if (name, size) not in best:
                continue
            rate, prefill = best[(name, size)]
            decoder = decoders.get(name.removeprefix("engine ").split("+")[0])
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
        if (lookup_name, size) in best:
            rate = best[(lookup_name, size)][0]
            print(f"decode batch {size}: lookup {rate:.1f} tok/s, eager {old_rate:.1f} tok/s, ratio "
                  f"{rate / old_rate:.2f}x ({lookup_name} vs eager fp32; {rate / new_rate:.2f}x the engine)")
    if args.lookup:
        sampler = Sampler(args.temperature, args.top_p) if args.temperature > 0 else None
        natural_turns(model, pad, lookup_decoder, prompts, new, end_ids, args.lookup, lookup_name, sampler)


def natural_turns(model, pad: int, decoder: LlamaDecoder, prompts: list[list[int]], new: int, end_ids: list[int],
                  lookup: int, name: str, sampler: Sampler | None = None) -> None:
    """Each prompt at batch 1 to its natural end: engine and engine + lookup, eager forced to the engine's count
    (greedy; with ``sampler``, the engine's two runs sample, from the same seed, and their tokens differ)."""
    if sampler is not None:
        print(f"natural turn ends sample: temperature {sampler.temperature}, top_p {sampler.top_p}")
    seconds = {"eager fp32": 0.0, "engine": 0.0, "lookup": 0.0}
    tokens = forwards = same = fast_total = 0
    worst = 0.0
    for prompt in prompts:
        engine_s, plain = natural(decoder, prompt, new, end_ids, 0, sampler)
        lookup_s, fast = natural(decoder, prompt, new, end_ids, lookup, sampler)
        total, prefill = eager(model, pad, [prompt], len(plain.token_ids))
        seconds["engine"] += engine_s
        seconds["lookup"] += lookup_s
        seconds["eager fp32"] += total - prefill
        tokens += len(plain.token_ids) - 1
        fast_total += len(fast.token_ids) - 1
        forwards += fast.forwards
        same += fast.token_ids == plain.token_ids
        common = next((i for i, (a, b) in enumerate(zip(fast.token_ids, plain.token_ids)) if a != b),
                      min(len(fast.token_ids), len(plain.token_ids)))
        worst = max([worst, *(abs(a - b) for a, b in zip(fast.logprobs[:common], plain.logprobs[:common]))])
        fast_tokens = len(fast.token_ids) - 1
        print(f"  prompt {len(prompt)} tokens: engine {len(plain.token_ids)} tokens ({plain.finish_reason}), lookup "
              f"{len(fast.token_ids)} tokens in {fast.forwards} passes ({fast_tokens / max(fast.forwards, 1):.2f} "
              f"tokens/pass), same tokens {fast.token_ids == plain.token_ids}, first difference at {common}")
    # tokens/s: each path over its own decoded tokens (eager is forced to the engine's count)
    rates = {k: (fast_total if k == "lookup" else tokens) / v for k, v in seconds.items()}
    print(f"natural turn ends, batch 1, {len(prompts)} prompts, {tokens} decoded tokens: "
          + ", ".join(f"{k} {r:.1f} tok/s" for k, r in rates.items()))
    print(f"natural batch 1: lookup {rates['lookup']:.1f} tok/s, eager {rates['eager fp32']:.1f} tok/s, ratio "
          f"{rates['lookup'] / rates['eager fp32']:.2f}x ({name}; engine alone {rates['engine'] / rates['eager fp32']:.2f}x"
          f"); {forwards / fast_total:.3f} forwards per token, {fast_total / forwards:.2f} tokens per forward; same tokens "
          f"in {same}/{len(prompts)} turns, max |log-prob difference| before the first differing token {worst:.2e}")


if __name__ == "__main__":
    main()
