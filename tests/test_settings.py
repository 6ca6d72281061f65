"""Every setting is checked, with its type, before anything loads (Python API and CLI alike)."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
import time

import numpy
import pytest

from langchain_ragr1 import ConfigError, RagR1Agent, Sampling, cli
from langchain_ragr1.config import RagR1Config
from langchain_ragr1.policies.sampling import SAMPLING_FIELDS, check_setting
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

BAD_CONFIG = [
    ("retrieval_timeout_s", "5", r"retrieval_timeout_s must be a number of seconds > 0 .*'5' \(str\)"),
    ("retrieval_timeout_s", math.nan, r"retrieval_timeout_s must be a finite number of seconds > 0 .*nan"),
    ("retrieval_timeout_s", math.inf, r"retrieval_timeout_s must be a finite number .*inf"),
    ("retrieval_timeout_s", 0, r"retrieval_timeout_s must be a finite number of seconds > 0"),
    ("retrieval_timeout_s", -1.5, r"retrieval_timeout_s .* got -1.5"),
    ("retrieval_timeout_s", True, r"retrieval_timeout_s must be a number .*True \(bool\)"),
    ("retrieval_timeout_s", None, r"retrieval_timeout_s must be a number .*None \(NoneType\)"),
    ("retrieval_retries", True, r"retrieval_retries must be an integer >= 0, got True \(bool\)"),
    ("retrieval_retries", 1.0, r"retrieval_retries must be an integer >= 0, got 1.0 \(float\)"),
    ("retrieval_retries", -1, r"retrieval_retries must be an integer >= 0, got -1"),
    ("k", True, r"k must be a positive integer, got True \(bool\)"),
    ("k", 2.0, r"k must be a positive integer, got 2.0 \(float\)"),
    ("k", "3", r"k must be a positive integer, got '3' \(str\)"),
    ("k", 0, r"k must be a positive integer, got 0"),
    ("max_turns", False, r"max_turns must be an integer >= 0, got False \(bool\)"),
    ("max_turns", -1, r"max_turns must be an integer >= 0"),
    ("max_queries", 0, r"max_queries must be a positive integer"),
    ("doc_max_tokens", "1000", r"doc_max_tokens must be a positive integer, got '1000' \(str\)"),
    ("initial_search", "no", r"initial_search must be True or False, got 'no' \(str\)"),
    ("initial_search", 1, r"initial_search must be True or False, got 1 \(int\)"),
    ("mode", "MULTI", r"mode='MULTI' is unknown: use one of 'multi', 'single'"),
    ("mode", ["multi"], r"mode=\['multi'\] is unknown"),
    ("on_retrieval_error", "ignore", r"on_retrieval_error='ignore' is unknown: use one of 'raise', 'empty'"),
    ("on_retrieval_error", None, r"on_retrieval_error=None is unknown"),
]


@pytest.mark.parametrize(("name", "value", "match"), BAD_CONFIG, ids=[f"{n}={v!r}" for n, v, _ in BAD_CONFIG])
def test_bad_setting_is_a_config_error_naming_it(name, value, match):
    with pytest.raises(ConfigError, match=match):
        RagR1Config(**{name: value})


def test_good_settings_are_normalised():
    config = RagR1Config(k=numpy.int64(2), retrieval_timeout_s=5, retrieval_retries=numpy.int32(0),
                         initial_search=True, mode="single", on_retrieval_error="empty")
    assert config.k == 2 and type(config.k) is int
    assert config.retrieval_timeout_s == 5.0 and type(config.retrieval_timeout_s) is float
    assert config.retrieval_retries == 0 and type(config.retrieval_retries) is int


def test_agent_and_per_call_settings_are_checked_the_same_way():
    with pytest.raises(ConfigError, match=r"retrieval_timeout_s must be a number.*'5' \(str\)"):
        RagR1Agent(ScriptedPolicy(["<answer> x </answer>"]), MemoryRetriever(documents=[]), retrieval_timeout_s="5")
    agent = RagR1Agent(ScriptedPolicy(["<answer> x </answer>"]), MemoryRetriever(documents=[]))
    with pytest.raises(ConfigError, match=r'configurable.*initial_search must be True or False'):
        agent.invoke("q", {"configurable": {"initial_search": "no"}})
    with pytest.raises(ConfigError, match=r'configurable.*k must be a positive integer, got True'):
        agent.invoke("q", {"configurable": {"k": True}})


def test_agent_defaults_match_the_config_defaults():
    # the agent no longer re-declares the settings: its defaults are RagR1Config's by construction
    from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

    agent = RagR1Agent(ScriptedPolicy(["<answer> x </answer>"]), MemoryRetriever(documents=[]))
    assert agent.config == RagR1Config()
    assert "k" not in inspect.signature(RagR1Agent.__init__).parameters


BAD_SAMPLING = [
    ("temperature", "hot", r"temperature must be a finite number >= 0 .*'hot' \(str\)"),
    ("temperature", -1, r"temperature must be a finite number >= 0 .*got -1 \(int\)"),
    ("temperature", math.nan, r"temperature must be a finite number"),
    ("temperature", math.inf, r"temperature must be a finite number"),
    ("temperature", True, r"temperature .* True \(bool\)"),
    ("top_p", 0, r"top_p must be a number in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must be a number in \(0, 1\]"),
    ("top_p", "0.9", r"top_p .*'0.9' \(str\)"),
    ("max_new_tokens", 0, r"max_new_tokens must be a positive integer"),
    ("max_new_tokens", 1.5, r"max_new_tokens must be a positive integer .*got 1.5 \(float\)"),
    ("max_new_tokens", True, r"max_new_tokens .* True \(bool\)"),
    ("top_k", -1, r"top_k must be an integer >= 0 \(0 is off"),
    ("top_k", 2.5, r"top_k must be an integer .*got 2.5 \(float\)"),
    ("min_p", 1.5, r"min_p must be a number in \[0, 1\]"),
    ("repetition_penalty", 0, r"repetition_penalty must be a finite number > 0 \(1 is off"),
    ("repeat_stop_tokens", 3, r"repeat_stop_tokens must be 0 \(off\) or an integer >= 4 .*got 3 \(int\)"),
    ("repeat_stop_tokens", -1, r"repeat_stop_tokens must be 0 \(off\) or an integer >= 4"),
    ("repeat_stop_tokens", 24.0, r"repeat_stop_tokens .*got 24.0 \(float\)"),
    ("repeat_stop_count", 1, r"repeat_stop_count must be an integer >= 2 \(copies of the span"),
    ("repeat_stop_count", True, r"repeat_stop_count .* True \(bool\)"),
]
BAD_BATCHING = [
    ("max_batch_size", 0, r"max_batch_size must be a positive integer"),
    ("batch_wait_s", -0.1, r"batch_wait_s must be a finite number of seconds >= 0"),
]


@pytest.mark.parametrize(("name", "value", "match"), BAD_SAMPLING, ids=[f"{n}={v!r}" for n, v, _ in BAD_SAMPLING])
def test_bad_sampling_field_is_a_config_error_naming_it(name, value, match):
    with pytest.raises(ConfigError, match=f"Sampling.{match}"):
        Sampling(**{name: value})


@pytest.mark.parametrize(("name", "value", "match"), BAD_BATCHING, ids=[f"{n}={v!r}" for n, v, _ in BAD_BATCHING])
def test_bad_batching_setting_is_a_config_error_naming_it(name, value, match):
    with pytest.raises(ConfigError, match=match):
        check_setting(name, value)


def test_good_sampling_settings_pass():
    assert Sampling(max_new_tokens=numpy.int64(500), temperature=0, top_p=1).greedy
    assert not Sampling(temperature=numpy.float32(0.7), top_p=0.95).greedy
    check_setting("max_batch_size", 8)
    check_setting("batch_wait_s", 0)
    check_setting("unrelated", "ignored")
    assert Sampling() == Sampling(max_new_tokens=500, temperature=0.7, top_p=0.95)  # frozen, hashable: a batch key
    assert hash(Sampling(temperature=0)) == hash(Sampling(temperature=0))
    with pytest.raises(AttributeError):
        Sampling().temperature = 0  # type: ignore[misc]


def test_sampling_converts_to_each_backends_own_settings():
    sampled, greedy = Sampling(max_new_tokens=7, temperature=0.5, top_p=0.9), Sampling(max_new_tokens=7, temperature=0)
    config = sampled.generation_config(eos_token_id=[2, 3])
    assert (config.max_new_tokens, config.do_sample, config.temperature, config.top_p, config.top_k,
            config.eos_token_id) == (7, True, 0.5, 0.9, 0, [2, 3])
    assert greedy.generation_config().do_sample is False
    assert greedy.generate_kwargs() == {"do_sample": False}
    assert greedy.vllm_kwargs() == {"temperature": 0.0}
    params = sampled.sampling_params(dict, logprobs=0, max_tokens=3)  # SamplingParams' keywords
    assert params == {"max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "logprobs": 0}
    # GRPOConfig's other sampling fields: passed when switched on, greedy keeps only the penalty
    shaped = Sampling(temperature=0.5, top_p=0.9, top_k=20, min_p=0.05, repetition_penalty=1.2)
    config = shaped.generation_config()
    assert (config.top_k, config.min_p, config.repetition_penalty) == (20, 0.05, 1.2)
    assert shaped.vllm_kwargs() == {"temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
                                    "repetition_penalty": 1.2}
    penalised = Sampling(temperature=0, top_k=20, min_p=0.05, repetition_penalty=1.2)
    assert penalised.generate_kwargs() == {"do_sample": False, "repetition_penalty": 1.2}
    assert penalised.vllm_kwargs() == {"temperature": 0.0, "repetition_penalty": 1.2}
    assert greedy.sampling_params(dict) == {"max_tokens": 7, "temperature": 0.0}


def test_policy_settings_are_the_transformers_policy_ones():
    from langchain_ragr1.policies.factory import (  # noqa: PLC2701 - kept in step with the policy
        _FAST_SETTINGS,
        _POLICY_SETTINGS,
    )
    from langchain_ragr1.policies.transformers import TransformersPolicy

    constructor = set(inspect.signature(TransformersPolicy.__init__).parameters)
    fast_only = set(_FAST_SETTINGS)
    assert {"weights", "prompt_lookup_num_tokens", "prefix_cache_sequences"} <= fast_only
    assert set(_POLICY_SETTINGS) - {"dtype"} - fast_only <= constructor and "sampling" in constructor
    from langchain_ragr1.policies.fast import FastPolicy  # the default backend's own settings

    assert fast_only <= set(inspect.signature(FastPolicy.__init__).parameters)
    assert "dtype" in inspect.signature(TransformersPolicy.from_pretrained).parameters
    assert not SAMPLING_FIELDS & constructor  # the sampling fields live in Sampling only


@pytest.fixture
def nothing_loads(monkeypatch):
    """Model resolution/conversion/loading and retriever building raise: a setting error must come first."""

    def bomb(*args, **kwargs):
        raise AssertionError("something loaded before the bad setting was reported")

    import langchain_ragr1.defaults as defaults
    import langchain_ragr1.models as models

    # Modules that bind these names at import must be imported before the patch, or they would
    # keep the bomb for the rest of the session.
    import langchain_ragr1.policies.continuous  # noqa: F401
    import langchain_ragr1.policies.transformers  # noqa: F401
    import langchain_ragr1.policies.vllm  # noqa: F401
    import langchain_ragr1.retrievers.factory as retriever_factory

    monkeypatch.setattr(models, "resolve_model_path", bomb)
    monkeypatch.setattr(models, "base_model_path", bomb)
    monkeypatch.setattr(defaults, "make_retriever", bomb)
    monkeypatch.setattr(retriever_factory, "default_chroma_store", bomb)
    monkeypatch.setattr(retriever_factory, "default_bm25_retriever", bomb)


DEFAULT_AGENT_BAD = [
    ({"temperature": "hot"}, r"temperature must be a finite number >= 0 .*'hot' \(str\)"),
    ({"temperature": -1}, r"temperature must be a finite number >= 0 .*-1"),
    ({"temperature": math.nan}, r"temperature must be a finite number"),
    ({"max_new_tokens": 0}, r"max_new_tokens must be a positive integer"),
    ({"max_new_tokens": "500"}, r"max_new_tokens .*'500' \(str\)"),
    ({"retrieval_timeout_s": "5"}, r"retrieval_timeout_s must be a number"),
    ({"retrieval_timeout_s": math.inf}, r"retrieval_timeout_s must be a finite number"),
    ({"k": True}, r"k must be a positive integer, got True"),
    ({"initial_search": "no"}, r"initial_search must be True or False"),
    ({"retriever": "annoy"}, r"retriever='annoy' is unknown: use one of chroma, bm25, http, faiss, milvus"),
    ({"retriever": "http"}, r"--url"),
    ({"store": 3}, r"store must be a path"),
    ({"model_path": 7}, r"model_path must be a path"),
    ({"max_turn": 2}, r"unknown setting\(s\) 'max_turn' \(did you mean 'max_turns'\?\)"),
]


@pytest.mark.parametrize(("kwargs", "match"), DEFAULT_AGENT_BAD, ids=[repr(k) for k, _ in DEFAULT_AGENT_BAD])
def test_default_agent_checks_every_setting_before_anything_loads(nothing_loads, kwargs, match):
    from langchain_ragr1.agent import default_agent

    with pytest.raises(ConfigError, match=match):
        default_agent(**kwargs)


def test_default_agent_with_own_retriever_checks_sampling_before_the_model_loads(nothing_loads):
    from langchain_ragr1.agent import default_agent

    with pytest.raises(ConfigError, match=r"temperature must be a finite number >= 0"):
        default_agent(retriever=MemoryRetriever(documents=[]), temperature=-1)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature": 0.5}, r"default_policy takes temperature inside sampling=Sampling\(temperature=0.5\)"),
    ({"top_p": 2}, r"takes top_p inside sampling=Sampling"),
    ({"sampling": {"temperature": 0}}, r"sampling must be a langchain_ragr1.Sampling .*\(dict\)"),
    ({"max_batch_size": 0}, r"max_batch_size must be a positive integer"),
    ({"max_btach_size": 4}, r"unknown setting\(s\) 'max_btach_size' \(did you mean 'max_batch_size'\?\)"),
])
def test_default_policy_checks_every_setting_before_the_model_loads(nothing_loads, kwargs, match):
    from langchain_ragr1.policies.factory import default_policy

    with pytest.raises(ConfigError, match=match):
        default_policy(**kwargs)


@pytest.mark.parametrize("module", ["fast", "transformers", "continuous", "vllm"])
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature": 0}, r"Policy takes temperature inside sampling=Sampling\(temperature=0\)"),
    ({"sampling": "greedy"}, r"sampling must be a langchain_ragr1.Sampling .*'greedy' \(str\)"),
    ({"max_batch_size": 0}, r"max_batch_size must be a positive integer"),
    ({"max_batch_sise": 4}, r"unknown setting\(s\) 'max_batch_sise' \(did you mean 'max_batch_size'\?\)"),
])
def test_each_from_pretrained_checks_its_settings_before_loading(nothing_loads, module, kwargs, match):
    from langchain_ragr1 import policies

    cls = {"fast": policies.FastPolicy, "transformers": policies.TransformersPolicy,
           "continuous": policies.ContinuousTransformersPolicy,
           "vllm": policies.VLLMPolicy}[module]
    with pytest.raises(ConfigError, match=match):
        cls.from_pretrained("base", **kwargs)


@pytest.mark.parametrize(("argv", "match"), [
    (["--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--temperature", "nan"], "temperature must be a finite number"),
    (["--max-new-tokens", "0"], "max_new_tokens must be a positive integer"),
    (["--repeat-stop-tokens", "2"], "repeat_stop_tokens must be 0 (off) or an integer >= 4"),
    (["--repeat-stop-count", "1"], "repeat_stop_count must be an integer >= 2"),
    (["--max-turns", "-1"], "max_turns must be an integer >= 0"),
])
def test_cli_ask_reports_a_bad_setting_before_anything_loads(nothing_loads, capsys, argv, match):
    code = cli.main(["ask", "Who?", *argv])
    captured = capsys.readouterr()
    assert code == 2 and match in captured.err and captured.out == ""


def test_a_bad_setting_fails_in_a_fraction_of_a_second_without_importing_torch():
    script = (
        "import sys, time\n"
        "from langchain_ragr1 import ConfigError\n"
        "from langchain_ragr1.agent import default_agent\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    default_agent(temperature=-1)\n"
        "except ConfigError as exc:\n"
        "    print(round(time.monotonic() - started, 3), 'torch' in sys.modules, exc)\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    seconds, torch_loaded, message = proc.stdout.split(" ", 2)
    assert torch_loaded == "False" and "temperature" in message, proc.stdout + proc.stderr
    assert float(seconds) < 0.5, seconds
    assert time.monotonic() - started < 60


def test_eval_checks_sampling_before_any_index_or_model(monkeypatch, tmp_path):
    from langchain_ragr1 import ConfigError
    from langchain_ragr1.evaluation import run_eval
    from langchain_ragr1.policies import factory as policy_factory
    from langchain_ragr1.retrievers import factory as retriever_factory

    def forbidden(*args, **kwargs):
        raise AssertionError("an index or model was loaded before the bad setting was reported")

    monkeypatch.setattr(retriever_factory, "make_retriever", forbidden)
    monkeypatch.setattr(policy_factory, "default_policy", forbidden)
    with pytest.raises(ConfigError, match="temperature"):
        run_eval("ragr1-dev", ["multi"], tmp_path / "o", temperature=-1.0, limit=2)


def test_agent_takes_a_config_and_keyword_overrides():
    from langchain_ragr1 import RagR1Agent, RagR1Config
    from langchain_ragr1.errors import ConfigError
    from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

    policy, retriever = ScriptedPolicy(["<answer> x </answer>"]), MemoryRetriever(documents=[])
    base = RagR1Config(k=5, doc_max_tokens=200)
    agent = RagR1Agent(policy, retriever, base, max_turns=2)
    assert agent.config == RagR1Config(k=5, doc_max_tokens=200, max_turns=2) and base.max_turns == 4
    assert RagR1Agent(policy, retriever, k=2).config == RagR1Config(k=2)
    with pytest.raises(ConfigError, match="unknown setting.*'top_k'.*use mode, k, max_turns"):
        RagR1Agent(policy, retriever, top_k=3)
    with pytest.raises(ConfigError, match="config must be a RagR1Config"):
        RagR1Agent(policy, retriever, {"k": 3})
    with pytest.raises(ConfigError, match="mode='multiple' is unknown"):
        RagR1Agent(policy, retriever, base, mode="multiple")
