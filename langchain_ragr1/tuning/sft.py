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

The run's settings are TRL's own objects (:mod:`.args`): ``SFTScriptArguments`` (the dataset
folder, sample format, ...), ``trl.SFTConfig`` and ``trl.ModelConfig`` (LoRA through TRL's
``get_peft_config``), parsed and checked before any model is loaded. :func:`train_sft` trains
(LoRA or full), saves ``checkpoint-<step>`` folders, resumes from the last one found in
``output_dir``, writes ``loss.csv``/``loss.png`` and saves the final model or adapter with its
tokenizer in ``output_dir/final``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.extras import require
from langchain_ragr1.tuning.args import SFTScriptArguments
from langchain_ragr1.tuning.metrics import loss_rows as _loss_rows
from langchain_ragr1.tuning.metrics import write_loss_curve

logger = logging.getLogger(__name__)

MAKE_DATA_HINT = ("build it first with training/make_sft_data.py --out DIR (it writes DIR/dataset and "
                  "DIR/trajectories.jsonl)")
TRAJECTORIES_FILE = "trajectories.jsonl"


def check_dataset(script: SFTScriptArguments) -> Path:
    """Where the run's samples come from, or a :class:`ConfigError` saying how to make them.

    ``trajectory``: the ``trajectories.jsonl`` beside ``dataset`` (the ``--out`` folder of
    ``make_sft_data.py``, its ``dataset/`` subfolder, or the ``.jsonl`` file itself); else a
    saved dataset already in trajectory format. ``turns``: the saved dataset
    (``DIR/dataset``); else the ``trajectories.jsonl``, cut into turns at the start.
    """
    path = Path(script.dataset).expanduser()
    saved = _saved_dataset(path)
    trajectories = trajectories_file(path)
    if script.sample_format == "trajectory":
        if trajectories is not None:
            return trajectories
        if saved is not None and _saved_format(saved) == "trajectory":
            return saved
        raise ConfigError(
            f"SFT: sample_format trajectory needs {TRAJECTORIES_FILE} (the kept trajectories); "
            f"none in or beside dataset {str(path)!r}"
            + (" (its saved dataset holds turn samples: set sample_format turns to train on it)"
               if saved is not None else "") + f"; {MAKE_DATA_HINT}")
    if saved is not None:
        if _saved_format(saved) == "trajectory":
            raise ConfigError(f"SFT: the dataset {str(saved)!r} holds trajectory samples; set sample_format trajectory")
        return saved
    if trajectories is not None:
        return trajectories
    raise ConfigError(f"SFT: dataset {str(path)!r} is neither a saved dataset nor holds "
                      f"{TRAJECTORIES_FILE}; {MAKE_DATA_HINT}")


def _saved_dataset(path: Path) -> Path | None:
    """The saved ``datasets`` folder at ``path`` or at ``path/dataset`` (make_sft_data's --out)."""
    for folder in (path / "dataset", path):
        if (folder / "dataset_info.json").is_file():
            return folder
    return None


def trajectories_file(path: Path) -> Path | None:
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


def check_sft(parsed: tuple[Any, ...]) -> None:
    """What crosses the parsed dataclasses of an SFT run (nothing loads): the dataset is used as it
    is, pre-tokenised with its own label mask, so TRL's dataset preparation and packing stay off."""
    script, args, model_args = parsed
    if script.lora_layers and not model_args.use_peft:
        raise ConfigError("SFT: lora_layers chooses the layers LoRA adapts: set use_peft: true, or lora_layers: 0")
    fast = script.lm_head_on_labels or script.cache_frozen_layers
    if fast and (args.loss_type != "nll" or args.label_smoothing_factor):
        raise ConfigError("SFT: lm_head_on_labels/cache_frozen_layers compute the plain token cross-entropy: set "
                          "loss_type: nll and label_smoothing_factor: 0, or turn both keys off")
    if args.packing:
        raise ConfigError("SFT: packing must stay false: samples are trained one per row with their label mask")
    if not (args.dataset_kwargs or {}).get("skip_prepare_dataset"):
        raise ConfigError("SFT: dataset_kwargs must keep skip_prepare_dataset: true (the dataset is pre-tokenised "
                          "with its label mask)")


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


