"""Request batching shared by the token-level policies, and their transcript checks.

Concurrent callers (threads, or coroutines awaiting the returned futures) submit requests;
one worker thread coalesces them into calls of a batched ``run`` function.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.base import Generation
from langchain_ragr1.transcript import Segment


@dataclass
class PolicyStats:
    """Counters of the batcher: model calls, requests they answered, tokens kept, and where
    the worker's time went: ``busy_s`` inside model calls, ``fill_wait_s`` holding a pending
    request back for company (up to ``batch_wait_s`` each batch)."""

    generate_calls: int = 0
    requests: int = 0
    max_batch: int = 0
    generated_tokens: int = 0
    busy_s: float = 0.0
    fill_wait_s: float = 0.0
    #: Prompt tokens whose KV pages were found in the cache instead of prefilled (continuous batching).
    reused_prompt_tokens: int = 0


@dataclass
class GenerateCall:
    """One batched model call, recorded so that a benchmark can replay it exactly
    (:func:`langchain_ragr1.policies.profiling.replay_calls`)."""

    #: The input ids of each row, unpadded.
    prompts: list[list[int]]
    #: Decode steps the call ran: the longest row's generated length, end/stop tokens included.
    steps: int
    #: Tokens each row kept (after the end token or stop string cut).
    kept: list[int]
    #: Wall seconds of the call, and of its prefill (up to the first token's logits).
    seconds: float
    prefill_s: float
    #: Decode forward passes after the prefill (``FastPolicy``; with prompt lookup fewer than ``steps - 1``),
    #: ``None`` where the backend does not count them.
    forwards: int | None = None

    @property
    def padded_len(self) -> int:
        return max(map(len, self.prompts))

    @property
    def prompt_pad_tokens(self) -> int:
        """Padding positions the prefill computed."""
        return self.padded_len * len(self.prompts) - sum(map(len, self.prompts))

    @property
    def decode_waste_tokens(self) -> int:
        """Decode positions computed but not kept (rows that had finished, tokens past a stop)."""
        return self.steps * len(self.prompts) - sum(self.kept)


@dataclass
class _Request:
    key: Hashable
    payload: Any
    future: Future


class RequestBatcher:
    """Coalesces concurrent requests with equal keys into calls of ``run(key, payloads)``.

    One daemon worker takes the oldest pending request, waits for more with the same key (at
    most ``max_batch_size``) until ``wait_s`` pass without a new request, or ``HOLD_FACTOR x
    wait_s`` in all, runs them together and resolves each request's future with its result, or
    with the exception the call raised. The window slides with each arrival, so episodes that
    reach their next turn a few milliseconds apart still share a call.
    """

    #: The longest a request is held back for company, in units of ``wait_s``.
    HOLD_FACTOR = 10

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        max_batch_size: int,
        wait_s: float,
        on_timing: Callable[[float, float], None] | None = None,
    ) -> None:
        self._run = run
        #: Called with (seconds in run, seconds held back for company) after each batch.
        self._on_timing = on_timing
        self._max = max_batch_size
        self._wait_s = wait_s
        self._pending: list[_Request] = []
        self._last_arrival = 0.0
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
            self._last_arrival = time.monotonic()
            self._cond.notify_all()
        return future

    def _next_batch(self) -> tuple[list[_Request], float] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            key = self._pending[0].key
            held_from = time.monotonic()
            latest = held_from + self.HOLD_FACTOR * self._wait_s
            while True:
                batch = [r for r in self._pending if r.key == key][: self._max]
                deadline = min(latest, max(held_from, self._last_arrival) + self._wait_s)
                remaining = deadline - time.monotonic()
                if len(batch) >= self._max or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            for request in batch:
                self._pending.remove(request)
            return batch, time.monotonic() - held_from

    def _loop(self) -> None:
        while (next_batch := self._next_batch()) is not None:
            batch, held_s = next_batch
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = self._run(live[0].key, [r.payload for r in live])
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error, whatever it is
                for request in live:
                    request.future.set_exception(exc)
            else:
                for request, result in zip(live, results):
                    request.future.set_result(result)
            if self._on_timing is not None:
                self._on_timing(time.perf_counter() - started, held_s)

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


def prompt_token_ids(segments: Sequence[Segment]) -> list[int]:
    """The concatenated token ids of ``segments``; an error if any segment lacks them."""
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
    return prompt


def overflow_result(prompt_tokens: int) -> Future:
    """A resolved future for a prompt that leaves no room to generate (``context_overflow``)."""
    future: Future = Future()
    future.set_result(
        Generation(text="", token_ids=[], logprobs=[], finish_reason="context_overflow",
                   metadata={"prompt_tokens": prompt_tokens})
    )
    return future
