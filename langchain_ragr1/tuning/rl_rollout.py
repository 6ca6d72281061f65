"""GRPO rollouts from the RAG-R1 graph: TRL's ``rollout_func`` over :class:`RagR1Agent`.

TRL 1.16 calls ``rollout(prompts, trainer)`` with every prompt (here: a question) already
repeated ``num_generations`` times. :class:`GraphRollout` runs all those episodes
concurrently through one compiled graph (a token-level policy batches their turns into
shared generate calls) and returns, per episode, the prompt segment's token ids, the rest
of the transcript's ids (policy turns and retrieved ``<information>`` exactly as
generated/tokenised), the sampling log-probs, and ``env_mask`` (0 on every retrieved
token, so they get no gradient and no KL). Episodes longer than ``max_completion_length``
are cut (ids, mask and log-probs together) and counted. A masked EOS closes every episode
that was not cut, so TRL's ``completions/clipped_ratio`` is the truncation ratio.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig

from langchain_ragr1.config import RagR1Config
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.extras import require
from langchain_ragr1.policies.base import Generation, Policy
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS, Sampling
from langchain_ragr1.protocol import STOP_STRINGS
from langchain_ragr1.transcript import Segment, repetition_stops, token_ids_and_mask


@dataclass
class RolloutSettings:
    """How episodes are run: the agent's whole :class:`RagR1Config` (``agent``: mode, k,
    max_turns, doc_max_tokens, ...), the tokens of one model turn and the batching. Sampling
    (:func:`rollout_sampling`) and ``max_completion_length`` are the trainer's ``GRPOConfig``
    (``trainer.args``), read at each call; ``max_completion_length`` here is only for calls
    without a trainer (a fixed policy)."""

    agent: RagR1Config = field(default_factory=RagR1Config)
    max_new_tokens: int = 500
    #: the repetition stop of each turn (:class:`Sampling`'s): a turn that loops ends there, kept exactly as
    #: sampled, and counts as invalid; ``repeat_stop_tokens=0`` turns it off
    repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS
    repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT
    max_batch_size: int = 64
    #: without vLLM: "fast" (the lean engine over the training model's weights, static batches, finished
    #: rows dropped), "transformers" (``model.generate``, static batches) or "continuous" (continuous batching)
    backend: str = "fast"
    #: the "fast" engine's weights: "float32" (default: the training pass's own numbers, so the rollout's
    #: log-probs are the policy's being trained), "bfloat16", "int8" or "int4" (faster, log-probs off by
    #: rounding: the trainer corrects with TRL's importance sampling, see :attr:`GraphRollout.rounds_weights`)
    weights: str = "float32"
    max_completion_length: int | None = None


def episode_sample(result: dict, max_completion_length: int | None, eos_id: int | None) -> dict[str, Any]:
    """One agent result as TRL's per-completion fields plus the episode keys for the rewards
    (cut at ``max_completion_length`` tokens; None: not cut)."""
    segments = result["segments"]
    if not segments or segments[0]["role"] != "prompt":
        raise ValueError("An episode transcript must start with its prompt segment.")
    prompt_ids = list(segments[0].get("token_ids") or [])
    ids, mask = token_ids_and_mask(segments[1:])
    logprobs: list[float] = []
    for segment in segments[1:]:
        lps = segment.get("logprobs")
        n = len(segment.get("token_ids") or [])
        logprobs.extend(lps if segment["role"] == "policy" and lps is not None and len(lps) == n else [0.0] * n)
    limit = len(ids) if max_completion_length is None else max_completion_length
    truncated = len(ids) > limit or result.get("stop_reason") == "context_overflow"
    if len(ids) > limit:
        ids, mask, logprobs = ids[:limit], mask[:limit], logprobs[:limit]
    elif not truncated and eos_id is not None and (max_completion_length is None or len(ids) < limit):
        ids, mask, logprobs = ids + [eos_id], mask + [0], logprobs + [0.0]  # a closing EOS, not trained on
    format_ok = result.get("answer") is not None and not result.get("invalid_turns") and not truncated
    return {
        "prompt_ids": prompt_ids,
        "completion_ids": ids,
        "env_mask": mask,
        "logprobs": logprobs,
        "answer": result.get("answer"),
        "turns": int(result.get("turns") or 0),
        "invalid_turns": int(result.get("invalid_turns") or 0),
        "repetition_stops": repetition_stops(segments),
        "stop_reason": result.get("stop_reason"),
        "format_ok": format_ok,
        "truncated": truncated,
        "response_tokens": sum(mask),
    }


class _TrainerPolicy(Policy):
    """The rollout's policy slot: the graph is built once over it, and each call puts in the
    policy over the trainer's current weights (``bind``)."""

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens
        self.inner: Policy | None = None

    @property
    def temperature(self) -> float | None:  # what the graph reports with each turn's LLM run
        return getattr(self.inner, "temperature", None)

    def _policy(self) -> Policy:
        if self.inner is None:
            raise RuntimeError("the rollout's policy is used outside a rollout call")
        return self.inner

    def render_prompt(self, prompt: str) -> Segment:
        return self._policy().render_prompt(prompt)

    def encode(self, text: str) -> list[int] | None:
        return self._policy().encode(text)

    def decode(self, token_ids: Sequence[int]) -> str | None:
        return self._policy().decode(token_ids)

    def truncate(self, text: str, max_tokens: int) -> str | None:
        return self._policy().truncate(text, max_tokens)

    def generate(self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
                 config: RunnableConfig | None = None) -> Generation:
        return self._policy().generate(segments, stop=stop, config=config)

    async def agenerate(self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
                        config: RunnableConfig | None = None) -> Generation:
        return await self._policy().agenerate(segments, stop=stop, config=config)

    @contextlib.contextmanager
    def bind(self, policy: Policy) -> Iterator[Policy]:
        self.inner = policy
        try:
            yield policy
        finally:
            self.inner = None


