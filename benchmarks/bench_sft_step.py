"""One ``sft_fast`` training step, taken apart: where its time goes and two levers that did not pay.

The step: SmolLM2-135M in bf16, LoRA r16 on the 7 projections of the top ``--lora-layers``
layers, the layers below replaced by pass-throughs and fed a (random) cached hidden state, the
LM head on the last 129 positions, under bf16 autocast; one trajectory of ``--tokens`` tokens
from ``--dataset``. Prints the torch profiler's top operators for one step, then CPU seconds per
step of the variants, alternated ``--reps`` times in one run (so other load hits all of them):
``sdpa`` (the default), ``eager`` attention, and ``nocast`` (PEFT's fp32 cast of each adapter's
input switched off: under bf16 autocast the matmul runs in bf16 either way; gradients are
compared to ``sdpa``'s and must be identical).

    python benchmarks/bench_sft_step.py --dataset runs/sft-v2 [--tokens 1024] [--reps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dataset", default="runs/sft-v2", help="make_sft_data's --out folder")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--reps", type=int, default=4)
    options = parser.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.tuning.fast_sft import drop_frozen_layers

    row = json.loads(next(iter(open(Path(options.dataset) / "trajectories.jsonl", encoding="utf-8"))))
    ids = [t for segment in row["segments"] for t in segment["token_ids"]][: options.tokens]
    n = len(ids)
    torch.manual_seed(0)
    states = torch.randn(1, n, 576, dtype=torch.bfloat16)
    keep, targets = torch.arange(n - 130, n - 1), torch.tensor(ids[n - 129:])

    def build(attn: str):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(resolve_model_path("base")), dtype=torch.bfloat16,
                                                     attn_implementation=attn)
        layers = model.config.num_hidden_layers
        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, init_lora_weights=False, target_modules=TARGETS,
                            layers_to_transform=list(range(layers - options.lora_layers, layers)))
        model = get_peft_model(model, config).train()
        drop_frozen_layers(model, layers - options.lora_layers)
        return model

    def step(model) -> list:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(inputs_embeds=states, logits_to_keep=keep).logits.float()
        torch.nn.functional.cross_entropy(logits[0], targets).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    models = {"sdpa": build("sdpa"), "eager": build("eager")}
    models["nocast"] = build("sdpa")
    for module in models["nocast"].modules():
        if hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False

    step(models["sdpa"])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(models["sdpa"])
    print(f"one step, {n} tokens, top {options.lora_layers} layers:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))

    seconds: dict[str, list[float]] = {name: [] for name in models}
    grads = {}
    for rep in range(options.reps + 1):
        for name, model in models.items():
            start = time.process_time()
            grads[name] = step(model)
            if rep:  # the first round warms each model up
                seconds[name].append(time.process_time() - start)
    same = all(torch.equal(a, b) for a, b in zip(grads["sdpa"], grads["nocast"]))
    base = statistics.median(seconds["sdpa"])
    for name, values in seconds.items():
        print(f"{name:7s} {statistics.median(values):.2f} CPU-s per step (median of {len(values)}), "
              f"{base / statistics.median(values):.2f}x sdpa")
    print(f"nocast gradients identical to sdpa's: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
