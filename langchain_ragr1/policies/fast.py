"""A token-level policy on :class:`~langchain_ragr1.policies.decoder.LlamaDecoder`: transformers'
weights, a lean decoding loop (bf16 or int8 weights, a preallocated KV cache, finished rows
dropped), the same interface and batching as :class:`TransformersPolicy`.

Models the engine cannot run (not Llama-family, not on the CPU) fall back to
:class:`TransformersPolicy`'s ``model.generate`` with one logged notice.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

import torch

from langchain_ragr1.models import resolve_model_path
from langchain_ragr1.policies.base import Generation
from langchain_ragr1.policies.batching import GenerateCall
from langchain_ragr1.policies.decoder import LlamaDecoder, PrefixCache, Sampler, supports
from langchain_ragr1.policies.sampling import Sampling, check_policy_kwargs
from langchain_ragr1.policies.transformers import TransformersPolicy
from langchain_ragr1.policies.weights import (
    WEIGHT_KINDS,
    check_count,
    check_prompt_lookup,
    check_weights,
    default_prompt_lookup,
)
from langchain_ragr1.timings import mark

__all__ = ["FastPolicy", "WEIGHT_KINDS"]

logger = logging.getLogger(__name__)
#: The reasons a folder went through transformers, each logged once per process.
_TRANSFORMERS_NOTED: set[str] = set()


def _engine_samples(sampling: Sampling) -> bool:
    """Whether the lean engine's own sampling (greedy, or temperature then top-p) is all ``sampling`` asks:
    a repetition penalty (greedy too), top-k or min-p go through ``model.generate``, which applies them."""
    if sampling.repetition_penalty != 1:
        return False
    return sampling.greedy or (not sampling.top_k and not sampling.min_p)


class FastPolicy(TransformersPolicy):
    """RAG-R1 turns from a local Llama-family model through :class:`LlamaDecoder`.

    Token-exact like :class:`TransformersPolicy` (the prompt is the transcript's ids; the turn is
    the ids the model produced, end tokens stripped, cut after the first stop string; log-probs
    are ``log_softmax`` of the raw logits at those ids) and batched the same way. ``weights``:
    ``"bfloat16"`` (default: half the bytes per step of fp32), ``"float32"`` (the model's own
    numbers: greedy tokens equal ``model.generate``'s), ``"int8"`` (weight-only, per channel) or ``"int4"``
    (weight-only, groups of 32: the fastest at batch 1, the largest change to the log-probs).

    ``prompt_lookup_num_tokens`` (K): a call with one prompt (``ragr1 ask``, an eval or rollout at batch 1)
    decodes with prompt-lookup speculative decoding: a draft of up to K tokens copied from the turn's own
    context (what followed the most recent earlier occurrence of its last 3, 2 or 1 tokens: names from the
    question, passages of ``<information>``) is verified in one forward pass, which costs about one step
    because a batch-1 step is bound by reading the weights. Greedy keeps the argmax at each position
    (with bf16 weights a pass over several positions rounds differently from one over a single position, so
    near-ties can pick another token: 5/8 and 7/8 of the benchmark's 64-token turns were identical); sampling
    keeps the exact distribution (a draft token d is kept with probability p(d), else a token is drawn from p
    without d); the log-probs, end ids, stop strings and token budget are as without it. 0 turns it off;
    ``None`` (default): 8 with bfloat16 weights, 0 with the others (a float32 pass over several positions
    costs about 2x a one-position pass here). Calls with several prompts decode one token a step.

    The keys and values of the last 2 x ``max_batch_size`` sequences decoded are kept (a :class:`PrefixCache`):
    an episode's next turn starts with its previous prompt and turn, so only the new part (the ``<information>``
    block) is prefilled, and a first turn reuses the instructions every RAG-R1 prompt starts with. It holds
    23 KB per token for SmolLM2-135M in bf16 (16 sequences of 2,000 tokens: 0.7 GB at most), ``prefixes``.
    ``prefix_cache_sequences`` sets how many sequences it keeps (``None``: 2 x ``max_batch_size``; 0: none, every
    prompt is prefilled whole).
    """

    def __init__(self, model: Any, tokenizer: Any, *, weights: str = "bfloat16", seed: int | None = None,
                 decoder: LlamaDecoder | None = None, prompt_lookup_num_tokens: int | None = None,
                 prefix_cache_sequences: int | None = None, **settings: Any) -> None:
        """``settings``: :class:`TransformersPolicy`'s (``sampling``, ``max_batch_size``, ``batch_wait_s``);
        ``seed`` seeds the sampling of this policy's own generator. ``decoder``: the engine, already built over
        ``model``'s weights with ``weights`` (:meth:`from_pretrained`'s direct load, where ``model`` is a
        :class:`~langchain_ragr1.policies.direct.DeferredModel`); by default built here from ``model``.
        ``prompt_lookup_num_tokens``, ``prefix_cache_sequences``: see the class docstring."""
        super().__init__(model, tokenizer, **settings)
        check_weights(weights)
        check_prompt_lookup(prompt_lookup_num_tokens)
        self.weights = weights
        self.prompt_lookup_num_tokens = (default_prompt_lookup(weights) if prompt_lookup_num_tokens is None
                                         else prompt_lookup_num_tokens)
        self.decoder: LlamaDecoder | None = decoder
        if decoder is not None:
            if decoder.weights != weights:
                raise ValueError(f"the decoder holds {decoder.weights} weights, not {weights}")
        elif (reason := supports(model)) is None:
            self.decoder = LlamaDecoder(model, weights=weights)
        else:
            logger.warning("FastPolicy: %s; generating with model.generate instead.", reason)
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        check_count("prefix_cache_sequences", prefix_cache_sequences)
        self._prefix_capacity = (2 * settings.get("max_batch_size", 8) if prefix_cache_sequences is None
                                 else prefix_cache_sequences)
        #: the engine the prefix cache's keys came from (another one, e.g. with new weights, starts a new cache)
        self._prefixes_of: LlamaDecoder | None = None
        self.prefixes = PrefixCache(self._prefix_capacity)
        self._generate_noted = False

    @classmethod
    def check_kwargs(cls, kwargs: dict[str, Any]) -> None:
        """Check ``cls(model, ..., **kwargs)``'s settings: this class's and :class:`TransformersPolicy`'s."""
        known = set(inspect.signature(TransformersPolicy.__init__).parameters) - {"self", "model", "tokenizer"}
        check_policy_kwargs(cls.__name__, kwargs,
                            known | {"weights", "seed", "prompt_lookup_num_tokens", "prefix_cache_sequences"})
        if "weights" in kwargs:
            check_weights(kwargs["weights"])
        if "prompt_lookup_num_tokens" in kwargs:
            check_prompt_lookup(kwargs["prompt_lookup_num_tokens"])
        if "prefix_cache_sequences" in kwargs:
            check_count("prefix_cache_sequences", kwargs["prefix_cache_sequences"])

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, dtype: str | None = None, **kwargs: Any
    ) -> "FastPolicy":
        """Load a local model folder, ``"base"`` or (``None``) the trained default SmolLM2; ``kwargs``
        (``sampling``, ``weights``, ``max_batch_size``, ``batch_wait_s``) go to the constructor,
        checked before anything loads. ``dtype`` is the transformers model's; by default bfloat16
        for bf16 weights (half the bytes to read and convert at start-up), float32 otherwise.

        A Llama folder is loaded without transformers' modeling code (:mod:`langchain_ragr1.policies.direct`:
        the same weights, bit for bit; the transformers model is loaded only if ``model.generate`` is needed);
        any other goes through ``AutoModelForCausalLM``, the reason logged once."""
        cls.check_kwargs(kwargs)
        if dtype is None:
            dtype = "bfloat16" if kwargs.get("weights", "bfloat16") == "bfloat16" else "float32"
        from langchain_ragr1.policies.direct import direct_unsupported, load_direct

        path = resolve_model_path(path)
        reason = direct_unsupported(path, dtype)
        if reason is None:
            tokenizer, decoder, deferred = load_direct(path, weights=kwargs.get("weights", "bfloat16"), dtype=dtype)
            return cls(deferred, tokenizer, decoder=decoder, **kwargs)
        if reason not in _TRANSFORMERS_NOTED:
            _TRANSFORMERS_NOTED.add(reason)
            logger.info("FastPolicy: loading %s through transformers' AutoModelForCausalLM: %s.", path, reason)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    def _pick(self, sampling: Sampling) -> Sampler | None:
        if sampling.greedy:
            return None
        # transformers' order: temperature, then top-p
        return Sampler(float(sampling.temperature), float(sampling.top_p), self._generator)

    def _run_batch(self, key: tuple, prompts: list[list[int]]) -> list[Generation]:
        stop, max_new_tokens, sampling = key
        if self.decoder is None or not _engine_samples(sampling):
            if self.decoder is not None and not self._generate_noted:
                logger.warning("FastPolicy: top_k, min_p or repetition_penalty is set (GRPOConfig's or Sampling's), "
                               "which the lean engine does not apply: generating with model.generate instead.")
                self._generate_noted = True
            return super()._run_batch(key, prompts)
        first: list[float] = []
        # one watch per row: its stop strings and its repetition stop, so a looping turn ends at once
        watches = [self._watch(stop) for _ in prompts]

        def on_first_token() -> None:
            first.append(time.perf_counter())
            mark("first token")

        def should_stop(row: int, tokens: list[int]) -> bool:
            watch = watches[row]
            return watch is not None and watch(tokens)

        if self._prefixes_of is not self.decoder:
            self.prefixes, self._prefixes_of = PrefixCache(self._prefix_capacity), self.decoder
        started = time.perf_counter()
        rows = self.decoder.generate(
            prompts, max_new_tokens, end_ids=sorted(self._end_ids), pick=self._pick(sampling),
            should_stop=should_stop, on_first_token=on_first_token,
            prompt_lookup_num_tokens=self.prompt_lookup_num_tokens,
            prefixes=self.prefixes if self._prefix_capacity else None,
        )
        results = [
            self._finish(row.token_ids, row.logprobs, "length", stop, len(prompt), len(prompts))
            for row, prompt in zip(rows, prompts)
        ]
        self._record(results)
        self._record_call(GenerateCall(
            prompts=[list(p) for p in prompts], steps=max(len(r.token_ids) for r in rows),
            kept=[len(g.token_ids or []) for g in results], seconds=time.perf_counter() - started,
            prefill_s=(first[0] if first else time.perf_counter()) - started,
            forwards=max(row.forwards for row in rows),
        ))
        return results
