"""What the SFT and RL run configs share: YAML reading, key checks, LoRA settings, number coercion,
the packaged configs, and the pass-through of TRL's own fields.

Each helper takes the config's ``label`` ("SFT", "RL") so that errors name the config they are about.

TRL pass-through: a config's top level takes its own keys (the dataclass fields) and, beside
them, any field of the TRL config class it builds (``trl.SFTConfig`` for SFT,
``trl.GRPOConfig`` for RL): ``report_to: tensorboard``, ``optim``, ``weight_decay``, ... Those
are kept verbatim in the config's ``trl_args`` and handed to the TRL class when the run's
arguments are built; a value TRL rejects becomes a :class:`ConfigError` naming the key. A key
that is neither ours nor TRL's fails with the closest allowed names.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping

from pydantic import Field, TypeAdapter, ValidationError

# One ConfigError for the whole package: ``except langchain_ragr1.ConfigError`` catches
# every SFT/RL config error too (re-exported here for the training modules).
from langchain_ragr1.errors import ConfigError

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: The YAML configs shipped inside the package (``langchain_ragr1/tuning/configs/NAME.yaml``).
PACKAGED_CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


# Declared value types of the run configs' fields (pydantic constraints, checked strictly: a
# bool is not an int, "3" is not a number; YAML number strings such as "1e-5" are coerced first).
PositiveInt = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
UnitOpen = Annotated[float, Field(gt=0, lt=1)]  # (0, 1)
UnitLeftOpen = Annotated[float, Field(gt=0, le=1)]  # (0, 1]
UnitRightOpen = Annotated[float, Field(ge=0, lt=1)]  # [0, 1)
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
Device = typing.Literal["auto", "cpu", "cuda"]


def hint(text: str) -> dict[str, str]:
    """Field metadata: why the field's constraint is what it is, shown with its error."""
    return {"hint": text}


_DECLARED: dict[type, tuple[tuple[str, TypeAdapter, bool, str | None], ...]] = {}


def _declared(cls: type) -> tuple[tuple[str, TypeAdapter, bool, str | None], ...]:
    """(name, adapter, nullable, hint) of each field of ``cls`` checked by :func:`check_declared` (cached)."""
    if cls in _DECLARED:
        return _DECLARED[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in fields(cls):
        if f.name == "trl_args" or is_dataclass(hints[f.name]):
            continue  # TRL's fields are judged by TRL; nested settings check themselves
        nullable = type(None) in typing.get_args(hints[f.name])
        out.append((f.name, TypeAdapter(hints[f.name]), nullable, f.metadata.get("hint")))
    _DECLARED[cls] = tuple(out)
    return _DECLARED[cls]


def check_declared(config: Any, where: str) -> None:
    """Check every field of the dataclass ``config`` against its declared type and constraints;
    a :class:`ConfigError` names the first bad one (``"<where><key> must be ..., got ..."``).
    A path (``os.PathLike``) given for a string field is kept as its string."""
    for name, adapter, nullable, why in _declared(type(config)):
        value = getattr(config, name)
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
            setattr(config, name, value)
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].replace("a valid boolean", "true or false")
            message = "must be" + message[len("Input should be"):] if message.startswith("Input should be") \
                else f"is invalid ({message})"
            raise ConfigError(f"{where}{name} {message}{' or null' if nullable else ''}, got {value!r}"
                              + (f" ({why})" if why else "")) from None


@dataclass
class LoraSettings:
    enabled: bool = True
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: UnitRightOpen = 0.05
    target_modules: Annotated[list[NonEmptyStr], Field(min_length=1)] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES))

    def validate(self, label: str) -> None:
        """Raise :class:`ConfigError` (``"<label> config: lora.<key> ..."``) on a bad value."""
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"{label} config: lora.enabled must be true or false, got {self.enabled!r}")
        if not self.enabled:
            return
        check_declared(self, f"{label} config: lora.")

    def to_peft(self):
        """The ``peft.LoraConfig`` for a causal LM, or None when disabled."""
        if not self.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), task_type="CAUSAL_LM")


