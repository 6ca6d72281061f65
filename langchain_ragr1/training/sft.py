"""Stage 1 SFT run: TRL's ``SFTTrainer`` on a pre-tokenised dataset of :mod:`.sft_data`.

``sample_format`` chooses the samples: ``trajectory`` (one sequence per kept trajectory,
labels on all its valid model turns; built at the start of the run from the
``trajectories.jsonl`` that ``make_sft_data.py`` writes beside ``dataset/``) or ``turns``
(the paper's four-kind cut, one sample per turn; the saved ``dataset/`` as it is).
:func:`load_sft_dataset` makes either and writes what an epoch costs both ways
(:func:`~langchain_ragr1.training.sft_data.token_accounting`) to ``output_dir/data_counts.json``.

The dataset already carries ``input_ids`` and ``labels`` (-100 everywhere except the target
turn or turns), so TRL's dataset preparation is skipped (``skip_prepare_dataset``) and its
``DataCollatorForLanguageModeling`` pads ``input_ids`` with the pad id and ``labels`` with
-100, using the labels as they are (no ``completion_only_loss``/``assistant_only_loss``
re-masking: several labelled spans per sequence survive). pad == eos for SmolLM2 is harmless:
padded positions have attention 0 and label -100, and no EOS is a target.

Loss weighting (TRL 1.16 ``SFTTrainer.compute_loss`` under transformers 5 ``Trainer``): the
loss of an optimizer step is the sum of the per-token cross-entropies of every labelled token
in the step divided by ``num_items_in_batch``, the number of labelled tokens in all of the
step's micro-batches (``per_device_train_batch_size`` x ``gradient_accumulation_steps``
samples). It is a mean per labelled token in both formats, never a mean of per-sample means:
each labelled token gets the same per-token loss either way (``tests/test_sft_data.py``) and
weighs the same within its step. What changes with ``trajectory`` is the grouping: a step of
N trajectory samples holds every turn of N trajectories (about turns-per-trajectory times as
many labelled tokens as a step of N turn samples), so an epoch has proportionally fewer, larger
optimizer steps (fewer updates at a given learning rate and schedule), while one epoch still
trains each labelled token once and processes each shared prefix once instead of once per turn.

:class:`SFTRunConfig` is loaded from YAML and validated before any model is loaded
(:class:`ConfigError` names the bad key). Besides its own keys a config takes any field of
``trl.SFTConfig`` at the top level (``report_to: tensorboard``, ``optim``, ...), kept in
``trl_args`` and passed to the ``SFTConfig`` that :func:`sft_args` builds. :func:`train_sft`
trains (LoRA or full), saves
``checkpoint-<step>`` folders, resumes from the last one found in ``output_dir``, writes
``loss.csv``/``loss.png`` and saves the final model or adapter with its tokenizer in
``output_dir/final``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from langchain_ragr1.extras import require
from langchain_ragr1.models import export_adapter  # noqa: F401  (lives beside merge_adapter; imported here as before)
from langchain_ragr1.training.run_config import (
    ConfigError,
    Device,
    LoraSettings,
    NonEmptyStr,
    PositiveInt,
    PositiveSeconds,
    UnitOpen,
    UnitRightOpen,
    build_trl_config,
    check_declared,
    check_trl_args,
    coerce_floats,
    lora_from,
    read_yaml,
    resolve_config,
    split_trl_keys,
    uses_cpu,
)

logger = logging.getLogger(__name__)

MAKE_DATA_HINT = ("build it first with training/make_sft_data.py --out DIR (it writes DIR/dataset and "
                  "DIR/trajectories.jsonl)")
#: The sample formats a config may choose (see :mod:`.sft_data`).
SampleFormat = Literal["trajectory", "turns"]
SAMPLE_FORMATS: tuple[str, ...] = get_args(SampleFormat)
TRAJECTORIES_FILE = "trajectories.jsonl"
LABEL = "SFT"
TRL_CLASS = "SFTConfig"
#: TRL fields that this config sets from one of its own keys: TRL name -> ours. Either may be
#: given, not both (``warmup_steps`` also takes a step count; ``warmup_ratio`` is a ratio).
TRL_ALIASES = {"warmup_steps": "warmup_ratio", "activation_checkpointing": "gradient_checkpointing"}
#: TRL fields the run sets itself: TRL name -> what to do instead.
TRL_MANAGED = {
    "use_cpu": "set device: cpu, cuda or auto",
    "dataset_kwargs": "the dataset is pre-tokenised with its label mask, so TRL's dataset preparation stays off",
    "packing": "samples are trained one per row with their label mask (no packing)",
}


@dataclass
class SFTRunConfig:
    """One SFT run. ``model: null`` means the untrained bundled SmolLM2 (converted on first use);
    ``model: gemma3-270m`` the untrained Gemma-3-270M (the ``gemma`` extra), else a model folder."""

    dataset: NonEmptyStr
    output_dir: NonEmptyStr
    model: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: UnitOpen = 2e-4
    num_train_epochs: Annotated[float, Field(gt=0)] = 2.0
    max_steps: int = -1  # -1: run num_train_epochs
    per_device_train_batch_size: PositiveInt = 1
    gradient_accumulation_steps: PositiveInt = 8
    max_length: PositiveInt = 2048
    max_samples: PositiveInt | None = None  # a seeded random subset of this many samples of sample_format (None: all)
    #: trajectory: one sequence per trajectory, labels on all its valid turns (built from
    #: trajectories.jsonl); turns: the paper's four-kind cut, one sample per turn (the saved dataset)
    sample_format: SampleFormat = "trajectory"
    save_steps: PositiveInt = 50
    logging_steps: PositiveInt = 1
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    warmup_ratio: UnitRightOpen = 0.0
    lr_scheduler_type: str = "linear"
    #: stop (and save) after the optimizer step that passes this many seconds of training in
    #: this process; null: no limit. For comparisons at equal wall-clock, and runs that must fit.
    max_train_seconds: PositiveSeconds | None = None
    device: Device = "auto"
    #: other trl.SFTConfig fields, verbatim (report_to, optim, weight_decay, ...); in YAML they sit
    #: at the top level beside the keys above
    trl_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "SFTRunConfig":
        """Check values (not paths to the model); raises :class:`ConfigError` naming the key.
        Each field declares its type and range; the one rule beyond a range is written out here."""
        check_declared(self, "SFT config: ")
        if self.max_steps < 1 and self.max_steps != -1:
            raise ConfigError(f"SFT config: max_steps must be an integer >= 1, or -1 for num_train_epochs; "
                              f"got {self.max_steps!r}")
        self.lora.validate(LABEL)
        check_trl_args(self.trl_args, OWN_KEYS, LABEL, TRL_MANAGED)
        return self

    def check_dataset(self) -> Path:
        """Where this run's samples come from, or a :class:`ConfigError` saying how to make them.

        ``trajectory``: the ``trajectories.jsonl`` beside ``dataset`` (the ``--out`` folder of
        ``make_sft_data.py``, its ``dataset/`` subfolder, or the ``.jsonl`` file itself); else a
        saved dataset already in trajectory format. ``turns``: the saved dataset
        (``DIR/dataset``); else the ``trajectories.jsonl``, cut into turns at the start.
        """
        path = Path(self.dataset).expanduser()
        saved = _saved_dataset(path)
        trajectories = _trajectories_file(path)
        if self.sample_format == "trajectory":
            if trajectories is not None:
                return trajectories
            if saved is not None and _saved_format(saved) == "trajectory":
                return saved
            raise ConfigError(
                f"SFT config: sample_format: trajectory needs {TRAJECTORIES_FILE} (the kept trajectories); "
                f"none in or beside {str(path)!r}"
                + (" (its saved dataset holds turn samples: set sample_format: turns to train on it)"
                   if saved is not None else "") + f"; {MAKE_DATA_HINT}")
        if saved is not None:
            if _saved_format(saved) == "trajectory":
                raise ConfigError(f"SFT config: the dataset {str(saved)!r} holds trajectory samples; "
                                  "set sample_format: trajectory")
            return saved
        if trajectories is not None:
            return trajectories
        raise ConfigError(f"SFT config: dataset {str(path)!r} is neither a saved dataset nor holds "
                          f"{TRAJECTORIES_FILE}; {MAKE_DATA_HINT}")

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML would write it: its keys and the TRL pass-through, flat."""
        data = asdict(self)
        trl_args = data.pop("trl_args")
        return {**data, **trl_args}


