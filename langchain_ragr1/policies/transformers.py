"""A token-level policy on a local transformers causal LM, with request batching.

Every model turn is generated from the concatenated token ids of the transcript (never
re-tokenised text) and returned as the ids the model produced, cut right after the first
stop string, with their log-probs. Concurrent callers (threads, or coroutines through
:meth:`TransformersPolicy.agenerate`) are coalesced into one batched ``model.generate``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import torch

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.models import check_model_path, default_model_path
from langchain_ragr1.policies.base import Generation, Policy, cut_generation
from langchain_ragr1.protocol import STOP_STRINGS
from langchain_ragr1.transcript import Segment, make_segment


@dataclass
class PolicyStats:
    """Counters of the batcher: model calls, requests they answered, tokens kept."""

    generate_calls: int = 0
    requests: int = 0
    max_batch: int = 0
    generated_tokens: int = 0


@dataclass
class _Request:
    key: Hashable
    payload: Any
    future: Future


class _RequestBatcher:
    """Coalesces concurrent requests with equal keys into calls of ``run(key, payloads)``.

    One daemon worker takes the oldest pending request, waits up to ``wait_s`` for more
    with the same key (at most ``max_batch_size``), runs them together and resolves each
    request's future with its result, or with the exception the call raised.
    """

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        max_batch_size: int,
        wait_s: float,
    ) -> None:
        self._run = run
        self._max = max_batch_size
        self._wait_s = wait_s
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, payload: Any) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("This policy is closed.")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="ragr1-policy-batcher", daemon=True
                )
                self._thread.start()
            self._pending.append(_Request(key, payload, future))
            self._cond.notify_all()
        return future

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            key = self._pending[0].key
            deadline = time.monotonic() + self._wait_s
            while True:
                batch = [r for r in self._pending if r.key == key][: self._max]
                remaining = deadline - time.monotonic()
                if len(batch) >= self._max or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            for request in batch:
                self._pending.remove(request)
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self._run(live[0].key, [r.payload for r in live])
            except BaseException as exc:  # every caller of the batch gets the error
                for request in live:
                    request.future.set_exception(exc)
            else:
                for request, result in zip(live, results):
                    request.future.set_result(result)

    def close(self) -> None:
        """Fail the pending requests and stop the worker after its current batch."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            self._cond.notify_all()
            thread = self._thread
        for request in pending:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(RuntimeError("The policy was closed."))
        if thread is not None and thread is not threading.current_thread():
            thread.join()


