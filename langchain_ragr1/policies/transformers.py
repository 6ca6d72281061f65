"""A token-level policy on a local transformers causal LM, with request batching.

Concurrent callers (threads, or coroutines through :meth:`TransformersPolicy.agenerate`)
are coalesced into one batched ``model.generate`` (see :mod:`langchain_ragr1.policies.token`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from langchain_ragr1.json_tokenizer import as_transformers_tokenizer
from langchain_ragr1.models import resolve_model_path
from langchain_ragr1.policies.base import Generation
from langchain_ragr1.policies.batching import GenerateCall, PolicyStats
from langchain_ragr1.policies.profiling import FirstLogitsTimer, left_pad
from langchain_ragr1.policies.repetition import RepeatTracker
from langchain_ragr1.policies.sampling import Sampling
from langchain_ragr1.policies.token import TokenPolicy, model_end_ids
from langchain_ragr1.timings import mark

__all__ = ["PolicyStats", "TransformersPolicy", "FirstLogitsTimer", "RepeatStoppingCriteria", "Sampling"]


class RepeatStoppingCriteria:
    """The repetition stop inside ``model.generate``, as a stopping criterion (a callable with
    ``StoppingCriteria``'s signature, like :class:`FirstLogitsTimer` for the logits): a row is done once
    its new tokens repeat themselves. One :class:`~langchain_ragr1.policies.repetition.RepeatTracker` per
    row, fed only the columns added since the last call, so each step costs one look-up per row."""

    def __init__(self, trackers: list[RepeatTracker], prompt_width: int) -> None:
        self.trackers = trackers
        self.seen = prompt_width  # columns of input_ids already fed to the trackers

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.seen:].tolist()
        self.seen = input_ids.shape[1]
        for tracker, row in zip(self.trackers, new):
            for token in row:
                tracker.push(token)
        done = [tracker.fired_at is not None for tracker in self.trackers]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TransformersPolicy(TokenPolicy):
    """RAG-R1 turns from a local transformers causal LM, token-exact and batched.

    ``sampling`` (a :class:`~langchain_ragr1.policies.sampling.Sampling`, default ``Sampling()``)
    says how: ``Sampling(temperature=0)`` decodes greedily; otherwise it samples with its
    ``temperature``, ``top_p``, ``top_k`` and ``min_p``; ``repetition_penalty`` either way (left padding
    is not penalised), at most ``max_new_tokens`` per turn; a turn that loops ends where the repetition stop
    (``repeat_stop_tokens``, ``repeat_stop_count``) fires, as a stopping criterion inside
    ``model.generate``. Log-probs are
    of the raw logits (temperature 1). Requests from concurrent callers are batched (left
    padding) up to ``max_batch_size``, waiting at most ``batch_wait_s`` for company. Call
    :meth:`close` (or use ``with``) to stop the worker.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        sampling: Sampling | None = None,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.02,
    ) -> None:
        self._setup(
            tokenizer,
            sampling=sampling,
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_s,
            end_ids=model_end_ids(model, tokenizer),
        )
        self.model = model.eval()
        self.max_len = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, dtype: str = "float32", **kwargs: Any
    ) -> "TransformersPolicy":
        """Load a local model folder, ``"base"`` or (``None``) the trained default SmolLM2.

        ``kwargs`` (``sampling=Sampling(...)``, ``max_batch_size``, ``batch_wait_s``) go to the
        constructor; a bad or unknown one raises :class:`ConfigError` before anything loads.
        """
        cls.check_kwargs(kwargs)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    def _request(self, prompt: list[int], stop: tuple[str, ...], room: int) -> tuple[tuple, list[int]]:
        # model.generate takes one budget and one sampling setting per call: they form the key.
        return (stop, room, self.sampling), prompt

    def _run_batch(self, key: tuple, prompts: list[list[int]]) -> list[Generation]:
        stop, max_new_tokens, sampling = key
        # the same padding a replay of this call uses (policies.profiling.replay_calls)
        ids, mask = left_pad(prompts, self.tokenizer.pad_token_id)
        batch = {"input_ids": torch.tensor(ids, device=self.model.device),
                 "attention_mask": torch.tensor(mask, device=self.model.device)}
        timer = FirstLogitsTimer()
        # the repetition stop ends a looping row at once (rows done early are padded, then stripped by _finish)
        trackers = [t for t in (sampling.repeat_tracker() for _ in prompts) if t is not None]
        repeat: dict[str, Any] = {"stopping_criteria": [RepeatStoppingCriteria(trackers, len(ids[0]))]} if trackers else {}
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens,
                stop_strings=list(stop) or None,
                tokenizer=as_transformers_tokenizer(self.tokenizer),  # its stop strings read transformers' tokenizer
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_logits=True,
                logits_processor=[timer],
                **repeat,
                **sampling.generate_kwargs(),
            )
            if timer.first is not None:
                mark("first token", timer.first)
            new = out.sequences[:, batch["input_ids"].shape[1] :]
            logprobs = torch.stack(
                [
                    torch.log_softmax(step.float(), dim=-1).gather(1, new[:, i : i + 1]).squeeze(1)
                    for i, step in enumerate(out.logits)
                ],
                dim=1,
            )
        results = [
            self._finish(ids, lps, "length", stop, len(prompt), len(prompts))
            for ids, lps, prompt in zip(new.tolist(), logprobs.tolist(), prompts)
        ]
        self._record(results)
        self._record_call(GenerateCall(
            prompts=[list(p) for p in prompts], steps=int(new.shape[1]),
            kept=[len(g.token_ids or []) for g in results], seconds=time.perf_counter() - started,
            prefill_s=(timer.first or time.perf_counter()) - started,
        ))
        return results