def _saved_dataset(path: Path) -> Path | None:
    """The saved ``datasets`` folder at ``path`` or at ``path/dataset`` (make_sft_data's --out)."""
    for folder in (path / "dataset", path):
        if (folder / "dataset_info.json").is_file():
            return folder
    return None


def _trajectories_file(path: Path) -> Path | None:
    """``path`` itself (a .jsonl file), ``path/trajectories.jsonl``, or the one beside a saved
    ``dataset/`` folder."""
    if path.is_file() and path.suffix == ".jsonl":
        return path
    candidates = [path / TRAJECTORIES_FILE]
    if (path / "dataset_info.json").is_file():
        candidates.append(path.parent / TRAJECTORIES_FILE)
    return next((c for c in candidates if c.is_file()), None)


def _saved_format(folder: Path) -> str:
    """``turns`` or ``trajectory``: a saved dataset of turn samples has a ``kind`` column."""
    try:
        features = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8")).get("features", {})
    except (OSError, ValueError):
        return "turns"
    return "trajectory" if "kinds" in features and "kind" not in features else "turns"


#: The YAML keys of this config (``trl_args`` is where the others go, not a key).
OWN_KEYS = frozenset(f.name for f in fields(SFTRunConfig)) - {"trl_args"}


def config_from_dict(data: dict[str, Any], /, *, source: str | None = None, **overrides: Any) -> SFTRunConfig:
    """Build and validate a config; ``overrides`` that are None are ignored. A key that is not
    ours but a field of ``trl.SFTConfig`` goes to ``trl_args``; ``source`` (the file) is named
    in key errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"SFT config: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    trl_args = split_trl_keys(data, OWN_KEYS, TRL_CLASS, LABEL, source=source,
                              aliases=TRL_ALIASES, managed=TRL_MANAGED)
    for key in ("dataset", "output_dir"):
        if not data.get(key):
            raise ConfigError(f"SFT config: {key} is required"
                              + (f"; {MAKE_DATA_HINT}" if key == "dataset" else ""))
    lora = lora_from(data.pop("lora", None), LoraSettings(), LABEL)
    coerce_floats(data, ("learning_rate", "warmup_ratio", "num_train_epochs"), LABEL)
    return SFTRunConfig(lora=lora, trl_args=trl_args, **data).validate()


def load_config(path: str | Path, **overrides: Any) -> SFTRunConfig:
    """Read a YAML config (a path, or a packaged config's name such as ``sft_default``) and
    validate it; no model or data is loaded."""
    path = resolve_config(path, LABEL)
    return config_from_dict(read_yaml(path, LABEL), source=str(path), **overrides)


#: Our keys that reach SFTConfig under the same name.
SAME_NAME = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps", "max_length", "save_steps", "logging_steps", "seed", "bf16",
             "lr_scheduler_type")


def sft_args(config: SFTRunConfig, *, use_cpu: bool | None = None, progress: bool = True) -> Any:
    """The ``trl.SFTConfig`` of a run: our keys, then the TRL pass-through (``trl_args``).

    ``use_cpu`` None: from ``config.device``. A value TRL rejects raises :class:`ConfigError`
    naming the key. Nothing is loaded."""
    if use_cpu is None:
        use_cpu = uses_cpu(config.device)
    defaults = {  # ours, that a config may change (report_to: tensorboard, ...)
        "save_strategy": "steps",
        "logging_first_step": True,
        "report_to": [],
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
    }
    ours = {
        "output_dir": str(config.output_dir),
        **{key: getattr(config, key) for key in SAME_NAME},
        "use_cpu": use_cpu,
        "activation_checkpointing": config.gradient_checkpointing,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "packing": False,
    }
    return build_trl_config(TRL_CLASS, {**defaults, **ours, **config.trl_args},
                            user_keys=[*config.trl_args, *SAME_NAME, "warmup_steps", "activation_checkpointing"],
                            label=LABEL)


def write_loss_curve(log_history: list[dict[str, Any]], output_dir: str | Path) -> list[dict[str, float]]:
    """``loss.csv`` (step, epoch, loss, learning_rate, grad_norm) and ``loss.png``; returns the rows."""
    rows = [
        {"step": e["step"], "epoch": e.get("epoch", float("nan")), "loss": e["loss"],
         "learning_rate": e.get("learning_rate", float("nan")), "grad_norm": e.get("grad_norm", float("nan"))}
        for e in log_history if "loss" in e and "step" in e
    ]
    out = Path(output_dir)
    with (out / "loss.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "epoch", "loss", "learning_rate", "grad_norm"])
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="o" if len(rows) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (target-turn tokens)")
    ax.set_title("Stage 1 SFT")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return rows


def _dataset_counts(dataset: Any) -> dict[str, Any]:
    """``samples``, ``tokens``, ``labelled_tokens`` and ``kinds`` of a tokenised dataset (one epoch)."""
    kinds = {k: 0 for k in (1, 2, 3, 4)}
    column = "kinds" if "kinds" in dataset.column_names else "kind" if "kind" in dataset.column_names else None
    if column:
        for value in dataset[column]:
            for kind in (value if isinstance(value, list) else [value]):
                kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "samples": len(dataset),
        "tokens": sum(len(ids) for ids in dataset["input_ids"]),
        "labelled_tokens": sum(sum(label != -100 for label in labels) for labels in dataset["labels"]),
        "kinds": kinds,
    }


def load_sft_dataset(config: SFTRunConfig, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The training dataset of a run (``input_ids``, ``labels``) and its counts.

    Samples of ``config.sample_format`` from :meth:`SFTRunConfig.check_dataset`'s source: a
    ``trajectories.jsonl`` is cut (:func:`~langchain_ragr1.training.sft_data.to_samples`) and
    tokenised from the segments' ids; a saved dataset is used as it is. Samples longer than
    ``max_length`` are dropped, never cut; then ``max_samples`` takes a seeded subset of the
    samples. The counts (``data_counts.json``): ``sample_format``, ``source``, ``built`` (what
    was dropped), ``train`` (samples, tokens and labelled tokens of one epoch of the subset,
    ``optimizer_steps_per_epoch``) and, where the trajectories are known, ``accounting``: an
    epoch of all trajectories both ways (:func:`~langchain_ragr1.training.sft_data.token_accounting`),
    and ``accounting_train`` for the trajectories a ``trajectory`` subset took.
    """
    require("datasets", "training")
    from datasets import load_from_disk

    from langchain_ragr1.training.sft_data import (
        build_sft_dataset,
        read_jsonl,
        to_samples,
        token_accounting,
        trajectory_key,
    )

    source = config.check_dataset()
    trajectories = None
    built: dict[str, Any] = {}
    if source.suffix == ".jsonl":
        trajectories = read_jsonl(source)
        dataset = build_sft_dataset(to_samples(trajectories, config.sample_format), tokenizer,
                                    config.max_length, report=built)
    else:
        dataset = load_from_disk(str(source))
        missing = {"input_ids", "labels"} - set(dataset.column_names)
        if missing:
            raise ConfigError(f"SFT dataset {str(source)!r} lacks {sorted(missing)}; {MAKE_DATA_HINT}")
        total = len(dataset)
        too_long = sum(1 for n in dataset["input_ids"] if len(n) > config.max_length)
        if too_long:
            dataset = dataset.filter(lambda row: len(row["input_ids"]) <= config.max_length)
            logger.warning("Dropped %d samples longer than max_length=%d.", too_long, config.max_length)
        if len(dataset) == 0:
            raise ConfigError(f"SFT dataset {str(source)!r} has no sample of at most {config.max_length} tokens")
        built = {"format": config.sample_format, "samples": total, "kept": len(dataset),
                 "dropped_too_long": too_long, "max_length": config.max_length}
        beside = _trajectories_file(source)
        if beside is not None:
            trajectories = read_jsonl(beside)
    if config.max_samples and config.max_samples < len(dataset):
        dataset = dataset.shuffle(seed=config.seed).select(range(config.max_samples))
    train = _dataset_counts(dataset)
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    train["optimizer_steps_per_epoch"] = math.ceil(len(dataset) / per_step)
    counts: dict[str, Any] = {"sample_format": config.sample_format, "source": str(source),
                              "built": built, "train": train}
    if trajectories is not None:
        counts["accounting"] = token_accounting(trajectories, tokenizer, config.max_length)
        if config.sample_format == "trajectory" and "id" in dataset.column_names:
            by_id = {trajectory_key(t): t for t in trajectories}
            chosen = [by_id[i] for i in dataset["id"] if i in by_id]
            if len(by_id) == len(trajectories) and len(chosen) == len(dataset):
                counts["accounting_train"] = token_accounting(chosen, tokenizer, config.max_length)
    keep = ["input_ids", "labels"]
    return dataset.select_columns(keep), counts


def time_budget_callback(seconds: float):
    """A ``TrainerCallback`` that ends training (saving a checkpoint) after the optimizer step
    at which ``seconds`` of training have passed; ``.stopped`` says whether it did."""
    import time

    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = None
            self.stopped = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if self.start is not None and time.monotonic() - self.start >= seconds:
                logger.warning("Time budget of %g s reached at step %d: stopping and saving.",
                               seconds, state.global_step)
                self.stopped = True
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def train_sft(config: SFTRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train; returns ``{global_step, resumed_from, final_dir, loss_rows, train_runtime, ...}``
    (``data_counts``: what :func:`load_sft_dataset` counted, also in ``output_dir/data_counts.json``)."""
    config.validate()
    config.check_dataset()

    import torch

    require("trl", "training")
    require("datasets", "training")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.training.checkpoints import last_complete_checkpoint

    use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    output_dir = Path(config.output_dir)
    args = sft_args(config, use_cpu=use_cpu, progress=progress)  # TRL's own checks, before anything loads
    # null: the untrained SmolLM2 ("base"); a folder or another alias of models.MODEL_ALIASES ("gemma3-270m")
    model_path = resolve_model_path(config.model or "base", show_progress=progress)

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset, data_counts = load_sft_dataset(config, tokenizer)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "data_counts.json").write_text(json.dumps(data_counts, indent=2) + "\n", encoding="utf-8")
    train = data_counts["train"]
    logger.info("SFT data (%s): %d samples, %d tokens and %d labelled tokens per epoch, %d optimizer steps per epoch",
                config.sample_format, train["samples"], train["tokens"], train["labelled_tokens"],
                train["optimizer_steps_per_epoch"])

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)

    peft_config = config.lora.to_peft()

    callbacks = [time_budget_callback(config.max_train_seconds)] if config.max_train_seconds else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    last = last_complete_checkpoint(output_dir)
    if last:
        logger.warning("Resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    rows = write_loss_curve(trainer.state.log_history, output_dir)
    summary = {
        "global_step": trainer.state.global_step,
        "resumed_from": last,
        "final_dir": str(final_dir),
        "model": str(model_path),
        "lora": config.lora.enabled,
        "sample_format": config.sample_format,
        "samples": len(dataset),
        "tokens_per_epoch": train["tokens"],
        "labelled_tokens_per_epoch": train["labelled_tokens"],
        "data_counts": data_counts,
        "train_runtime": result.metrics.get("train_runtime"),
        "stopped_by_time_budget": bool(callbacks and callbacks[0].stopped),
        "train_loss": result.metrics.get("train_loss"),
        "loss_rows": rows,
    }
    finite = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    if rows and len(finite) < len(rows):
        logger.warning("Non-finite loss in %d logged steps.", len(rows) - len(finite))
    return summary