def load_sft_dataset(script: SFTScriptArguments, args: Any, tokenizer: Any, source: Path
                     ) -> tuple[Any, dict[str, Any]]:
    """The training dataset of a run (``input_ids``, ``labels``) and its counts.

    Samples of ``script.sample_format`` from ``source`` (:func:`check_dataset`): a
    ``trajectories.jsonl`` is cut (:func:`~langchain_ragr1.tuning.sft_data.to_samples`) and
    tokenised from the segments' ids; a saved dataset is used as it is. Samples longer than
    ``args.max_length`` are dropped, never cut; then ``max_samples`` takes a seeded subset of the
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

    trajectories = None
    built: dict[str, Any] = {}
    if source.suffix == ".jsonl":
        trajectories = read_jsonl(source)
        dataset = build_sft_dataset(to_samples(trajectories, script.sample_format), tokenizer,
                                    args.max_length, report=built)
    else:
        dataset = load_from_disk(str(source))
        missing = {"input_ids", "labels"} - set(dataset.column_names)
        if missing:
            raise ConfigError(f"SFT dataset {str(source)!r} lacks {sorted(missing)}; {MAKE_DATA_HINT}")
        total = len(dataset)
        too_long = sum(1 for n in dataset["input_ids"] if len(n) > args.max_length)
        if too_long:
            dataset = dataset.filter(lambda row: len(row["input_ids"]) <= args.max_length)
            logger.warning("Dropped %d samples longer than max_length=%d.", too_long, args.max_length)
        if len(dataset) == 0:
            raise ConfigError(f"SFT dataset {str(source)!r} has no sample of at most {args.max_length} tokens")
        built = {"format": script.sample_format, "samples": total, "kept": len(dataset),
                 "dropped_too_long": too_long, "max_length": args.max_length}
        beside = trajectories_file(source)
        if beside is not None:
            trajectories = read_jsonl(beside)
    if script.max_samples and script.max_samples < len(dataset):
        dataset = dataset.shuffle(seed=args.seed).select(range(script.max_samples))
    train = _dataset_counts(dataset)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    train["optimizer_steps_per_epoch"] = math.ceil(len(dataset) / per_step)
    counts: dict[str, Any] = {"sample_format": script.sample_format, "source": str(source),
                              "built": built, "train": train}
    if trajectories is not None:
        counts["accounting"] = token_accounting(trajectories, tokenizer, args.max_length)
        if script.sample_format == "trajectory" and "id" in dataset.column_names:
            by_id = {trajectory_key(t): t for t in trajectories}
            chosen = [by_id[i] for i in dataset["id"] if i in by_id]
            if len(by_id) == len(trajectories) and len(chosen) == len(dataset):
                counts["accounting_train"] = token_accounting(chosen, tokenizer, args.max_length)
    keep = ["input_ids", "labels"]
    return dataset.select_columns(keep), counts


def run_control_callback(script: SFTScriptArguments):
    """A ``TrainerCallback`` that ends the run early, saving a checkpoint, after the optimizer step
    at which ``max_train_seconds`` of training have passed, at which the epoch count reaches the next
    multiple of ``pause_every_epochs`` (a campaign evaluates it, then resumes), or that follows a
    SIGTERM (the run was asked to stop: the step finishes and is saved, nothing is lost). It also
    saves every ``save_every_seconds`` of training. ``.stopped`` says why it stopped (None if it
    did not)."""
    import signal
    import threading
    import time

    from transformers import TrainerCallback

    class RunControl(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.last_save = time.monotonic()
            self.next_pause: float | None = None
            self.stopped: str | None = None
            self.signalled = False
            self.previous_handler: Any = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_save = time.monotonic()
            if script.pause_every_epochs:
                every = script.pause_every_epochs
                self.next_pause = (math.floor(state.epoch / every + 1e-6) + 1) * every
            if threading.current_thread() is threading.main_thread():
                self.previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

        def on_train_end(self, args, state, control, **kwargs):
            if self.previous_handler is not None:
                signal.signal(signal.SIGTERM, self.previous_handler)
                self.previous_handler = None

        def _on_sigterm(self, signum, frame):
            logger.warning("SIGTERM: stopping after this optimizer step, with a checkpoint.")
            self.signalled = True

        def _stop(self, control, why: str, step: int):
            logger.warning("Stopping at step %d (%s); saving a checkpoint.", step, why)
            self.stopped = why
            control.should_training_stop = True
            control.should_save = True

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            if self.signalled:
                self._stop(control, "sigterm", state.global_step)
            elif script.max_train_seconds and now - self.start >= script.max_train_seconds:
                self._stop(control, "time_budget", state.global_step)
            elif self.next_pause is not None and state.epoch >= self.next_pause - 1e-6:
                self._stop(control, "pause", state.global_step)
            elif script.save_every_seconds and now - self.last_save >= script.save_every_seconds:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()
            return control

    return RunControl()


def load_model(model_args: Any, default: str, mode: str = "multi") -> tuple[str, Any, Any]:
    """``(path, model, tokenizer)`` as TRL's example scripts load them from a ``trl.ModelConfig``
    (dtype, revision, attention implementation, quantisation); ``model_name_or_path`` may be one of
    :data:`langchain_ragr1.models.MODEL_ALIASES` (null: ``default``); ``"default"`` is the trained
    policy of agent ``mode``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_ragr1.models import resolve_model_path

    trl = require("trl", "training")
    path = str(resolve_model_path(model_args.model_name_or_path or default, mode=mode))
    quantization = trl.get_quantization_config(model_args)
    kwargs = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
              "dtype": model_args.dtype, "trust_remote_code": False}
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map=trl.get_kbit_device_map())
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return path, AutoModelForCausalLM.from_pretrained(path, **kwargs), tokenizer


