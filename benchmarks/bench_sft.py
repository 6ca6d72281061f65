"""SFT throughput: the shipped fast recipe (``sft_fast``) against today's v2 recipe (``sft_default``)
on the same 16 trajectories, trained one after the other in one run (alternating, ``--rounds``
times, so that other load on the machine hits both).

Each run is ``train_sft`` from a fresh output folder (no checkpoints saved), one epoch of the 16
trajectories (2 optimizer steps of 8). Throughput = trajectory tokens / ``train_runtime``; the
fast recipe's cache of the frozen layers is built before training starts, so its steady-state
number excludes it and its first-epoch number adds it. The FLOPs of each recipe are worked out
from the model's shapes and the actual sequence lengths (see :func:`train_flops`), giving the
GFLOPS reached and the fraction of this CPU's bf16 peak (2 Zen 4 cores with avx512_bf16 and no
AMX: ~330-470 GFLOPS; FINDINGS.md).

    python benchmarks/bench_sft.py --dataset runs/sft-v2 [--rounds 1] [--variants k4 k8 k12 k30 ...]

``--variants`` adds single-lever runs on v2 (``dropout0``, ``head``, ``k8nocache``) and the fast
recipe at other ``lora_layers`` (``k4``, ``k12``, ``k30``), for the lever table of reports/sft.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PEAK_GFLOPS = (330.0, 470.0)  # bf16, 2 Zen 4 cores (VDPBF16PS), FINDINGS.md
FAST = "sft_fast"
V2 = "sft_default"
#: name -> (config, extra flags)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "v2": (V2, []),
    "recipe": (FAST, []),
    "dropout0": (V2, ["--lora_dropout", "0.0"]),
    "head": (V2, ["--lm_head_on_labels", "true"]),
    "k8nocache": (V2, ["--lora_layers", "8"]),
    "k8nocache+head": (V2, ["--lora_layers", "8", "--lm_head_on_labels", "true", "--lora_dropout", "0.0"]),
    **{f"k{k}": (FAST, ["--lora_layers", str(k)]) for k in (4, 8, 12, 16)},
    "k30": (FAST, ["--lora_layers", "30", "--cache_frozen_layers", "false"]),
}


def _shapes(config: Any) -> tuple[int, int, int, int]:
    """``(d, q width, kv width, FLOPs per token of the 7 projections / 2)`` of a decoder layer."""
    d, ffn = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return d, q, kv, d * (q + kv + kv) + q * d + 3 * d * ffn


def forward_flops(config: Any, lengths: list[int], layers: int) -> float:
    """FLOPs of a forward pass of ``layers`` decoder layers over sequences of ``lengths`` tokens."""
    _, q, _, proj = _shapes(config)
    return float(sum(layers * (2 * proj * t + 2 * q * t * (t + 1)) for t in lengths))


def train_flops(config: Any, lengths: list[int], scored: list[int], lora_layers: int, cached: bool,
                lora_r: int, targets: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one training pass over sequences of ``lengths`` tokens.

    Per decoder layer and token: the 7 projections ``2 * P`` (P = d*(q + k + v + o widths) +
    3*d*ffn), causal attention ``2 * d_attn * (T + 1)`` (QK^T and AV over (T+1)/2 keys on
    average) and, with LoRA of rank r on ``targets`` projections, ``2 * r * (in + out)`` each.
    Backward: layers from the lowest LoRA layer up need the input gradient (same FLOPs as their
    forward, the frozen weights get no weight gradient) and LoRA's weight gradients (same as
    LoRA's forward again); layers below it run forward only, or not at all when ``cached`` (the
    cache build, once per trajectory, is reported apart). LM head ``2 * d * vocab`` forward and
    as much backward per scored position (``scored``: all positions, or the labelled ones).
    """
    d, q, kv, proj = _shapes(config)
    ffn, n = config.intermediate_size, config.num_hidden_layers
    lora = lora_r * (d + q + d + kv + d + kv + q + d + 3 * (d + ffn)) if targets == 7 else 0
    k = lora_layers or n
    total = 0.0
    for t, s in zip(lengths, scored):
        linear = 2 * proj * t
        attention = 2 * q * t * (t + 1)
        lora_fwd = 2 * lora * t
        trained_layer = 2 * (linear + attention) + 3 * lora_fwd
        frozen_layer = 0 if cached else linear + attention
        total += k * trained_layer + (n - k) * frozen_layer + 2 * (2 * d * config.vocab_size * s)
    return total


