"""What the SFT and RL run configs share: YAML reading, key checks, LoRA settings, number coercion.

Each helper takes the config's ``label`` ("SFT", "RL") so that errors name the config they are about.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from langchain_ragr1.errors import RagR1Error

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ConfigError(RagR1Error, ValueError):
    """A bad run configuration; the message names the key and what is allowed."""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class LoraSettings:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))

    def validate(self, label: str) -> None:
        """Raise :class:`ConfigError` (``"<label> config: lora.<key> ..."``) on a bad value."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{label} config: lora.{key} {why}")

        if not isinstance(self.enabled, bool):
            raise bad("enabled", f"must be true or false, got {self.enabled!r}")
        if not self.enabled:
            return
        for key in ("r", "alpha"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise bad(key, f"must be an integer >= 1, got {getattr(self, key)!r}")
        if not is_num(self.dropout) or not (0 <= self.dropout < 1):
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if (not isinstance(self.target_modules, list) or not self.target_modules
                or not all(isinstance(m, str) and m for m in self.target_modules)):
            raise bad("target_modules", f"must be a non-empty list of module names, got {self.target_modules!r}")

    def to_peft(self):
        """The ``peft.LoraConfig`` for a causal LM, or None when disabled."""
        if not self.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), task_type="CAUSAL_LM")


def check_keys(data: dict, allowed: Iterable[str], where: str, label: str) -> None:
    """Reject keys not in ``allowed``, listing the allowed ones."""
    allowed = set(allowed)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{label} config: unknown key(s) {', '.join(unknown)} in {where}; "
                          f"allowed: {', '.join(sorted(allowed))}")


def lora_from(value: Any, default: LoraSettings, label: str) -> LoraSettings:
    """``lora:`` as written (false/null, true, or a mapping over ``default``) -> settings."""
    if value is None or value is False:
        return LoraSettings(enabled=False)
    if value is True:
        return default
    if isinstance(value, dict):
        check_keys(value, {f.name for f in fields(LoraSettings)}, "lora", label)
        return LoraSettings(**{**asdict(default), **value})
    raise ConfigError(f"{label} config: lora must be true, false or a mapping, got {value!r}")


def coerce_floats(data: dict, keys: Iterable[str], label: str) -> None:
    """YAML reads ``1e-5`` (no dot) as a string: turn such values into floats in place."""
    for key in keys:
        if isinstance(data.get(key), str):
            try:
                data[key] = float(data[key])
            except ValueError:
                raise ConfigError(f"{label} config: {key} must be a number, got {data[key]!r}") from None


def read_yaml(path: str | Path, label: str) -> dict:
    """The mapping in a YAML config file; a missing file or bad YAML is a :class:`ConfigError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{label} config file {str(path)!r} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} config {str(path)!r} is not valid YAML: {exc}") from None