def close_matches(key: Any, allowed: Iterable[str], n: int = 3) -> list[str]:
    """The allowed names closest to ``key`` (``difflib``), best first."""
    return difflib.get_close_matches(str(key), sorted(allowed), n=n, cutoff=0.6)


def _did_you_mean(key: Any, allowed: Iterable[str]) -> str:
    matches = close_matches(key, allowed)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


def check_keys(data: dict, allowed: Iterable[str], where: str, label: str) -> None:
    """Reject keys not in ``allowed``, with the closest allowed names and the list of them."""
    allowed = set(allowed)
    unknown = sorted((k for k in data if k not in allowed), key=str)
    if unknown:
        named = ", ".join(f"{k!r}{_did_you_mean(k, allowed)}" for k in unknown)
        raise ConfigError(f"{label} config: unknown key(s) {named} in {where}; "
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


def packaged_configs(label: str | None = None) -> dict[str, Path]:
    """The packaged YAML configs, name -> path (``label`` "SFT"/"RL": only ``sft_*``/``rl_*``)."""
    prefix = f"{label.lower()}_" if label else ""
    return {p.stem: p for p in sorted(PACKAGED_CONFIGS_DIR.glob("*.yaml")) if p.stem.startswith(prefix)}


def resolve_config(spec: str | Path, label: str | None = None) -> Path:
    """The YAML file that ``--config SPEC`` means.

    1. an existing file: that file;
    2. a bare name (``rl_cpu`` or ``rl_cpu.yaml``): the packaged config of that name;
    3. ``.../training/configs/NAME.yaml`` that does not exist (the repository's documented path,
       typed in a wheel install or another folder): the packaged ``NAME.yaml``.

    Anything else is a :class:`ConfigError` listing the packaged names.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    bare = len(Path(spec).parts) == 1
    repo_form = tuple(path.parent.parts[-2:]) == ("training", "configs")
    available = packaged_configs(label)
    if (bare or repo_form) and name in available:
        return available[name]
    what = f"{label} config" if label else "config"
    raise ConfigError(f"{what} file {str(spec)!r} not found{_did_you_mean(name, available)}; give a path to a YAML "
                      f"file or the name of a packaged config: {', '.join(available) or '(none)'}")


def config_help(label: str) -> str:
    """``--config`` help of the run commands."""
    return (f"a YAML run config: a path, or the name of a packaged config "
            f"({', '.join(packaged_configs(label))}); training/configs/NAME.yaml means the packaged NAME")


def print_packaged_configs(label: str) -> int:
    """``--list-configs``: one ``name<TAB>path`` line per packaged config."""
    for name, path in packaged_configs(label).items():
        print(f"{name}\t{path}")
    return 0


def read_yaml(path: str | Path, label: str) -> dict:
    """The mapping in a YAML config file (a path or a packaged config's name, :func:`resolve_config`);
    a missing file or bad YAML is a :class:`ConfigError`."""
    import yaml

    path = resolve_config(path, label)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} config {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label} config {str(path)!r}: expected a mapping of keys, got {type(data).__name__}")
    return data


# -- TRL pass-through ------------------------------------------------------------------------

def trl_config_class(name: str) -> type:
    """``trl.<name>`` (``SFTConfig``, ``GRPOConfig``); without TRL a :class:`MissingExtraError`
    naming ``pip install "langchain-ragr1[training]"``."""
    from langchain_ragr1.extras import require

    return getattr(require("trl", "training"), name)


def trl_fields(name: str) -> dict[str, Any]:
    """The init fields of ``trl.<name>``, name -> ``dataclasses.Field``."""
    return {f.name: f for f in fields(trl_config_class(name)) if f.init}


def _float_field(tp: Any) -> bool:
    """A field typed ``float`` (or ``float | None``...) that takes no string."""
    if tp is float:
        return True
    args = typing.get_args(tp)
    return float in args and str not in args


def split_trl_keys(data: dict, own: Iterable[str], trl_class: str, label: str, *,
                   source: str | None = None, aliases: Mapping[str, str] | None = None,
                   managed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Pop and return the keys of ``data`` that are not ``own`` but fields of ``trl.<trl_class>``.

    Raises :class:`ConfigError` for a key that is neither (naming ``source``, the key and the
    closest names), for a ``managed`` key (one the run sets itself: the value says what to set
    instead), and for a TRL key given together with our key that sets it (``aliases``: TRL
    name -> our name, e.g. ``warmup_steps`` -> ``warmup_ratio``). Only imports TRL when
    ``data`` has a key that is not ours. YAML's ``1e-4`` (a string) becomes a float for
    float fields.
    """
    own = set(own)
    aliases = dict(aliases or {})
    managed = dict(managed or {})
    extra = [k for k in data if k not in own]
    if not extra:
        return {}
    head = f"{label} config {source!r}" if source else f"{label} config"
    allowed_note = f"allowed: this config's keys ({', '.join(sorted(own))}) or any field of trl.{trl_class}"
    from langchain_ragr1.extras import MissingExtraError

    try:
        known = trl_fields(trl_class)
    except MissingExtraError:
        typos = [k for k in extra if close_matches(k, own)]
        if typos:  # a misspelt key of ours: say so even without TRL
            named = ", ".join(f"{k!r}{_did_you_mean(k, own)}" for k in typos)
            raise ConfigError(f"{head}: unknown key(s) {named}; {allowed_note}") from None
        raise
    unknown = [k for k in extra if k not in known]
    if unknown:
        names = own | set(known)
        named = ", ".join(f"{k!r}{_did_you_mean(k, names)}" for k in unknown)
        raise ConfigError(f"{head}: unknown key(s) {named}: neither a key of this config "
                          f"nor a field of trl.{trl_class}; {allowed_note}")
    for key in extra:
        if key in managed:
            raise ConfigError(f"{head}: {key} is set by the run itself; {managed[key]}")
        if key in aliases and aliases[key] in data:
            raise ConfigError(f"{head}: {key} (trl.{trl_class}) and {aliases[key]} (this config) "
                              f"set the same thing: keep one of them")
    passthrough = {k: data.pop(k) for k in extra}
    for key, value in passthrough.items():
        if isinstance(value, str) and _float_field(known[key].type):
            try:
                passthrough[key] = float(value)
            except ValueError:
                raise ConfigError(f"{head}: {key} must be a number, got {value!r}") from None
    return passthrough


def check_trl_args(trl_args: Any, own: Iterable[str], label: str, managed: Mapping[str, str] | None = None) -> None:
    """What :meth:`validate` checks of a config's ``trl_args`` without importing TRL."""
    if not isinstance(trl_args, dict):
        raise ConfigError(f"{label} config: trl_args must be a mapping of TRL config fields, got {trl_args!r}")
    own = set(own)
    for key in trl_args:
        if key in own:
            raise ConfigError(f"{label} config: {key} is a key of this config: set it as such, not in trl_args")
        if managed and key in managed:
            raise ConfigError(f"{label} config: {key} is set by the run itself; {managed[key]}")


def build_trl_config(trl_class: str, kwargs: dict[str, Any], *, user_keys: Iterable[str], label: str) -> Any:
    """``trl.<trl_class>(**kwargs)``; an error from it becomes a :class:`ConfigError` naming the key.

    The key is found after a failure only: the first of ``user_keys`` (the keys a user set,
    TRL pass-through first) without which the construction succeeds.
    """
    cls = trl_config_class(trl_class)
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 -- TRL/transformers raise ValueError, TypeError, ...
        reason = f"{type(exc).__name__}: {exc}"
        for key in user_keys:
            if key not in kwargs:
                continue
            try:
                cls(**{k: v for k, v in kwargs.items() if k != key})
            except Exception:  # noqa: BLE001 -- not this key
                continue
            raise ConfigError(f"{label} config: {key} = {kwargs[key]!r} is rejected by trl.{trl_class}: "
                              f"{reason}") from exc
        raise ConfigError(f"{label} config: trl.{trl_class} rejected the settings: {reason}") from exc


def uses_cpu(device: str) -> bool:
    """``device`` (auto | cpu | cuda) -> whether the run trains on the CPU."""
    if device == "cpu":
        return True
    if device == "cuda":
        return False
    import torch

    return not torch.cuda.is_available()


def float_fields(cls: type) -> tuple[str, ...]:
    """The fields of the dataclass ``cls`` declared as numbers (``float``, constrained or optional):
    the keys whose YAML strings such as ``"1e-5"`` are read as numbers."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in fields(cls) if hints[f.name] is float or float in typing.get_args(hints[f.name]))


def config_from_values(cls: type, values: Any, *, label: str, trl_class: str, own: Iterable[str],
                       aliases: Mapping[str, str], managed: Mapping[str, str], required: Mapping[str, str],
                       default_lora: LoraSettings, source: str | None, overrides: Mapping[str, Any]) -> Any:
    """Build and validate a run config of ``cls`` from YAML ``values``: ``overrides`` that are None
    are ignored, a key that is not ours but a field of ``trl.<trl_class>`` goes to ``trl_args``,
    each of ``required`` (key -> what to do) must be set, ``lora`` is read with ``default_lora``
    and number strings become numbers; ``source`` (the file) is named in key errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{label} config: expected a mapping, got {type(values).__name__}")
    data = dict(values)
    data.update({k: v for k, v in overrides.items() if v is not None})
    trl_args = split_trl_keys(data, own, trl_class, label, source=source, aliases=aliases, managed=managed)
    for key, todo in required.items():
        if not data.get(key):
            raise ConfigError(f"{label} config: {key} is required" + (f"; {todo}" if todo else ""))
    lora = lora_from(data.pop("lora", None), default_lora, label)
    coerce_floats(data, float_fields(cls), label)
    return cls(lora=lora, trl_args=trl_args, **data).validate()


def run_parser(doc: str, label: str, trl_class: str, *, default_config: str | None, data_option: tuple[str, str],
               model_help: str, quiet_help: str) -> argparse.ArgumentParser:
    """The command line of ``run_sft``/``run_rl``: the config, its overrides, --validate-only, --list-configs, --quiet."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--config", default=default_config, help=config_help(label) + (
        " (default: %(default)s)" if default_config else " (required)"))
    parser.add_argument("--max-steps", type=int, help="override max_steps (optimizer steps)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument(data_option[0], help=data_option[1])
    parser.add_argument("--model", help=model_help)
    parser.add_argument("--validate-only", action="store_true",
                        help=f"check the config (and the trl.{trl_class} it makes), print it and exit; loads no model")
    parser.add_argument("--list-configs", action="store_true", help="print the packaged configs and where they are")
    parser.add_argument("--quiet", action="store_true", help=quiet_help)
    return parser


def run_command(check: Callable[[], Any], train: Callable[[Any], dict[str, Any]], *, validate_only: bool,
                rows_key: str) -> int:
    """The body of ``run_sft``/``run_rl``: ``check()`` loads and checks the config (nothing that
    needs the model); ``--validate-only`` prints it, else ``train(config)`` runs and its summary is
    printed without its per-step ``rows_key``. A :class:`RagR1Error` (bad config, missing model,
    data or extra) is one line on stderr and exit status 2, not a traceback."""
    from langchain_ragr1.errors import RagR1Error

    try:
        config = check()
        if validate_only:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        summary = train(config)
    except RagR1Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary.pop(rows_key)
    print(json.dumps(summary, indent=2))
    return 0
