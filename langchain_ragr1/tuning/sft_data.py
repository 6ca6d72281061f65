"""Stage 1 SFT data: rejection-sampled teacher trajectories, as whole trajectories or cut into
the spec's four kinds.

:func:`make_trajectories` runs the real agent graph (any teacher policy, real retrieval) over
a QA set and keeps only episodes whose final answer exactly matches a gold answer.
Two sample formats (:data:`SAMPLE_FORMATS`, :func:`to_samples`):

* ``"turns"`` (the paper's way), :func:`to_sft_samples`: a kept trajectory is cut at every
  valid model turn: the input is the prompt and everything before the turn (earlier turns and
  their ``<information>``), the target is that one turn. Kinds (spec section 2): 1 prompt ->
  answer, 2 prompt -> search, 3 context -> answer, 4 context -> search.
* ``"trajectory"``, :func:`to_trajectory_sample`: one sample per trajectory, the whole
  transcript as input, labels on every valid model turn at once (``kinds`` lists their kinds).

Retrieved text, the prompt and invalid turns (``action`` kind ``"invalid"``) are never a
target in either format; an invalid turn stays in the input as context. A kept trajectory
keeps what the graph parsed (:data:`PARSED_FIELDS`): each model turn's ``action`` and each
``<information>`` segment's ``retrieval``, so cutting reads the fields; a turn saved without
its ``action`` (an older ``trajectories.jsonl``) is parsed again, in :func:`turn_action` only.
:func:`build_sft_dataset` turns samples of either format into ``input_ids``/``labels`` by
concatenating the segments' token ids (never re-tokenising decoded text); labels are -100
everywhere except on the target turn(s). Too-long samples are dropped and counted (cutting
the context would show the model transcripts it can never see at inference: a prompt without
its question).

The two formats train on the same labelled tokens with the same per-token loss: a turn
sample's input is exactly a prefix of its trajectory, so under a causal LM each target token
sees the same context either way (``tests/test_sft_data.py`` checks this on a tiny model).
:func:`token_accounting` counts what an epoch costs each way (the trajectory format processes
the shared prefix once instead of once per turn).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence, get_args

from langchain_ragr1.data.items import DataError, QAItem
from langchain_ragr1.errors import RagR1Error
from langchain_ragr1.extras import require
from langchain_ragr1.protocol import Mode, exact_match, parse_action
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
#: The sample formats of :func:`to_samples`: whole trajectories, or the four-kind cut per turn.
SampleFormat = Literal["trajectory", "turns"]
SAMPLE_FORMATS: tuple[str, ...] = get_args(SampleFormat)


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

    def __add__(self, other: "TrajectoryCounts") -> "TrajectoryCounts":
        """Counts of two runs together (e.g. one per mode): every field added."""
        return TrajectoryCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


#: What the graph parsed onto a segment (see :class:`~langchain_ragr1.transcript.Segment`) and a
#: saved trajectory keeps: the prompt's ``question``, a model turn's ``action``, an
#: ``<information>`` block's ``retrieval``.
PARSED_FIELDS = ("question", "action", "retrieval")
#: The kinds an ``action`` can have.
ACTION_KINDS = ("search", "answer", "invalid")


def _plain_segment(segment: Segment) -> dict[str, Any]:
    """A segment as a trajectory saves it: role, text, token ids and the parsed fields it has
    (the teacher's log-probs are left out)."""
    ids = segment.get("token_ids")
    plain = {"role": segment["role"], "text": segment["text"], "token_ids": None if ids is None else list(ids)}
    plain.update({key: segment[key] for key in PARSED_FIELDS if key in segment})  # type: ignore[literal-required]
    return plain


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
            except Exception as exc:  # noqa: BLE001 - a teacher or retriever failure is counted, not the end of the run
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


def turn_action(segment: dict[str, Any], mode: Mode = "multi") -> dict[str, Any]:
    """A model turn's parsed action: the ``action`` the graph kept on the segment, or, for a
    segment saved without one (a ``trajectories.jsonl`` from before the field), its text parsed
    with :func:`~langchain_ragr1.protocol.parse_action`. The one place a saved turn is parsed."""
    action = segment.get("action")
    return parse_action(segment["text"], mode).to_dict() if action is None else action


def _target_kinds(trajectory: dict[str, Any]) -> list[tuple[int, int]]:
    """``(segment index, kind)`` of every valid model turn, in order; invalid turns are skipped."""
    targets = []
    seen_policy = False
    mode = trajectory.get("mode", "multi")
    for index, segment in enumerate(trajectory["segments"]):
        if segment["role"] != "policy":
            continue
        action = turn_action(segment, mode)
        kind = action.get("kind") if isinstance(action, dict) else None
        if kind not in ACTION_KINDS:
            raise DataError(
                f"trajectory {trajectory_key(trajectory)!r}, segment {index}: 'action' is {action!r}; "
                f"it needs a 'kind' of {', '.join(ACTION_KINDS)}. Remove the 'action' key to parse the turn's text.")
        if kind != "invalid":
            targets.append((index, KINDS[(seen_policy, kind)]))
        seen_policy = True  # an earlier invalid turn is context too: the next turn is kind 3/4
    return targets


def to_sft_samples(trajectory: dict[str, Any]) -> list[dict[str, Any]]:
    """One sample per valid model turn of ``trajectory``: ``context`` segments -> ``target``.

    ``kind`` is 1..4 as in the spec; a turn that is neither a search nor an answer (an
    invalid turn) is no target. The target is always a ``policy`` segment.
    """
    segments = trajectory["segments"]
    mode = trajectory.get("mode", "multi")
    return [{
        "id": f"{trajectory.get('id', '')}#{index}",
        "question": trajectory["question"],
        "mode": mode,
        "kind": kind,
        "context": [dict(s) for s in segments[:index]],
        "target": dict(segments[index]),
    } for index, kind in _target_kinds(trajectory)]


def trajectory_key(trajectory: dict[str, Any]) -> str:
    """A trajectory's sample id: its question id and mode (a question has one trajectory per mode)."""
    return f"{trajectory.get('id', '')}@{trajectory.get('mode', 'multi')}"


def to_trajectory_sample(trajectory: dict[str, Any]) -> dict[str, Any] | None:
    """The whole ``trajectory`` as one sample: all its ``segments`` in, every valid model turn a target.

    ``targets`` are the indices of the labelled segments (the valid ``policy`` turns, the same
    turns :func:`to_sft_samples` makes targets of) and ``kinds`` their kinds, 1..4, in order.
    None when no turn is valid (nothing to learn).
    """
    segments = trajectory["segments"]
    mode = trajectory.get("mode", "multi")
    targets = _target_kinds(trajectory)
    if not targets:
        return None
    return {
        "id": trajectory_key(trajectory),
        "question": trajectory["question"],
        "mode": mode,
        "kinds": [kind for _, kind in targets],
        "targets": [index for index, _ in targets],
        "segments": [dict(s) for s in segments],
    }


def to_samples(trajectories: Iterable[dict[str, Any]], sample_format: str = "trajectory") -> list[dict[str, Any]]:
    """The samples of ``trajectories`` in ``sample_format`` (:data:`SAMPLE_FORMATS`)."""
    if sample_format == "turns":
        return [s for t in trajectories for s in to_sft_samples(t)]
    if sample_format == "trajectory":
        return [s for s in map(to_trajectory_sample, trajectories) if s is not None]
    raise ValueError(f"sample_format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}")


def sample_format_of(sample: dict[str, Any]) -> str:
    """``"trajectory"`` for a :func:`to_trajectory_sample` sample, ``"turns"`` for a four-kind one."""
    return "trajectory" if "segments" in sample else "turns"


def sample_kinds(sample: dict[str, Any]) -> list[int]:
    """The kinds of a sample's labelled turns (one for a turns sample)."""
    return list(sample["kinds"]) if "kinds" in sample else [sample["kind"]]


def _segment_ids(segment: dict[str, Any], tokenizer: Any) -> list[int]:
    """The segment's own token ids; a text-level transcript's segments are encoded one by one
    (the prompt through the chat template), so boundaries never merge, and the way the token-level
    policies encode them: text never becomes a special id (retrieved text cannot end a turn)."""
    from langchain_ragr1.policies.token import encode_plain, render_user_message

    ids = segment.get("token_ids")
    if ids is not None:
        return list(ids)
    if segment["role"] == "prompt":
        return render_user_message(tokenizer, segment["text"])[1]
    return encode_plain(tokenizer, segment["text"])


def sample_ids(sample: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one sample of either format: the segments' ids concatenated,
    labels equal to the ids on the target turn(s) and -100 elsewhere."""
    if "segments" in sample:
        segments, targets = sample["segments"], set(sample["targets"])
    else:
        segments, targets = [*sample["context"], sample["target"]], {len(sample["context"])}
    input_ids: list[int] = []
    labels: list[int] = []
    for index, segment in enumerate(segments):
        ids = _segment_ids(segment, tokenizer)
        input_ids.extend(ids)
        labels.extend(ids if index in targets else [IGNORE_INDEX] * len(ids))
    return input_ids, labels


def build_sft_dataset(
    samples: Iterable[dict[str, Any]],
    tokenizer: Any,
    max_length: int = 2048,
    *,
    report: dict[str, Any] | None = None,
):
    """A ``datasets.Dataset`` of ``input_ids``, ``attention_mask``, ``labels``, ``kinds``, ``id``
    from samples of one format (turns samples add their ``kind``; a trajectory sample's
    ``kinds`` lists the kinds of all its labelled turns).

    Samples longer than ``max_length`` tokens are dropped whole and counted (never cut).
    ``report`` (a dict) receives ``format``, ``samples``, ``kept``, ``dropped_too_long``,
    ``kinds`` (labelled turns of the kept samples per kind), ``max_tokens``/``mean_tokens``,
    ``tokens`` and ``labelled_tokens`` (sums over the kept samples: what one epoch processes
    and trains on). Raises :class:`EmptySFTDataError` with those counts when nothing is left.
    """
    Dataset = require("datasets", "training").Dataset

    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "kinds": [], "id": []}
    formats: set[str] = set()
    total, too_long, labelled = 0, 0, 0
    kinds: Counter[int] = Counter()
    for sample in samples:
        total += 1
        formats.add(sample_format_of(sample))
        if len(formats) > 1:
            raise ValueError("build_sft_dataset: samples of both formats (turns and trajectory) in one dataset")
        input_ids, labels = sample_ids(sample, tokenizer)
        if len(input_ids) > max_length:
            too_long += 1
            continue
        rows["input_ids"].append(input_ids)
        rows["attention_mask"].append([1] * len(input_ids))
        rows["labels"].append(labels)
        rows["kinds"].append(sample_kinds(sample))
        rows["id"].append(sample.get("id", ""))
        kinds.update(sample_kinds(sample))
        labelled += sum(label != IGNORE_INDEX for label in labels)
    sample_format = formats.pop() if formats else "turns"
    if sample_format == "turns":
        rows["kind"] = [k[0] for k in rows["kinds"]]
    lengths = [len(ids) for ids in rows["input_ids"]]
    counts = {
        "format": sample_format,
        "samples": total,
        "kept": len(lengths),
        "dropped_too_long": too_long,
        "max_length": max_length,
        "kinds": {k: kinds.get(k, 0) for k in (1, 2, 3, 4)},
        "max_tokens": max(lengths, default=0),
        "mean_tokens": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "tokens": sum(lengths),
        "labelled_tokens": labelled,
    }
    if report is not None:
        report.update(counts)
    if too_long:
        logger.warning("Dropped %d of %d %s samples longer than %d tokens.", too_long, total,
                       sample_format, max_length)
    if not lengths:
        raise EmptySFTDataError(
            f"No SFT sample left: {total} samples, {too_long} dropped as longer than "
            f"max_length={max_length} tokens." + (" Raise max_length." if too_long else "")
        )
    return Dataset.from_dict(rows)


def token_accounting(
    trajectories: Iterable[dict[str, Any]],
    tokenizer: Any = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """What one epoch over ``trajectories`` costs in each sample format.

    For ``"turns"`` and ``"trajectory"``: ``samples``, ``tokens`` (sum of sample lengths: the
    tokens a forward pass processes per epoch, padding aside) and ``labelled_tokens`` (tokens
    with a label: the loss terms), over all samples; with ``max_length`` also ``kept``,
    ``dropped_too_long``, ``kept_tokens`` and ``kept_labelled_tokens`` (what survives the
    drop of too-long samples; the formats drop differently: a long trajectory is dropped
    whole, while its early turns fit as turn samples). ``labelled_tokens_equal`` says whether
    the labelled tokens agree (they must: the same turns are targets) and ``tokens_ratio`` is
    turns tokens / trajectory tokens. ``tokenizer`` is needed only for segments without ids.
    """
    trajectories = list(trajectories)
    out: dict[str, Any] = {"trajectories": len(trajectories), "max_length": max_length}
    for sample_format in ("turns", "trajectory"):
        counts = {"samples": 0, "tokens": 0, "labelled_tokens": 0}
        if max_length is not None:
            counts.update(kept=0, dropped_too_long=0, kept_tokens=0, kept_labelled_tokens=0)
        for sample in to_samples(trajectories, sample_format):
            input_ids, labels = sample_ids(sample, tokenizer)
            n, n_labelled = len(input_ids), sum(label != IGNORE_INDEX for label in labels)
            counts["samples"] += 1
            counts["tokens"] += n
            counts["labelled_tokens"] += n_labelled
            if max_length is None:
                continue
            if n > max_length:
                counts["dropped_too_long"] += 1
            else:
                counts["kept"] += 1
                counts["kept_tokens"] += n
                counts["kept_labelled_tokens"] += n_labelled
        out[sample_format] = counts
    turns, whole = out["turns"], out["trajectory"]
    out["labelled_tokens_equal"] = turns["labelled_tokens"] == whole["labelled_tokens"]
    out["tokens_ratio"] = round(turns["tokens"] / whole["tokens"], 4) if whole["tokens"] else None
    return out


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records one JSON object per line; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records written by :func:`write_jsonl`, one at a time (blank lines skipped); a line that is not JSON is a
    :class:`DataError` naming the file and the line."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not JSON ({exc.msg}); fix or remove the line.") from exc


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records written by :func:`write_jsonl` (:func:`iter_jsonl`, as a list)."""
    return list(iter_jsonl(path))
