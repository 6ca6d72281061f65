"""The fast SFT levers (langchain_ragr1/tuning/fast_sft.py) change the cost, not what is learned:
on a tiny fp32 model the labelled-only LM head gives TRL's loss and gradients, the cached frozen
layers give the uncached model's loss and LoRA gradients, and the adapter trained on the cut model
is the full model's adapter. Plus the cache's reuse/rebuild rules and the settings' errors."""

from __future__ import annotations

import json
import math

import pytest
from _recipe import make_sft_dir, make_tiny_model_dir

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.tuning.run_sft import parse
from langchain_ragr1.tuning.sft import check_dataset, check_sft, load_sft_dataset, train_sft


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, smollm2_tokenizer):
    root = tmp_path_factory.mktemp("fast")
    return make_tiny_model_dir(root / "tiny", smollm2_tokenizer), make_sft_dir(root / "data", smollm2_tokenizer)


def _parse(dirs, out, **extra):
    model, data = dirs
    values = {"model_name_or_path": str(model), "dataset": str(data), "output_dir": str(out), "use_peft": True,
              "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj", "down_proj"],
              "max_steps": 2, "per_device_train_batch_size": 3, "gradient_accumulation_steps": 1, "max_length": 256,
              "save_steps": 1, "use_cpu": True, "bf16": False, "learning_rate": 1e-3, **extra}
    return parse(values)


def _trainer(dirs, tmp_path, smollm2_tokenizer, *, fast: bool, lora_layers: int = 0, state=None):
    """A trainer on the tiny model with LoRA (optionally on the top layers), its first batch, and
    the adapter weights set to ``state`` (the same non-zero values across trainers)."""
    import torch
    import trl
    from transformers import AutoModelForCausalLM

    from langchain_ragr1.tuning.fast_sft import fast_trainer_class, top_layers

    script, args, model_args = _parse(dirs, tmp_path / "out", lora_layers=lora_layers)
    model = AutoModelForCausalLM.from_pretrained(dirs[0])
    dataset, _ = load_sft_dataset(script, args, smollm2_tokenizer, check_dataset(script))
    peft_config = trl.get_peft_config(model_args)
    if lora_layers:
        peft_config.layers_to_transform = top_layers(model, lora_layers)
    cls = fast_trainer_class(trl.SFTTrainer) if fast else trl.SFTTrainer
    trainer = cls(model=model, args=args, train_dataset=dataset, processing_class=smollm2_tokenizer,
                  peft_config=peft_config)
    named = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for name, param in named.items():
            if state is not None:
                param.copy_(state[name])
            else:  # lora_B starts at zero: give every adapter weight a value so all gradients are non-trivial
                param.copy_(torch.randn_like(param) * 0.1)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, batch, dataset


def _loss_and_grads(trainer, batch):
    model = trainer.model.train()
    model.zero_grad()
    count = trainer._get_num_items_in_batch([batch, batch], trainer.args.device)  # as if 2 accumulation steps
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=count)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_labelled_head_gives_trls_loss_gradients_and_metrics(dirs, tmp_path, smollm2_tokenizer):
    import torch

    trl_trainer, batch, _ = _trainer(dirs, tmp_path, smollm2_tokenizer, fast=False)
    state = {n: p.detach().clone() for n, p in trl_trainer.model.named_parameters() if p.requires_grad}
    fast_trainer, fast_batch, _ = _trainer(dirs, tmp_path, smollm2_tokenizer, fast=True, state=state)
    assert torch.equal(batch["input_ids"], fast_batch["input_ids"])
    trl_loss, trl_grads = _loss_and_grads(trl_trainer, batch)
    fast_loss, fast_grads = _loss_and_grads(fast_trainer, batch)
    assert fast_loss == pytest.approx(trl_loss, rel=1e-6)
    assert trl_grads.keys() == fast_grads.keys() and len(trl_grads) == 2 * 3 * 2
    for name, grad in trl_grads.items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    for metric in ("entropy", "mean_token_accuracy"):
        assert fast_trainer._metrics["train"][metric][-1] == pytest.approx(trl_trainer._metrics["train"][metric][-1],
                                                                           rel=1e-5)
    assert fast_trainer._metrics["train"]["num_tokens"] == trl_trainer._metrics["train"]["num_tokens"]


