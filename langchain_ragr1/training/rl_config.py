"""Stage 2 RL run configuration: a dataclass read from YAML and validated before anything loads.

Batch sizes follow TRL 1.16: ``per_device_train_batch_size`` counts completions (episodes),
so one optimizer step sees ``per_device_train_batch_size * gradient_accumulation_steps /
num_generations`` prompts (questions), each sampled ``num_generations`` times.

Besides its own keys a config takes any field of ``trl.GRPOConfig`` at the top level
(``report_to: tensorboard``, ``optim``, ``loss_type``, ``num_iterations``, ...): they are kept
in ``trl_args`` and passed to the ``GRPOConfig`` that ``rl.grpo_args`` builds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from langchain_ragr1.protocol import MODES
from langchain_ragr1.retrievers.factory import RETRIEVER_KINDS
from langchain_ragr1.training.run_config import (
    ConfigError,
    LoraSettings,
    check_trl_args,
    coerce_floats,
    is_int,
    is_num,
    lora_from,
    read_yaml,
    resolve_config,
    split_trl_keys,
)

ROLLOUT_BACKENDS = ("transformers", "continuous")
VLLM_MODES = ("colocate", "server")
LABEL = "RL"
TRL_CLASS = "GRPOConfig"
#: TRL fields that this config sets from one of its own keys: TRL name -> ours (either, not both).
TRL_ALIASES = {"activation_checkpointing": "gradient_checkpointing"}
#: TRL fields the run sets itself: TRL name -> what to do instead.
TRL_MANAGED = {
    "use_cpu": "set device: cpu, cuda or auto",
    "reward_weights": "set format_weight (exact match has weight 1)",
}


def _rl_lora() -> LoraSettings:
    return LoraSettings(r=8, alpha=16)


@dataclass
class RLRunConfig:
    """One GRPO run. ``model``: null or "default" (the shipped SFT model), "base", or a model folder."""

    output_dir: str
    model: str | None = None
    data: str = "ragr1-train"  # a load_qa spec: named set, file (e.g. filter_rl_data.py output), BENCH:PATH
    max_questions: int | None = None  # a seeded random subset of this size (None: all)
    # environment: the RAG-R1 graph
    retriever: str = "bm25"  # chroma | bm25 | http
    retriever_store: str | None = None  # a Chroma folder / BM25 index (None: the bundled corpus)
    retriever_url: str | None = None  # for retriever: http (a Search-R1 /retrieve endpoint)
    mode: str = "multi"  # multi | single
    k: int = 3
    max_turns: int = 4
    # sampling
    max_new_tokens: int = 500  # per model turn
    temperature: float = 1.0
    top_p: float = 0.95
    max_completion_length: int = 4096  # policy + retrieved tokens of one episode; longer ones are cut and counted
    max_batch_size: int = 64  # transformers policy: concurrent turns per generate call
    # rollouts without vLLM: transformers in static batches, or with continuous batching (turns join
    # and leave the running batch; shared prefix pages of the KV cache are reused)
    rollout_backend: str = "transformers"  # transformers | continuous
    # GRPO
    num_generations: int = 8
    per_device_train_batch_size: int = 8  # completions, not prompts
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-6
    beta: float = 0.001  # KL coefficient
    format_weight: float = 0.0  # weight of the format reward (exact match has weight 1)
    max_steps: int = 500
    save_steps: int = 50
    save_total_limit: int | None = None
    logging_steps: int = 1
    seed: int = 0
    lora: LoraSettings = field(default_factory=_rl_lora)
    bf16: bool = False
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto | cpu | cuda
    # vLLM rollouts (GPU): TRL's use_vllm, colocate or server (`trl vllm-serve`)
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_server_base_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3
    #: other trl.GRPOConfig fields, verbatim (report_to, optim, loss_type, ...); in YAML they sit
    #: at the top level beside the keys above
    trl_args: dict[str, Any] = field(default_factory=dict)

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations

    def validate(self) -> "RLRunConfig":
        """Check values (not the model path or data); raises :class:`ConfigError` naming the key."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"RL config: {key} {why}")


        if not self.output_dir or not isinstance(self.output_dir, str):
            raise bad("output_dir", "is required")
        if not self.data or not isinstance(self.data, str):
            raise bad("data", f"must be a QA set (ragr1-train, a JSONL file, ...), got {self.data!r}")
        for key in ("k", "max_turns", "max_new_tokens", "max_completion_length", "max_batch_size",
                    "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "save_steps",
                    "logging_steps"):
            value = getattr(self, key)
            if not is_int(value) or value < 1:
                raise bad(key, f"must be an integer >= 1, got {value!r}")
        if not is_int(self.num_generations) or self.num_generations < 2:
            raise bad("num_generations", f"must be an integer >= 2 (GRPO compares a group), got {self.num_generations!r}")
        if (self.per_device_train_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise bad("per_device_train_batch_size",
                      f"({self.per_device_train_batch_size}) x gradient_accumulation_steps "
                      f"({self.gradient_accumulation_steps}) must be a multiple of num_generations "
                      f"({self.num_generations}): it counts completions, num_generations per prompt")
        for key in ("max_questions", "save_total_limit"):
            value = getattr(self, key)
            if value is not None and (not is_int(value) or value < 1):
                raise bad(key, f"must be an integer >= 1 or null, got {value!r}")
        if not is_int(self.seed):
            raise bad("seed", f"must be an integer, got {self.seed!r}")
        if self.rollout_backend not in ROLLOUT_BACKENDS:
            raise bad("rollout_backend", f"must be one of {', '.join(ROLLOUT_BACKENDS)}, got {self.rollout_backend!r}")
        if self.retriever not in RETRIEVER_KINDS:
            raise bad("retriever", f"must be one of {', '.join(RETRIEVER_KINDS)}, got {self.retriever!r}")
        if self.retriever == "http" and not self.retriever_url:
            raise bad("retriever_url", "is required with retriever: http (e.g. http://127.0.0.1:8000/retrieve)")
        if self.mode not in MODES:
            raise bad("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not is_num(self.temperature) or not (0 < self.temperature <= 10):
            raise bad("temperature", f"must be in (0, 10] (GRPO needs sampling), got {self.temperature!r}")
        if not is_num(self.top_p) or not (0 < self.top_p <= 1):
            raise bad("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not is_num(self.learning_rate) or not (0 < self.learning_rate < 1):
            raise bad("learning_rate", f"must be a number in (0, 1), got {self.learning_rate!r}")
        for key in ("beta", "format_weight"):
            value = getattr(self, key)
            if not is_num(value) or value < 0:
                raise bad(key, f"must be a number >= 0, got {value!r}")
        for key in ("bf16", "gradient_checkpointing", "use_vllm"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", f"must be auto, cpu or cuda, got {self.device!r}")
        if self.vllm_mode not in VLLM_MODES:
            raise bad("vllm_mode", f"must be colocate or server, got {self.vllm_mode!r}")
        if not is_num(self.vllm_gpu_memory_utilization) or not (0 < self.vllm_gpu_memory_utilization <= 1):
            raise bad("vllm_gpu_memory_utilization", f"must be in (0, 1], got {self.vllm_gpu_memory_utilization!r}")
        if self.use_vllm and self.device == "cpu":
            raise bad("use_vllm", "needs a GPU (device: cpu was set); on a CPU use the transformers policy")
        self.lora.validate(LABEL)
        check_trl_args(self.trl_args, OWN_KEYS, LABEL, TRL_MANAGED)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML would write it: its keys and the TRL pass-through, flat."""
        data = asdict(self)
        trl_args = data.pop("trl_args")
        return {**data, **trl_args}


#: The YAML keys of this config (``trl_args`` is where the others go, not a key).
OWN_KEYS = frozenset(f.name for f in fields(RLRunConfig)) - {"trl_args"}


def config_from_dict(values: dict[str, Any], /, *, source: str | None = None, **overrides: Any) -> RLRunConfig:
    """Build and validate a config; ``overrides`` that are None are ignored. A key that is not
    ours but a field of ``trl.GRPOConfig`` goes to ``trl_args``; ``source`` (the file) is named
    in key errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"RL config: expected a mapping, got {type(values).__name__}")
    data = dict(values)
    data.update({k: v for k, v in overrides.items() if v is not None})
    trl_args = split_trl_keys(data, OWN_KEYS, TRL_CLASS, LABEL, source=source,
                              aliases=TRL_ALIASES, managed=TRL_MANAGED)
    if not data.get("output_dir"):
        raise ConfigError("RL config: output_dir is required")
    lora = lora_from(data.pop("lora", None), _rl_lora(), LABEL)
    coerce_floats(data, ("learning_rate", "beta", "temperature", "top_p", "format_weight",
                         "vllm_gpu_memory_utilization"), LABEL)
    return RLRunConfig(lora=lora, trl_args=trl_args, **data).validate()


def load_config(path: str | Path, **overrides: Any) -> RLRunConfig:
    """Read a YAML config (a path, or a packaged config's name such as ``rl_cpu``) and validate
    it; no model or data is loaded."""
    path = resolve_config(path, LABEL)
    return config_from_dict(read_yaml(path, LABEL), source=str(path), **overrides)
