"""Training run configs: TRL's own fields pass through to SFTConfig / GRPOConfig, key and value
errors name the key (and the file, and the closest names), the configs ship inside the package
(by name, by the repository's documented path, as package data), and the ``python -m`` entry
points share one main() with the ``training/`` scripts. Nothing trains here."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from langchain_ragr1.tuning import rl_config, sft, sft_config
from langchain_ragr1.tuning.rl import grpo_args
from langchain_ragr1.tuning.run_config import PACKAGED_CONFIGS_DIR, ConfigError, packaged_configs, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SFT_NAMES = ["sft_cpu_lora", "sft_default", "sft_gemma_compare", "sft_paper_7b"]
RL_NAMES = ["rl_cpu", "rl_paper_7b"]


def write(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def sft_file(tmp_path: Path, **keys) -> Path:
    return write(tmp_path, {"dataset": "d", "output_dir": str(tmp_path / "out"), "device": "cpu", **keys})


def rl_file(tmp_path: Path, **keys) -> Path:
    return write(tmp_path, {"output_dir": str(tmp_path / "out"), "device": "cpu", **keys})


# -- TRL pass-through ------------------------------------------------------------------------------

def test_sft_trl_fields_reach_the_sft_config(tmp_path):
    config = sft_config.load_config(sft_file(tmp_path, report_to="tensorboard", optim="adamw_torch", logging_steps=3,
                                      weight_decay="1e-2"))  # YAML reads 1e-2 as a string
    assert config.trl_args == {"report_to": "tensorboard", "optim": "adamw_torch", "weight_decay": 0.01}
    assert config.logging_steps == 3  # our own key, validated by us
    args = sft.sft_args(config)
    assert type(args).__name__ == "SFTConfig"
    assert args.report_to == ["tensorboard"] and args.optim == "adamw_torch" and args.logging_steps == 3
    assert args.weight_decay == 0.01
    # what the run sets itself stays
    assert args.dataset_kwargs == {"skip_prepare_dataset": True} and args.use_cpu and not args.packing
    assert args.learning_rate == config.learning_rate and args.output_dir == str(tmp_path / "out")
    # --validate-only prints to_dict(): flat, and it loads back to the same config
    assert sft_config.config_from_dict(config.to_dict()) == config
    assert sft.sft_args(sft_config.load_config(sft_file(tmp_path))).report_to == []  # the default: no reporting


def test_rl_trl_fields_reach_the_grpo_config(tmp_path):
    config = rl_config.load_config(rl_file(tmp_path, report_to="tensorboard", optim="adamw_torch", logging_steps=3,
                                           loss_type="grpo", num_iterations=2))
    assert config.trl_args == {"report_to": "tensorboard", "optim": "adamw_torch", "loss_type": "grpo",
                               "num_iterations": 2}
    args = grpo_args(config, use_cpu=True, reward_weights=[1.0, 0.0])
    assert type(args).__name__ == "GRPOConfig"
    assert args.report_to == ["tensorboard"] and args.optim == "adamw_torch" and args.logging_steps == 3
    assert (args.loss_type, args.num_iterations) == ("grpo", 2)
    assert args.reward_weights == [1.0, 0.0] and args.beta == config.beta and args.num_generations == 8
    assert rl_config.config_from_dict(config.to_dict()) == config
    assert grpo_args(rl_config.load_config(rl_file(tmp_path)), use_cpu=True).report_to == []


@pytest.mark.parametrize("kind", ["sft", "rl"])
@pytest.mark.parametrize("key, suggestion", [("report_too", "report_to"), ("optimm", "optim"),
                                             ("learning_rat", "learning_rate")])
def test_a_misspelt_key_names_the_file_the_key_and_the_closest_names(tmp_path, kind, key, suggestion):
    path = (sft_file if kind == "sft" else rl_file)(tmp_path, **{key: "x"})
    load = sft_config.load_config if kind == "sft" else rl_config.load_config
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and f"unknown key(s) '{key}'" in message
    assert f"did you mean '{suggestion}'" in message
    assert ("trl.SFTConfig" if kind == "sft" else "trl.GRPOConfig") in message


@pytest.mark.parametrize("kind, keys, match", [
    ("sft", {"optim": "adamw_nope"}, r"optim = 'adamw_nope' is rejected by trl\.SFTConfig.*not a valid"),
    ("sft", {"lr_scheduler_type": "cosine_nope"}, r"lr_scheduler_type = 'cosine_nope' is rejected by trl\.SFTConfig"),
    ("rl", {"optim": "adamw_nope"}, r"optim = 'adamw_nope' is rejected by trl\.GRPOConfig.*not a valid"),
    ("rl", {"generation_batch_size": 3}, r"generation_batch_size = 3 is rejected by trl\.GRPOConfig.*divisible"),
])
def test_a_value_trl_rejects_is_our_error_naming_the_key(tmp_path, kind, keys, match):
    if kind == "sft":
        config = sft_config.load_config(sft_file(tmp_path, **keys))  # the names are fine: TRL judges the values
        build = lambda: sft.sft_args(config)  # noqa: E731
    else:
        config = rl_config.load_config(rl_file(tmp_path, **keys))
        build = lambda: grpo_args(config, use_cpu=True)  # noqa: E731
    with pytest.raises(ConfigError, match=match) as info:
        build()
    assert info.value.__cause__ is not None  # TRL's own error stays attached


@pytest.mark.parametrize("load, data, match", [
    (sft_config.config_from_dict, {"use_cpu": True}, "use_cpu is set by the run itself; set device"),
    (sft_config.config_from_dict, {"packing": True}, "packing is set by the run itself"),
    (sft_config.config_from_dict, {"warmup_steps": 10, "warmup_ratio": 0.1}, "warmup_steps .* and warmup_ratio .* keep one"),
    (rl_config.config_from_dict, {"reward_weights": [1, 1]}, "reward_weights is set by the run itself; set format_weight"),
    (rl_config.config_from_dict, {"activation_checkpointing": True, "gradient_checkpointing": False},
     "activation_checkpointing .* and gradient_checkpointing .* keep one"),
])
def test_trl_fields_the_run_sets_itself_are_refused_clearly(load, data, match):
    base = {"dataset": "d", "output_dir": "o"} if load is sft_config.config_from_dict else {"output_dir": "o"}
    with pytest.raises(ConfigError, match=match):
        load({**base, **data})


def test_a_trl_name_for_one_of_our_settings_works_alone():
    config = sft_config.config_from_dict({"dataset": "d", "output_dir": "o", "warmup_steps": 10})
    assert sft.sft_args(config, use_cpu=True).warmup_steps == 10  # replaces warmup_ratio's 0.0
    config = rl_config.config_from_dict({"output_dir": "o", "activation_checkpointing": True})
    assert grpo_args(config, use_cpu=True).activation_checkpointing is True


def test_without_trl_a_trl_key_names_the_training_extra(monkeypatch):
    from langchain_ragr1.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` now fails
    with pytest.raises(MissingExtraError, match=r'pip install "langchain-ragr1\[training\]"'):
        sft_config.config_from_dict({"dataset": "d", "output_dir": "o", "report_to": "tensorboard"})
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):  # a typo of ours is still a typo
        rl_config.config_from_dict({"output_dir": "o", "learning_rat": 1e-5})
    assert rl_config.config_from_dict({"output_dir": "o"}).trl_args == {}  # our keys alone need no TRL


# -- packaged configs ------------------------------------------------------------------------------

def test_configs_ship_in_the_package_once():
    assert sorted(packaged_configs()) == sorted(SFT_NAMES + RL_NAMES)
    assert sorted(packaged_configs("SFT")) == SFT_NAMES and sorted(packaged_configs("RL")) == RL_NAMES
    assert PACKAGED_CONFIGS_DIR == ROOT / "langchain_ragr1" / "tuning" / "configs"
    assert not list((ROOT / "training" / "configs").glob("*.y*ml"))  # no second copy in the checkout


def test_pyproject_package_data_covers_the_configs():
    tomllib = pytest.importorskip("tomllib")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    patterns = package_data["langchain_ragr1.tuning"]
    for path in packaged_configs().values():
        relative = path.relative_to(ROOT / "langchain_ragr1" / "tuning").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


@pytest.mark.parametrize("name", SFT_NAMES + RL_NAMES)
def test_every_packaged_config_resolves_by_name_and_by_repo_path_and_builds_its_trl_args(name, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: as after `pip install langchain-ragr1[training]`
    packaged = PACKAGED_CONFIGS_DIR / f"{name}.yaml"
    for spec in (name, f"{name}.yaml", f"training/configs/{name}.yaml", ROOT / "training" / "configs" / f"{name}.yaml"):
        assert resolve_config(spec) == packaged, spec
    if name.startswith("sft"):
        config = sft_config.load_config(f"training/configs/{name}.yaml")
        assert config == sft_config.load_config(name)
        sft.sft_args(config, use_cpu=True)
    else:
        config = rl_config.load_config(f"training/configs/{name}.yaml")
        assert config == rl_config.load_config(name)
        grpo_args(config, use_cpu=True)


def test_an_existing_file_wins_and_unknown_names_list_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rl_file(tmp_path, max_steps=7)
    (tmp_path / "run.yaml").rename(tmp_path / "rl_cpu.yaml")
    assert rl_config.load_config("rl_cpu.yaml").max_steps == 7  # ./rl_cpu.yaml, not the packaged one
    assert rl_config.load_config("rl_cpu").max_steps == 50  # a bare name: the packaged one
    with pytest.raises(ConfigError, match=r"'rl_cpux' not found \(did you mean 'rl_cpu'\?\).*rl_cpu, rl_paper_7b"):
        rl_config.load_config("rl_cpux")
    with pytest.raises(ConfigError, match="not found.*sft_cpu_lora, sft_default, sft_gemma_compare, sft_paper_7b"):
        sft_config.load_config("rl_cpu")  # an RL config is not an SFT one
    with pytest.raises(ConfigError, match="not found"):
        sft_config.load_config(tmp_path / "elsewhere" / "sft_default.yaml")  # only training/configs/ falls back


# -- entry points ----------------------------------------------------------------------------------

def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python *args`` in ``cwd``, importing this checkout's package (not whichever one is installed)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "default", "PYTHONPATH": path})


#: Every stage's module in langchain_ragr1/tuning/ (a training/<name>.py entry point each) and
#: flags its --help must list.
STAGES = {
    "run_sft": ("--config", "--validate-only", "--list-configs"),
    "run_rl": ("--config", "--validate-only", "--list-configs"),
    "make_sft_data": ("--data", "--mode", "--teacher", "--teacher-model", "--retriever", "--max-length", "--out"),
    "filter_rl_data": ("--data", "--model", "--attempts", "--keep-solved", "--batch-size", "--out"),
    "export_adapter": ("--dtype", "--base-model-name"),
}


def help_flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


@pytest.mark.parametrize("name", STAGES)
def test_python_m_help_exits_0_and_the_repo_script_lists_the_same_flags(name, tmp_path):
    proc = run("-m", f"langchain_ragr1.tuning.{name}", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(STAGES[name]) <= help_flags(proc.stdout), proc.stdout
    assert "found in sys.modules" not in proc.stderr  # runpy: not a module the package imports first
    script = run(str(ROOT / "training" / f"{name}.py"), "--help", cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    assert help_flags(script.stdout) == help_flags(proc.stdout)


def test_the_repo_scripts_are_the_package_mains(tmp_path):
    proc = run(str(ROOT / "training" / "run_sft.py"), "--list-configs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == SFT_NAMES
    assert sorted(p.stem for p in (ROOT / "training").glob("*.py")) == sorted(STAGES)
    for name in STAGES:
        module = importlib.import_module(f"langchain_ragr1.tuning.{name}")
        assert callable(module.main)
        assert f"from langchain_ragr1.tuning.{name} import main" in (ROOT / "training" / f"{name}.py").read_text()


def test_python_m_validate_only_takes_a_packaged_name_and_trl_keys(tmp_path):
    path = rl_file(tmp_path, report_to="tensorboard", optim="adamw_torch_fused")
    proc = run("-m", "langchain_ragr1.tuning.run_rl", "--config", str(path), "--validate-only", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["report_to"] == "tensorboard" and printed["optim"] == "adamw_torch_fused"
    assert "trl_args" not in printed


def test_main_reports_config_errors_without_a_traceback(tmp_path, capsys):
    from langchain_ragr1.tuning import run_rl, run_sft

    assert run_sft.main(["--config", "sft_default", "--validate-only"]) == 0
    assert json.loads(capsys.readouterr().out)["max_samples"] == 480
    assert run_rl.main(["--config", str(rl_file(tmp_path, optim="adamw_nope")), "--validate-only"]) == 2
    assert "error: RL config: optim = 'adamw_nope' is rejected by trl.GRPOConfig" in capsys.readouterr().err
    assert run_sft.main(["--config", str(sft_file(tmp_path, report_too="tensorboard")), "--validate-only"]) == 2
    assert "did you mean 'report_to'" in capsys.readouterr().err


def test_one_config_error_for_the_whole_package():
    import langchain_ragr1
    from langchain_ragr1.tuning import rl_config, run_config, sft_config

    assert run_config.ConfigError is langchain_ragr1.ConfigError is rl_config.ConfigError
    with pytest.raises(langchain_ragr1.ConfigError, match="learning_rate"):
        sft_config.SFTRunConfig(dataset="d", output_dir="o", learning_rate=-1).validate()


@pytest.mark.parametrize("kind", ["sft", "rl"])
def test_every_key_is_checked_against_its_declared_type(kind):
    """The configs are declared, not validated line by line: a value of the wrong type for any of
    their keys is a ConfigError naming that key, before anything loads."""
    module, cls = (sft_config, sft_config.SFTRunConfig) if kind == "sft" else (rl_config, rl_config.RLRunConfig)
    base = {"dataset": "d", "output_dir": "o"} if kind == "sft" else {"output_dir": "o"}
    keys = sorted(module.OWN_KEYS - {"lora"})
    assert len(keys) >= 20
    for key in keys:
        with pytest.raises(ConfigError, match=rf"{kind.upper()} config: {key} .*got \[\[1\]\]"):
            cls(**{**base, key: [[1]]}).validate()
    with pytest.raises(ConfigError, match=rf"{kind.upper()} config: lora.r must be greater than or equal to 1, got 0"):
        module.config_from_dict({**base, "lora": {"r": 0}})


def test_a_path_for_a_string_key_is_kept_as_its_string(tmp_path):
    config = rl_config.config_from_dict({"output_dir": tmp_path / "out", "retriever_store": tmp_path / "store"})
    assert config.output_dir == str(tmp_path / "out") and config.retriever_store == str(tmp_path / "store")
    sft = sft_config.config_from_dict({"dataset": tmp_path / "d", "output_dir": tmp_path / "o"})
    assert sft.dataset == str(tmp_path / "d")