def test_cached_frozen_layers_give_the_full_models_loss_gradients_and_adapter(dirs, tmp_path, smollm2_tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from langchain_ragr1.tuning.fast_sft import FrozenLayerCache, decoder_layers, drop_frozen_layers

    full, batch, _ = _trainer(dirs, tmp_path, smollm2_tokenizer, fast=True, lora_layers=1)
    state = {n: p.detach().clone() for n, p in full.model.named_parameters() if p.requires_grad}
    assert all(".layers.1." in n for n in state)  # LoRA on the top layer only
    cut, cut_batch, dataset = _trainer(dirs, tmp_path, smollm2_tokenizer, fast=True, lora_layers=1, state=state)
    cache, built = FrozenLayerCache.build(cut.model, dataset["input_ids"], 1, tmp_path / "cache",
                                          signature={"test": 1}, autocast=cut.accelerator.autocast)
    assert built and len(cache.index) == len(set(map(tuple, dataset["input_ids"])))
    drop_frozen_layers(cut.model, 1)
    assert not list(decoder_layers(cut.model)[0].parameters())
    cut.frozen_cache = cache

    full_loss, full_grads = _loss_and_grads(full, batch)
    cut_loss, cut_grads = _loss_and_grads(cut, batch)
    assert cut_loss == pytest.approx(full_loss, rel=1e-6)
    assert full_grads.keys() == cut_grads.keys()
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(cut_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)

    # the adapter saved from the cut model is the full model's: same names, same logits
    cut.model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(dirs[0]), tmp_path / "adapter").eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        expected = full.model.eval()(input_ids=ids, attention_mask=mask).logits
        cached = cut.model.eval()(inputs_embeds=cache.lookup(ids, mask), attention_mask=mask).logits
        got = reloaded(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached[valid], expected[valid], rtol=1e-5, atol=1e-5)

    other = ids.clone()
    other[0, 0] = (other[0, 0] + 1) % 1000
    with pytest.raises(KeyError, match="not in the frozen-layer cache"):
        cache.lookup(other, mask)


def test_the_cache_is_reused_on_resume_and_rebuilt_for_other_settings(dirs, tmp_path):
    out = tmp_path / "run"
    fast = {"lora_layers": 1, "cache_frozen_layers": True, "lm_head_on_labels": True}
    first = train_sft(*_parse(dirs, out, **fast), progress=False)
    assert first["frozen_cache"]["built"] and first["frozen_cache"]["first_trained_layer"] == 1
    assert (out / "final" / "adapter_model.safetensors").is_file()
    again = train_sft(*_parse(dirs, out, max_steps=3, **fast), progress=False)  # resumes from checkpoint-2
    assert again["resumed_from"] and again["global_step"] == 3 and not again["frozen_cache"]["built"]
    subset = train_sft(*_parse(dirs, tmp_path / "run", max_steps=4, max_samples=6, **fast), progress=False)
    assert subset["frozen_cache"]["built"]  # other data: rebuilt, never reused
    meta = json.loads((out / "frozen_cache" / "meta.json").read_text())
    assert len(meta["index"]) == 6


