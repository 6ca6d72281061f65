"""One trained policy per agent mode (issue 21): the trained default of ``multi`` merges the
multi-query adapter, that of ``single`` the single-query one, or the multi-query one while none is
shipped (said once); ``from_default``, ``default_components`` and ``ragr1 eval`` pick each mode's
folder, and two modes that share a folder load it once. Tiny LoRA adapters on a tiny model,
exported as the package ships them, stand in for the shipped ones."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import models
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.paths import CACHE_ENV
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document("Paris is the capital of France.", metadata={"title": "Paris"})]
IDS = [[1, 2, 3, 4, 5]]


def _lora(tiny_model, seed: int, folder: Path) -> Path:
    """A random LoRA adapter of ``tiny_model`` written to ``folder`` as the package ships one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from langchain_ragr1.tuning.export_adapter import main as export_main

    torch.manual_seed(seed)
    lora = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                 init_lora_weights=False))
    lora.save_pretrained(folder.parent / f"run-{seed}")
    assert export_main([str(folder.parent / f"run-{seed}"), str(folder)]) == 0
    return folder


@pytest.fixture
def adapters(tmp_path, monkeypatch, tiny_model, smollm2_tokenizer):
    """The tiny model as the bundled base, a cache in ``tmp_path``, and :data:`models.ADAPTER_DIRS`
    pointing at two different tiny adapters (``multi``, ``single``) exported into ``adapters/``."""
    base = tmp_path / "base"
    tiny_model.save_pretrained(base)
    smollm2_tokenizer.save_pretrained(base)
    monkeypatch.setattr(models, "base_model_path", lambda **kwargs: base)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_FALLBACK_NOTED", set())
    shipped = tmp_path / "adapters"
    table = {"multi": _lora(tiny_model, 1, shipped / "smollm2-ragr1-sft"),
             "single": _lora(tiny_model, 2, shipped / "smollm2-ragr1-sft-sq")}
    monkeypatch.setattr(models, "ADAPTER_DIRS", table)
    return {"base": base, **table}


def _logits(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits


def _with_adapter(base: Path, adapter: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "No single-query adapter is shipped" in r.getMessage()]


def test_each_mode_merges_its_own_adapter(adapters):
    import torch

    multi, single = models.default_model_path("multi", show_progress=False), models.default_model_path("single")
    assert multi != single and multi.parent == single.parent == Path(models.cache_dir()) / "models"
    assert torch.allclose(_logits(multi), _with_adapter(adapters["base"], adapters["multi"]), atol=1e-3)
    assert torch.allclose(_logits(single), _with_adapter(adapters["base"], adapters["single"]), atol=1e-3)
    assert not torch.allclose(_logits(multi), _logits(single), atol=1e-3)
    assert models.default_model_path() == multi  # multi is the default mode
    assert models.resolve_model_path(None, mode="single") == models.resolve_model_path("default", mode="single") == single
    assert models.resolve_model_path("default") == multi
    # a folder or another alias is the same model in every mode
    assert models.resolve_model_path(adapters["base"], mode="single") == adapters["base"]
    assert models.resolve_model_path("base", mode="single") == adapters["base"]


def test_without_a_single_query_adapter_single_mode_uses_the_multi_query_one_said_once(adapters, tmp_path, caplog):
    models.ADAPTER_DIRS["single"] = tmp_path / "adapters" / "not-shipped"
    with caplog.at_level(logging.INFO, logger="langchain_ragr1.models"):
        single = models.default_model_path("single", show_progress=False)
        assert single == models.default_model_path("multi", show_progress=False)
        assert models.resolve_model_path(None, mode="single", show_progress=False) == single
    notices = _notices(caplog)
    assert len(notices) == 1 and "single mode uses the multi-query adapter smollm2-ragr1-sft" in notices[0]
    # a folder without adapter_config.json ships no adapter either; one with a config but no weights is broken
    (tmp_path / "adapters" / "not-shipped").mkdir()
    assert models.default_model_path("single", show_progress=False) == single
    (tmp_path / "adapters" / "not-shipped" / "adapter_config.json").write_text("{}")
    with pytest.raises(MissingResourceError, match=r"not-shipped/adapter_model.safetensors.*--model base"):
        models.default_model_path("single", show_progress=False)


def test_an_unknown_mode_is_refused_naming_the_modes():
    with pytest.raises(ConfigError, match=r"mode='naive-rag' is not an agent mode: use one of 'multi', 'single'"):
        models.default_model_path("naive-rag")
    with pytest.raises(ConfigError, match=r"mode='sq' is not an agent mode"):
        models.resolve_model_path("base", mode="sq")


def test_from_default_and_default_components_load_the_policy_of_the_mode(adapters):
    from langchain_ragr1.agent import RagR1Agent
    from langchain_ragr1.defaults import default_components

    retriever = MemoryRetriever(documents=DOCS)
    single = RagR1Agent.from_default(mode="single", retriever=retriever, backend="transformers", show_progress=False)
    multi = RagR1Agent.from_default(retriever=retriever, backend="transformers", show_progress=False)
    assert single.config.mode == "single" and multi.config.mode == "multi"
    assert single.policy.model.name_or_path == str(models.default_model_path("single"))
    assert multi.policy.model.name_or_path == str(models.default_model_path("multi"))
    policy, _, settings = default_components(mode="single", retriever=retriever, backend="transformers",
                                             show_progress=False)
    assert settings == {"mode": "single"} and policy.model.name_or_path == single.policy.model.name_or_path
    explicit = RagR1Agent.from_default(mode="single", model_path=adapters["base"], retriever=retriever,
                                       backend="transformers", show_progress=False)
    assert explicit.policy.model.name_or_path == str(adapters["base"])
    for agent in (single, multi, explicit):
        agent.policy.close()
    policy.close()


def _adapter_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "has its own shipped adapter" in r.getMessage()]


