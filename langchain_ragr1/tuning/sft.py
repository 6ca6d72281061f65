"""Stage 1 SFT run: TRL's ``SFTTrainer`` on a pre-tokenised dataset of :mod:`.sft_data`.

``sample_format`` chooses the samples: ``trajectory`` (one sequence per kept trajectory,
labels on all its valid model turns; built at the start of the run from the
``trajectories.jsonl`` that ``make_sft_data.py`` writes beside ``dataset/``) or ``turns``
(the paper's four-kind cut, one sample per turn; the saved ``dataset/`` as it is).
:func:`load_sft_dataset` makes either and writes what an epoch costs both ways
(:func:`~langchain_ragr1.tuning.sft_data.token_accounting`) to ``output_dir/data_counts.json``.

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

:class:`~.sft_config.SFTRunConfig` (:mod:`.sft_config`) is loaded from YAML and validated
before any model is loaded; its TRL pass-through reaches the ``SFTConfig`` that :func:`sft_args`
builds. :func:`train_sft` trains (LoRA or full), saves
``checkpoint-<step>`` folders, resumes from the last one found in ``output_dir``, writes
``loss.csv``/``loss.png`` and saves the final model or adapter with its tokenizer in
``output_dir/final``.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from langchain_ragr1.extras import require
from langchain_ragr1.tuning.metrics import write_loss_curve
from langchain_ragr1.tuning.run_config import ConfigError, build_trl_config, uses_cpu
from langchain_ragr1.tuning.sft_config import (
    LABEL,
    MAKE_DATA_HINT,
    TRL_CLASS,
    SFTRunConfig,
    trajectories_file,
)

logger = logging.getLogger(__name__)


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
    ``trajectories.jsonl`` is cut (:func:`~langchain_ragr1.tuning.sft_data.to_samples`) and
    tokenised from the segments' ids; a saved dataset is used as it is. Samples longer than
    ``max_length`` are dropped, never cut; then ``max_samples`` takes a seeded subset of the
    samples. The counts (``data_counts.json``): ``sample_format``, ``source``, ``built`` (what
    was dropped), ``train`` (samples, tokens and labelled tokens of one epoch of the subset,
    ``optimizer_steps_per_epoch``) and, where the trajectories are known, ``accounting``: an
    epoch of all trajectories both ways (:func:`~langchain_ragr1.tuning.sft_data.token_accounting`),
    and ``accounting_train`` for the trajectories a ``trajectory`` subset took.
    """
    load_from_disk = require("datasets", "training").load_from_disk

    from langchain_ragr1.tuning.sft_data import (
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
        beside = trajectories_file(source)
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
            self.start: float | None = None
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

    SFTTrainer = require("trl", "training").SFTTrainer
    require("datasets", "training")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.models import resolve_model_path
    from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint

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
