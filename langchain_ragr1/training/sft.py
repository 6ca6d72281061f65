"""Stage 1 SFT run: TRL's ``SFTTrainer`` on the pre-tokenised dataset of :mod:`.sft_data`.

The dataset already carries ``input_ids`` and ``labels`` (-100 everywhere except the target
turn), so TRL's dataset preparation is skipped (``skip_prepare_dataset``) and its
``DataCollatorForLanguageModeling`` pads ``input_ids`` with the pad id and ``labels`` with
-100, using the labels as they are. pad == eos for SmolLM2 is harmless: padded positions have
attention 0 and label -100, and no EOS is a target.

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
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from langchain_ragr1.extras import require
from langchain_ragr1.training.run_config import (
    ConfigError,
    LoraSettings,
    build_trl_config,
    check_trl_args,
    coerce_floats,
    lora_from,
    read_yaml,
    resolve_config,
    split_trl_keys,
    uses_cpu,
)

logger = logging.getLogger(__name__)

MAKE_DATA_HINT = "build it first with training/make_sft_data.py --out DIR (it writes DIR/dataset)"
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
    """One SFT run. ``model: null`` means the untrained bundled SmolLM2 (converted on first use)."""

    dataset: str
    output_dir: str
    model: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float = 2e-4
    num_train_epochs: float = 2.0
    max_steps: int = -1  # -1: run num_train_epochs
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    max_length: int = 2048
    max_samples: int | None = None  # a seeded random subset of this size (None: all)
    save_steps: int = 50
    logging_steps: int = 1
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "linear"
    device: str = "auto"  # auto | cpu | cuda
    #: other trl.SFTConfig fields, verbatim (report_to, optim, weight_decay, ...); in YAML they sit
    #: at the top level beside the keys above
    trl_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "SFTRunConfig":
        """Check values (not paths to the model); raises :class:`ConfigError`."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"SFT config: {key} {why}")

        if not isinstance(self.learning_rate, (int, float)) or not (0 < self.learning_rate < 1):
            raise bad("learning_rate", f"must be a number in (0, 1), got {self.learning_rate!r}")
        if not isinstance(self.num_train_epochs, (int, float)) or self.num_train_epochs <= 0:
            raise bad("num_train_epochs", f"must be > 0, got {self.num_train_epochs!r}")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                    "save_steps", "logging_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(key, f"must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or (
                self.max_steps < 1 and self.max_steps != -1):
            raise bad("max_steps", f"must be an integer >= 1, or -1 for num_train_epochs; got {self.max_steps!r}")
        if self.max_samples is not None and (
                not isinstance(self.max_samples, int) or isinstance(self.max_samples, bool) or self.max_samples < 1):
            raise bad("max_samples", f"must be an integer >= 1 or null, got {self.max_samples!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise bad("seed", f"must be an integer, got {self.seed!r}")
        for key in ("bf16", "gradient_checkpointing"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, f"must be true or false, got {getattr(self, key)!r}")
        if not isinstance(self.warmup_ratio, (int, float)) or not (0 <= self.warmup_ratio < 1):
            raise bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", f"must be auto, cpu or cuda, got {self.device!r}")
        if not self.dataset or not self.output_dir:
            raise bad("dataset/output_dir", "must both be set")
        self.lora.validate(LABEL)
        check_trl_args(self.trl_args, OWN_KEYS, LABEL, TRL_MANAGED)
        return self

    def check_dataset(self) -> Path:
        """The dataset folder, or a :class:`ConfigError` saying how to make it."""
        path = Path(self.dataset).expanduser()
        if (path / "dataset" / "dataset_info.json").is_file():
            path = path / "dataset"  # the --out folder of make_sft_data.py
        if not (path / "dataset_info.json").is_file():
            raise ConfigError(f"SFT config: dataset {str(path)!r} is not a saved dataset; {MAKE_DATA_HINT}")
        return path

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML would write it: its keys and the TRL pass-through, flat."""
        data = asdict(self)
        trl_args = data.pop("trl_args")
        return {**data, **trl_args}


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


def train_sft(config: SFTRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train; returns ``{global_step, resumed_from, final_dir, loss_rows, train_runtime, ...}``."""
    config.validate()
    dataset_path = config.check_dataset()

    import torch

    require("trl", "training")
    require("datasets", "training")
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from langchain_ragr1.models import base_model_path, check_model_path
    from langchain_ragr1.training.checkpoints import last_complete_checkpoint

    use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    output_dir = Path(config.output_dir)
    args = sft_args(config, use_cpu=use_cpu, progress=progress)  # TRL's own checks, before anything loads
    model_path = check_model_path(config.model) if config.model else base_model_path(show_progress=progress)
    dataset = load_from_disk(str(dataset_path))
    missing = {"input_ids", "labels"} - set(dataset.column_names)
    if missing:
        raise ConfigError(f"SFT dataset {str(dataset_path)!r} lacks {sorted(missing)}; {MAKE_DATA_HINT}")
    too_long = sum(1 for n in dataset["input_ids"] if len(n) > config.max_length)
    if too_long:
        dataset = dataset.filter(lambda row: len(row["input_ids"]) <= config.max_length)
        logger.warning("Dropped %d samples longer than max_length=%d.", too_long, config.max_length)
    if len(dataset) == 0:
        raise ConfigError(f"SFT dataset {str(dataset_path)!r} has no sample of at most {config.max_length} tokens")
    if config.max_samples and config.max_samples < len(dataset):
        dataset = dataset.shuffle(seed=config.seed).select(range(config.max_samples))
    dataset = dataset.select_columns(["input_ids", "labels"])

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)

    peft_config = config.lora.to_peft()

    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
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
        "samples": len(dataset),
        "train_runtime": result.metrics.get("train_runtime"),
        "train_loss": result.metrics.get("train_loss"),
        "loss_rows": rows,
    }
    finite = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    if rows and len(finite) < len(rows):
        logger.warning("Non-finite loss in %d logged steps.", len(rows) - len(finite))
    return summary


def export_adapter(src: str | Path, dest: str | Path, *, dtype: str = "float16",
                   base_model_name: str | None = None) -> Path:
    """Copy the LoRA adapter in ``src`` (e.g. ``output_dir/final``) to ``dest``, weights cast to
    ``dtype`` so that it ships small; ``base_model_name`` replaces the local base path in its config."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    src, dest = Path(src), Path(dest)
    if not (src / "adapter_config.json").is_file() or not (src / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{src} holds no LoRA adapter (adapter_config.json + adapter_model.safetensors): "
                          "export the final/ folder of a run with lora.enabled")
    if dtype not in ("float16", "bfloat16", "float32"):
        raise ConfigError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    weights = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(src / "adapter_model.safetensors").items()}
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    if base_model_name:
        config["base_model_name_or_path"] = base_model_name
    dest.mkdir(parents=True, exist_ok=True)
    save_file(weights, dest / "adapter_model.safetensors", metadata={"format": "pt"})
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return dest
