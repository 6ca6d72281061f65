"""A token-level policy on transformers' continuous batching: turns join and leave a running batch.

``TransformersPolicy`` batches concurrent turns into one static ``model.generate``: the batch
lasts as long as its longest row, and an episode whose turn ended early waits for it before it
can retrieve and submit its next turn. Here every turn is its own request to transformers'
``ContinuousBatchingManager`` (paged KV cache, one scheduler thread): it enters the running batch
when submitted and leaves it at its end token or stop string, and complete KV pages of a prefix
already in the cache (the transcript a previous turn computed) are shared instead of re-prefilled.
Stop strings and the repetition stop (``Sampling.repeat_stop_tokens``) are checked on the streamed
tokens; the request is then cancelled.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.models import resolve_model_path
from langchain_ragr1.policies.base import Generation
from langchain_ragr1.policies.batching import GenerateCall
from langchain_ragr1.policies.sampling import Sampling
from langchain_ragr1.policies.token import TokenPolicy, TurnWatch, model_end_ids

__all__ = ["ContinuousTransformersPolicy"]

logger = logging.getLogger(__name__)


@dataclass
class _Live:
    future: Future
    prompt: list[int]
    stop: tuple[str, ...]
    room: int
    submitted: float
    concurrent: int
    #: what ends the turn early (stop strings, the repetition stop); None: nothing, the turn is not streamed
    watch: TurnWatch | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    first_token: float | None = None


def check_continuous_sampling(sampling: Sampling | None) -> None:
    if isinstance(sampling, Sampling) and sampling.repetition_penalty != 1:
        raise ConfigError(
            f"Sampling.repetition_penalty={sampling.repetition_penalty} is not supported by "
            "ContinuousTransformersPolicy (transformers' continuous batching drops the repetition penalty): "
            "use TransformersPolicy or vLLM (rollout_backend transformers / use_vllm), or leave it at 1.0.")


class ContinuousTransformersPolicy(TokenPolicy):
    """RAG-R1 turns from a local transformers causal LM through continuous batching.

    Token-exact like :class:`TransformersPolicy` (the prompt is the transcript's ids, the turn
    the ids the model produced, cut after the first stop string, with log-probs), with the same
    ``sampling`` object: greedy at ``Sampling(temperature=0)``; otherwise it samples with its
    ``temperature``, ``top_p``, ``top_k`` and ``min_p`` (``repetition_penalty`` other than 1 is a
    :class:`ConfigError`: the manager drops that processor), and the log-probs are those of the processed
    distribution the token was drawn from. ``max_batch_size`` turns run at once (more wait in
    the manager's queue); the paged cache holds ``max_batch_size x max_context`` tokens in pages
    of ``page_size``; a forward pass takes at most ``max_batch_tokens`` tokens (prefill chunks
    and decode rows together).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        sampling: Sampling | None = None,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.0,
        max_context: int = 4096,
        page_size: int = 16,
        max_batch_tokens: int = 512,
        seed: int | None = None,
    ) -> None:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        check_continuous_sampling(sampling)
        self._setup(
            tokenizer, sampling=sampling, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s,
            end_ids=model_end_ids(model, tokenizer),
        )
        self.model = model.eval()
        model_len = getattr(model.config, "max_position_embeddings", None) or max_context
        self.max_len = min(model_len, max_context)
        generation = self.sampling.generation_config(eos_token_id=sorted(self._end_ids))
        cb_config = ContinuousBatchingConfig(
            page_size=page_size, num_blocks=math.ceil(max_batch_size * self.max_len / page_size) + max_batch_size,
            max_batch_tokens=max_batch_tokens, max_requests_per_batch=max_batch_size, return_logprobs=True,
            auto_switch_to_flash=False, seed=seed,
        )
        self._manager = model.init_continuous_batching(generation_config=generation,
                                                       continuous_batching_config=cb_config)
        self._prefix = f"ragr1-{id(self):x}-"
        self._cache_watched = False
        self._manager.start()
        self._ids = itertools.count()
        self._live: dict[str, _Live] = {}
        self._live_lock = threading.Lock()
        self._running = True
        self._dispatcher = threading.Thread(target=self._dispatch, name="ragr1-cb-dispatch", daemon=True)
        self._dispatcher.start()

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, dtype: str = "float32", **kwargs: Any
    ) -> "ContinuousTransformersPolicy":
        """Load a local model folder, ``"base"`` or (``None``) the trained default SmolLM2; ``kwargs``
        (``sampling=Sampling(...)``, ...) go to the constructor, checked before anything loads."""
        cls.check_kwargs(kwargs)
        check_continuous_sampling(kwargs.get("sampling"))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # sdpa: the continuous batching manager runs it on its paged cache as it is
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
        return cls(model, tokenizer, **kwargs)

    # --- requests ---------------------------------------------------------------------

    def _enqueue(self, prompt: list[int], stop: tuple[str, ...], room: int) -> Future:
        """One request to the manager (TokenPolicy._submit has built the prompt and its room)."""
        if not self._running:
            raise RuntimeError("This policy is closed.")
        self._watch_cache()
        future: Future = Future()
        request_id = f"{self._prefix}{next(self._ids)}"
        watch = self._watch(stop)
        with self._live_lock:
            self._live[request_id] = _Live(future, prompt, stop, room, time.perf_counter(), len(self._live) + 1,
                                           watch)
        self._manager.add_request(prompt, request_id=request_id, max_new_tokens=room, streaming=watch is not None,
                                  record_timestamps=False)
        return future

    def _dispatch(self) -> None:
        from transformers.generation.continuous_batching.requests import RequestStatus

        while self._running:
            output = self._manager.get_result(timeout=0.1)
            if output is None:
                if self._manager.background_thread_status.fatal_error is not None:
                    self._fail_all(RuntimeError(f"continuous batching failed: "
                                                f"{self._manager.background_thread_status.fatal_error}"))
                continue
            with self._live_lock:
                live = self._live.get(output.request_id)
            if live is None:  # a cancelled request's late output
                continue
            if live.first_token is None and output.generated_tokens:
                live.first_token = time.perf_counter()
            live.tokens, live.logprobs = list(output.generated_tokens), list(output.logprobs or [])
            if output.status == RequestStatus.FAILED or output.error:
                self._resolve(output.request_id, error=RuntimeError(f"generation failed: {output.error}"))
            elif output.status == RequestStatus.FINISHED:
                self._resolve(output.request_id)
            elif live.watch is not None and live.watch(live.tokens):  # a stop string, or the turn loops
                self._manager.cancel_request(output.request_id)
                self._resolve(output.request_id)

    def _watch_cache(self) -> None:
        """Count the prompt tokens the paged cache shares (``stats.reused_prompt_tokens``): wrap its
        prefix search once the manager's thread has built it (the first request never matches)."""
        if self._cache_watched:
            return
        cache = getattr(getattr(self._manager, "batch_processor", None), "cache", None)
        search = getattr(cache, "search_prefix_match", None)
        if cache is None or search is None:
            return

        def counted(request_id: str, prompt_ids: list[int]) -> int:
            matched = search(request_id, prompt_ids)
            if matched:
                with self._stats_lock:
                    self._stats.reused_prompt_tokens += matched
            return matched

        cache.search_prefix_match = counted
        self._cache_watched = True

    def _resolve(self, request_id: str, error: BaseException | None = None) -> None:
        with self._live_lock:
            live = self._live.pop(request_id, None)
        if live is None or live.future.done():
            return
        if error is not None:
            live.future.set_exception(error)
            return
        reason = "length" if len(live.tokens) >= live.room else "eos"
        result = self._finish(live.tokens, live.logprobs, reason, live.stop, len(live.prompt), live.concurrent)
        ended = time.perf_counter()
        self._record([result])
        self._record_call(GenerateCall(
            prompts=[live.prompt], steps=len(live.tokens), kept=[len(result.token_ids or [])],
            seconds=ended - live.submitted, prefill_s=(live.first_token or ended) - live.submitted))
        live.future.set_result(result)

    def _fail_all(self, error: BaseException) -> None:
        with self._live_lock:
            ids = list(self._live)
        for request_id in ids:
            self._resolve(request_id, error=error)

    def close(self) -> None:
        """Stop the manager; turns still running fail, later calls raise."""
        if not self._running:
            return
        self._running = False
        self._dispatcher.join(timeout=5)
        self._fail_all(RuntimeError("The policy was closed."))
        try:
            self._manager.stop(block=True, timeout=10)
            self._manager.destroy()
        except Exception as exc:  # noqa: BLE001 - closing must not raise on a manager that already died
            logger.warning("continuous batching manager did not stop cleanly: %s", exc)
        super().close()

    # TokenPolicy's static-batch hooks are not used: every turn is its own request.
    def _request(self, prompt: list[int], stop: tuple[str, ...], room: int) -> tuple:
        raise NotImplementedError

    def _run_batch(self, key: Any, payloads: list[Any]) -> list[Generation]:
        raise NotImplementedError
