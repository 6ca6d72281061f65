"""Run the agent over a QA set in one or more strategies; score, time and resume.

Every strategy (``multi``, ``single``, ``naive-rag``, ``direct``) is a configuration of the
same graph (:func:`langchain_ragr1.config.config_for`). Episodes run through ``agent.batch``
in chunks; each finished question is appended to ``predictions.jsonl`` at once, so an
interrupted run resumes without redoing it. A question whose episode ended in an error (a
retriever outage, say) is not done: a rerun runs it again and its new record replaces the error
record, so ``predictions.jsonl`` keeps one record per question and mode. Scores use the model's
answer only; an errored question scores 0 and is counted in ``errors``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from langchain_ragr1.config import STRATEGIES
from langchain_ragr1.data.items import QAItem
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS
from langchain_ragr1.protocol import exact_match, f1_score
from langchain_ragr1.transcript import repetition_stops

if TYPE_CHECKING:
    from langchain_ragr1.retrievers.factory import RetrieverKind

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
KIND_METRICS_FILE = "metrics_by_kind.json"
#: Keys of each mode's entry in ``metrics.json``.
METRIC_KEYS: tuple[str, ...] = (
    "em", "f1", "avg_turns", "avg_queries", "format_ok", "avg_seconds", "p95_seconds", "n", "errors",
)


def check_modes(modes: Sequence[str]) -> list[str]:
    """The modes, de-duplicated in order; an unknown one raises with the valid list."""
    unknown = [m for m in modes if m not in STRATEGIES]
    if unknown or not modes:
        raise ConfigError(f"Unknown mode {', '.join(unknown) or '(none)'}: use one or more of {', '.join(STRATEGIES)}.")
    return list(dict.fromkeys(modes))


class _EpisodeTimer(BaseCallbackHandler):
    """Wall time of the top-level run of one ``batch`` input."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: float | None = None
        self._root: UUID | None = None
        self._lock = threading.Lock()

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        with self._lock:
            if parent_run_id is None and self._root is None:
                self._root, self.started = run_id, time.perf_counter()

    def _end(self, run_id: UUID) -> None:
        with self._lock:
            if run_id == self._root and self.started is not None:
                self.seconds = time.perf_counter() - self.started

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)


def _generated_tokens(result: dict) -> int | None:
    ids = [s.get("token_ids") for s in result.get("segments") or [] if s.get("role") == "policy"]
    return sum(len(i) for i in ids) if ids and all(i is not None for i in ids) else None


def prediction_record(item: QAItem, mode: str, result: dict | BaseException, seconds: float) -> dict:
    """One line of ``predictions.jsonl``: the scores, counts and trace of one episode."""
    record: dict[str, Any] = {
        "id": item.id, "mode": mode, "question": item.question,
        "golden_answers": item.golden_answers, "kind": item.kind, "seconds": round(seconds, 4),
    }
    if isinstance(result, BaseException):
        return {**record, "answer": None, "em": 0.0, "f1": 0.0, "turns": 0, "steps": 0,
                "invalid_turns": 0, "repetition_stops": 0, "queries": [], "documents": [], "generated_tokens": None,
                "stop_reason": "error", "error": f"{type(result).__name__}: {result}", "trace": ""}
    answer = result.get("answer")
    titles = {d.metadata.get("title") for d in result.get("documents") or []}
    evidence = item.evidence_titles
    return {
        **record,
        # share of the item's evidence articles among the retrieved documents (None: no evidence listed)
        "evidence_recall": sum(t in titles for t in evidence) / len(evidence) if evidence else None,
        "answer": answer,
        "em": exact_match(answer, item.golden_answers),
        "f1": f1_score(answer, item.golden_answers),
        "turns": result["turns"],
        "steps": result["steps"],
        "invalid_turns": result["invalid_turns"],  # the graph counts every turn that did not parse, the final one too
        "repetition_stops": repetition_stops(result.get("segments") or []),  # of those, turns that looped
        "queries": result["queries"],
        "documents": [d.metadata.get("title") for d in result.get("documents") or []],
        "generated_tokens": _generated_tokens(result),
        "stop_reason": result.get("stop_reason"),
        "error": None,
        "trace": result.get("trace", ""),
    }


