"""The training scripts' command line: ``trl.TrlParser`` over TRL's own dataclasses, whole, plus a small
ScriptArguments each; every field a flag and a YAML key (``--config``), as in ``trl sft`` / ``trl grpo``.
Each error is a :class:`ConfigError` naming the file, the key and the closest flag or valid choices."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import yaml

from langchain_ragr1.config import check_int, check_seconds
from langchain_ragr1.errors import ConfigError, RagR1Error
from langchain_ragr1.extras import require
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS
from langchain_ragr1.retrievers.factory import RetrieverKind
from langchain_ragr1.tuning.sft_data import SampleFormat

PACKAGED_CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
RolloutBackend = Literal["fast", "transformers", "continuous"]
RolloutWeights = Literal["float32", "bfloat16", "int8", "int4"]
#: Our defaults for TRL's fields, each where its dataclass has it (a config or flag changes them): nothing
#: reported, every step logged, SFT's pre-tokenised dataset used as it is, GRPO rewarding exact match only.
DEFAULTS: dict[str, Any] = {"report_to": "none", "logging_first_step": True, "logging_steps": 1,
                            "activation_checkpointing": False, "dataset_kwargs": {"skip_prepare_dataset": True},
                            "reward_weights": [1.0, 0.0]}  # [exact_match, format]


def _arg(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


def _check_positive(obj: Any, ints: Sequence[str] = (), seconds: Sequence[str] = ()) -> None:
    for name in ints:
        if getattr(obj, name) is not None:
            check_int(name, getattr(obj, name), 1)
    for name in seconds:
        if getattr(obj, name) is not None:
            check_seconds(name, getattr(obj, name))


@dataclass
class SFTScriptArguments:
    """What an SFT run needs beyond ``trl.SFTConfig`` and ``trl.ModelConfig`` (``--model_name_or_path``: null
    is the untrained bundled SmolLM2, ``gemma3-270m`` Gemma-3-270M); the fast keys: ``tuning/fast_sft.py``."""

    dataset: str = _arg("", "make_sft_data's --out folder, its dataset/ subfolder, or a trajectories .jsonl")
    sample_format: SampleFormat = _arg("trajectory", "trajectory: one sequence per kept trajectory, labels on "
                                       "its valid turns; turns: the paper's cut, one sample per turn")
    max_samples: int | None = _arg(None, "a seeded random subset of this many samples")
    max_train_seconds: float | None = _arg(None, "stop (and save) after the step that passes this many seconds")
    save_every_seconds: float | None = _arg(None, "also save after the step that passes this many seconds since a save")
    pause_every_epochs: float | None = _arg(None, "stop (and save) at each multiple of this many epochs; rerun to resume")
    lora_layers: int = _arg(0, "LoRA on the top K decoder layers only (0: all)")
    cache_frozen_layers: bool = _arg(False, "with lora_layers: the layers below computed once, in output_dir/frozen_cache")
    lm_head_on_labels: bool = _arg(False, "the LM head only where the next token is labelled (TRL's loss)")

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset is required: make_sft_data's --out folder (training/make_sft_data.py --out DIR)")
        _check_positive(self, ints=("max_samples",), seconds=("max_train_seconds", "save_every_seconds"))
        every = self.pause_every_epochs
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 < every < 1e6):
            raise ConfigError(f"pause_every_epochs must be a number of epochs > 0 (e.g. 1 or 0.5), got {every!r}")
        check_int("lora_layers", self.lora_layers, 0)
        if self.cache_frozen_layers and not self.lora_layers:
            raise ConfigError("cache_frozen_layers needs lora_layers K > 0 (the layers below the top K are the "
                              "frozen ones it caches): set lora_layers, or cache_frozen_layers: false")


@dataclass
class RLScriptArguments:
    """What a GRPO run needs beyond ``trl.GRPOConfig``, ``trl.ModelConfig`` and the agent's
    :class:`RagR1Config` (``--model_name_or_path``: null or ``default`` is the shipped SFT model)."""

    data: str = _arg("ragr1-train", "a QA set: ragr1-train, a JSONL file, BENCH:PATH, ...")
    max_questions: int | None = _arg(None, "a seeded random subset of the questions")
    retriever: RetrieverKind = _arg("bm25", "the environment's retriever")
    retriever_store: str | None = _arg(None, "a Chroma folder / BM25 index (null: bundled)")
    retriever_url: str | None = _arg(None, "retriever http: a /retrieve endpoint")
    max_new_tokens: int = _arg(500, "new tokens per model turn (paper: 500)")
    repeat_stop_tokens: int = _arg(DEFAULT_REPEAT_STOP_TOKENS, "the repetition stop: a turn whose last N tokens "
                                   "occurred repeat_stop_count times in it ends there, invalid (0: off)")
    repeat_stop_count: int = _arg(DEFAULT_REPEAT_STOP_COUNT, "copies of the span that stop a turn (>= 2)")
    max_batch_size: int = _arg(64, "concurrent turns batched into one generate call")
    rollout_backend: RolloutBackend = _arg("fast", "without vLLM: fast (the lean engine, in rollout_weights), "
                                           "transformers (model.generate, fp32) or continuous")
    rollout_weights: RolloutWeights = _arg("float32", "the fast engine's weights: float32 (the training pass's own "
                                           "numbers) or bfloat16/int8/int4 (faster; the rollouts then sample from a "
                                           "slightly different policy, which GRPOConfig's vllm_importance_sampling_"
                                           "correction/_mode/_clip_min/_clip_max correct as TRL does for vLLM)")

    def __post_init__(self) -> None:
        _check_positive(self, ints=("max_new_tokens", "max_batch_size", "max_questions"))
        if self.retriever == "http" and not self.retriever_url:
            raise ConfigError("retriever_url is required with retriever: http (e.g. http://127.0.0.1:8000/retrieve)")


def packaged_configs(label: str | None = None) -> dict[str, Path]:
    """The packaged YAML configs, name -> path (``label`` "SFT"/"RL": only ``sft_*``/``rl_*``)."""
    prefix = f"{label.lower()}_" if label else ""
    return {p.stem: p for p in sorted(PACKAGED_CONFIGS_DIR.glob("*.yaml")) if p.stem.startswith(prefix)}


def _did_you_mean(key: str, names: Sequence[str]) -> str:
    matches = difflib.get_close_matches(key, sorted(names), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


def resolve_config(spec: str | Path, label: str | None = None) -> Path:
    """``--config SPEC``: an existing file, else a packaged config's name (``rl_cpu``, ``rl_cpu.yaml``,
    the repository's ``training/configs/rl_cpu.yaml`` from anywhere)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    available = packaged_configs(label)
    if (len(path.parts) == 1 or tuple(path.parent.parts[-2:]) == ("training", "configs")) and name in available:
        return available[name]
    raise ConfigError(f"{label or ''} config file {str(spec)!r} not found{_did_you_mean(name, list(available))}; give "
                      f"a path to a YAML file or the name of a packaged config: {', '.join(available) or '(none)'}")