def test_a_per_run_mode_whose_shipped_adapter_differs_is_warned_once(adapters, caplog):
    from langchain_ragr1.agent import RagR1Agent

    retriever = MemoryRetriever(documents=DOCS)
    agent = RagR1Agent.from_default(retriever=retriever, backend="transformers", show_progress=False,
                                    max_new_tokens=4, max_turns=0)
    assert agent.policy.default_adapter == adapters["multi"]
    explicit = RagR1Agent.from_default(model_path=adapters["base"], retriever=retriever, backend="transformers",
                                       show_progress=False, max_new_tokens=4, max_turns=0)
    assert explicit.policy.default_adapter is None  # a folder the user chose serves every mode
    with caplog.at_level(logging.WARNING, logger="langchain_ragr1.graph"):
        agent.invoke("Where is Paris?")
        assert not _adapter_warnings(caplog)  # the agent's own mode
        for _ in range(2):
            agent.invoke("Where is Paris?", {"configurable": {"mode": "single"}})
        agent.invoke("Where is Paris?", context={"mode": "single"})
        explicit.invoke("Where is Paris?", {"configurable": {"mode": "single"}})
    warnings = _adapter_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "mode='single'" in warnings[0] and "smollm2-ragr1-sft-sq" in warnings[0]
    assert "RagR1Agent.from_default(mode='single')" in warnings[0]
    # while no single-query adapter is shipped both modes share one: nothing to say
    models.ADAPTER_DIRS["single"] = adapters["base"].parent / "adapters" / "not-shipped"
    quiet = RagR1Agent.from_default(retriever=retriever, backend="transformers", show_progress=False,
                                    max_new_tokens=4, max_turns=0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="langchain_ragr1.graph"):
        quiet.invoke("Where is Paris?", {"configurable": {"mode": "single"}})
    assert not _adapter_warnings(caplog)
    for one in (agent, explicit, quiet):
        one.policy.close()


@pytest.fixture
def eval_loads(monkeypatch, tmp_path):
    """``run_eval`` over a 2-question file with a fake retriever; ``default_policy`` records each
    folder it is asked to load and returns a policy that answers with that folder's name."""
    from langchain_ragr1.policies import factory as policy_factory
    from langchain_ragr1.retrievers import factory as retriever_factory

    loads: list[Path] = []

    def load(path, **kwargs):
        loads.append(Path(path))
        return ScriptedPolicy([f"<answer> {Path(path).name} </answer>"], token_level=True)

    monkeypatch.setattr(policy_factory, "default_policy", load)
    monkeypatch.setattr(retriever_factory, "make_retriever", lambda *a, **kw: MemoryRetriever(documents=DOCS))
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "golden_answers": ["Paris"]})
                            + "\n" for i in range(2)), encoding="utf-8")
    return data, loads