def test_a_cache_build_cut_short_goes_on_where_it_stopped(dirs, tmp_path, smollm2_tokenizer, monkeypatch):
    import contextlib

    import numpy as np

    from langchain_ragr1.tuning import fast_sft
    from langchain_ragr1.tuning.fast_sft import FrozenLayerCache

    trainer, _, dataset = _trainer(dirs, tmp_path, smollm2_tokenizer, fast=True, lora_layers=1)
    samples = dataset["input_ids"]
    monkeypatch.setattr(fast_sft, "_FLUSH_SECONDS", 0.0)  # record progress after every sample
    calls = []

    def dying_autocast():  # the run is killed while it computes the 4th sample
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return contextlib.nullcontext()

    with pytest.raises(KeyboardInterrupt):
        FrozenLayerCache.build(trainer.model, samples, 1, tmp_path / "cut", signature={"t": 1}, autocast=dying_autocast)
    assert not (tmp_path / "cut" / "meta.json").exists()
    assert len(json.loads((tmp_path / "cut" / "partial.json").read_text())["index"]) == 3
    calls.clear()

    def counting_autocast():
        calls.append(1)
        return contextlib.nullcontext()

    resumed, built = FrozenLayerCache.build(trainer.model, samples, 1, tmp_path / "cut", signature={"t": 1},
                                            autocast=counting_autocast)
    distinct = len(set(map(tuple, samples)))
    assert len(calls) == distinct - 3  # only the samples the cut build had not recorded
    assert built and len(resumed.index) == distinct and not (tmp_path / "cut" / "partial.json").exists()
    straight, _ = FrozenLayerCache.build(trainer.model, samples, 1, tmp_path / "straight", signature={"t": 1},
                                         autocast=contextlib.nullcontext)
    for ids in samples:  # every sample's states equal an uninterrupted build's
        key = fast_sft.sample_key(ids)
        (a, n), (b, m) = resumed.index[key], straight.index[key]
        assert n == m and np.array_equal(resumed._states[a:a + n], straight._states[b:b + m])
    (tmp_path / "cut" / "meta.json").unlink()  # a record for other settings is not resumed from
    (tmp_path / "cut" / "partial.json").write_text(json.dumps({"signature": {"t": 2}, "index": {}, "offset": 0,
                                                                "hidden": 0, "dtype": "float32"}))
    _, rebuilt = FrozenLayerCache.build(trainer.model, samples, 1, tmp_path / "cut", signature={"t": 1},
                                        autocast=contextlib.nullcontext)
    assert rebuilt and not (tmp_path / "cut" / "partial.json").exists()


def test_fast_run_logs_trls_loss_on_the_recipe_data(dirs, tmp_path):
    """Two optimizer steps: the labelled-only head and the cache log the loss plain TRL logs (the first
    step's loss does not depend on where LoRA sits: B starts at zero)."""
    plain = train_sft(*_parse(dirs, tmp_path / "plain"), progress=False)
    fast = train_sft(*_parse(dirs, tmp_path / "fast", lora_layers=2, cache_frozen_layers=True,
                             lm_head_on_labels=True), progress=False)
    assert fast["loss_rows"][0]["loss"] == pytest.approx(plain["loss_rows"][0]["loss"], rel=1e-5)
    assert math.isfinite(fast["loss_rows"][1]["loss"]) and fast["loss_rows"][1]["loss"] != fast["loss_rows"][0]["loss"]


@pytest.mark.parametrize(("extra", "match"), [
    ({"cache_frozen_layers": True}, "cache_frozen_layers needs lora_layers"),
    ({"lora_layers": -1}, "lora_layers must be an integer >= 0"),
])
def test_bad_fast_settings_name_the_key(dirs, tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        _parse(dirs, tmp_path, **extra)


@pytest.mark.parametrize("extra", [{"loss_type": "dft"}, {"label_smoothing_factor": 0.1}])
def test_the_fast_loss_refuses_other_loss_settings(dirs, tmp_path, extra):
    with pytest.raises(ConfigError, match="lm_head_on_labels/cache_frozen_layers compute the plain token cross-entropy"):
        check_sft(_parse(dirs, tmp_path, lm_head_on_labels=True, **extra))
    check_sft(_parse(dirs, tmp_path, **extra))  # without the fast keys TRL's own loss handles them


def test_lora_layers_needs_peft_and_at_most_the_models_layers(dirs, tmp_path):
    with pytest.raises(ConfigError, match="lora_layers chooses the layers LoRA adapts: set use_peft"):
        check_sft(_parse(dirs, tmp_path, use_peft=False, lora_layers=1))
    with pytest.raises(ConfigError, match="lora_layers must be between 1 and the model's 2 decoder layers"):
        train_sft(*_parse(dirs, tmp_path, lora_layers=3), progress=False)
