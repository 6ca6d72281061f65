"""A training campaign that spans sessions: SFT in resumable segments, a dev check between them.

    python -m langchain_ragr1.tuning.campaign --config sft_campaign_mq            # start or resume
    python -m langchain_ragr1.tuning.campaign --config sft_campaign_mq --status   # the checks so far
    kill -TERM <pid>   # stop: the step in flight is saved, its checkpoint checked on dev, then exit

Each segment is one ``run_sft`` process (the same flags; TRL-style ``--config`` plus overrides)
with ``--pause_every_epochs`` (the check interval) and ``--save_every_seconds`` (a checkpoint
every ~10 minutes): it resumes from the last complete ``checkpoint-<step>`` in ``output_dir``
and stops, saving, at the next check point. Between segments the campaign merges that
checkpoint into its base model, evaluates it on a stratified slice of the dev set in the agent
mode its data trains (``--dev-mode``; by default the mode of the config's trajectories: multi for
``sft_campaign_mq``, single for ``sft_campaign_sq``) with ``ragr1 eval`` (training and
evaluation never share the cores), records the check in
``output_dir/campaign.json`` (and ``campaign.csv`` / ``campaign.png``: loss and dev EM against
training wall-clock) and exports the best checkpoint so far, float16, to ``output_dir/best``.
It ends when the epochs of the SFT config are done or when dev EM has not risen for
``--patience`` checks in a row. Everything it needs to go on is in ``output_dir``: rerun the
same command (in this session or the next) and it resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from langchain_ragr1.errors import ConfigError, RagR1Error
from langchain_ragr1.extras import require
from langchain_ragr1.paths import atomic_write_text
from langchain_ragr1.tuning.checkpoints import TRAINER_STATE, last_complete_checkpoint

logger = logging.getLogger(__name__)

STATE_FILE = "campaign.json"
CSV_COLUMNS = ("step", "epoch", "train_wall_s", "loss", "dev_em", "dev_f1", "format_ok", "turns", "why",
               "eval_s")


@dataclass
class Settings:
    """The campaign's own settings (the SFT run's are its ``run_sft`` flags)."""

    output_dir: Path
    epochs: float
    dev: str = "ragr1-dev"
    dev_limit: int = 24
    dev_mode: str = "multi"
    check_every_epochs: float = 1.0
    save_every_seconds: float = 600.0
    patience: int = 2
    max_new_tokens: int = 192
    max_turns: int = 4


def data_mode(source: Path) -> tuple[str, str]:
    """``(mode, why)``: the agent mode an SFT run's samples (``source``, as
    :func:`~langchain_ragr1.tuning.sft.check_dataset` finds it) train, the one the dev checks use:
    the mode every trajectory records when they all share one, else ``multi`` (the default's)."""
    if source.is_file():
        try:
            with source.open(encoding="utf-8") as handle:
                modes = {json.loads(line).get("mode", "multi") for line in handle if line.strip()}
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"campaign: {source} is not a JSONL file of trajectories ({exc}): rebuild it with "
                              "training/make_sft_data.py, or pass --dev-mode multi|single") from exc
    else:
        dataset = require("datasets", "training").load_from_disk(str(source))
        modes = set(dataset["mode"]) if "mode" in dataset.column_names else set()
    if len(modes) == 1 and modes <= {"multi", "single"}:
        return next(iter(modes)), f"the mode of every trajectory in {source}"
    return "multi", f"{source} holds {' and '.join(sorted(modes)) or 'no recorded'} mode(s): multi, the default"


def load_state(output_dir: Path) -> dict[str, Any]:
    path = output_dir / STATE_FILE
    if not path.is_file():
        return {"checks": [], "best": None, "done": None, "train_wall_s": 0.0}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); restore it from git or move it away to "
                          "start the campaign's record afresh (the checkpoints stay)") from exc