def read_predictions(path: Path) -> list[dict]:
    """Finished records of an earlier run; a line cut by an interruption is ignored."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that an interruption left without its newline."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def aggregate(records: Iterable[dict]) -> dict[str, Any]:
    """Metrics of one mode's records (see :data:`METRIC_KEYS`), plus tokens and errors.

    ``em``/``f1`` are over all ``n`` questions, an errored one scoring 0; ``errors`` counts those,
    and ``em_without_errors``/``f1_without_errors`` score only the others (None if all errored)."""
    records = list(records)
    n = len(records)
    if n == 0:
        return {key: 0.0 for key in METRIC_KEYS} | {"n": 0, "errors": 0}
    ok = [r for r in records if r.get("error") is None]
    turns = sum(r["turns"] for r in records)
    queries = sum(len(q) for r in records for q in r["queries"])
    steps = sum(r["steps"] for r in records)
    seconds = [r["seconds"] for r in records]
    wall = sum(r.get("wall_share_s") or 0.0 for r in records)
    tokens = [r["generated_tokens"] for r in records if r.get("generated_tokens") is not None]
    return {
        "em": sum(r["em"] for r in records) / n,
        "f1": sum(r["f1"] for r in records) / n,
        "avg_turns": turns / n,
        "avg_queries": queries / turns if turns else 0.0,
        "format_ok": 1 - sum(r["invalid_turns"] for r in records) / steps if steps else 0.0,
        "avg_seconds": sum(seconds) / n,
        "p95_seconds": _percentile(seconds, 0.95),
        # questions answered per minute of wall time, batches running concurrently (None: older records)
        "questions_per_min": 60 * n / wall if wall and all(r.get("wall_share_s") for r in records) else None,
        "n": n,
        "avg_generated_tokens": sum(tokens) / len(tokens) if tokens else None,
        # turns the repetition stop ended, all questions together (older records: not counted)
        "repetition_stops": sum(r.get("repetition_stops") or 0 for r in records),
        "answered": sum(r["answer"] is not None for r in records) / n,
        "errors": n - len(ok),
        "em_without_errors": sum(r["em"] for r in ok) / len(ok) if ok else None,
        "f1_without_errors": sum(r["f1"] for r in ok) / len(ok) if ok else None,
        **_evidence_metrics(records),
    }


def _evidence_metrics(records: list[dict]) -> dict[str, Any]:
    """Retrieval recall of the gold evidence, and EM split by whether all of it was retrieved."""
    scored = [r for r in records if r.get("evidence_recall") is not None]
    if not scored:
        return {}
    found = [r for r in scored if r["evidence_recall"] == 1]
    missed = [r for r in scored if r["evidence_recall"] < 1]
    return {
        "evidence_recall": sum(r["evidence_recall"] for r in scored) / len(scored),
        "all_evidence_found": len(found) / len(scored),
        "em_evidence_found": sum(r["em"] for r in found) / len(found) if found else None,
        "em_evidence_missed": sum(r["em"] for r in missed) / len(missed) if missed else None,
    }


def check_items(items: Sequence[QAItem]) -> None:
    """Items :func:`evaluate` can run and resume: string ids, one per question, and a string kind."""
    seen: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        if not isinstance(item.id, str):
            raise ConfigError(f"Question {number} of the QA set: id must be a string, got {item.id!r}.")
        if item.id in seen:
            raise ConfigError(f"The QA set has duplicate id {item.id!r} (questions {seen[item.id]} and {number}); "
                              f"resume needs one id per question: give each question its own id.")
        seen[item.id] = number
        if item.kind is not None and not isinstance(item.kind, str):
            raise ConfigError(f"Question {item.id!r}: kind must be one string (or None), got "
                              f"{type(item.kind).__name__} {item.kind!r}.")


def _compact_predictions(path: Path) -> None:
    """Keep the last record per (mode, question) where a rerun appended a replacement (atomically)."""
    records = [r for r in read_predictions(path) if isinstance(r, dict)]
    latest: dict[tuple[Any, Any], dict] = {}
    for record in records:
        latest[(record.get("mode"), record.get("id"))] = record  # keeps the first one's position
    if len(latest) == len(records):
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in latest.values():
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def evaluate(
    items: Sequence[QAItem],
    modes: Sequence[str],
    make_agent: Callable[[str], Any],
    out: str | Path,
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every item in every mode, append to ``out/predictions.jsonl``, write ``metrics.json``.

    ``make_agent(mode)`` returns the agent of a strategy (e.g. ``RagR1Agent(policy, retriever,
    **config_for(mode).to_dict())``). Questions already in ``predictions.jsonl`` for a mode are
    not run again, except those whose last record is an error: they run again and their new
    record replaces the old one (the error record stays until then). ``progress(n)`` is called
    after each chunk with the questions it finished. Returns ``{mode: metrics}``.
    """
    modes = check_modes(modes)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    check_items(items)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PREDICTIONS_FILE
    _drop_partial_line(path)
    latest = {(r["mode"], r["id"]): r for r in read_predictions(path)}
    done = {key for key, record in latest.items() if record.get("error") is None}  # errored: run again
    with path.open("a", encoding="utf-8") as handle:
        for mode in modes:
            todo = [item for item in items if (mode, item.id) not in done]
            if progress and len(todo) < len(items):
                progress(len(items) - len(todo))
            if not todo:
                continue
            agent = make_agent(mode)
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                timers = [_EpisodeTimer() for _ in chunk]
                configs = [{"callbacks": [t], "max_concurrency": batch_size} for t in timers]
                started = time.perf_counter()
                results = agent.batch([i.question for i in chunk], configs, return_exceptions=True)
                # Each question's share of its chunk's wall time: what throughput sums (resumable).
                wall_share = round((time.perf_counter() - started) / len(chunk), 4)
                for item, result, timer in zip(chunk, results, timers):
                    record = prediction_record(item, mode, result, timer.seconds or 0.0)
                    record["wall_share_s"] = wall_share
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
                if progress:
                    progress(len(chunk))
    _compact_predictions(path)
    return write_metrics(out, items, modes)