def _show(choice: Any) -> str:
    return str(getattr(choice, "value", choice))


def _qualified(cls: type) -> str:
    return f"trl.{cls.__name__}" if cls.__module__.startswith("trl") else cls.__name__


class RunParser:
    """``trl.TrlParser`` over ``types`` (no abbreviated flags) after the run options ``--config``,
    ``--validate-only``, ``--list-configs`` and ``--quiet``, with the checks of the module docstring."""

    def __init__(self, types: Sequence[type], *, label: str, description: str = "",
                 default_config: str | None = None) -> None:
        self.types, self.label = tuple(types), label
        self.run = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        run = self.run.add_argument_group("run")
        run.add_argument("--config", default=default_config, help=(
            f"a YAML file of any of the flags below (flags override it), or a packaged config's name: "
            f"{', '.join(packaged_configs(label))}"))
        run.add_argument("--validate-only", "--validate_only", action="store_true", dest="validate_only",
                         help="check the settings, print them and exit; loads no model")
        run.add_argument("--list-configs", "--list_configs", action="store_true", dest="list_configs",
                         help="print the packaged configs and where they are")
        run.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
        self.parser = require("trl", "training").TrlParser(self.types, description=description, parents=[self.run],
                                                           allow_abbrev=False)
        self.actions = {a.dest: a for a in self.parser._actions if a.dest not in {"help", *(r.dest for r in self.run._actions)}}
        self.parser.set_defaults(**{k: v for k, v in DEFAULTS.items() if k in self.actions})
        if "use_cpu" in self.actions:  # as device "auto": train where the run is, unless a config says otherwise
            import torch

            self.parser.set_defaults(use_cpu=not torch.cuda.is_available())

    def parse(self, argv: Sequence[str] | None = None, values: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        """The dataclasses, in the order of ``types``, from the command line ``argv`` (its ``--config``
        file first) or, from Python, ``values`` as if read from a YAML file."""
        argv = list(sys.argv[1:] if argv is None else argv)
        where = f"{self.label} settings"
        config = self.run.parse_known_args(argv)[0].config
        if values is None and config:
            path = resolve_config(config, self.label)
            where = f"{self.label} config {str(path)!r}"
            try:
                values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{where} is not valid YAML: {exc}") from None
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: expected a mapping of keys, got {type(values).__name__}")
        if values is not None:
            self._apply(dict(values), where)
            if any(a.startswith("-") and a.split("=")[0] not in self.run._option_string_actions for a in argv):
                where += " with the command line's flags"
        namespace, unknown = self.parser.parse_known_args(argv)
        if unknown:
            flags = [o for a in self.parser._actions for o in a.option_strings]
            named = ", ".join(f"{u!r}{_did_you_mean(u.split('=')[0], flags)}" for u in unknown if u.startswith("-"))
            raise ConfigError(f"{self.label} command line: unknown argument(s) {named or unknown}; see --help")
        built = []
        for cls in self.types:
            try:
                built.append(cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
                                    if f.init and hasattr(namespace, f.name)}))
            except (ValueError, TypeError) as exc:  # ConfigError (from RagR1Config, ours) is a ValueError
                raise ConfigError(f"{where}: {_qualified(cls)} rejected the settings: {exc}") from None
        return tuple(built)

    def _apply(self, values: dict[str, Any], where: str) -> None:
        """Check each key and value of a YAML file as its flag would be, then make them the defaults."""
        for key, value in values.pop("env", {}).items() if isinstance(values.get("env"), dict) else ():
            os.environ[str(key)] = str(value)
        for key, value in values.items():
            if key not in self.actions:
                raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(str(key), list(self.actions))}; the keys "
                                  f"are the fields of {', '.join(_qualified(c) for c in self.types)} (--help lists them)")
            values[key] = _value(self.actions[key], key, value, where)
        self.parser.set_defaults(**values)


