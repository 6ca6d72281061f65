"""The training scripts' command line in TRL's own style: ``TrlParser`` over TRL's dataclasses
(SFTConfig / GRPOConfig, ModelConfig) plus our script arguments; every field a flag and a YAML
key (``--config`` + overriding flags); each bad key or value an error naming the key, the file
and what to do, before anything loads; the configs ship inside the package; the shipped recipes
reproduce the numbers today's scripts gave before the rewrite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.tuning import run_rl, run_sft
from langchain_ragr1.tuning.args import PACKAGED_CONFIGS_DIR, packaged_configs, resolve_config
from langchain_ragr1.tuning.rl import check_rl
from langchain_ragr1.tuning.sft import check_sft

ROOT = Path(__file__).resolve().parents[1]
SFT_NAMES = ["sft_campaign_mq", "sft_campaign_sq", "sft_cpu_lora", "sft_default", "sft_fast", "sft_gemma_compare", "sft_paper_7b"]
RL_NAMES = ["rl_cpu", "rl_paper_7b"]
SFT_MIN = {"dataset": "d", "output_dir": "o", "use_cpu": True}
RL_MIN = {"output_dir": "o", "use_cpu": True}


def write(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# -- TRL's flags and YAML keys ---------------------------------------------------------------------

@pytest.mark.parametrize("script, flags", [
    ("run_sft.py", ["--learning_rate", "--gradient_accumulation_steps", "--use_peft", "--lora_r", "--dataset",
                    "--sample_format", "--max_train_seconds", "--model_name_or_path", "--config", "--validate-only"]),
    ("run_rl.py", ["--learning_rate", "--gradient_accumulation_steps", "--use_peft", "--lora_r", "--num_generations",
                   "--beta", "--use_vllm", "--reward_weights", "--retriever", "--max_new_tokens", "--mode", "--k",
                   "--max_turns", "--doc_max_tokens", "--config"]),
])
def test_help_lists_trls_own_flags(script, flags, tmp_path):
    proc = run(str(ROOT / "training" / script), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = {word.rstrip(",") for line in proc.stdout.splitlines() for word in line.split() if word.startswith("--")}
    assert set(flags) <= listed, set(flags) - listed


def test_flags_override_the_config_file_and_the_file_overrides_the_defaults(tmp_path):
    path = write(tmp_path, {**RL_MIN, "learning_rate": 5e-5, "num_generations": 4, "per_device_train_batch_size": 4,
                            "k": 5, "use_peft": True, "lora_r": 8})
    script, args, model, agent = run_rl.parse(argv=["--config", str(path), "--learning_rate", "1e-4", "--k", "2",
                                                    "--lora-r", "4", "--max-steps", "3"])
    assert (args.learning_rate, args.max_steps, args.num_generations) == (1e-4, 3, 4)
    assert (model.use_peft, model.lora_r, agent.k) == (True, 4, 2)
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]  # ours: nothing reported
    assert args.reward_weights == [1.0, 0.0] and script.retriever == "bm25"


def test_the_agent_config_is_built_once_and_whole():
    *_, agent = run_rl.parse({**RL_MIN, "mode": "single", "doc_max_tokens": 120, "retrieval_retries": 0,
                              "initial_search": True})
    from langchain_ragr1.config import RagR1Config

    assert agent == RagR1Config(mode="single", doc_max_tokens=120, retrieval_retries=0, initial_search=True)


def test_validate_only_prints_each_dataclass_and_loads_nothing(tmp_path, capsys):
    assert run_sft.main(["--config", "sft_default", "--validate-only", "--learning_rate", "1e-4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"SFTScriptArguments", "SFTConfig", "ModelConfig"}
    assert printed["SFTScriptArguments"]["max_samples"] == 480 and printed["SFTConfig"]["learning_rate"] == 1e-4
    assert printed["ModelConfig"]["lora_r"] == 16 and printed["SFTConfig"]["dataset_kwargs"]["skip_prepare_dataset"]
    assert run_rl.main(["--validate-only"]) == 0  # the packaged rl_cpu
    assert set(json.loads(capsys.readouterr().out)) == {"RLScriptArguments", "GRPOConfig", "ModelConfig", "RagR1Config"}


# -- errors: one per case, each naming the key (and file) and what to do -----------------------------

@pytest.mark.parametrize("keys, match", [
    ({"learning_rat": 1e-4}, r"config '.*run.yaml': unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"),
    ({"lora": {"r": 8}}, r"unknown key 'lora' .*lora_r.*trl.ModelConfig"),
    ({"lora_r": "eight"}, r"config '.*run.yaml': lora_r must be an integer, got 'eight'"),
    ({"optim": "adamw_nope"}, r"optim must be one of adamw_torch, adamw_torch_fused, .*got 'adamw_nope'"),
    ({"mode": "parallel"}, r"mode must be one of multi, single; got 'parallel'"),
    ({"retriever": "elastic"}, r"retriever must be one of .*bm25.*got 'elastic'"),
    ({"k": 0}, r"config '.*run.yaml': RagR1Config rejected the settings: k must be a positive integer, got 0"),
    ({"retriever": "http"}, r"RLScriptArguments rejected the settings: retriever_url is required with retriever: http"),
    ({"num_generations": 3, "per_device_train_batch_size": 2}, r"trl.GRPOConfig rejected the settings: .*num_generations"),
    ({"learning_rate": "fast"}, r"learning_rate must be a number, got 'fast'"),
])
def test_a_bad_yaml_key_or_value_names_the_file_and_the_key(keys, match, tmp_path):
    path = write(tmp_path, {**RL_MIN, **keys})
    with pytest.raises(ConfigError, match=match):
        run_rl.parse(argv=["--config", str(path)])


@pytest.mark.parametrize("argv, match", [
    (["--learnig_rate", "1e-4"], r"unknown argument\(s\) '--learnig_rate' \(did you mean '--learning_rate'"),
    # no abbreviations: a prefix of several flags gets the project's message, not argparse's "ambiguous option"
    (["--num_generation", "4"], r"unknown argument\(s\) '--num_generation' \(did you mean '--num_generations'"),
    (["--learning", "1e-4"], r"unknown argument\(s\) '--learning' "),  # a prefix of one flag is no flag either
    (["--k", "0"], r"rl_cpu.yaml' with the command line's flags: RagR1Config rejected the settings: k must be"),
    (["--config", "rl_cpux"], r"'rl_cpux' not found \(did you mean 'rl_cpu'\?\).*rl_cpu, rl_paper_7b"),
])
def test_a_bad_flag_names_it(argv, match):
    with pytest.raises(ConfigError, match=match):
        run_rl.parse(argv=argv if "--config" in argv else ["--config", "rl_cpu", *argv])


def test_a_bad_flag_value_is_argparses_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_rl.parse(argv=["--learning_rate", "fast"])
    assert exit_info.value.code == 2 and "argument --learning_rate/--learning-rate: invalid float value: 'fast'" \
        in capsys.readouterr().err


@pytest.mark.parametrize("text, match", [
    ("learning_rate: [1\n", "is not valid YAML"),
    ("- a list\n", "expected a mapping of keys, got list"),
])
def test_a_broken_yaml_file_is_named(text, match, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config '.*broken.yaml'.*{match}"):
        run_sft.parse(argv=["--config", str(path)])


@pytest.mark.parametrize("check, parse, values, match", [
    (check_rl, run_rl.parse, {**RL_MIN, "temperature": 0}, "temperature must be > 0"),
    (check_rl, run_rl.parse, {"output_dir": "o", "use_cpu": True, "use_vllm": True}, "use_vllm needs a GPU"),
    (check_rl, run_rl.parse, {**RL_MIN, "reward_weights": [1.0]}, "one weight per reward .exact_match, format."),
    (check_rl, run_rl.parse, {**RL_MIN, "top_k": -1}, r"top_k must be an integer >= 0 \(0 is off"),
    (check_rl, run_rl.parse, {**RL_MIN, "rollout_backend": "continuous", "repetition_penalty": 1.2},
     "repetition_penalty=1.2 is not supported by ContinuousTransformersPolicy"),
    (check_rl, run_rl.parse, {**RL_MIN, "generation_kwargs": {"num_beams": 2}},
     "generation_kwargs is not supported by the graph rollout"),
    (check_sft, run_sft.parse, {**SFT_MIN, "packing": True}, "packing must stay false"),
    (check_sft, run_sft.parse, {**SFT_MIN, "dataset_kwargs": {}}, "dataset_kwargs must keep skip_prepare_dataset"),
])
def test_rules_across_the_dataclasses_are_checked_before_anything_loads(check, parse, values, match):
    with pytest.raises(ConfigError, match=match):
        check(parse(values))


def test_main_reports_errors_as_one_line_and_exit_2(tmp_path, capsys):
    assert run_rl.main(["--config", str(write(tmp_path, {**RL_MIN, "optim": "adamw_nope"})), "--validate-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RL config") and "optim must be one of" in err and "Traceback" not in err
    assert run_sft.main(["--config", str(write(tmp_path, {**SFT_MIN, "report_too": "tensorboard"})),
                         "--validate-only"]) == 2
    assert "did you mean 'report_to'" in capsys.readouterr().err


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
def test_every_packaged_config_resolves_by_name_and_by_repo_path_and_parses(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: as after `pip install langchain-ragr1[training]`
    packaged = PACKAGED_CONFIGS_DIR / f"{name}.yaml"
    for spec in (name, f"{name}.yaml", f"training/configs/{name}.yaml", ROOT / "training" / "configs" / f"{name}.yaml"):
        assert resolve_config(spec) == packaged, spec
    module, check = (run_sft, check_sft) if name.startswith("sft") else (run_rl, check_rl)
    # the GPU configs on this CPU: TRL refuses bf16 without a GPU unless use_cpu is set
    parsed = module.parse(argv=["--config", f"training/configs/{name}.yaml", "--use_cpu", "true",
                                *(["--use_vllm", "false"] if name == "rl_paper_7b" else [])])
    check(parsed)
    assert parsed == module.parse(argv=["--config", name, "--use_cpu", "true",
                                        *(["--use_vllm", "false"] if name == "rl_paper_7b" else [])])


def test_the_single_query_campaign_differs_from_the_multi_query_one_by_data_output_and_epochs():
    packaged = {name: yaml.safe_load((PACKAGED_CONFIGS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
                for name in ("sft_campaign_mq", "sft_campaign_sq")}
    mq, sq = packaged["sft_campaign_mq"], packaged["sft_campaign_sq"]
    differ = {key for key in mq.keys() | sq.keys() if mq.get(key) != sq.get(key)}
    assert differ == {"dataset", "output_dir", "num_train_epochs"}
    assert (sq["dataset"], sq["output_dir"], sq["num_train_epochs"]) == (
        "runs/sft-v3-sq/trajectories.jsonl", "runs/campaign-sq", 1)
    assert sq["lora_layers"] == 16 and sq["use_peft"] is True


def test_an_existing_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {**RL_MIN, "max_steps": 7}, name="rl_cpu.yaml")
    assert run_rl.parse(argv=["--config", "rl_cpu.yaml"])[1].max_steps == 7  # ./rl_cpu.yaml, not the packaged one
    assert run_rl.parse(argv=["--config", "rl_cpu"])[1].max_steps == 50  # a bare name: the packaged one
    with pytest.raises(ConfigError, match="not found.*" + ", ".join(SFT_NAMES)):
        run_sft.parse(argv=["--config", "rl_cpu"])  # an RL config is not an SFT one


def test_list_configs_from_the_script_and_the_module(tmp_path):
    proc = run(str(ROOT / "training" / "run_sft.py"), "--list-configs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == SFT_NAMES
    proc = run("-m", "langchain_ragr1.tuning.run_rl", "--list-configs", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("rl_cpu\t"), proc.stderr


#: The other stages' modules in langchain_ragr1/tuning/ (a training/<name>.py entry point each)
#: and flags their --help must list.
STAGES = {
    "make_sft_data": ("--data", "--mode", "--teacher", "--teacher-model", "--retriever", "--max-length", "--out"),
    "filter_rl_data": ("--data", "--model", "--attempts", "--keep-solved", "--batch-size", "--out"),
    "export_adapter": ("--dtype", "--base-model-name"),
}


def help_flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z_-]*", text))


@pytest.mark.parametrize("name", [*STAGES, "run_sft", "run_rl"])
def test_python_m_help_exits_0_and_the_repo_script_lists_the_same_flags(name, tmp_path):
    proc = run("-m", f"langchain_ragr1.tuning.{name}", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(STAGES.get(name, ("--config",))) <= help_flags(proc.stdout), proc.stdout
    assert "found in sys.modules" not in proc.stderr  # runpy: not a module the package imports first
    script = run(str(ROOT / "training" / f"{name}.py"), "--help", cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    assert help_flags(script.stdout) == help_flags(proc.stdout)
    assert sorted(p.stem for p in (ROOT / "training").glob("*.py")) == sorted([*STAGES, "run_sft", "run_rl"])
    assert f"from langchain_ragr1.tuning.{name} import main" in (ROOT / "training" / f"{name}.py").read_text()


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("zero3", "DEEPSPEED"), ("fsdp2", "FSDP")])
def test_shipped_accelerate_configs_load_as_accelerate_reads_them(name, kind):
    """training/accelerate/*.yaml (docs/training.md, "Several processes"): accelerate's own loader
    takes them, 8 GPU processes each; ZeRO stage 3; FSDP version 2 wrapping Qwen2's decoder layers."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parents[1] / "training" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert (str(config.distributed_type).split(".")[-1], config.num_processes, config.use_cpu) == (kind, 8, False)
    assert str(config.mixed_precision).split(".")[-1].lower() == "bf16"
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_init_flag"]
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "Qwen2DecoderLayer"
