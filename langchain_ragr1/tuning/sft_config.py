"""Stage 1 SFT run configuration: :class:`SFTRunConfig`, read from YAML and validated before any
model loads (a :class:`ConfigError` names the bad key), and where its samples come from.

Besides its own keys a config takes any field of ``trl.SFTConfig`` at the top level
(``report_to: tensorboard``, ``optim``, ...): they are kept in ``trl_args`` and passed to the
``SFTConfig`` that :func:`langchain_ragr1.tuning.sft.sft_args` builds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from langchain_ragr1.tuning.run_config import (
    ConfigError,
    Device,
    LoraSettings,
    NonEmptyStr,
    PositiveInt,
    PositiveSeconds,
    UnitOpen,
    UnitRightOpen,
    check_declared,
    check_trl_args,
    config_from_values,
    read_yaml,
    resolve_config,
)
from langchain_ragr1.tuning.sft_data import SampleFormat

MAKE_DATA_HINT = ("build it first with training/make_sft_data.py --out DIR (it writes DIR/dataset and "
                  "DIR/trajectories.jsonl)")
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
        trajectories = trajectories_file(path)
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


#: The YAML keys of this config (``trl_args`` is where the others go, not a key).
OWN_KEYS = frozenset(f.name for f in fields(SFTRunConfig)) - {"trl_args"}


def config_from_dict(data: dict[str, Any], /, *, source: str | None = None, **overrides: Any) -> SFTRunConfig:
    """Build and validate a config (:func:`~.run_config.config_from_values`); a key that is not
    ours but a field of ``trl.SFTConfig`` goes to ``trl_args``."""
    return config_from_values(SFTRunConfig, data, label=LABEL, trl_class=TRL_CLASS, own=OWN_KEYS,
                              aliases=TRL_ALIASES, managed=TRL_MANAGED,
                              required={"dataset": MAKE_DATA_HINT, "output_dir": ""},
                              default_lora=LoraSettings(), source=source, overrides=overrides)


def load_config(path: str | Path, **overrides: Any) -> SFTRunConfig:
    """Read a YAML config (a path, or a packaged config's name such as ``sft_default``) and
    validate it; no model or data is loaded."""
    path = resolve_config(path, LABEL)
    return config_from_dict(read_yaml(path, LABEL), source=str(path), **overrides)


#: Our keys that reach SFTConfig under the same name.