def _latest_records(out: Path, items: Sequence[QAItem]) -> dict[tuple[str, str], dict]:
    """The last record per (mode, question) of ``items`` in ``out``'s predictions."""
    wanted = {item.id for item in items}
    latest: dict[tuple[str, str], dict] = {}
    for record in read_predictions(out / PREDICTIONS_FILE):
        if record["id"] in wanted:
            latest[(record["mode"], record["id"])] = record
    return latest


def write_metrics(out: Path, items: Sequence[QAItem], modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``metrics.json`` over the records of ``items`` in ``modes`` (the last record per question wins)."""
    latest = _latest_records(out, items)
    metrics = {mode: aggregate(r for (m, _), r in latest.items() if m == mode) for mode in modes}
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def write_kind_metrics(out: Path, items: Sequence[QAItem], modes: Sequence[str]) -> dict[str, dict[str, dict]]:
    """``metrics_by_kind.json``: ``{mode: {question kind: metrics}}`` for items that have a kind."""
    latest = _latest_records(out, items)
    kinds = sorted({item.kind for item in items if item.kind})
    by_kind = {
        mode: {kind: aggregate(r for (m, _), r in latest.items() if m == mode and r.get("kind") == kind)
               for kind in kinds}
        for mode in modes
    }
    (out / KIND_METRICS_FILE).write_text(json.dumps(by_kind, indent=2) + "\n", encoding="utf-8")
    return by_kind


#: How ``--limit`` picks its questions: the file's first N, a seeded random N, or a seeded
#: random N with each question kind in its share of the file (at least one of each when N allows).
SAMPLINGS: tuple[str, ...] = ("first", "shuffle", "stratified")


def select_items(items: Sequence[Any], limit: int | None, sampling: str = "first", seed: int = 0) -> list[Any]:
    """``limit`` items of ``items`` picked by ``sampling`` (see :data:`SAMPLINGS`), in file order.

    The same ``seed`` picks the same questions, so a resumed run continues the same sample.
    """
    import random

    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling={sampling!r} is unknown: use one of {', '.join(SAMPLINGS)}.")
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if sampling == "first":
        return items[:limit]
    rng = random.Random(seed)
    if sampling == "shuffle":
        return [items[i] for i in sorted(rng.sample(range(len(items)), limit))]
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(str(getattr(item, "kind", None) or "unknown"), []).append(i)
    shares = {kind: limit * len(ids) / len(items) for kind, ids in groups.items()}
    floor = 1 if limit >= len(groups) else 0  # every kind once, when N allows
    take = {kind: min(len(groups[kind]), max(floor, int(share))) for kind, share in shares.items()}
    while sum(take.values()) > limit:  # the floor overshot: trim the kind most above its share
        kind = max((k for k in take if take[k] > floor), key=lambda k: (take[k] - shares[k], k))
        take[kind] -= 1
    while sum(take.values()) < limit:  # largest remainder: the kind most below its share gets one
        kind = max((k for k in take if take[k] < len(groups[k])), key=lambda k: (shares[k] - take[k], k))
        take[kind] += 1
    picked = [i for kind, ids in sorted(groups.items()) for i in rng.sample(ids, take[kind])]
    return [items[i] for i in sorted(picked)]


def run_eval(
    data: str,
    modes: Sequence[str],
    out: str | Path,
    *,
    limit: int | None = None,
    sampling: str = "first",
    sample_seed: int = 0,
    model: str | Path | None = None,
    retriever: RetrieverKind = "chroma",
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    url: str | None = None,
    k: int = 3,
    max_turns: int = 4,
    max_new_tokens: int = 500,
    temperature: float = 0.0,
    repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS,
    repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT,
    batch_size: int = 8,
    backend: str = "fast",
    weights: str | None = None,
    prompt_lookup_num_tokens: int | None = None,
    progress_factory: Callable[[int], Callable[[int], None]] | None = None,
) -> dict[str, dict[str, Any]]:
    """What ``ragr1 eval`` does: load ``data``, build the retriever and the policies, evaluate, report.

    ``backend`` is ``"fast"`` (with ``weights`` and ``prompt_lookup_num_tokens``), ``"transformers"``,
    ``"continuous"`` or ``"vllm"`` (see
    :func:`~langchain_ragr1.policies.factory.default_policy`). ``repeat_stop_tokens`` / ``repeat_stop_count``
    set the repetition stop of each turn (:class:`~langchain_ragr1.policies.sampling.Sampling`'s; tokens 0: off).

    Each strategy runs the policy of its agent mode (``config_for(strategy).mode``): with
    ``model=None``/``"default"``, ``single`` gets the single-query SFT adapter and ``multi`` the
    multi-query one; ``naive-rag`` and ``direct`` prompt in multi-query format, so they get the
    multi-query adapter too. A folder or another alias serves every strategy. Each distinct model
    folder loads once, before the first episode (modes that share a folder, as both do while no
    single-query adapter is shipped, share one policy); the report's settings name each strategy's
    folder.

    ``progress_factory(total)`` returns the per-chunk progress callback. Writes
    ``metrics.json``, ``predictions.jsonl``, ``report.md`` and ``metrics.png`` into ``out``.
    """
    from langchain_ragr1.agent import RagR1Agent
    from langchain_ragr1.config import config_for
    from langchain_ragr1.data.loaders import load_qa
    from langchain_ragr1.policies.factory import BACKENDS, ModePolicies
    from langchain_ragr1.policies.sampling import Sampling
    from langchain_ragr1.report import write_report
    from langchain_ragr1.retrievers.factory import make_retriever

    modes = check_modes(modes)
    decoding = Sampling(max_new_tokens=max_new_tokens, temperature=temperature,  # checked before any index or model
                        repeat_stop_tokens=repeat_stop_tokens, repeat_stop_count=repeat_stop_count)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive number of questions, got {limit}.")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is unknown: use one of {', '.join(BACKENDS)}.")
    items = select_items(load_qa(data), limit, sampling, sample_seed)
    check_items(items)
    configs = {m: config_for(m, k=k, max_turns=max_turns) for m in modes}  # validate first
    search = make_retriever(retriever, k=k, store=store, corpus=corpus, url=url)
    settings: dict[str, Any] = {} if weights is None else {"weights": weights}
    if prompt_lookup_num_tokens is not None:
        settings["prompt_lookup_num_tokens"] = prompt_lookup_num_tokens
    policies = ModePolicies(model, sampling=decoding, backend=backend, **settings)
    try:  # every strategy's policy loads before the first episode: a bad model fails before any output
        agents = {m: RagR1Agent(policies(configs[m].mode), search, **configs[m].to_dict()) for m in modes}
        progress = progress_factory(len(items) * len(modes)) if progress_factory else None
        metrics = evaluate(items, modes, agents.__getitem__, out, batch_size=batch_size, progress=progress)
    finally:
        policies.close()
    settings = {"k": k, "max_turns": max_turns, "max_new_tokens": max_new_tokens, "temperature": temperature,
                "repeat_stop_tokens": decoding.repeat_stop_tokens, "repeat_stop_count": decoding.repeat_stop_count,
                "retriever": retriever, "model": str(model or "default"),
                "model_folders": {m: policies.folders[configs[m].mode].name for m in modes},
                "backend": backend, "weights": weights,
                "prompt_lookup_num_tokens": prompt_lookup_num_tokens, "limit": limit, "sampling": sampling,
                "sample_seed": sample_seed}
    write_report(metrics, out, data=data, settings=settings,
                 by_kind=write_kind_metrics(Path(out), items, modes))
    return metrics
