"""One rank of a multi-process training test: ``accelerate launch ... tests/_dist_train.py sft|rl PROBE_DIR ARGS``.

Runs the training script's own ``main`` (``run_main`` with the script's parser and checks, every
flag in ``ARGS``), with one ``TrainerCallback`` more: it writes ``PROBE_DIR/rank<R>.json`` with the
process's rank, world size and collective backend, and a digest of its trainable parameters
before training and after the first optimizer step (equal on all ranks after the step only if
the gradients were averaged; each rank trains on other samples). ``rl``: the rollouts' policy is
scripted (a search for the question's case word, then an answer that is right for every other episode,
so that exact match varies within a group and the step has a gradient); the questions it
searched for are in the probe file too. ``RAGR1_TEST_NO_GRADIENT_AVERAGING=1`` turns DDP's
all-reduce off, to show that the ranks' weights then differ.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def trainable_digest(model: Any) -> tuple[str, float]:
    """sha256 of the trainable parameters (by name, fp32 bytes) and the sum of their absolute values."""
    digest, total = hashlib.sha256(), 0.0
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            data = param.detach().float().cpu().contiguous()
            digest.update(name.encode())
            digest.update(data.numpy().tobytes())
            total += float(data.abs().sum())
    return digest.hexdigest(), total


class Probe(TrainerCallback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.record: dict[str, Any] = {}
        self.searched: list[str] = []
        self.retrieved: list[str] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch.distributed as dist

        self.record.update(rank=args.process_index, world_size=args.world_size,
                           backend=dist.get_backend() if dist.is_initialized() else None,
                           initial=trainable_digest(model))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            self.record["step1"] = trainable_digest(model)

    def on_train_end(self, args, state, control, **kwargs):
        self.record.update(global_step=state.global_step, searched=self.searched, retrieved=self.retrieved)
        (self.out / f"rank{self.record['rank']}.json").write_text(json.dumps(self.record), encoding="utf-8")


def scripted_policy(probe: Probe) -> Any:
    """Token-level turns: search for the question's ``(case WORD)``, then answer Paris on every
    other episode; ``probe.searched`` gets each search's word and ``probe.retrieved`` the
    ``<information>`` text each answer turn was shown."""
    from langchain_ragr1.testing import ScriptedPolicy

    answers = itertools.cycle(["Paris", "London"])
    lock = threading.Lock()

    def turn(segments: Any) -> str:
        if not any(s["role"] == "policy" for s in segments):
            found = re.search(r"\(case (\w+)\)", segments[0]["text"])
            word = found.group(1) if found else "unknown"
            with lock:
                probe.searched.append(word)
            return f"<think>look it up</think><search> capital case {word} </search>"
        with lock:
            probe.retrieved.append(" ".join(s["text"] for s in segments if s["role"] not in ("prompt", "policy")))
            answer = next(answers)
        return f"<think>found it</think><answer> {answer} </answer>"

    return ScriptedPolicy(turn, token_level=True)


def skip_gradient_averaging() -> None:
    """For the test that the check can fail: DDP never all-reduces (its sync flag stays False)."""
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel.require_backward_grad_sync = property(  # type: ignore[assignment]
        lambda self: False, lambda self, value: None)


def main(argv: list[str]) -> int:
    from langchain_ragr1.tuning.args import run_main

    if os.environ.get("RAGR1_TEST_NO_GRADIENT_AVERAGING") == "1":
        skip_gradient_averaging()

    kind, out, rest = argv[0], Path(argv[1]), argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    probe = Probe(out)
    if kind == "sft":
        from langchain_ragr1.tuning import run_sft
        from langchain_ragr1.tuning.sft import check_sft, train_sft

        return run_main(rest, run_sft.make_parser(), check=check_sft, train=partial(train_sft, callbacks=[probe]),
                        rows_key="loss_rows")
    from langchain_ragr1.tuning import run_rl
    from langchain_ragr1.tuning.rl import check_rl, train_rl

    return run_main(rest, run_rl.make_parser(), check=check_rl,
                    train=partial(train_rl, callbacks=[probe], policy=scripted_policy(probe)), rows_key="metrics_rows")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main(sys.argv[1:]))