def _value(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    """A YAML value converted and checked by its flag's type and choices."""
    if value is None or isinstance(value, dict) or (isinstance(value, list) and action.nargs not in ("+", "*")):
        return value  # a mapping (TRL's *_kwargs) or a list for a union field: the dataclass judges it
    convert: Callable[[str], Any] = action.type or str  # type: ignore[assignment]
    try:
        out = [convert(str(v)) for v in value] if isinstance(value, list) else convert(str(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        kind = {"int": "an integer", "float": "a number", "string_to_bool": "true or false"}
        raise ConfigError(f"{where}: {key} must be {kind.get(getattr(convert, '__name__', ''), 'a valid value')}, "
                          f"got {value!r}") from None
    bad = [v for v in (out if isinstance(out, list) else [out]) if action.choices and v not in action.choices]
    if bad:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(_show(c) for c in action.choices or ())}; "
                          f"got {_show(bad[0])!r}")
    return out


def run_main(argv: Sequence[str] | None, parser: RunParser, *, check: Callable[[tuple[Any, ...]], None],
             train: Callable[..., dict[str, Any]], rows_key: str) -> int:
    """``run_sft``/``run_rl``: list the configs, or ``check`` and print the settings (``--validate-only``), or
    ``train`` (it checks them) and print its summary less ``rows_key``; a :class:`RagR1Error` is exit 2."""
    import logging

    from langchain_ragr1.logs import log_to_stderr

    argv = list(sys.argv[1:] if argv is None else argv)
    options = parser.run.parse_known_args(argv)[0]
    log_to_stderr(logging.WARNING if options.quiet else logging.INFO)
    if options.list_configs:
        print("\n".join(f"{name}\t{path}" for name, path in packaged_configs(parser.label).items()))
        return 0
    try:
        parsed = parser.parse(argv)
        if options.validate_only:
            check(parsed)
            print(json.dumps({type(o).__name__: o.to_dict() if hasattr(o, "to_dict") else dataclasses.asdict(o)
                              for o in parsed}, indent=2, default=_show))
            return 0
        parsed[1].disable_tqdm = parsed[1].disable_tqdm or options.quiet
        summary = train(*parsed, progress=not options.quiet)
    except RagR1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary.pop(rows_key, None)
    print(json.dumps(summary, indent=2, default=str))
    return 0