def save_state(output_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(output_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")  # a kill keeps the last record
    with (output_dir / "campaign.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(state["checks"])
    _plot(output_dir, state["checks"])


def _plot(output_dir: Path, checks: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not checks:
        return
    hours = [c["train_wall_s"] / 3600 for c in checks]
    fig, loss_ax = plt.subplots(figsize=(6, 3.5))
    loss_ax.plot(hours, [c["loss"] for c in checks], "o-", color="tab:blue", label="train loss (since last check)")
    loss_ax.set_xlabel("training wall-clock (h)")
    loss_ax.set_ylabel("loss", color="tab:blue")
    em_ax = loss_ax.twinx()
    em_ax.plot(hours, [c["dev_em"] for c in checks], "s-", color="tab:red", label="dev EM")
    em_ax.set_ylabel("dev EM", color="tab:red")
    fig.tight_layout()
    fig.savefig(output_dir / "campaign.png", dpi=100)
    plt.close(fig)


def checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))


def loss_since(trainer_state: dict[str, Any], after_step: int) -> float | None:
    """Mean logged training loss of the steps after ``after_step`` (None if none was logged)."""
    losses = [row["loss"] for row in trainer_state.get("log_history", [])
              if "loss" in row and row.get("step", 0) > after_step]
    return sum(losses) / len(losses) if losses else None


def no_rise(checks: Sequence[dict[str, Any]], patience: int) -> bool:
    """True when each of the last ``patience`` checks is no better than the best before them. The
    campaign passes its scheduled checks only: a "stop" check, taken wherever a session ended, is
    recorded (and may become the best) but does not count towards ``patience``."""
    if len(checks) <= patience:
        return False
    before = max(c["dev_em"] for c in checks[:-patience])
    return all(c["dev_em"] <= before for c in checks[-patience:])


class Campaign:
    """The loop; ``train`` runs one segment (returns when it stopped) and ``evaluate`` checks one
    checkpoint (returns ``ragr1 eval``'s metrics of the dev mode); both are subprocesses by default."""

    def __init__(self, settings: Settings, *, train: Callable[[], int], evaluate: Callable[[Path], dict[str, Any]],
                 export: Callable[[Path, Path], None]) -> None:
        self.settings = settings
        self.train = train
        self.evaluate = evaluate
        self.export = export
        self.stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True

    def run(self) -> dict[str, Any]:
        out = self.settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        state = load_state(out)
        while not state["done"]:
            if not self.stop_requested:
                start = time.monotonic()
                code = self.train()
                state["train_wall_s"] += time.monotonic() - start
                save_state(out, state)
                if code != 0:
                    raise RagR1Error(f"campaign: the training segment exited with code {code}; see "
                                     f"{out / 'train.log'} (rerun to resume from the last checkpoint)")
            checkpoint = last_complete_checkpoint(out)
            if checkpoint is None:
                break
            trainer_state = checkpoint_state(checkpoint)
            step = trainer_state["global_step"]
            finished = trainer_state.get("max_steps", 0) and step >= trainer_state["max_steps"]
            if not state["checks"] or state["checks"][-1]["step"] != step:
                why = "stop" if self.stop_requested and not finished else "final" if finished else "pause"
                self._check(state, Path(checkpoint), trainer_state, why)
            if finished or trainer_state.get("epoch", 0) >= self.settings.epochs - 1e-6:
                state["done"] = f"trained to epoch {trainer_state.get('epoch', 0):.2f}"
            elif no_rise([c for c in state["checks"] if c["why"] != "stop"], self.settings.patience):
                state["done"] = f"dev EM has not risen for {self.settings.patience} checks"
            save_state(out, state)
            if self.stop_requested:
                break
        if state["done"]:
            logger.warning("[campaign] done: %s; best %s", state["done"], state["best"])
        return state

    def _check(self, state: dict[str, Any], checkpoint: Path, trainer_state: dict[str, Any], why: str) -> None:
        previous = state["checks"][-1]["step"] if state["checks"] else 0
        start = time.monotonic()
        metrics = self.evaluate(checkpoint)
        check = {"step": trainer_state["global_step"], "epoch": round(trainer_state.get("epoch", 0.0), 4),
                 "train_wall_s": round(state["train_wall_s"], 1), "loss": loss_since(trainer_state, previous),
                 "dev_em": metrics["em"], "dev_f1": metrics.get("f1"), "format_ok": metrics.get("format_ok"),
                 "turns": metrics.get("retrieval_turns"), "why": why, "eval_s": round(time.monotonic() - start, 1),
                 "checkpoint": checkpoint.name}
        state["checks"].append(check)
        best = state["best"]
        if best is None or check["dev_em"] > best["dev_em"]:
            self.export(checkpoint, self.settings.output_dir / "best")
            state["best"] = {"step": check["step"], "epoch": check["epoch"], "dev_em": check["dev_em"],
                             "adapter": str(self.settings.output_dir / "best")}
        logger.warning("[campaign] check at step %d (epoch %.2f, %s): dev EM %.3f (best %.3f at step %d), "
                       "loss %s, %.1f h of training", check["step"], check["epoch"], why, check["dev_em"],
                       state["best"]["dev_em"], state["best"]["step"], check["loss"], check["train_wall_s"] / 3600)


# -- the default subprocesses ------------------------------------------------------------------

def _run(command: list[str], log: Path, on_start: Callable[[subprocess.Popen], None] | None = None) -> int:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        if on_start:
            on_start(proc)
        return proc.wait()


def subprocess_steps(settings: Settings, sft_argv: list[str], base: str
                     ) -> tuple[Callable[[], int], Callable[[Path], dict[str, Any]], Callable[[Path, Path], None],
                                Callable[[], None]]:
    """``(train, evaluate, export, forward_stop)`` as subprocesses logging to ``output_dir``."""
    out = settings.output_dir
    python = sys.executable
    running: dict[str, subprocess.Popen] = {}

    def train() -> int:
        command = [python, "-m", "langchain_ragr1.tuning.run_sft", *sft_argv,
                   "--pause_every_epochs", str(settings.check_every_epochs),
                   "--save_every_seconds", str(settings.save_every_seconds)]
        try:
            return _run(command, out / "train.log", lambda p: running.__setitem__("train", p))
        finally:
            running.pop("train", None)

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        merged = out / "eval-model"
        shutil.rmtree(merged, ignore_errors=True)  # never a stale merge left by a killed check
        code = _run([python, "-m", "langchain_ragr1.tuning.export_adapter", str(checkpoint), str(merged),
                     "--merge-into", base], out / "eval.log")
        if code != 0:
            raise RagR1Error(f"campaign: merging {checkpoint} failed (code {code}); see {out / 'eval.log'}")
        dev_out = out / "dev-checks" / checkpoint.name
        code = _run([python, "-m", "langchain_ragr1.cli", "eval", "--data", settings.dev, "--mode", settings.dev_mode,
                     "--limit", str(settings.dev_limit), "--sample", "stratified", "--max-new-tokens",
                     str(settings.max_new_tokens), "--max-turns", str(settings.max_turns), "--model", str(merged),
                     "--out", str(dev_out)], out / "eval.log")
        if code != 0:
            raise RagR1Error(f"campaign: the dev check of {checkpoint} failed (code {code}); see {out / 'eval.log'}")
        shutil.rmtree(merged, ignore_errors=True)
        return json.loads((dev_out / "metrics.json").read_text(encoding="utf-8"))[settings.dev_mode]

    def export(checkpoint: Path, dest: Path) -> None:
        code = _run([python, "-m", "langchain_ragr1.tuning.export_adapter", str(checkpoint), str(dest)],
                    out / "eval.log")
        if code != 0:
            raise RagR1Error(f"campaign: exporting {checkpoint} failed (code {code}); see {out / 'eval.log'}")

    def forward_stop() -> None:
        proc = running.get("train")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    return train, evaluate, export, forward_stop


def print_status(output_dir: Path) -> None:
    state = load_state(output_dir)
    print(f"campaign in {output_dir}: {len(state['checks'])} checks, "
          f"{state['train_wall_s'] / 3600:.2f} h of training, done: {state['done'] or 'no'}")
    for c in state["checks"]:
        loss = "-" if c["loss"] is None else f"{c['loss']:.3f}"
        print(f"  step {c['step']:>5}  epoch {c['epoch']:.2f}  {c['train_wall_s'] / 3600:5.2f} h  loss {loss}  "
              f"dev EM {c['dev_em']:.3f}  ({c['why']})")
    if state["best"]:
        print(f"best: step {state['best']['step']}, dev EM {state['best']['dev_em']:.3f} -> {state['best']['adapter']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Other flags go to run_sft (--config NAME_OR_FILE, --learning_rate, ...).")
    parser.add_argument("--dev", default="ragr1-dev", help="the dev set of the checks")
    parser.add_argument("--dev-limit", type=int, default=24, help="a stratified slice of this many dev questions")
    parser.add_argument("--dev-mode", default=None, choices=("multi", "single"),
                        help="the agent mode of the dev checks (default: the mode of the SFT data's trajectories "
                             "when they all share one, else multi)")
    parser.add_argument("--check-every-epochs", type=float, default=1.0, help="a dev check each this many epochs")
    parser.add_argument("--save-every-seconds", type=float, default=600.0, help="a checkpoint this often")
    parser.add_argument("--patience", type=int, default=2, help="end when dev EM has not risen for this many checks")
    parser.add_argument("--status", action="store_true", help="print the checks so far and exit")
    options, sft_argv = parser.parse_known_args(argv)
    from langchain_ragr1.logs import log_to_stderr
    from langchain_ragr1.tuning.run_sft import parse

    log_to_stderr(logging.INFO)
    try:
        script, args, model_args = parse(argv=sft_argv)
        if not model_args.use_peft:
            raise ConfigError("campaign: the SFT config must train a LoRA adapter (use_peft: true); the checks "
                              "merge each checkpoint's adapter into its base")
        for name in ("dev_limit", "patience"):
            if getattr(options, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        settings = Settings(Path(args.output_dir), args.num_train_epochs, options.dev, options.dev_limit,
                            options.dev_mode or "multi", options.check_every_epochs, options.save_every_seconds,
                            options.patience)
        if options.status:
            print_status(settings.output_dir)
            return 0
        if options.dev_mode is None:
            from langchain_ragr1.tuning.sft import check_dataset

            settings.dev_mode, why = data_mode(check_dataset(script))
            logger.warning("[campaign] dev checks in %s mode (%s; --dev-mode sets it)", settings.dev_mode, why)
        train, evaluate, export, forward_stop = subprocess_steps(settings, sft_argv,
                                                                 model_args.model_name_or_path or "base")
        campaign = Campaign(settings, train=train, evaluate=evaluate, export=export)

        def on_signal(signum: int, frame: Any) -> None:
            logger.warning("[campaign] stop requested: the training segment saves, then its checkpoint is checked")
            campaign.request_stop()
            forward_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        campaign.run()
    except RagR1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_status(settings.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
