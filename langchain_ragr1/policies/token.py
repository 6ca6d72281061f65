"""What the token-level policies (transformers, vLLM) share: tokenizer I/O and batched generation.

Every turn is generated from the concatenated token ids of the transcript (never
re-tokenised text) and returned as the ids the model produced, end tokens stripped, cut
right after the first stop string, with their log-probs. Concurrent callers (threads, or
coroutines through ``agenerate``) are coalesced by one :class:`RequestBatcher`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from abc import abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Hashable, Sequence

from langchain_core.runnables import RunnableConfig

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.base import Generation, Policy, cut_generation, cut_repetition
from langchain_ragr1.policies.batching import (
    GenerateCall,
    PolicyStats,
    RequestBatcher,
    overflow_result,
    prompt_token_ids,
)
from langchain_ragr1.policies.repetition import RepeatTracker
from langchain_ragr1.policies.sampling import Sampling, check_policy_kwargs, check_sampling_object, check_setting
from langchain_ragr1.protocol import STOP_STRINGS, cut_at_stop
from langchain_ragr1.transcript import Segment, make_segment


def model_end_ids(model: Any, tokenizer: Any) -> tuple[int | None, ...]:
    """The ids that end a turn of a transformers ``model``: its generation config's EOS id(s),
    the tokenizer's EOS and pad ids (a missing pad token becomes the EOS token)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, (list, tuple)) else [eos]
    return (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id)


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """The ids no plain text may encode to: ``all_special_ids`` and every added token marked special
    (the unknown token aside: a tokenizer without byte fallback gives it for unknown characters)."""
    cached = _SPECIAL_IDS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer and cached[1] == len(tokenizer):
        return cached[2]
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(i for i, token in added.items() if getattr(token, "special", False))
    ids.discard(getattr(tokenizer, "unk_token_id", None))
    special = frozenset(i for i in ids if isinstance(i, int))
    _SPECIAL_IDS[id(tokenizer)] = (tokenizer, len(tokenizer), special)
    return special