def run_once(name: str, dataset: str, samples: int, seed: int) -> dict[str, Any]:
    from langchain_ragr1.tuning import run_sft
    from langchain_ragr1.tuning.sft import train_sft

    config, extra = VARIANTS[name]
    with tempfile.TemporaryDirectory(prefix=f"bench-sft-{name}-") as out:
        script, args, model_args = run_sft.parse(argv=[
            "--config", config, "--dataset", dataset, "--max_samples", str(samples), "--output_dir", out,
            "--num_train_epochs", "1", "--max_steps", "-1", "--save_strategy", "no", "--max_train_seconds", "3600",
            "--seed", str(seed), "--disable_tqdm", "true", *extra])
        summary = train_sft(script, args, model_args, progress=False)
        from transformers import AutoConfig

        model_cfg = AutoConfig.from_pretrained(summary["model"])
        lengths, scored_labels = _lengths(Path(out), script, args)
    cache = summary.get("frozen_cache") or {}
    tokens = summary["tokens_per_epoch"]
    scored = scored_labels if script.lm_head_on_labels else lengths
    flops = train_flops(model_cfg, lengths, scored, script.lora_layers, bool(script.cache_frozen_layers),
                        model_args.lora_r, len(model_args.lora_target_modules or []))
    # the cache build: one forward of the layers below the top K per trajectory
    first = cache.get("first_trained_layer", 0)
    build_flops = forward_flops(model_cfg, lengths, first)
    runtime = summary["train_runtime"]
    return {"name": name, "tokens": tokens, "labelled": summary["labelled_tokens_per_epoch"], "runtime": runtime,
            "cpu": summary["train_cpu_seconds"], "cache_s": cache.get("seconds", 0.0),
            "cache_cpu": cache.get("cpu_seconds", 0.0), "flops": flops, "build_flops": build_flops,
            "lora_layers": script.lora_layers or model_cfg.num_hidden_layers, "loss": summary["train_loss"]}


def _lengths(out: Path, script: Any, args: Any) -> tuple[list[int], list[int]]:
    """Token counts and labelled next-token positions of the run's samples (rebuilt as the run built them)."""
    from transformers import AutoTokenizer

    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.tuning.sft import check_dataset, load_sft_dataset

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path("base")))
    dataset, _ = load_sft_dataset(script, args, tokenizer, check_dataset(script))
    lengths = [len(ids) for ids in dataset["input_ids"]]
    scored = [sum(label != -100 for label in labels[1:]) for labels in dataset["labels"]]
    return lengths, scored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dataset", default="runs/sft-v2", help="make_sft_data's --out folder")
    parser.add_argument("--samples", type=int, default=16, help="trajectories (a seeded subset)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating v2/recipe rounds")
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(set(VARIANTS) - {"v2", "recipe"}),
                        help="single-lever runs to add to each round")
    parser.add_argument("--json", help="also write the runs here")
    options = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    runs: list[dict[str, Any]] = []
    for _ in range(options.rounds):
        for name in ("v2", "recipe", *options.variants):
            result = run_once(name, options.dataset, options.samples, 0)
            runs.append(result)
            print(f"  {name:15s} K={result['lora_layers']:2d} {result['tokens'] / result['runtime']:7.1f} tok/s "
                  f"({result['runtime']:.1f} s, {result['cpu']:.1f} cpu-s, cache {result['cache_s']:.1f} s, "
                  f"loss {result['loss']:.4f})",
                  file=sys.stderr, flush=True)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_name.setdefault(r["name"], []).append(r)

    def rate(name: str) -> float:
        return statistics.median(r["tokens"] / r["runtime"] for r in by_name[name])

    def cpu_rate(name: str) -> float:  # tokens per CPU-second of the process (all its threads)
        return statistics.median(r["tokens"] / r["cpu"] for r in by_name[name])

    def gflops(name: str) -> float:
        return statistics.median(r["flops"] / r["runtime"] / 1e9 for r in by_name[name])

    v2, fast = rate("v2"), rate("recipe")
    print(f"sft throughput: recipe {fast:.0f} tok/s, v2 {v2:.0f} tok/s, ratio {fast / v2:.2f}x "
          f"(~{gflops('recipe'):.0f} GFLOPS)")
    print(f"per CPU-second of the process (less sensitive to other load): recipe {cpu_rate('recipe'):.0f}, "
          f"v2 {cpu_rate('v2'):.0f} tok/cpu-s, ratio {cpu_rate('recipe') / cpu_rate('v2'):.2f}x")
    first = by_name["recipe"][0]
    first_rate = first["tokens"] / (first["runtime"] + first["cache_s"])
    print(f"first epoch with the cache build ({first['cache_s']:.1f} s): recipe {first_rate:.0f} tok/s, "
          f"ratio {first_rate / v2:.2f}x")
    tokens = by_name["v2"][0]["tokens"]
    print(f"data: {options.samples} trajectories, {tokens} tokens, {by_name['v2'][0]['labelled']} labelled")
    for name, rows in by_name.items():
        r = rows[0]
        g = gflops(name)
        print(f"{name:15s} K={r['lora_layers']:2d}: {r['flops'] / r['tokens'] / 1e9:.3f} GFLOP/token, "
              f"{rate(name):7.1f} tok/s = {rate(name) / v2:.2f}x v2 ({cpu_rate(name) / cpu_rate('v2'):.2f}x per CPU-s), "
              f"{g:5.0f} GFLOPS = "
              f"{g / PEAK_GFLOPS[1]:.0%}-{g / PEAK_GFLOPS[0]:.0%} of the bf16 peak"
              + (f"; cache build {r['build_flops'] / r['tokens'] / 1e9:.3f} GFLOP/token once, {r['cache_s']:.1f} s"
                 if r["build_flops"] else ""))
    if options.json:
        Path(options.json).write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
