"""Where a batched policy's time goes, against a replay of exactly the same model work.

:meth:`TokenPolicy.record_calls` records every batched call an agent made (the rows' input
ids, the decode steps it ran, the tokens each row kept, its wall time and prefill time).
:func:`replay_calls` runs the same calls as bare ``model.generate`` (same ids, same batch
composition and left padding, forced to the same number of steps, no stop strings, no
log-probs): the limit the agent's own calls could reach on this machine.
:func:`profile_calls` sums both into the figures ``benchmarks/bench_batching.py`` prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from langchain_ragr1.policies.batching import GenerateCall


class FirstLogitsTimer:
    """A logits processor that changes nothing and notes when it is first called: the end
    of ``generate``'s prefill (the forward pass over the prompts)."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        return scores


@dataclass(frozen=True)
class ReplayTiming:
    """Wall seconds of one replayed call and of its prefill."""

    seconds: float
    prefill_s: float


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """``(input_ids, attention_mask)`` of ``prompts`` padded on the left to the longest."""
    width = max(map(len, prompts))
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return ids, mask


def replay_calls(model: Any, pad_id: int, calls: Sequence[GenerateCall]) -> list[ReplayTiming]:
    """Run each recorded call again as a bare greedy ``model.generate`` of ``call.steps`` tokens."""
    import torch

    timings = []
    for call in calls:
        ids, mask = left_pad(call.prompts, pad_id)
        timer = FirstLogitsTimer()
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                input_ids=torch.tensor(ids, device=model.device),
                attention_mask=torch.tensor(mask, device=model.device),
                max_new_tokens=call.steps, min_new_tokens=call.steps, do_sample=False,
                pad_token_id=pad_id, logits_processor=[timer],
            )
        ended = time.perf_counter()
        timings.append(ReplayTiming(ended - started, (timer.first or ended) - started))
    return timings


def profile_calls(calls: Sequence[GenerateCall], replays: Sequence[ReplayTiming] | None = None) -> dict[str, Any]:
    """Totals of recorded calls (and of their replay): calls, rows, kept tokens, seconds split
    into prefill and decode, prompt and padding tokens of the prefill, decode positions and
    those wasted (rows already finished, tokens past a stop string)."""
    rows = sum(len(c.prompts) for c in calls)
    kept = sum(sum(c.kept) for c in calls)
    decode_positions = sum(c.steps * len(c.prompts) for c in calls)
    summary: dict[str, Any] = {
        "calls": len(calls),
        "rows": rows,
        "mean_batch": rows / len(calls) if calls else 0.0,
        "kept_tokens": kept,
        "seconds": sum(c.seconds for c in calls),
        "prefill_s": sum(c.prefill_s for c in calls),
        "prompt_tokens": sum(sum(map(len, c.prompts)) for c in calls),
        "prompt_pad_tokens": sum(c.prompt_pad_tokens for c in calls),
        "decode_positions": decode_positions,
        "decode_waste_tokens": sum(c.decode_waste_tokens for c in calls),
    }
    summary["decode_s"] = summary["seconds"] - summary["prefill_s"]
    if replays is not None:
        if len(replays) != len(calls):
            raise ValueError(f"{len(replays)} replay timings for {len(calls)} calls")
        summary["replay_s"] = sum(r.seconds for r in replays)
        summary["replay_prefill_s"] = sum(r.prefill_s for r in replays)
        summary["replay_decode_s"] = summary["replay_s"] - summary["replay_prefill_s"]
    return summary