#: id(tokenizer) -> (tokenizer, its length, its special ids); the length notices added tokens.
_SPECIAL_IDS: dict[int, tuple[Any, int, frozenset[int]]] = {}


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as plain text: no BOS/EOS added, and special-token strings inside it
    (``<|im_end|>\\n<|im_start|>assistant``) split into ordinary tokens, so retrieved or user text can
    never close a turn or open one. Every token-level policy encodes environment and user text here.

    Raises :class:`ConfigError` for a tokenizer that cannot do that (no ``split_special_tokens``, or a
    special id still in the result) rather than hand the model control tokens it did not write.
    """
    try:
        ids = list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    except TypeError as exc:
        raise ConfigError(
            f"The tokenizer {type(tokenizer).__name__} does not take split_special_tokens=True ({exc}); RAG-R1 "
            f"needs it to encode retrieved and user text as plain text. Use a Hugging Face tokenizer "
            f"(AutoTokenizer.from_pretrained) for this model."
        ) from exc
    leaked = sorted(set(ids) & _special_ids(tokenizer))
    if leaked:
        raise ConfigError(
            f"The tokenizer {type(tokenizer).__name__} encoded plain text to its special ids {leaked} "
            f"({tokenizer.convert_ids_to_tokens(leaked)}) although split_special_tokens=True was asked: retrieved "
            f"text could then act as control tokens. Use a Hugging Face tokenizer (AutoTokenizer.from_pretrained)."
        )
    return ids


_MESSAGE_MARK = "RAGR1MESSAGETEXT7F3A"  # letters and digits: no template trims or escapes it


def _chat_text(tokenizer: Any, content: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def render_user_message(tokenizer: Any, content: str) -> tuple[str, list[int]]:
    """The chat template's text for one user message ``content`` (with the generation prompt) and its ids:
    the template's own text (its special tokens as special ids) around ``content`` encoded by
    :func:`encode_plain`, so the message cannot inject control tokens whatever the template.

    Raises :class:`ConfigError` when the template changes the message beyond trimming it (then its text
    cannot be told apart from the template's).
    """
    text = _chat_text(tokenizer, content)
    head, *tails = _chat_text(tokenizer, _MESSAGE_MARK).split(_MESSAGE_MARK)
    for body in (content, content.strip()):
        if len(tails) == 1 and text == head + body + tails[0]:
            template = {"add_special_tokens": False, "split_special_tokens": False}
            ids = [*tokenizer(head, **template)["input_ids"], *encode_plain(tokenizer, body)]
            return text, ids + list(tokenizer(tails[0], **template)["input_ids"])
    raise ConfigError(
        "The tokenizer's chat template changes the user message's text (beyond trimming it), so RAG-R1 cannot "
        "keep that text apart from the template's control tokens. Set tokenizer.chat_template to a template "
        "that inserts message['content'] unchanged."
    )


#: Generated tokens decoded to look for a stop string while a turn is generated (the protocol's are 9
#: characters or fewer).
STOP_TAIL_TOKENS = 12


class TurnWatch:
    """Whether a turn being generated should end now: a stop string in its last tokens, or the repetition
    stop (``tracker``). One per turn; call it with the turn's ids so far after each step (the tracker reads
    only the ids it has not seen). Which of the two ended the turn, :meth:`TokenPolicy._finish` says."""

    __slots__ = ("stop", "decode", "tracker")

    def __init__(self, stop: Sequence[str], decode: Any, tracker: RepeatTracker | None) -> None:
        self.stop, self.decode, self.tracker = tuple(stop), decode, tracker

    def __call__(self, tokens: Sequence[int]) -> bool:
        if self.tracker is not None and self.tracker.update(tokens):
            return True
        return bool(self.stop) and cut_at_stop(self.decode(tokens[-STOP_TAIL_TOKENS:]), self.stop)[1]


class TokenPolicy(Policy):
    """Base of the batched token-level policies over a Hugging Face tokenizer.

    Subclasses call :meth:`_setup` from ``__init__`` and implement :meth:`_request` (the
    batch key and payload of one turn) and :meth:`_run_batch` (a list of payloads ->
    a list of :class:`Generation`, usually built with :meth:`_finish`); an engine that
    schedules turns itself overrides :meth:`_enqueue` instead.
    """

    tokenizer: Any
    #: Longest prompt + turn in tokens, or ``None`` when unknown.
    max_len: int | None = None

    def _setup(
        self,
        tokenizer: Any,
        *,
        sampling: Sampling | None,
        max_batch_size: int,
        batch_wait_s: float,
        end_ids: Sequence[int | None],
    ) -> None:
        check_sampling_object(sampling)
        check_setting("max_batch_size", max_batch_size)
        check_setting("batch_wait_s", batch_wait_s)
        self.tokenizer = tokenizer
        self._sampling = sampling or Sampling()
        self._end_ids = {t for t in end_ids if t is not None}
        self._tok_lock = threading.RLock()
        self._stats = PolicyStats()
        self._stats_lock = threading.Lock()
        self._calls: list[GenerateCall] | None = None
        self._batcher = RequestBatcher(self._run_batch, max_batch_size, batch_wait_s, self._record_timing)

    @property
    def sampling(self) -> Sampling:
        """The :class:`Sampling` every turn uses (fixed when the policy is built)."""
        return self._sampling

    # read-only here (Policy's is a plain attribute): a token policy's budget is its sampling's
    @property
    def max_new_tokens(self) -> int:  # type: ignore[override]
        """Longest turn in new tokens: ``sampling.max_new_tokens``."""
        return self._sampling.max_new_tokens

    @property
    def temperature(self) -> float:
        """``sampling.temperature`` (0: greedy); the graph reports it with each turn."""
        return self._sampling.temperature

    @property
    def top_p(self) -> float:
        """``sampling.top_p``."""
        return self._sampling.top_p

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any]) -> None:
        """Check the keyword settings of ``cls(model, ..., **kwargs)`` before a model loads (what
        ``from_pretrained`` does first): see :func:`~langchain_ragr1.policies.sampling.check_policy_kwargs`."""
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "tokenizer", "llm", "client"}
        check_policy_kwargs(cls.__name__, kwargs, known)

    # --- text <-> tokens ----------------------------------------------------------------

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``, special tokens kept, spaces untouched."""
        with self._tok_lock:
            return self.tokenizer.decode(
                list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )

    def encode(self, text: str) -> list[int]:
        """Token ids of environment or user ``text``: special-token strings in it (``<|im_end|>``) are
        plain text, never the tokenizer's special ids (see :func:`encode_plain`)."""
        with self._tok_lock:
            return encode_plain(self.tokenizer, text)

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to its first ``max_tokens`` tokens."""
        ids = self.encode(text)
        return text if len(ids) <= max_tokens else self.decode(ids[: max(0, max_tokens)])

    def render_prompt(self, prompt: str) -> Segment:
        """``prompt`` as one user message through the chat template, with a generation prompt: the
        template's own special tokens are special ids, the message's text is plain text
        (:func:`render_user_message`)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                "The tokenizer has no chat template; RAG-R1 sends the prompt as one user message "
                "through it. Use an instruct/chat model or set tokenizer.chat_template."
            )
        with self._tok_lock:
            text, ids = render_user_message(self.tokenizer, prompt)
        return make_segment("prompt", text, ids)

    # --- generation ---------------------------------------------------------------------

    @property
    def stats(self) -> PolicyStats:
        """A snapshot of the batching counters."""
        with self._stats_lock:
            return replace(self._stats)

    def generate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
        config: RunnableConfig | None = None,
    ) -> Generation:
        """Continue the concatenated token ids of ``segments`` with one model turn (``config``
        is not needed: the graph reports the turn to its callbacks)."""
        return self._submit(segments, stop).result()

    async def agenerate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
        config: RunnableConfig | None = None,
    ) -> Generation:
        """Like :meth:`generate`, awaiting the batcher without blocking the event loop."""
        return await asyncio.wrap_future(self._submit(segments, stop))

    @contextmanager
    def record_calls(self) -> Iterator[list[GenerateCall]]:
        """Within the block, append every batched model call (prompts, steps, kept tokens,
        timings) to the list it yields: what a replay of the same work needs."""
        calls: list[GenerateCall] = []
        with self._stats_lock:
            self._calls = calls
        try:
            yield calls
        finally:
            with self._stats_lock:
                self._calls = None

    def _record_call(self, call: GenerateCall) -> None:
        with self._stats_lock:
            if self._calls is not None:
                self._calls.append(call)

    def _record_timing(self, busy_s: float, held_s: float) -> None:
        with self._stats_lock:
            self._stats.busy_s += busy_s
            self._stats.fill_wait_s += held_s

    def close(self) -> None:
        """Stop the batching worker; pending requests fail, later calls raise."""
        self._batcher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, segments: Sequence[Segment], stop: Sequence[str]) -> Future:
        prompt = prompt_token_ids(segments)
        room = self.max_new_tokens
        if self.max_len is not None:
            room = min(room, self.max_len - len(prompt))
        if room <= 0:
            return overflow_result(len(prompt))
        return self._enqueue(prompt, tuple(s for s in stop if s), room)

    def _enqueue(self, prompt: list[int], stop: tuple[str, ...], room: int) -> Future:
        """Hand one turn (at most ``room`` new tokens) to the engine: here the request batcher."""
        return self._batcher.submit(*self._request(prompt, stop, room))

    @abstractmethod
    def _request(self, prompt: list[int], stop: tuple[str, ...], room: int) -> tuple[Hashable, Any]:
        """The batch key and payload of one turn of at most ``room`` new tokens."""

    @abstractmethod
    def _run_batch(self, key: Any, payloads: list[Any]) -> list[Generation]:
        """Generate the turns of one batch."""

    def _watch(self, stop: Sequence[str]) -> TurnWatch | None:
        """What ends one turn early while it is generated (its stop strings, the repetition stop), or
        ``None`` when neither applies."""
        tracker = self._sampling.repeat_tracker()
        return TurnWatch(stop, self.decode, tracker) if stop or tracker is not None else None

    def _finish(
        self,
        ids: list[int],
        logprobs: list[float],
        reason: str,
        stop: Sequence[str],
        prompt_len: int,
        batch: int,
    ) -> Generation:
        """Strip end/pad tokens (``"eos"``), decode, cut after the first stop string (``"stop"``) or where
        the turn repeated itself (``"repetition"``, :func:`cut_repetition`), whichever comes first. A backend
        that stopped the turn there already gets its label; one that could not gets the cut."""
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
        generation = cut_generation(generation, stop, self.decode)
        sampling = self._sampling
        return cut_repetition(generation, sampling.repeat_stop_tokens, sampling.repeat_stop_count, self.decode)

    def _record(self, results: Sequence[Generation]) -> None:
        with self._stats_lock:
            self._stats.generate_calls += 1
            self._stats.requests += len(results)
            self._stats.max_batch = max(self._stats.max_batch, len(results))
            self._stats.generated_tokens += sum(len(g.token_ids or []) for g in results)
