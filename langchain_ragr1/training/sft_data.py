"""Stage 1 SFT data: rejection-sampled teacher trajectories cut into the spec's four kinds.

:func:`make_trajectories` runs the real agent graph (any teacher policy, real retrieval) over
a QA set and keeps only episodes whose final answer exactly matches a gold answer.
:func:`to_sft_samples` cuts a kept trajectory at every model turn: the input is the prompt
and everything before the turn (earlier turns and their ``<information>``), the target is
that one turn. Kinds (spec section 2): 1 prompt -> answer, 2 prompt -> search, 3 context ->
answer, 4 context -> search. Retrieved text is never a target.
:func:`build_sft_dataset` turns samples into ``input_ids``/``labels`` by concatenating the
segments' token ids (never re-tokenising decoded text); labels are -100 everywhere except on
the target turn. Too-long samples are dropped and counted (cutting the context would show
the model transcripts it can never see at inference: a prompt without its question).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from langchain_ragr1.data.loaders import QAItem
from langchain_ragr1.errors import RagR1Error
from langchain_ragr1.extras import require
from langchain_ragr1.protocol import exact_match, parse_action
from langchain_ragr1.transcript import Segment

logger = logging.getLogger(__name__)

#: Sample kinds of the spec: (earlier turns in the input?, target action) -> kind.
KINDS: dict[tuple[bool, str], int] = {
    (False, "answer"): 1,
    (False, "search"): 2,
    (True, "answer"): 3,
    (True, "search"): 4,
}
IGNORE_INDEX = -100


class EmptySFTDataError(RagR1Error, ValueError):
    """Nothing survived filtering; the message gives the counts."""


@dataclass
class TrajectoryCounts:
    """What :func:`make_trajectories` did with the questions."""

    total: int = 0
    kept: int = 0
    rejected: int = 0  # the teacher answered wrongly (or never answered)
    errors: int = 0  # the episode raised on every attempt
    retried: int = 0  # failed attempts that were tried again
    error_messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plain_segment(segment: Segment) -> dict[str, Any]:
    ids = segment.get("token_ids")
    return {"role": segment["role"], "text": segment["text"],
            "token_ids": None if ids is None else list(ids)}


def make_trajectories(
    agent: Any,
    items: Sequence[QAItem],
    *,
    retries: int = 1,
    progress: bool = True,
    allow_empty: bool = False,
) -> tuple[list[dict[str, Any]], TrajectoryCounts]:
    """Run ``agent`` (a :class:`~langchain_ragr1.RagR1Agent` around a teacher) over ``items``.

    Keeps an episode only when its final answer exactly matches a gold answer (rejection
    sampling). An episode that raises is tried ``retries`` more times, then skipped and
    counted in ``errors``; the run goes on. Raises :class:`EmptySFTDataError` (with the
    counts) when nothing is kept, unless ``allow_empty``.
    """
    from tqdm.auto import tqdm

    mode = agent.config.mode
    counts = TrajectoryCounts(total=len(items))
    kept: list[dict[str, Any]] = []
    bar = tqdm(items, desc=f"Trajectories ({mode})", unit="q", disable=not progress)
    for item in bar:
        result = None
        for attempt in range(retries + 1):
            try:
                result = agent.invoke(item.question)
                break
            except Exception as exc:  # a teacher or retriever failure must not end the run
                if attempt < retries:
                    counts.retried += 1
                else:
                    counts.errors += 1
                    counts.error_messages.append(f"{item.id}: {type(exc).__name__}: {exc}")
                    logger.warning("Skipping %s after %d attempts: %s", item.id, retries + 1, exc)
        if result is None:
            continue
        if result["stop_reason"] == "answer" and exact_match(result["answer"], item.golden_answers):
            counts.kept += 1
            kept.append({
                "id": item.id,
                "question": result["question"],
                "golden_answers": list(item.golden_answers),
                "item_kind": item.kind,
                "mode": mode,
                "answer": result["answer"],
                "turns": result["turns"],
                "queries": result["queries"],
                "segments": [_plain_segment(s) for s in result["segments"]],
            })
        else:
            counts.rejected += 1
        bar.set_postfix(kept=counts.kept, rejected=counts.rejected, errors=counts.errors)
    if not kept and not allow_empty:
        raise EmptySFTDataError(
            f"No trajectory was kept: {counts.total} questions, {counts.rejected} rejected "
            f"(wrong or missing answer), {counts.errors} errors. "
            + (f"First error: {counts.error_messages[0]}" if counts.error_messages else
               "Check the teacher, the retriever and the QA set.")
        )
    return kept, counts


def to_sft_samples(trajectory: dict[str, Any]) -> list[dict[str, Any]]:
    """One sample per valid model turn of ``trajectory``: ``context`` segments -> ``target``.

    ``kind`` is 1..4 as in the spec; a turn that is neither a search nor an answer (an
    invalid turn) is no target. The target is always a ``policy`` segment.
    """
    segments = trajectory["segments"]
    mode = trajectory.get("mode", "multi")
    samples = []
    for index, segment in enumerate(segments):
        if segment["role"] != "policy":
            continue
        action = parse_action(segment["text"], mode)
        if action.kind == "invalid":
            continue
        earlier = any(s["role"] == "policy" for s in segments[:index])
        samples.append({
            "id": f"{trajectory.get('id', '')}#{index}",
            "question": trajectory["question"],
            "mode": mode,
            "kind": KINDS[(earlier, action.kind)],
            "context": [dict(s) for s in segments[:index]],
            "target": dict(segment),
        })
    return samples


def _segment_ids(segment: dict[str, Any], tokenizer: Any) -> list[int]:
    """The segment's own token ids; a text-level transcript's segments are encoded one by one
    (the prompt through the chat template), so boundaries never merge."""
    ids = segment.get("token_ids")
    if ids is not None:
        return list(ids)
    text = segment["text"]
    if segment["role"] == "prompt":
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def sample_ids(sample: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one sample: concatenated segment ids, labels on the target only."""
    context: list[int] = []
    for segment in sample["context"]:
        context.extend(_segment_ids(segment, tokenizer))
    target = _segment_ids(sample["target"], tokenizer)
    return context + target, [IGNORE_INDEX] * len(context) + target