class GraphRollout:
    """TRL ``rollout_func``: ``num_generations`` episodes per question through the RAG-R1 graph.

    ``policy`` fixes the policy (tests, custom backends); by default each call wraps the
    trainer's current model: a :class:`TransformersPolicy` on the unwrapped model, or
    vLLM when the trainer has ``use_vllm`` (colocate: the trainer's engine; server: its
    client). ``totals`` accumulates ``episodes``, ``truncated`` and ``steps``; ``last``
    holds the metrics of the latest call.
    """

    def __init__(self, retriever: BaseRetriever, settings: RolloutSettings | None = None, *,
                 policy: Policy | None = None) -> None:
        self.retriever = retriever
        self.settings = settings or RolloutSettings()
        self.policy = policy
        self.totals = {"episodes": 0, "truncated": 0, "steps": 0}
        self.last: dict[str, float] = {}
        from langchain_ragr1.agent import RagR1Agent

        # one agent (one compiled graph) per trainer; each call binds the policy of that step's weights
        self._slot = _TrainerPolicy(self.settings.max_new_tokens)
        self.agent = RagR1Agent(self._slot, retriever, self.settings.agent)

    @property
    def rounds_weights(self) -> bool:
        """Whether the trainer's rollouts sample from rounded weights (the fast engine with bfloat16, int8 or
        int4 ``weights``), so their log-probs are not the training pass's: the trainer then applies TRL's
        importance-sampling correction (``timed_trainer_class``). A fixed :attr:`policy` is not judged."""
        s = self.settings
        return self.policy is None and s.backend == "fast" and s.weights != "float32"

    def __call__(self, prompts: Sequence[Any], trainer: Any = None) -> dict[str, list]:
        questions: list[Any] = [_question_text(p) for p in prompts]
        s = self.settings
        with self._policy(trainer) as current, self._slot.bind(current) as policy:
            results = self.agent.batch(questions, config={"max_concurrency": len(questions)})
        tokenizer = getattr(policy, "tokenizer", None)
        eos_id = getattr(tokenizer, "eos_token_id", None)
        limit = trainer.args.max_completion_length if trainer is not None else s.max_completion_length
        samples = [episode_sample(r, limit, eos_id) for r in results]
        self._record(samples, trainer)
        return {key: [sample[key] for sample in samples] for key in samples[0]}

    def _record(self, samples: list[dict], trainer: Any) -> None:
        n = len(samples)
        truncated = sum(s["truncated"] for s in samples)
        self.totals["episodes"] += n
        self.totals["truncated"] += truncated
        self.totals["steps"] += 1
        self.last = {
            "ragr1/turns": sum(s["turns"] for s in samples) / n,
            "ragr1/truncated": truncated / n,
            "ragr1/truncated_total": float(self.totals["truncated"]),
            "ragr1/answered": sum(s["answer"] is not None for s in samples) / n,
            "ragr1/repetition_stops": sum(s["repetition_stops"] for s in samples) / n,
            "ragr1/response_tokens": sum(s["response_tokens"] for s in samples) / n,
            "ragr1/env_tokens": sum(len(s["env_mask"]) - s["response_tokens"] for s in samples) / n,
        }
        log_metric = getattr(trainer, "_log_metric", None)  # TRL's per-step metric sink (flushed after rewards)
        if callable(log_metric):
            for name, value in self.last.items():
                log_metric(name, value)

    @contextlib.contextmanager
    def _policy(self, trainer: Any) -> Iterator[Policy]:
        s = self.settings
        if self.policy is not None:
            yield self.policy
            return
        if trainer is None:
            raise ConfigError("GraphRollout needs a policy, or the trainer that calls it.")
        sampling = rollout_sampling(trainer.args, s.max_new_tokens, repeat_stop_tokens=s.repeat_stop_tokens,
                                    repeat_stop_count=s.repeat_stop_count)
        policy: Policy
        if getattr(trainer, "use_vllm", False):
            policy = _vllm_policy(trainer, sampling)
            try:
                yield policy
            finally:
                policy.close()
            return
        import torch

        unwrap_model_for_generation = require("trl.models.utils", "training").unwrap_model_for_generation

        from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy
        from langchain_ragr1.policies.fast import FastPolicy
        from langchain_ragr1.policies.transformers import TransformersPolicy

        with unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
        ) as model, torch.no_grad():
            was_training = model.training
            if s.backend == "continuous":
                # its manager seeds torch's global generator: with the run's seed and step, reproducibly
                policy = ContinuousTransformersPolicy(
                    model, trainer.processing_class, max_batch_size=s.max_batch_size,
                    max_context=trainer.args.max_completion_length + 1024,
                    seed=trainer.args.seed + trainer.state.global_step, sampling=sampling)
            elif s.backend == "fast":
                policy = FastPolicy(model, trainer.processing_class, max_batch_size=s.max_batch_size,
                                    sampling=sampling, weights=s.weights,
                                    seed=trainer.args.seed + trainer.state.global_step)
            else:
                policy = TransformersPolicy(model, trainer.processing_class, max_batch_size=s.max_batch_size,
                                            sampling=sampling)
            try:
                yield policy
            finally:
                policy.close()
                model.train(was_training)


