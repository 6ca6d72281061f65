"""The sampling settings of a token-level policy, in one object: :class:`Sampling`.

``TransformersPolicy``, ``ContinuousTransformersPolicy``, ``VLLMPolicy`` and ``VLLMServerPolicy``
all take ``sampling=Sampling(...)``; each converts it in one place to what its backend takes
(:meth:`Sampling.generate_kwargs` / :meth:`Sampling.generation_config` for transformers,
:meth:`Sampling.vllm_kwargs` / :meth:`Sampling.sampling_params` for vLLM). Light: no torch,
no transformers until a conversion asks for it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, Callable

from langchain_ragr1.config import unknown_settings
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.repetition import RepeatTracker

__all__ = ["Sampling", "check_policy_kwargs", "check_sampling_object", "check_setting", "unknown_settings"]


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


#: Defaults of the repetition stop (:class:`Sampling`'s ``repeat_stop_tokens`` and ``repeat_stop_count``), chosen
#: on saved turns of the shipped default (``scripts/repetition_stats.py``, reports/sft.md "Greedy loops"): of
#: spans 8-40 x counts 2-4, the one that saves the most tokens while stopping no turn of a question answered right.
DEFAULT_REPEAT_STOP_TOKENS = 24
DEFAULT_REPEAT_STOP_COUNT = 4
#: The shortest repeated span that may stop a turn (shorter ones are ordinary phrases: "was born in").
MIN_REPEAT_STOP_TOKENS = 4

#: A setting's rule: (check, what to use instead), for the error that names it.
Rule = tuple[Callable[[Any], bool], str]

#: What a policy's settings must be, sampling (:class:`Sampling`'s fields) and batching alike.
RULES: dict[str, Rule] = {
    "max_new_tokens": (lambda v: _integer(v) and v >= 1, "a positive integer (e.g. 500)"),
    "temperature": (lambda v: _number(v) and v >= 0, "a finite number >= 0 (0 is greedy, e.g. 0.7)"),
    "top_p": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1] (e.g. 0.95)"),
    "top_k": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0 is off, e.g. 50)"),
    "min_p": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1] (0 is off, e.g. 0.05)"),
    "repetition_penalty": (lambda v: _number(v) and v > 0, "a finite number > 0 (1 is off, e.g. 1.1)"),
    "repeat_stop_tokens": (lambda v: _integer(v) and (v == 0 or v >= MIN_REPEAT_STOP_TOKENS),
                           f"0 (off) or an integer >= {MIN_REPEAT_STOP_TOKENS} (tokens in the repeated span, "
                           f"e.g. 24)"),
    "repeat_stop_count": (lambda v: _integer(v) and v >= 2, "an integer >= 2 (copies of the span, e.g. 4)"),
    "max_batch_size": (lambda v: _integer(v) and v >= 1, "a positive integer (e.g. 8)"),
    "batch_wait_s": (lambda v: _number(v) and v >= 0, "a finite number of seconds >= 0 (e.g. 0.02)"),
}


def check_setting(name: str, value: Any, owner: str = "") -> None:
    """Raise :class:`ConfigError` naming ``name`` (as ``owner.name`` when given) when ``value``
    breaks its rule in :data:`RULES`; names without a rule pass."""
    rule = RULES.get(name)
    if rule is not None and not rule[0](value):
        label = f"{owner}.{name}" if owner else name
        raise ConfigError(f"{label} must be {rule[1]}, got {value!r} ({type(value).__name__}).")


@dataclass(frozen=True)
class Sampling:
    """How a token-level policy samples each turn; checked when built (a bad field is a
    :class:`ConfigError` naming it, before any model loads).

    ``temperature=0`` decodes greedily (``top_p``, ``top_k`` and ``min_p`` are then unused);
    otherwise the policy samples with ``temperature``, nucleus ``top_p``, ``top_k`` (0: off) and
    ``min_p`` (0: off). ``repetition_penalty`` (1: off) applies either way, as in transformers and
    vLLM; the continuous policy refuses it (transformers' continuous batching drops it). These are
    ``trl.GRPOConfig``'s own sampling fields, with its defaults. ``max_new_tokens`` caps one turn
    (the paper uses 500).

    The repetition stop ends a turn that loops: once the turn's last ``repeat_stop_tokens`` tokens have
    occurred ``repeat_stop_count`` times in it (copies that do not overlap, anywhere in the turn), the
    turn ends at that token with ``finish_reason="repetition"`` (the tokens kept as sampled) and the graph
    counts it as an invalid action. ``repeat_stop_tokens=0`` turns it off. Policies that decode token by
    token stop there; the others cut the finished turn there
    (:class:`~langchain_ragr1.policies.repetition.RepeatTracker`).

    Frozen and hashable: share one object between policies, change it with :func:`dataclasses.replace`.

    >>> Sampling(temperature=0).greedy
    True
    """

    max_new_tokens: int = 500
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS
    repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT

    def __post_init__(self) -> None:
        for field in fields(self):
            check_setting(field.name, getattr(self, field.name), "Sampling")

    def repeat_tracker(self) -> RepeatTracker | None:
        """A new tracker of the repetition stop for one turn, or ``None`` when it is off."""
        if not self.repeat_stop_tokens:
            return None
        return RepeatTracker(self.repeat_stop_tokens, self.repeat_stop_count)

    @property
    def greedy(self) -> bool:
        """Whether turns are decoded greedily (``temperature == 0``)."""
        return self.temperature == 0

    def _extras(self, *names: str) -> dict[str, Any]:
        """The fields of ``names`` that are switched on (off: top_k 0, min_p 0, repetition_penalty 1)."""
        off = {"top_k": 0, "min_p": 0, "repetition_penalty": 1}
        return {n: getattr(self, n) for n in names if getattr(self, n) != off[n]}

    def generate_kwargs(self) -> dict[str, Any]:
        """The decoding keywords of transformers' ``generate`` / ``GenerationConfig`` (without the
        token budget): ``do_sample=False`` when greedy, else temperature, top_p, top_k (0: off) and
        min_p; repetition_penalty either way. Fields left off are not passed."""
        if self.greedy:
            return {"do_sample": False, **self._extras("repetition_penalty")}
        return {"do_sample": True, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "top_k": int(self.top_k), **self._extras("min_p", "repetition_penalty")}

    def generation_config(self, **overrides: Any) -> Any:
        """A transformers ``GenerationConfig`` of these settings (``max_new_tokens`` included);
        ``overrides`` add or replace fields (e.g. ``eos_token_id``)."""
        from transformers import GenerationConfig

        return GenerationConfig(**{"max_new_tokens": self.max_new_tokens, **self.generate_kwargs(), **overrides})

    def vllm_kwargs(self) -> dict[str, Any]:
        """The decoding keywords of vLLM's ``SamplingParams`` (and TRL's ``VLLMClient.generate``),
        without the token budget: ``temperature=0.0`` when greedy, else temperature, top_p, and
        top_k and min_p when on; repetition_penalty either way when on."""
        if self.greedy:
            return {"temperature": 0.0, **self._extras("repetition_penalty")}
        return {"temperature": float(self.temperature), "top_p": float(self.top_p),
                **self._extras("top_k", "min_p", "repetition_penalty")}

    def sampling_params(self, params_cls: Callable[..., Any], **overrides: Any) -> Any:
        """``params_cls`` (vLLM's ``SamplingParams``) built from these settings, ``max_tokens``
        from ``max_new_tokens``; ``overrides`` add or replace fields (e.g. ``stop``, ``logprobs``)."""
        return params_cls(**{"max_tokens": self.max_new_tokens, **self.vllm_kwargs(), **overrides})


#: The names of :class:`Sampling`'s fields (what older code passed to a policy one by one).
SAMPLING_FIELDS: frozenset[str] = frozenset(f.name for f in fields(Sampling))


def check_sampling_object(sampling: Any, name: str = "sampling") -> None:
    """``sampling`` is a :class:`Sampling` or ``None``, or a :class:`ConfigError` says how to build one."""
    if sampling is not None and not isinstance(sampling, Sampling):
        raise ConfigError(f"{name} must be a langchain_ragr1.Sampling (e.g. Sampling(temperature=0)) or None, "
                          f"got {sampling!r} ({type(sampling).__name__}).")


def check_policy_kwargs(kind: str, kwargs: dict[str, Any], known: Any) -> None:
    """Check the keyword settings ``kwargs`` of ``kind`` (a policy or its factory) before a model
    loads: a :class:`Sampling` field passed on its own says to put it in ``sampling=Sampling(...)``;
    an unknown name gets the closest ``known`` one; ``sampling`` must be a :class:`Sampling`; the
    batching values (``max_batch_size``, ``batch_wait_s``) follow :data:`RULES`."""
    for name, value in kwargs.items():
        if name in SAMPLING_FIELDS:
            raise ConfigError(f"{kind} takes {name} inside sampling=Sampling({name}={value!r}) "
                              f"(from langchain_ragr1 import Sampling).")
    unknown = set(kwargs) - set(known)
    if unknown:
        raise unknown_settings(kind, unknown, known)
    for name, value in kwargs.items():
        check_setting(name, value)
    check_sampling_object(kwargs.get("sampling"))
