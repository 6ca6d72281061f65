"""``report.md`` with a side-by-side table of modes and a PNG plot of their metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

REPORT_FILE = "report.md"
PLOT_FILE = "metrics.png"

_COLUMNS = (
    ("em", "EM", "{:.3f}"), ("f1", "F1", "{:.3f}"), ("avg_turns", "turns", "{:.2f}"),
    ("avg_queries", "queries/turn", "{:.2f}"), ("format_ok", "format ok", "{:.1%}"),
    ("avg_generated_tokens", "gen. tokens", "{:.0f}"), ("repetition_stops", "loops stopped", "{}"),
    ("avg_seconds", "avg s", "{:.2f}"),
    ("p95_seconds", "p95 s", "{:.2f}"), ("questions_per_min", "q/min", "{:.2f}"), ("n", "n", "{}"), ("errors", "errors", "{}"),
)


def error_note(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A line per mode with errored questions: how many, EM without them, and how to redo them."""
    lines = []
    for mode, values in metrics.items():
        errors = values.get("errors") or 0
        if errors:
            n, rest = values.get("n", errors), values.get("em_without_errors")
            counted = f"all {n}" if errors >= n else f"{errors} of {n}"
            others = "" if rest is None else f"; EM over the other {n - errors}: {rest:.3f}"
            lines.append(f"{mode}: {counted} question(s) ended in an error and score 0 in EM/F1{others} (the "
                         f"errors are in predictions.jsonl); rerun the same command to run them again.")
    return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table, one row per mode; below it, a note on questions that ended in an error."""
    lines = ["| mode | " + " | ".join(c[1] for c in _COLUMNS) + " |",
             "|---" * (len(_COLUMNS) + 1) + "|"]
    for mode, values in metrics.items():
        cells = ["-" if values.get(key) is None else fmt.format(values[key]) for key, _, fmt in _COLUMNS]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    note = error_note(metrics)
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def plot_metrics(metrics: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Bars of EM/F1, retrieval turns and seconds per question for each mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(metrics)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    xs = range(len(modes))
    width = 0.38
    axes[0].bar([x - width / 2 for x in xs], [metrics[m]["em"] for m in modes], width, label="EM")
    axes[0].bar([x + width / 2 for x in xs], [metrics[m]["f1"] for m in modes], width, label="F1")
    axes[0].set_ylim(0, 1)
    axes[0].legend()
    axes[0].set_title("answer quality")
    axes[1].bar(xs, [metrics[m]["avg_turns"] for m in modes], color="tab:green")
    axes[1].set_title("retrieval turns / question")
    axes[2].bar(xs, [metrics[m]["avg_seconds"] for m in modes], color="tab:red")
    axes[2].set_title("seconds / question")
    for axis in axes:
        axis.set_xticks(list(xs), modes)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def kind_table(by_kind: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A Markdown table of EM, retrieval turns and queries per turn for each mode and question kind."""
    lines = ["| mode | kind | EM | turns | queries/turn | format ok | n | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, kinds in by_kind.items():
        for kind, v in kinds.items():
            if v.get("n"):
                lines.append(f"| {mode} | {kind} | {v['em']:.3f} | {v['avg_turns']:.2f} | "
                             f"{v['avg_queries']:.2f} | {v['format_ok']:.1%} | {v['n']} | {v.get('errors', 0)} |")
    return "\n".join(lines)


def write_report(metrics: Mapping[str, Mapping[str, Any]], out: str | Path, *, data: str = "",
                 settings: Mapping[str, Any] | None = None,
                 by_kind: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> Path:
    """Write ``out/report.md`` and ``out/metrics.png``; returns the report's path.

    ``by_kind`` (``{mode: {question kind: metrics}}``) adds a per-kind table."""
    out = Path(out)
    plot_metrics(metrics, out / PLOT_FILE)
    lines = ["# RAG-R1 evaluation", ""]
    if data:
        lines.append(f"Data: `{data}`")
    if settings:
        lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += ["", metrics_table(metrics), "",
              "EM/F1 score the model's `<answer>` only; turns = retrieval turns; queries/turn over search "
              "turns; format ok = model turns that parsed as a valid action; seconds = episode wall time "
              "inside concurrent batches; errors = questions whose episode ended in an error (they score 0 "
              "and run again when the same command is rerun).", ""]
    recall = {m: v for m, v in metrics.items() if v.get("evidence_recall") is not None}
    if recall:
        lines += ["Retrieval of the gold evidence articles (generated sets list them):", "",
                  "| mode | evidence recall | all evidence found | EM when found | EM when missed |",
                  "|---|---|---|---|---|"]
        fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        for mode, v in recall.items():
            lines.append(f"| {mode} | {fmt(v['evidence_recall'])} | {fmt(v['all_evidence_found'])} | "
                         f"{fmt(v['em_evidence_found'])} | {fmt(v['em_evidence_missed'])} |")
        lines.append("")
    if by_kind and any(by_kind.values()):
        lines += ["By question kind:", "", kind_table(by_kind), ""]
    lines += [f"![metrics]({PLOT_FILE})", ""]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