def _answers_by_mode(out: Path) -> dict[str, set[str]]:
    from langchain_ragr1.evaluation import read_predictions

    by_mode: dict[str, set[str]] = {}
    for record in read_predictions(out / "predictions.jsonl"):
        by_mode.setdefault(record["mode"], set()).add(record["answer"])
    return by_mode


def test_eval_runs_each_strategy_with_the_policy_of_its_mode(adapters, eval_loads, tmp_path):
    from langchain_ragr1.evaluation import run_eval

    data, loads = eval_loads
    out = tmp_path / "out"
    run_eval(str(data), ["multi", "single", "naive-rag", "direct"], out, model="default")
    multi, single = models.default_model_path("multi"), models.default_model_path("single")
    assert sorted(loads) == sorted([multi, single])  # each folder once, naive-rag and direct on multi's
    assert _answers_by_mode(out) == {"multi": {multi.name}, "single": {single.name},
                                     "naive-rag": {multi.name}, "direct": {multi.name}}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"'single': '{single.name}'" in report and f"'multi': '{multi.name}'" in report
    loads.clear()
    run_eval(str(data), ["multi", "single"], tmp_path / "explicit", model=str(adapters["base"]))
    assert loads == [adapters["base"]]  # an explicit folder serves every mode, loaded once


def test_eval_loads_a_folder_both_modes_share_once(adapters, eval_loads, tmp_path, caplog):
    from langchain_ragr1.evaluation import run_eval

    models.ADAPTER_DIRS["single"] = tmp_path / "adapters" / "not-shipped"
    data, loads = eval_loads
    with caplog.at_level(logging.INFO, logger="langchain_ragr1.models"):
        run_eval(str(data), ["multi", "single"], tmp_path / "out", model="default")
    multi = models.default_model_path("multi")
    assert loads == [multi]
    assert _answers_by_mode(tmp_path / "out") == {"multi": {multi.name}, "single": {multi.name}}
    assert len(_notices(caplog)) == 1


def test_mode_policies_share_one_policy_per_folder_and_close_each_once(adapters):
    from langchain_ragr1.policies.factory import ModePolicies

    policies = ModePolicies(None, backend="transformers", show_progress=False)
    multi, single = policies("multi"), policies("single")
    assert multi is not single and policies("multi") is multi and len(policies.loaded) == 2
    assert policies.folders == {"multi": models.default_model_path("multi"), "single": models.default_model_path("single")}
    policies.close()
    models.ADAPTER_DIRS["single"] = models.ADAPTER_DIRS["multi"]
    shared = ModePolicies("default", backend="transformers", show_progress=False)
    assert shared("single") is shared("multi") and len(shared.loaded) == 1
    shared.close()
    with pytest.raises(ConfigError, match="unknown setting"):
        ModePolicies(None, mode="single")


def test_cli_ask_and_eval_pick_each_modes_folder_and_say_the_fallback_once(adapters, eval_loads, tmp_path, monkeypatch,
                                                                           capsys):
    import langchain_ragr1.defaults as defaults
    from langchain_ragr1.cli import main

    asked: list[Path] = []

    def load(model_path, *, mode, **kwargs):
        asked.append(models.resolve_model_path(model_path, mode=mode, show_progress=False))
        return ScriptedPolicy(["<answer> Paris </answer>"])

    monkeypatch.setattr(defaults, "default_policy", load)
    monkeypatch.setattr(defaults, "make_retriever", lambda *a, **kw: MemoryRetriever(documents=DOCS))
    assert main(["ask", "Capital of France?", "--mode", "single", "--json"]) == 0
    assert main(["ask", "Capital of France?", "--json", "--model", "default"]) == 0
    assert asked == [models.default_model_path("single"), models.default_model_path("multi")]
    models.ADAPTER_DIRS["single"] = tmp_path / "adapters" / "not-shipped"
    data, loads = eval_loads
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--mode", "multi", "single", "--model", "default",
                 "--out", str(tmp_path / "out")]) == 0
    assert loads == [models.default_model_path("multi")]
    err = capsys.readouterr().err
    assert err.count("No single-query adapter is shipped") == 1, err