class TransformersPolicy(Policy):
    """RAG-R1 turns from a local transformers causal LM, token-exact and batched.

    ``temperature=0`` decodes greedily; otherwise it samples with ``temperature`` and
    ``top_p`` (no top-k). Log-probs are of the raw logits (temperature 1). Requests from
    concurrent callers are batched (left padding) up to ``max_batch_size``, waiting at most
    ``batch_wait_s`` for company. Call :meth:`close` (or use ``with``) to stop the worker.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 500,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.02,
    ) -> None:
        if max_new_tokens < 1 or max_batch_size < 1 or batch_wait_s < 0:
            raise ConfigError("max_new_tokens and max_batch_size must be >= 1, batch_wait_s >= 0.")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ConfigError("temperature must be >= 0 and top_p in (0, 1].")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        self._end_ids = {t for t in (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        self._max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self._tok_lock = threading.RLock()
        self._stats = PolicyStats()
        self._stats_lock = threading.Lock()
        self._batcher = _RequestBatcher(self._run_batch, max_batch_size, batch_wait_s)

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, dtype: str = "float32", **kwargs: Any
    ) -> "TransformersPolicy":
        """Load a local model folder (default: the bundled SmolLM2-135M-Instruct)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = default_model_path() if path is None else check_model_path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    # --- text <-> tokens ----------------------------------------------------------------

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``, special tokens kept, spaces untouched."""
        with self._tok_lock:
            return self.tokenizer.decode(
                list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        with self._tok_lock:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to its first ``max_tokens`` tokens."""
        ids = self.encode(text)
        return text if len(ids) <= max_tokens else self.decode(ids[: max(0, max_tokens)])

    def render_prompt(self, prompt: str) -> Segment:
        """``prompt`` as one user message through the chat template, with a generation prompt."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                "The tokenizer has no chat template; RAG-R1 sends the prompt as one user message "
                "through it. Use an instruct/chat model or set tokenizer.chat_template."
            )
        with self._tok_lock:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return make_segment("prompt", text, self.encode(text))

    # --- generation ---------------------------------------------------------------------

    @property
    def stats(self) -> PolicyStats:
        """A snapshot of the batching counters."""
        with self._stats_lock:
            return replace(self._stats)

    def generate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS
    ) -> Generation:
        """Continue the concatenated token ids of ``segments`` with one model turn."""
        return self._submit(segments, stop).result()

    async def agenerate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS
    ) -> Generation:
        """Like :meth:`generate`, awaiting the batcher without blocking the event loop."""
        return await asyncio.wrap_future(self._submit(segments, stop))

    def close(self) -> None:
        """Stop the batching worker; pending requests fail, later calls raise."""
        self._batcher.close()

    def __enter__(self) -> "TransformersPolicy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, segments: Sequence[Segment], stop: Sequence[str]) -> Future:
        prompt: list[int] = []
        for segment in segments:
            ids = segment.get("token_ids")
            if ids is None:
                raise ConfigError(
                    f"A {segment.get('role')!r} segment has no token ids: build the transcript with "
                    "this policy's render_prompt/encode (token ids are never re-derived from text)."
                )
            prompt.extend(ids)
        if not prompt:
            raise ConfigError("Cannot generate from an empty transcript.")
        room = self.max_new_tokens
        if self._max_positions is not None:
            room = min(room, self._max_positions - len(prompt))
        if room <= 0:
            future: Future = Future()
            future.set_result(
                Generation(text="", token_ids=[], logprobs=[], finish_reason="context_overflow",
                           metadata={"prompt_tokens": len(prompt)})
            )
            return future
        key = (tuple(s for s in stop if s), room, float(self.temperature), float(self.top_p))
        return self._batcher.submit(key, prompt)

    def _run_batch(self, key: tuple, prompts: list[list[int]]) -> list[Generation]:
        stop, max_new_tokens, temperature, top_p = key
        with self._tok_lock:
            batch = self.tokenizer.pad(
                {"input_ids": prompts}, padding_side="left", return_tensors="pt"
            ).to(self.model.device)
        if temperature == 0:
            sampling: dict[str, Any] = {"do_sample": False}
        else:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens,
                stop_strings=list(stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_logits=True,
                **sampling,
            )
            new = out.sequences[:, batch["input_ids"].shape[1] :]
            logprobs = torch.stack(
                [
                    torch.log_softmax(step.float(), dim=-1).gather(1, new[:, i : i + 1]).squeeze(1)
                    for i, step in enumerate(out.logits)
                ],
                dim=1,
            )
        results = [
            self._finish(ids, lps, stop, len(prompt), len(prompts))
            for ids, lps, prompt in zip(new.tolist(), logprobs.tolist(), prompts)
        ]
        with self._stats_lock:
            self._stats.generate_calls += 1
            self._stats.requests += len(prompts)
            self._stats.max_batch = max(self._stats.max_batch, len(prompts))
            self._stats.generated_tokens += sum(len(g.token_ids or []) for g in results)
        return results

    def _finish(
        self, ids: list[int], logprobs: list[float], stop: Sequence[str], prompt_len: int, batch: int
    ) -> Generation:
        """Strip end/pad tokens, cut after the first stop string, decode."""
        reason = "length"
        end = next((i for i, t in enumerate(ids) if t in self._end_ids), None)
        if end is not None:
            ids, reason = ids[:end], "eos"
        generation = Generation(
            text=self.decode(ids),
            token_ids=ids,
            logprobs=logprobs[: len(ids)],
            finish_reason=reason,
            metadata={"prompt_tokens": prompt_len, "batch_size": batch},
        )
        return cut_generation(generation, stop, self.decode)
