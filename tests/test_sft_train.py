"""Stage 1 SFT run: config validation before anything loads, a real SFTTrainer run on a tiny
model (checkpoints, loss curve, final model or adapter), resume, label masking, and the
trajectory sample format (several labelled turns per sequence, token-weighted loss)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from _recipe import segment

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.tuning import build_sft_dataset, to_samples, write_jsonl
from langchain_ragr1.tuning.args import SFTScriptArguments
from langchain_ragr1.tuning.run_sft import parse
from langchain_ragr1.tuning.sft import check_dataset, run_control_callback, train_sft

ROOT = Path(__file__).resolve().parents[1]


_seg = segment  # a segment with token ids as a token-level teacher writes it (tests/_recipe.py)


def _samples(tokenizer):
    """Four hand-built samples of the four kinds, with segment token ids like a token-level teacher."""
    def seg(role, text):
        return _seg(tokenizer, role, text)

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


def _trajectories(tokenizer):
    """Three kept trajectories as make_sft_data.py writes them: search + answer (kinds 2, 3),
    a direct answer (kind 1), and search, an invalid turn, answer (kinds 2, 3; the invalid turn unlabelled)."""
    def seg(role, text):
        return _seg(tokenizer, role, text)

    def trajectory(id_, question, turns):
        return {"id": id_, "question": question, "golden_answers": ["x"], "item_kind": "bridge", "mode": "multi",
                "answer": "x", "turns": 0, "queries": [],
                "segments": [seg("prompt", f"Answer the question. Question: {question}"),
                             *(seg(role, text) for role, text in turns)]}

    info = "\n<information>\nDoc 1: Hamlet is a tragedy by William Shakespeare.\n</information>\n"
    return [
        trajectory("t1", "who wrote Hamlet?", [
            ("policy", "<think>I need the author.</think><search> Hamlet author </search>"), ("env", info),
            ("policy", "<think>The passage says Shakespeare.</think><answer> William Shakespeare </answer>")]),
        trajectory("t2", "what is 2+2?", [("policy", "<think>Easy.</think><answer> 4 </answer>")]),
        trajectory("t3", "who wrote Macbeth?", [
            ("policy", "<think>Search.</think><search> Macbeth author </search>"), ("env", info),
            ("policy", "<think>Hmm, let me think.</think>"), ("env", "\nMy previous action is invalid.\n"),
            ("policy", "<think>Shakespeare again.</think><answer> William Shakespeare </answer>")]),
    ]


@pytest.fixture(scope="module")
def sft_out_dir(tmp_path_factory, smollm2_tokenizer):
    """A make_sft_data.py --out folder: trajectories.jsonl, samples.jsonl and dataset/ (turn samples)."""
    out = tmp_path_factory.mktemp("sftout")
    trajectories = _trajectories(smollm2_tokenizer)
    samples = to_samples(trajectories, "turns")
    write_jsonl(trajectories, out / "trajectories.jsonl")
    write_jsonl(samples, out / "samples.jsonl")
    build_sft_dataset(samples, smollm2_tokenizer, 256).save_to_disk(str(out / "dataset"))
    return out


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model, smollm2_tokenizer):
    path = tmp_path / "tiny"
    tiny_model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


def _values(model_dir, dataset_dir, out, **extra):
    base = {"model_name_or_path": str(model_dir), "dataset": str(dataset_dir), "output_dir": str(out),
            "use_peft": False, "learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1, "max_length": 256, "save_steps": 1, "logging_steps": 1,
            "use_cpu": True, "sample_format": "turns", "bf16": False}
    return {**base, **extra}


def _config(model_dir, dataset_dir, out, **extra):
    """The parsed (SFTScriptArguments, SFTConfig, ModelConfig) of a tiny run."""
    return parse(_values(model_dir, dataset_dir, out, **extra))


# -- config validation (nothing loads) ---------------------------------------------------------

def test_shipped_configs_validate_without_loading():
    script, args, model = parse(argv=["--config", str(ROOT / "training/configs/sft_cpu_lora.yaml")])
    assert model.model_name_or_path is None and model.use_peft and model.lora_r == 16
    assert set(model.lora_target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (args.learning_rate, args.max_length, args.per_device_train_batch_size,
            args.gradient_accumulation_steps, args.num_train_epochs, args.save_steps) == (2e-4, 2048, 1, 8, 2, 50)
    # the model path does not exist: nothing is loaded
    _, paper, paper_model = parse(argv=["--config", str(ROOT / "training/configs/sft_paper_7b.yaml")])
    assert not paper_model.use_peft and paper.bf16 and paper.num_train_epochs == 5 and paper.learning_rate == 1e-5


def test_sample_format_defaults_to_trajectory_and_is_checked():
    assert parse({"dataset": "d", "output_dir": "o"})[0].sample_format == "trajectory"
    assert parse(argv=["--config", "sft_default"])[0].sample_format == "trajectory"  # the shipped adapter's run
    for name in ("sft_cpu_lora", "sft_paper_7b"):  # these keep the paper's cut
        assert parse(argv=["--config", name])[0].sample_format == "turns"
    with pytest.raises(ConfigError, match="sample_format must be one of trajectory, turns; got 'trajectories'"):
        parse({"dataset": "d", "output_dir": "o", "sample_format": "trajectories"})


def test_sample_format_chooses_the_source(sft_out_dir, sft_dataset_dir, tmp_path):
    def source(dataset, sample_format):
        return check_dataset(parse({"dataset": str(dataset), "output_dir": "o", "sample_format": sample_format})[0])

    jsonl = sft_out_dir / "trajectories.jsonl"
    assert source(sft_out_dir, "trajectory") == jsonl
    assert source(sft_out_dir / "dataset", "trajectory") == jsonl  # beside the dataset/ folder
    assert source(jsonl, "trajectory") == jsonl
    assert source(sft_out_dir, "turns") == sft_out_dir / "dataset"
    assert source(jsonl, "turns") == jsonl  # cut into turns at the start of the run
    with pytest.raises(ConfigError, match="trajectory needs trajectories.jsonl.*set sample_format turns"):
        source(sft_dataset_dir, "trajectory")  # a saved turns dataset only
    saved = tmp_path / "saved"  # a dataset saved in trajectory format serves trajectory runs only
    from langchain_ragr1.tuning.sft_data import read_jsonl

    build_sft_dataset(to_samples(read_jsonl(jsonl), "trajectory"), None, 256).save_to_disk(str(saved / "dataset"))
    assert source(saved, "trajectory") == saved / "dataset"
    with pytest.raises(ConfigError, match="holds trajectory samples; set sample_format trajectory"):
        source(saved, "turns")


def test_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'learning_rat' .did you mean 'learning_rate'"):
        parse({"dataset": "d", "output_dir": "o", "learning_rat": 1e-4})
    with pytest.raises(ConfigError, match="unknown key 'lora'.*did you mean 'lora_r'"):
        parse({"dataset": "d", "output_dir": "o", "lora": {"r": 8}})  # the old nested form: TRL's flat lora_* keys


@pytest.mark.parametrize("key,value,match", [
    ("per_device_train_batch_size", "two", "per_device_train_batch_size must be an integer, got 'two'"),
    ("bf16", "maybe", "bf16 must be true or false, got 'maybe'"),
    ("lr_scheduler_type", "wavy", "lr_scheduler_type must be one of linear, cosine"),
    ("lora_r", 1.5, "lora_r must be an integer"),
    ("max_train_seconds", 0, "SFTScriptArguments rejected the settings: max_train_seconds must be a finite number"),
    ("max_train_seconds", "1h", "max_train_seconds must be a number"),
    ("max_samples", 0, "max_samples must be a positive integer"),
    ("packing", True, None),
])
def test_impossible_values_are_rejected(key, value, match):
    if key == "packing":
        from langchain_ragr1.tuning.sft import check_sft

        with pytest.raises(ConfigError, match="packing must stay false"):
            check_sft(parse({"dataset": "d", "output_dir": "o", key: value}))
        return
    with pytest.raises(ConfigError, match=match):
        parse({"dataset": "d", "output_dir": "o", key: value})


def test_missing_dataset_names_the_data_script(tmp_path):
    with pytest.raises(ConfigError, match="training/make_sft_data.py"):
        train_sft(*parse({"dataset": str(tmp_path / "nope"), "output_dir": str(tmp_path / "o")}))  # before any model loads
    with pytest.raises(ConfigError, match="dataset is required.*make_sft_data.py"):
        parse({"output_dir": "o"})


# -- real runs on the tiny model ---------------------------------------------------------------

def test_full_run_writes_checkpoints_loss_and_final(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "run"
    summary = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out), progress=False)
    assert summary["global_step"] == 2 and summary["resumed_from"] is None
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    with (out / "loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "final" / "model.safetensors").is_file()
    assert (out / "final" / "tokenizer_config.json").is_file()


def test_time_budget_stops_after_the_step_that_passes_it_and_saves(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "budget"
    summary = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, max_steps=5, save_steps=100,
                                max_train_seconds=1e-6), progress=False)
    assert summary["global_step"] == 1 and summary["stopped_by_time_budget"] is True
    assert (out / "checkpoint-1").is_dir() and (out / "final").is_dir()
    unlimited = train_sft(*_config(tiny_model_dir, sft_dataset_dir, tmp_path / "free", max_steps=2), progress=False)
    assert unlimited["global_step"] == 2 and unlimited["stopped_by_time_budget"] is False


def test_pause_every_epochs_stops_at_each_multiple_and_the_rerun_resumes(tiny_model_dir, sft_dataset_dir, tmp_path):
    # 4 samples, batch 1: 4 steps an epoch; a pause each half epoch, so a campaign can evaluate between
    out = tmp_path / "pause"
    values = {"max_steps": -1, "num_train_epochs": 1, "per_device_train_batch_size": 1, "save_steps": 100,
              "pause_every_epochs": 0.5}
    first = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, **values), progress=False)
    assert first["global_step"] == 2 and first["stopped"] == "pause" and (out / "checkpoint-2").is_dir()
    second = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, **values), progress=False)
    assert Path(second["resumed_from"]).name == "checkpoint-2"
    assert second["global_step"] == 4 and (out / "checkpoint-4").is_dir()
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(1.0)


def test_sigterm_ends_the_run_after_the_step_with_a_checkpoint(sft_dataset_dir):
    import os
    import signal
    from types import SimpleNamespace

    from transformers import TrainerControl

    callback = run_control_callback(SFTScriptArguments(dataset=str(sft_dataset_dir)))
    before = signal.getsignal(signal.SIGTERM)
    state = SimpleNamespace(epoch=0.0, global_step=3)
    callback.on_train_begin(None, state, TrainerControl())
    try:
        control = callback.on_step_end(None, state, TrainerControl())
        assert not control.should_training_stop
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the test process lives on
        control = callback.on_step_end(None, state, TrainerControl())
        assert control.should_training_stop and control.should_save and callback.stopped == "sigterm"
    finally:
        callback.on_train_end(None, state, TrainerControl())
    assert signal.getsignal(signal.SIGTERM) == before


def test_lora_run_saves_an_adapter(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "lora"
    config = _config(tiny_model_dir, sft_dataset_dir, out, max_steps=1,
                     use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    summary = train_sft(*config, progress=False)
    assert summary["global_step"] == 1
    final = out / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 4


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "resume"
    first = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, max_steps=1), progress=False)
    assert first["global_step"] == 1 and (out / "checkpoint-1").is_dir()
    second = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, max_steps=2), progress=False)
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
        assert batch["labels"][i].ne(-100).sum().item() == sum(label != -100 for label in row["labels"]) > 0
    assert width == max(len(r["input_ids"]) for r in rows)
    assert torch.equal(batch["input_ids"][0, : len(rows[0]["input_ids"])], torch.tensor(rows[0]["input_ids"]))


def test_max_samples_takes_a_seeded_subset(tiny_model_dir, sft_dataset_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_samples"):
        _config(tiny_model_dir, sft_dataset_dir, tmp_path, max_samples=0)
    summary = train_sft(*_config(tiny_model_dir, sft_dataset_dir, tmp_path / "sub", max_samples=2,
                                max_steps=1), progress=False)
    assert summary["samples"] == 2


def test_a_checkpoint_cut_short_is_skipped_on_resume(tiny_model_dir, sft_dataset_dir, tmp_path):
    out = tmp_path / "cut"
    train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, max_steps=2), progress=False)
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # as if killed while saving step 2
    summary = train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, max_steps=3), progress=False)
    assert Path(summary["resumed_from"]).name == "checkpoint-1" and summary["global_step"] == 3


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_model_dir, sft_dataset_dir, tmp_path):
    """run_sft.py in a subprocess, SIGKILLed mid-run; the rerun continues the step count."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from langchain_ragr1.tuning.checkpoints import last_complete_checkpoint

    out = tmp_path / "killed"
    config = _values(tiny_model_dir, sft_dataset_dir, out, max_steps=500, save_steps=2)
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
    summary = train_sft(*parse({**config, "max_steps": step + 1}), progress=False)
    assert summary["resumed_from"] == last and summary["global_step"] == step + 1