def attach_frozen_cache(trainer: Any, dataset: Any, model_path: str, lora_layers: int, output_dir: Path
                        ) -> dict[str, Any]:
    """Build (or reuse) the cache of the layers below the top ``lora_layers`` for ``dataset``, under the
    trainer's own autocast, then drop those layers from the model; returns what the summary reports."""
    from langchain_ragr1.tuning.fast_sft import FrozenLayerCache, decoder_layers, drop_frozen_layers, top_layers

    model = trainer.model
    first = top_layers(model, lora_layers)[0]
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    signature = {"model": model_path, "config": config.to_json_string(use_diff=False),
                 "n_layers": len(decoder_layers(model)), "bf16": bool(trainer.args.bf16),
                 "fp16": bool(trainer.args.fp16), "dtype": str(next(model.parameters()).dtype)}
    start, cpu_start = time.monotonic(), time.process_time()
    with trainer.accelerator.main_process_first():  # several processes: the first builds, the others reuse
        cache, built = FrozenLayerCache.build(model, dataset["input_ids"], first, output_dir / "frozen_cache",
                                              signature=signature, autocast=trainer.accelerator.autocast)
    seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    drop_frozen_layers(model, first)
    trainer.frozen_cache = cache
    logger.info("Frozen layers 0-%d %s in %.1f s (%s)", first - 1, "cached" if built else "from the cache",
                seconds, cache.folder)
    return {"first_trained_layer": first, "built": built, "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2), "folder": str(cache.folder),
            "samples": len(cache.index)}


def train_sft(script: SFTScriptArguments, args: Any, model_args: Any, *, progress: bool = True,
              callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train from the parsed ``(SFTScriptArguments, trl.SFTConfig, trl.ModelConfig)``; returns
    ``{global_step, resumed_from, final_dir, loss_rows, train_runtime, ...}`` (``data_counts``: what
    :func:`load_sft_dataset` counted, also in ``output_dir/data_counts.json``). ``callbacks``: more
    ``TrainerCallback``s. Under ``accelerate launch`` every process trains (DDP) and only the main
    one writes files (checkpoints, ``final/``, ``loss.csv``, ``data_counts.json``)."""
    check_sft((script, args, model_args))
    source = check_dataset(script)
    trl = require("trl", "training")
    require("datasets", "training")
    from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint

    # null: the untrained SmolLM2 ("base"); a folder or another alias of models.MODEL_ALIASES ("gemma3-270m")
    model_path, model, tokenizer = load_model(model_args, "base")
    dataset, data_counts = load_sft_dataset(script, args, tokenizer, source)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.should_save:  # the main process of a multi-process run (DDP ranks hold the same data counts)
        (output_dir / "data_counts.json").write_text(json.dumps(data_counts, indent=2) + "\n", encoding="utf-8")
    train = data_counts["train"]
    logger.info("SFT data (%s): %d samples, %d tokens and %d labelled tokens per epoch, %d optimizer steps per epoch",
                script.sample_format, train["samples"], train["tokens"], train["labelled_tokens"],
                train["optimizer_steps_per_epoch"])
    run_control = run_control_callback(script)
    peft_config = trl.get_peft_config(model_args)
    if script.lora_layers:
        from langchain_ragr1.tuning.fast_sft import top_layers

        peft_config.layers_to_transform = top_layers(model, script.lora_layers)
    fast = script.lm_head_on_labels or script.cache_frozen_layers
    trainer_class = trl.SFTTrainer
    if fast:
        from langchain_ragr1.tuning.fast_sft import fast_trainer_class

        trainer_class = fast_trainer_class(trl.SFTTrainer)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config, callbacks=[run_control, *callbacks])
    cache_info = None
    if script.cache_frozen_layers:
        cache_info = attach_frozen_cache(trainer, dataset, model_path, script.lora_layers, output_dir)
    last = args.resume_from_checkpoint or last_complete_checkpoint(output_dir)
    if last:
        logger.warning("Resuming from %s", last)
    cpu_start = time.process_time()
    result = trainer.train(resume_from_checkpoint=last)
    train_cpu_seconds = time.process_time() - cpu_start
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))  # the Trainer saves on the main process only
    rows = _loss_rows(trainer.state.log_history)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final_dir))
        write_loss_curve(trainer.state.log_history, output_dir)
    summary = {
        "global_step": trainer.state.global_step,
        "resumed_from": last,
        "final_dir": str(final_dir),
        "model": model_path,
        "lora": model_args.use_peft,
        "sample_format": script.sample_format,
        "samples": len(dataset),
        "tokens_per_epoch": train["tokens"],
        "labelled_tokens_per_epoch": train["labelled_tokens"],
        "data_counts": data_counts,
        "train_runtime": result.metrics.get("train_runtime"),
        "train_cpu_seconds": round(train_cpu_seconds, 2),
        "frozen_cache": cache_info,
        "stopped_by_time_budget": run_control.stopped == "time_budget",
        "stopped": run_control.stopped,
        "train_loss": result.metrics.get("train_loss"),
        "loss_rows": rows,
    }
    finite = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    if rows and len(finite) < len(rows):
        logger.warning("Non-finite loss in %d logged steps.", len(rows) - len(finite))
    return summary