def build_sft_dataset(
    samples: Iterable[dict[str, Any]],
    tokenizer: Any,
    max_length: int = 2048,
    *,
    report: dict[str, Any] | None = None,
):
    """A ``datasets.Dataset`` of ``input_ids``, ``attention_mask``, ``labels``, ``kind``.

    Samples longer than ``max_length`` tokens are dropped and counted. ``report`` (a dict)
    receives ``samples``, ``kept``, ``dropped_too_long``, ``kinds`` (kept per kind) and
    ``max_tokens``/``mean_tokens`` of the kept samples. Raises :class:`EmptySFTDataError`
    with those counts when nothing is left.
    """
    require("datasets", "training")
    from datasets import Dataset

    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "kind": [], "id": []}
    total, too_long, kinds = 0, 0, Counter()
    for sample in samples:
        total += 1
        input_ids, labels = sample_ids(sample, tokenizer)
        if len(input_ids) > max_length:
            too_long += 1
            continue
        rows["input_ids"].append(input_ids)
        rows["attention_mask"].append([1] * len(input_ids))
        rows["labels"].append(labels)
        rows["kind"].append(sample["kind"])
        rows["id"].append(sample.get("id", ""))
        kinds[sample["kind"]] += 1
    lengths = [len(ids) for ids in rows["input_ids"]]
    counts = {
        "samples": total,
        "kept": len(lengths),
        "dropped_too_long": too_long,
        "max_length": max_length,
        "kinds": {k: kinds.get(k, 0) for k in (1, 2, 3, 4)},
        "max_tokens": max(lengths, default=0),
        "mean_tokens": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
    }
    if report is not None:
        report.update(counts)
    if too_long:
        logger.warning("Dropped %d of %d samples longer than %d tokens.", too_long, total, max_length)
    if not lengths:
        raise EmptySFTDataError(
            f"No SFT sample left: {total} samples, {too_long} dropped as longer than "
            f"max_length={max_length} tokens." + (" Raise max_length." if too_long else "")
        )
    return Dataset.from_dict(rows)


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records one JSON object per line; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records written by :func:`write_jsonl`."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
