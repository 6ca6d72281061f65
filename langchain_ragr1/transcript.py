"""The transcript of one episode as typed segments: what the model wrote and what it was given.

A segment is ``prompt`` (the chat-templated question), ``policy`` (one model turn) or
``env`` (an ``<information>`` block or the invalid-action text). Token-level policies
fill ``token_ids`` (and ``logprobs`` for policy segments); the trainer concatenates them
and masks every non-policy token, never re-tokenising decoded text.
"""

from __future__ import annotations

from typing import Literal, Sequence

from typing_extensions import TypedDict

Role = Literal["prompt", "policy", "env"]


class Segment(TypedDict, total=False):
    """One piece of the transcript."""

    role: Role
    text: str
    token_ids: list[int] | None
    logprobs: list[float] | None
    #: On the prompt segment the graph builds: the (normalised) question it asks.
    question: str
    #: On a policy segment the graph builds: the action parsed from it (kind, queries, answer,
    #: reason, thoughts, final), as the graph acted on it.
    action: dict
    #: On a policy segment the graph builds: why the turn ended (``"stop"``, ``"eos"``, ``"length"``,
    #: ``"repetition"``, ...: :attr:`~langchain_ragr1.policies.base.Generation.finish_reason`).
    finish_reason: str | None
    #: On an ``<information>`` segment the graph builds: the retrieval turn (1-based), its
    #: queries and, per query, the passages as shown (rendered and truncated).
    retrieval: dict


def make_segment(
    role: Role,
    text: str,
    token_ids: Sequence[int] | None = None,
    logprobs: Sequence[float] | None = None,
) -> Segment:
    """Build a segment, copying id and log-prob sequences into lists."""
    return Segment(
        role=role,
        text=text,
        token_ids=None if token_ids is None else list(token_ids),
        logprobs=None if logprobs is None else list(logprobs),
    )


def transcript_text(segments: Sequence[Segment], include_prompt: bool = True) -> str:
    """The transcript as text (optionally without the prompt)."""
    return "".join(s["text"] for s in segments if include_prompt or s["role"] != "prompt")


def repetition_stops(segments: Sequence[Segment]) -> int:
    """Model turns of a transcript that the repetition stop ended (``finish_reason == "repetition"``;
    the graph counts each as an invalid turn too)."""
    return sum(s.get("role") == "policy" and s.get("finish_reason") == "repetition" for s in segments)


def token_ids_and_mask(segments: Sequence[Segment]) -> tuple[list[int], list[int]]:
    """Concatenated token ids of all segments and the policy mask (1 = policy token)."""
    ids: list[int] = []
    mask: list[int] = []
    for segment in segments:
        seg_ids = segment.get("token_ids")
        if seg_ids is None:
            raise ValueError(
                "This transcript has no token ids: it came from a text-level policy. "
                "Use a token-level policy (e.g. TransformersPolicy) to train on it."
            )
        ids.extend(seg_ids)
        mask.extend([1 if segment["role"] == "policy" else 0] * len(seg_ids))
    return ids, mask