def rollout_sampling(args: Any, max_new_tokens: int, *, repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS,
                     repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT) -> Sampling:
    """The rollouts' :class:`Sampling`: the sampling fields of the run's ``trl.GRPOConfig`` (``args``),
    as TRL's own generation reads them (``min_p`` None is off), with the turn budget and the repetition stop."""
    return Sampling(max_new_tokens=max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, min_p=args.min_p or 0.0, repetition_penalty=args.repetition_penalty,
                    repeat_stop_tokens=repeat_stop_tokens, repeat_stop_count=repeat_stop_count)


def _vllm_policy(trainer: Any, sampling: Sampling) -> Policy:
    generation = trainer.vllm_generation  # TRL syncs its weights before calling rollout_func
    if trainer.args.vllm_mode == "colocate":
        from langchain_ragr1.policies.vllm import VLLMPolicy

        return VLLMPolicy(generation.llm, sampling=sampling)
    if trainer.accelerator.num_processes > 1:
        raise ConfigError("vllm_mode: server with the graph rollout runs on one training process for now "
                          "(the client lives on the main process); use colocate for multi-process training.")
    from langchain_ragr1.policies.vllm import VLLMServerPolicy

    return VLLMServerPolicy(generation.vllm_client, trainer.processing_class, sampling=sampling)


def _question_text(prompt: Any) -> str:
    """The question of a dataset prompt: a string, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        content = prompt[-1].get("content")
        if isinstance(content, str):
            return content
    raise ValueError(f"GraphRollout expects question strings as prompts, got {type(prompt).__name__}.")
