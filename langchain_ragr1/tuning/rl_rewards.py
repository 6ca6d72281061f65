"""GRPO rewards as plain functions of one episode, and their TRL batch form.

A scorer takes one episode's fields as keywords (the dataset columns ``id``,
``golden_answers``, ..., and the rollout's extra keys ``answer``, ``turns``,
``format_ok``, ...) and returns a float. :func:`trl_reward` turns it into the batch
function TRL calls; a scorer that raises fails the step with a :class:`RewardError`
naming the question id, never a silent zero.

The answer is read from the episode result (the model's own ``<answer>``), never from the
decoded completion: that text includes retrieved passages and the prompt's example answer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from langchain_ragr1.errors import RagR1Error
from langchain_ragr1.protocol import exact_match

Scorer = Callable[..., float]


class RewardError(RagR1Error, RuntimeError):
    """A reward function failed on an episode; the message names the question id."""


def exact_match_score(*, answer: str | None, golden_answers: Sequence[str], **_: Any) -> float:
    """1.0 when the episode's final answer matches a gold answer (normalised EM), else 0.0."""
    return exact_match(answer, list(golden_answers))


def format_score(*, format_ok: bool, **_: Any) -> float:
    """1.0 for a well-formed episode: answered, no invalid turn, not truncated."""
    return 1.0 if format_ok else 0.0


class TRLReward:
    """TRL's batch reward ``f(prompts, completions, **columns) -> list[float]`` over ``scorer``.

    A callable class (TRL's own rewards are, too): it pickles whenever ``scorer`` is a
    module-level function, so TRL's async rollout worker can take it to another process.
    ``__name__`` is what TRL logs it as (``rewards/<name>/mean``).
    """

    def __init__(self, scorer: Scorer, name: str) -> None:
        self.scorer = scorer
        self.__name__ = name

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        n = len(completions)
        ids = columns.get("id") or [None] * n
        rows = {k: v for k, v in columns.items() if isinstance(v, list) and len(v) == n}
        scores = []
        for i in range(n):
            try:
                scores.append(float(self.scorer(**{k: v[i] for k, v in rows.items()})))
            except Exception as exc:
                raise RewardError(
                    f"reward {self.__name__!r} failed on question id {ids[i]!r}: {type(exc).__name__}: {exc}"
                ) from exc
        return scores

    def __repr__(self) -> str:
        return f"TRLReward({getattr(self.scorer, '__name__', self.scorer)!r}, name={self.__name__!r})"


def trl_reward(scorer: Scorer, name: str) -> TRLReward:
    """TRL's batch reward over ``scorer`` (see :class:`TRLReward`)."""
    return TRLReward(scorer, name)


def default_rewards() -> list[Callable]:
    """The paper's exact-match reward and the format reward, in this order; their weights are
    ``GRPOConfig.reward_weights`` (the project's default ``[1.0, 0.0]``: the format is logged only)."""
    return [trl_reward(exact_match_score, "exact_match"), trl_reward(format_score, "format")]