def test_export_and_merge_give_the_trained_model(tiny_model_dir, sft_dataset_dir, tmp_path):
    """A LoRA run exported in float16 and merged into its base predicts what the adapter does."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from langchain_ragr1.models import export_adapter, merge_adapter

    out = tmp_path / "lora"
    train_sft(*_config(tiny_model_dir, sft_dataset_dir, out, max_steps=2, learning_rate=1e-2,
                      use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"]), progress=False)
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


# -- trajectory format -------------------------------------------------------------------------

def test_trajectory_yaml_runs_end_to_end_and_counts_tokens(tiny_model_dir, sft_out_dir, tmp_path, smollm2_tokenizer):
    """A YAML with sample_format: trajectory through run_sft's main, on make_sft_data's --out folder."""
    import yaml

    from langchain_ragr1.tuning.run_sft import main
    from langchain_ragr1.tuning.sft_data import read_jsonl, token_accounting

    out = tmp_path / "traj"
    config = _values(tiny_model_dir, sft_out_dir, out, sample_format="trajectory")
    path = tmp_path / "traj.yaml"
    path.write_text(yaml.safe_dump(config))
    assert "sample_format: trajectory" in path.read_text()
    assert main(["--config", str(path), "--quiet"]) == 0
    counts = json.loads((out / "data_counts.json").read_text())
    assert counts["sample_format"] == "trajectory" and counts["source"] == str(sft_out_dir / "trajectories.jsonl")
    expected = token_accounting(read_jsonl(sft_out_dir / "trajectories.jsonl"), smollm2_tokenizer, 256)
    assert counts["accounting"] == json.loads(json.dumps(expected))
    assert expected["labelled_tokens_equal"] and expected["turns"]["samples"] == 5
    assert expected["trajectory"]["samples"] == 3 and expected["tokens_ratio"] > 1
    train = counts["train"]
    assert train["samples"] == 3 and train["tokens"] == expected["trajectory"]["tokens"]
    assert train["labelled_tokens"] == expected["turns"]["labelled_tokens"]
    assert train["kinds"] == {"1": 1, "2": 2, "3": 2, "4": 0}
    assert train["optimizer_steps_per_epoch"] == 2  # 3 samples, 2 per step
    assert counts["built"]["dropped_too_long"] == 0
    assert (out / "final" / "model.safetensors").is_file()
    rows = list(csv.DictReader((out / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2] and all(math.isfinite(float(r["loss"])) for r in rows)


def test_turns_run_counts_tokens_too_and_max_samples_counts_trajectories(tiny_model_dir, sft_out_dir, tmp_path):
    turns = train_sft(*_config(tiny_model_dir, sft_out_dir, tmp_path / "turns", max_steps=1), progress=False)
    assert turns["sample_format"] == "turns" and turns["samples"] == 5  # the saved dataset/
    assert turns["data_counts"]["accounting"]["turns"]["tokens"] == turns["tokens_per_epoch"]
    whole = train_sft(*_config(tiny_model_dir, sft_out_dir, tmp_path / "whole", max_steps=1,
                              sample_format="trajectory", max_samples=2), progress=False)
    assert whole["samples"] == 2  # trajectories, a seeded subset
    subset = whole["data_counts"]["accounting_train"]
    assert subset["trajectories"] == 2 and subset["trajectory"]["tokens"] == whole["tokens_per_epoch"]
    assert subset["trajectory"]["labelled_tokens"] == whole["labelled_tokens_per_epoch"]


def test_trainer_batch_keeps_labels_on_every_policy_turn(tiny_model, tiny_model_dir, sft_out_dir, smollm2_tokenizer):
    """The batch SFTTrainer builds (our sft_args: no completion_only/assistant_only re-masking)
    keeps the labels of all valid turns of each trajectory, and its loss is the mean over the
    labelled tokens of the whole optimizer step (num_items_in_batch), not a mean of per-sample means."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    from langchain_ragr1.tuning.sft import load_sft_dataset

    script, args, _ = _config(tiny_model_dir, sft_out_dir, sft_out_dir / "unused", sample_format="trajectory",
                              per_device_train_batch_size=3)
    dataset, _ = load_sft_dataset(script, args, smollm2_tokenizer, check_dataset(script))
    trainer = SFTTrainer(model=tiny_model, args=args, train_dataset=dataset,
                         processing_class=smollm2_tokenizer)
    assert not trainer.args.completion_only_loss and not trainer.args.assistant_only_loss
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["labels"].shape[0] == 3
    by_ids = {tuple(r["input_ids"]): r["labels"] for r in dataset}
    spans_seen = 0
    for row in range(3):
        n = int(batch["attention_mask"][row].sum())
        labels = by_ids[tuple(batch["input_ids"][row, :n].tolist())]
        assert batch["labels"][row, :n].tolist() == labels and (batch["labels"][row, n:] == -100).all()
        labelled = [p for p, label in enumerate(labels) if label != -100]
        spans_seen = max(spans_seen, 1 + sum(b - a > 1 for a, b in zip(labelled, labelled[1:])))
    assert spans_seen == 2  # a trajectory with two labelled turns (search, answer) and a gap between

    # Loss reduction: sum of per-token CE over labelled tokens / labelled tokens of the step.
    assert trainer.model_accepts_loss_kwargs
    count = trainer._get_num_items_in_batch([batch, batch], trainer.args.device)  # two accumulation steps
    assert int(count) == 2 * int(batch["labels"][:, 1:].ne(-100).sum())
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=count)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                             ignore_index=-100, reduction="sum")
    assert loss.item() == pytest.approx(ce.item() / int(count), rel=1e-4)
