"""The training campaign's loop (fake segments and checks), its record, resume and stop; and the
merge it evaluates through (export_adapter --merge-into) on a real tiny LoRA checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_ragr1.errors import ConfigError, RagR1Error
from langchain_ragr1.tuning import campaign
from langchain_ragr1.tuning.campaign import Campaign, Settings, data_mode, load_state, main, no_rise


class FakeRun:
    """Segments that write ``checkpoint-<step>`` folders (``steps`` per check, 4 checks an epoch),
    and checks that return the next dev EM of ``ems``."""

    def __init__(self, out: Path, ems: list[float], steps: int = 5, epochs: float = 2.0, fail_at: int | None = None):
        self.out, self.ems, self.steps, self.epochs, self.fail_at = out, list(ems), steps, epochs, fail_at
        self.step = 0
        self.evaluated: list[str] = []
        self.exported: list[str] = []
        self.segments = 0
        self.on_segment = None

    def train(self) -> int:
        self.segments += 1
        if self.fail_at == self.segments:
            return 1
        self.step += self.steps
        max_steps = int(self.steps * 4 * self.epochs)
        self.step = min(self.step, max_steps)
        ckpt = self.out / f"checkpoint-{self.step}"
        ckpt.mkdir(parents=True)
        history = [{"step": s, "loss": 1.0 / s} for s in range(1, self.step + 1)]
        (ckpt / "trainer_state.json").write_text(json.dumps(
            {"global_step": self.step, "max_steps": max_steps, "epoch": self.step / (self.steps * 4),
             "log_history": history}))
        if self.on_segment:
            self.on_segment()
        return 0

    def evaluate(self, checkpoint: Path) -> dict:
        self.evaluated.append(checkpoint.name)
        return {"em": self.ems.pop(0), "f1": 0.5, "format_ok": 1.0, "retrieval_turns": 1.5}

    def export(self, checkpoint: Path, dest: Path) -> None:
        dest.mkdir(exist_ok=True)
        (dest / "from.txt").write_text(checkpoint.name)
        self.exported.append(checkpoint.name)


def _campaign(out: Path, run: FakeRun, patience: int = 2, epochs: float = 2.0) -> Campaign:
    settings = Settings(out, epochs, check_every_epochs=0.25, patience=patience)
    return Campaign(settings, train=run.train, evaluate=run.evaluate, export=run.export)


def test_runs_to_the_epochs_and_keeps_the_best_checkpoint(tmp_path):
    run = FakeRun(tmp_path, [0.1, 0.3, 0.2, 0.4, 0.5, 0.45, 0.5, 0.6], epochs=2.0)
    state = _campaign(tmp_path, run, patience=3).run()
    assert [c["step"] for c in state["checks"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert state["done"] == "trained to epoch 2.00" and state["checks"][-1]["why"] == "final"
    assert state["best"]["step"] == 40 and state["best"]["dev_em"] == 0.6
    assert run.exported == ["checkpoint-5", "checkpoint-10", "checkpoint-20", "checkpoint-25", "checkpoint-40"]
    assert (tmp_path / "best" / "from.txt").read_text() == "checkpoint-40"
    # the loss of a check is the mean of the steps since the one before
    assert state["checks"][1]["loss"] == pytest.approx(sum(1.0 / s for s in range(6, 11)) / 5)
    rows = (tmp_path / "campaign.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,train_wall_s,loss,dev_em") and len(rows) == 9
    assert (tmp_path / "campaign.png").stat().st_size > 0


def test_ends_when_dev_em_has_not_risen_for_patience_checks(tmp_path):
    run = FakeRun(tmp_path, [0.3, 0.4, 0.4, 0.35, 0.9], epochs=2.0)
    state = _campaign(tmp_path, run, patience=2).run()
    assert [c["dev_em"] for c in state["checks"]] == [0.3, 0.4, 0.4, 0.35]
    assert state["done"] == "dev EM has not risen for 2 checks" and state["best"]["step"] == 10
    assert no_rise([{"dev_em": e} for e in (0.3, 0.4, 0.41)], 2) is False


def test_stop_checks_do_not_count_towards_patience(tmp_path):
    """Two sessions that each end with a stop check below the best must not end the campaign."""
    run = FakeRun(tmp_path, [0.3, 0.6, 0.5, 0.5], epochs=2.0)
    first = _campaign(tmp_path, run)
    run.on_segment = lambda: first.request_stop() if run.segments == 3 else None
    first.run()
    second = _campaign(tmp_path, run)
    run.on_segment = second.request_stop
    state = second.run()
    assert [(c["dev_em"], c["why"]) for c in state["checks"]] == [
        (0.3, "pause"), (0.6, "pause"), (0.5, "stop"), (0.5, "stop")]
    assert state["done"] is None and state["best"]["step"] == 10


def test_a_stop_checks_the_saved_step_and_a_rerun_resumes_without_repeating(tmp_path):
    run = FakeRun(tmp_path, [0.2, 0.3, 0.1, 0.1, 0.5], epochs=1.0)
    first = _campaign(tmp_path, run)
    run.on_segment = lambda: first.request_stop() if run.segments == 2 else None
    state = first.run()
    assert [c["why"] for c in state["checks"]] == ["pause", "stop"] and state["done"] is None
    assert run.segments == 2 and state["train_wall_s"] >= 0
    again = _campaign(tmp_path, run).run()  # the next session: the record is read back
    assert [c["step"] for c in again["checks"]] == [5, 10, 15, 20]
    assert run.evaluated == ["checkpoint-5", "checkpoint-10", "checkpoint-15", "checkpoint-20"]
    assert again["done"] == "trained to epoch 1.00" and load_state(tmp_path)["best"]["step"] == 10


def test_a_failed_segment_is_reported_and_the_record_kept(tmp_path):
    run = FakeRun(tmp_path, [0.2, 0.3], fail_at=2)
    with pytest.raises(RagR1Error, match="exited with code 1.*train.log"):
        _campaign(tmp_path, run).run()
    assert [c["step"] for c in load_state(tmp_path)["checks"]] == [5]


def test_a_corrupt_record_names_the_file(tmp_path):
    (tmp_path / "campaign.json").write_text("{not json")
    with pytest.raises(ConfigError, match="campaign.json is not readable JSON"):
        load_state(tmp_path)


def test_the_command_refuses_a_full_finetune_config(tmp_path, capsys):
    code = main(["--config", "sft_default", "--use_peft", "false", "--output_dir", str(tmp_path)])
    assert code == 2 and "use_peft: true" in capsys.readouterr().err


def _trajectories(path: Path, modes: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "mode": mode, "segments": []}) + "\n"
                            for i, mode in enumerate(modes)), encoding="utf-8")
    return path


def test_the_dev_checks_run_in_the_mode_of_the_trajectories_unless_told(tmp_path, monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(campaign.Campaign, "run", lambda self: seen.append(self.settings.dev_mode) or {})
    single = _trajectories(tmp_path / "sq.jsonl", ["single", "single"])
    mixed = _trajectories(tmp_path / "both.jsonl", ["multi", "single"])
    out = ["--output_dir", str(tmp_path / "out")]
    assert main(["--config", "sft_campaign_sq", "--dataset", str(single), *out]) == 0
    assert main(["--config", "sft_campaign_sq", "--dataset", str(single), "--dev-mode", "multi", *out]) == 0
    assert main(["--config", "sft_campaign_mq", "--dataset", str(mixed), *out]) == 0
    assert main(["--config", "sft_campaign_mq", "--dataset", str(_trajectories(tmp_path / "mq.jsonl", ["multi"])),
                 *out]) == 0
    assert seen == ["single", "multi", "multi", "multi"]
    assert data_mode(mixed) == ("multi", f"{mixed} holds multi and single mode(s): multi, the default")
    (tmp_path / "cut.jsonl").write_text('{"mode": "single"}\n{"mode": "sin', encoding="utf-8")
    with pytest.raises(ConfigError, match="cut.jsonl is not a JSONL file of trajectories.*--dev-mode"):
        data_mode(tmp_path / "cut.jsonl")


def test_the_dev_mode_of_a_saved_dataset_is_its_samples_mode(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"mode": ["single"] * 3, "input_ids": [[1]] * 3}).save_to_disk(str(tmp_path / "sq"))
    Dataset.from_dict({"input_ids": [[1]]}).save_to_disk(str(tmp_path / "old"))
    assert data_mode(tmp_path / "sq")[0] == "single"
    assert data_mode(tmp_path / "old") == ("multi", f"{tmp_path / 'old'} holds no recorded mode(s): multi, the default")


def test_a_missing_dataset_stops_the_campaign_before_training(tmp_path, capsys):
    assert main(["--config", "sft_campaign_sq", "--dataset", str(tmp_path / "none.jsonl"),
                 "--output_dir", str(tmp_path / "out")]) == 2
    assert "make_sft_data.py" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_status_prints_the_record(tmp_path, capsys):
    run = FakeRun(tmp_path, [0.25], epochs=0.25)
    _campaign(tmp_path, run, epochs=0.25).run()
    assert main(["--config", "sft_default", "--output_dir", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "1 checks" in out and "dev EM 0.250" in out and "best: step 5" in out


def test_merge_into_writes_a_model_with_the_adapter_in(tmp_path, tiny_model, smollm2_tokenizer):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from langchain_ragr1.tuning.export_adapter import main as export_main

    base = tmp_path / "base"
    tiny_model.save_pretrained(base)
    smollm2_tokenizer.save_pretrained(base)
    lora = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "ckpt")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits
    assert export_main([str(tmp_path / "ckpt"), str(tmp_path / "merged"), "--merge-into", str(base)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)
    assert export_main([str(tmp_path / "nothing"), str(tmp_path / "m2"), "--merge-into", str(base)]) == 2
