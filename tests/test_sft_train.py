"""Stage 1 SFT run: config validation before anything loads, a real SFTTrainer run on a tiny
model (checkpoints, loss curve, final model or adapter), resume, and label masking."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from langchain_ragr1.training import build_sft_dataset
from langchain_ragr1.training.sft import ConfigError, config_from_dict, load_config, train_sft

ROOT = Path(__file__).resolve().parents[1]


def _samples(tokenizer):
    """Four hand-built samples of the four kinds, with segment token ids like a token-level teacher."""
    def seg(role, text):
        if role == "prompt":
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                add_generation_prompt=True, return_dict=False)
        else:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"role": role, "text": text, "token_ids": list(ids)}

    prompt = seg("prompt", "Answer the question. Question: who wrote Hamlet?")
    search = seg("policy", "<think>I need the author.</think><search> Hamlet author </search>")
    info = seg("information", "<information>Doc 1: Hamlet is a tragedy by William Shakespeare.</information>")
    answer = seg("policy", "<think>The passage says Shakespeare.</think><answer> William Shakespeare </answer>")
    return [
        {"id": "a#1", "kind": 1, "context": [prompt], "target": answer},
        {"id": "a#2", "kind": 2, "context": [prompt], "target": search},
        {"id": "a#3", "kind": 3, "context": [prompt, search, info], "target": answer},
        {"id": "a#4", "kind": 4, "context": [prompt, search, info], "target": search},
    ]


@pytest.fixture(scope="module")
def sft_dataset_dir(tmp_path_factory, smollm2_tokenizer):
    out = tmp_path_factory.mktemp("sftdata")
    build_sft_dataset(_samples(smollm2_tokenizer), smollm2_tokenizer, 256).save_to_disk(str(out / "dataset"))
    return out


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model, smollm2_tokenizer):
    path = tmp_path / "tiny"
    tiny_model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


def _config(model_dir, dataset_dir, out, **extra):
    base = {"model": str(model_dir), "dataset": str(dataset_dir), "output_dir": str(out),
            "lora": False, "learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1, "max_length": 256, "save_steps": 1, "logging_steps": 1,
            "device": "cpu"}
    base.update(extra)
    return config_from_dict(base)


# -- config validation (nothing loads) ---------------------------------------------------------

def test_shipped_configs_validate_without_loading():
    cpu = load_config(ROOT / "training/configs/sft_cpu_lora.yaml")
    assert cpu.model is None and cpu.lora.enabled and cpu.lora.r == 16
    assert set(cpu.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (cpu.learning_rate, cpu.max_length, cpu.per_device_train_batch_size,
            cpu.gradient_accumulation_steps, cpu.num_train_epochs, cpu.save_steps) == (2e-4, 2048, 1, 8, 2, 50)
    paper = load_config(ROOT / "training/configs/sft_paper_7b.yaml")  # the model path does not exist
    assert not paper.lora.enabled and paper.bf16 and paper.num_train_epochs == 5 and paper.learning_rate == 1e-5


def test_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*learning_rat.*did you mean 'learning_rate'"):
        config_from_dict({"dataset": "d", "output_dir": "o", "learning_rat": 1e-4})
    with pytest.raises(ConfigError, match="unknown key.*rank.*lora"):
        config_from_dict({"dataset": "d", "output_dir": "o", "lora": {"rank": 8}})


@pytest.mark.parametrize("key,value,match", [
    ("learning_rate", -1e-4, "learning_rate"),
    ("per_device_train_batch_size", 0, "per_device_train_batch_size"),
    ("max_steps", 0, "max_steps"),
    ("num_train_epochs", 0, "num_train_epochs"),
    ("lora", {"r": 0}, "lora.r"),
    ("bf16", "yes", "bf16"),
])
def test_impossible_values_are_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"dataset": "d", "output_dir": "o", key: value})


def test_missing_dataset_names_the_data_script(tmp_path):
    config = config_from_dict({"dataset": str(tmp_path / "nope"), "output_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="training/make_sft_data.py"):
        train_sft(config)  # fails before any model loads
    with pytest.raises(ConfigError, match="dataset is required.*make_sft_data.py"):
        config_from_dict({"output_dir": "o"})


# -- real runs on the tiny model ---------------------------------------------------------------

def test_full_run_writes_checkpoints_loss_and_final(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "run"
    summary = train_sft(_config(tiny_model_dir, sft_dataset_dir, out), progress=False)
    assert summary["global_step"] == 2 and summary["resumed_from"] is None
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    with (out / "loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "final" / "model.safetensors").is_file()
    assert (out / "final" / "tokenizer_config.json").is_file()


def test_lora_run_saves_an_adapter(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "lora"
    config = _config(tiny_model_dir, sft_dataset_dir, out, max_steps=1,
                     lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    summary = train_sft(config, progress=False)
    assert summary["global_step"] == 1
    final = out / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 4


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "resume"
    first = train_sft(_config(tiny_model_dir, sft_dataset_dir, out, max_steps=1), progress=False)
    assert first["global_step"] == 1 and (out / "checkpoint-1").is_dir()
    second = train_sft(_config(tiny_model_dir, sft_dataset_dir, out, max_steps=2), progress=False)
    assert second["resumed_from"] is not None and Path(second["resumed_from"]).name == "checkpoint-1"
    assert second["global_step"] == 2
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # the resumed run trained only step 2: its own log history starts after step 1
    assert [r["step"] for r in second["loss_rows"]] == [1, 2]  # step 1 comes from the checkpoint's state


def test_collator_keeps_the_dataset_label_mask(sft_dataset_dir, smollm2_tokenizer):
    import torch
    from datasets import load_from_disk
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    dataset = load_from_disk(str(sft_dataset_dir / "dataset")).select_columns(["input_ids", "labels"])
    rows = [dataset[i] for i in range(len(dataset))]
    batch = DataCollatorForLanguageModeling(pad_token_id=smollm2_tokenizer.pad_token_id)(rows)
    width = batch["input_ids"].shape[1]
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["labels"][i, :n].tolist() == row["labels"]
        assert (batch["labels"][i, n:] == -100).all() and (batch["attention_mask"][i, n:] == 0).all()
        assert (batch["input_ids"][i, n:] == smollm2_tokenizer.pad_token_id).all()
        assert batch["labels"][i].ne(-100).sum().item() == sum(l != -100 for l in row["labels"]) > 0
    assert width == max(len(r["input_ids"]) for r in rows)
    assert torch.equal(batch["input_ids"][0, : len(rows[0]["input_ids"])], torch.tensor(rows[0]["input_ids"]))


def test_max_samples_takes_a_seeded_subset(tiny_model_dir, sft_dataset_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_samples"):
        _config(tiny_model_dir, sft_dataset_dir, tmp_path, max_samples=0)
    summary = train_sft(_config(tiny_model_dir, sft_dataset_dir, tmp_path / "sub", max_samples=2,
                                max_steps=1), progress=False)
    assert summary["samples"] == 2


def test_a_checkpoint_cut_short_is_skipped_on_resume(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "cut"
    train_sft(_config(tiny_model_dir, sft_dataset_dir, out, max_steps=2), progress=False)
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # as if killed while saving step 2
    summary = train_sft(_config(tiny_model_dir, sft_dataset_dir, out, max_steps=3), progress=False)
    assert Path(summary["resumed_from"]).name == "checkpoint-1" and summary["global_step"] == 3


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_model_dir, sft_dataset_dir, tmp_path):
    """run_sft.py in a subprocess, SIGKILLed mid-run; the rerun continues the step count."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from langchain_ragr1.training.checkpoints import last_complete_checkpoint

    out = tmp_path / "killed"
    config = _config(tiny_model_dir, sft_dataset_dir, out, max_steps=500, save_steps=2).to_dict()
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, str(ROOT / "training" / "run_sft.py"), "--config", str(path), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while int(Path(last_complete_checkpoint(out) or "checkpoint-0").name.split("-")[1]) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, "run_sft.py ended before its checkpoints"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = last_complete_checkpoint(out)
    step = int(Path(last).name.split("-")[1])
    assert step < 500
    summary = train_sft(config_from_dict({**config, "max_steps": step + 1}), progress=False)
    assert summary["resumed_from"] == last and summary["global_step"] == step + 1


def test_export_and_merge_give_the_trained_model(tiny_model_dir, sft_dataset_dir, tmp_path):
    """A LoRA run exported in float16 and merged into its base predicts what the adapter does."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from langchain_ragr1.models import merge_adapter
    from langchain_ragr1.training.sft import export_adapter

    out = tmp_path / "lora"
    train_sft(_config(tiny_model_dir, sft_dataset_dir, out, max_steps=2, learning_rate=1e-2,
                      lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}), progress=False)
    shipped = export_adapter(out / "final", tmp_path / "shipped", base_model_name="tiny")
    assert {v.dtype for v in load_file(shipped / "adapter_model.safetensors").values()} == {torch.float16}
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    merged_dir = merge_adapter(tiny_model_dir, shipped, tmp_path / "merged")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(out / "final"))(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
    assert not torch.allclose(before, adapted, atol=1e-4)  # the adapter learnt something
    assert torch.allclose(merged, adapted, atol=1e-2)
    with pytest.raises(ConfigError, match="no LoRA adapter"):
        export_adapter(tiny_model_dir, tmp_path / "x")
