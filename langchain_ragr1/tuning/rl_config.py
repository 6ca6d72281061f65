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
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from langchain_ragr1.protocol import Mode
from langchain_ragr1.retrievers.factory import RetrieverKind
from langchain_ragr1.tuning.run_config import (
    ConfigError,
    Device,
    LoraSettings,
    NonEmptyStr,
    NonNegative,
    PositiveInt,
    UnitLeftOpen,
    UnitOpen,
    check_declared,
    check_trl_args,
    config_from_values,
    hint,
    read_yaml,
    resolve_config,
)

RolloutBackend = Literal["transformers", "continuous"]
ROLLOUT_BACKENDS: tuple[str, ...] = get_args(RolloutBackend)
VLLMMode = Literal["colocate", "server"]
VLLM_MODES: tuple[str, ...] = get_args(VLLMMode)
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
    """One GRPO run. ``model``: null or "default" (the shipped SFT model), "base", or a model folder.

    Each field declares its type and range (checked by :meth:`validate`, errors name the key);
    the checks between fields are written out in :meth:`validate`.
    """

    output_dir: NonEmptyStr
    model: str | None = None
    # a load_qa spec: named set, file (e.g. filter_rl_data.py output), BENCH:PATH
    data: NonEmptyStr = field(default="ragr1-train", metadata=hint("a QA set: ragr1-train, a JSONL file, ..."))
    max_questions: PositiveInt | None = None  # a seeded random subset of this size (None: all)
    # environment: the RAG-R1 graph
    retriever: RetrieverKind = "bm25"
    retriever_store: str | None = None  # a Chroma folder / BM25 index (None: the bundled corpus)
    retriever_url: str | None = None  # for retriever: http (a Search-R1 /retrieve endpoint)
    mode: Mode = "multi"
    k: PositiveInt = 3
    max_turns: PositiveInt = 4
    # sampling
    max_new_tokens: PositiveInt = 500  # per model turn
    temperature: Annotated[float, Field(gt=0, le=10)] = field(default=1.0, metadata=hint("GRPO needs sampling"))
    top_p: UnitLeftOpen = 0.95
    max_completion_length: PositiveInt = 4096  # policy + retrieved tokens of one episode; longer ones are cut and counted
    max_batch_size: PositiveInt = 64  # transformers policy: concurrent turns per generate call
    # rollouts without vLLM: transformers in static batches, or with continuous batching (turns join
    # and leave the running batch; shared prefix pages of the KV cache are reused)
    rollout_backend: RolloutBackend = "transformers"
    # GRPO
    num_generations: Annotated[int, Field(ge=2)] = field(default=8, metadata=hint("GRPO compares a group"))
    per_device_train_batch_size: PositiveInt = 8  # completions, not prompts
    gradient_accumulation_steps: PositiveInt = 1
    learning_rate: UnitOpen = 1e-6
    beta: NonNegative = 0.001  # KL coefficient
    format_weight: NonNegative = 0.0  # weight of the format reward (exact match has weight 1)
    max_steps: PositiveInt = 500
    save_steps: PositiveInt = 50
    save_total_limit: PositiveInt | None = None
    logging_steps: PositiveInt = 1
    seed: int = 0
    lora: LoraSettings = field(default_factory=_rl_lora)
    bf16: bool = False
    gradient_checkpointing: bool = False
    device: Device = "auto"
    # vLLM rollouts (GPU): TRL's use_vllm, colocate or server (`trl vllm-serve`)
    use_vllm: bool = False
    vllm_mode: VLLMMode = "colocate"
    vllm_server_base_url: str | None = None
    vllm_gpu_memory_utilization: UnitLeftOpen = 0.3
    #: other trl.GRPOConfig fields, verbatim (report_to, optim, loss_type, ...); in YAML they sit
    #: at the top level beside the keys above
    trl_args: dict[str, Any] = field(default_factory=dict)

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations

    def validate(self) -> "RLRunConfig":
        """Check values (not the model path or data); raises :class:`ConfigError` naming the key."""
        check_declared(self, "RL config: ")
        if (self.per_device_train_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ConfigError(
                f"RL config: per_device_train_batch_size ({self.per_device_train_batch_size}) x "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must be a multiple of "
                f"num_generations ({self.num_generations}): it counts completions, num_generations per prompt")
        if self.retriever == "http" and not self.retriever_url:
            raise ConfigError("RL config: retriever_url is required with retriever: http "
                              "(e.g. http://127.0.0.1:8000/retrieve)")
        if self.use_vllm and self.device == "cpu":
            raise ConfigError("RL config: use_vllm needs a GPU (device: cpu was set); on a CPU use the transformers policy")
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
    """Build and validate a config (:func:`~.run_config.config_from_values`); a key that is not
    ours but a field of ``trl.GRPOConfig`` goes to ``trl_args``."""
    return config_from_values(RLRunConfig, values, label=LABEL, trl_class=TRL_CLASS, own=OWN_KEYS,
                              aliases=TRL_ALIASES, managed=TRL_MANAGED, required={"output_dir": ""},
                              default_lora=_rl_lora(), source=source, overrides=overrides)


def load_config(path: str | Path, **overrides: Any) -> RLRunConfig:
    """Read a YAML config (a path, or a packaged config's name such as ``rl_cpu``) and validate
    it; no model or data is loaded."""
    path = resolve_config(path, LABEL)
    return config_from_dict(read_yaml(path, LABEL), source=str(path), **overrides)
