"""The ``ragr1`` command as people use it: stdout carries results only, errors go to stderr with
exit code 2 (usage) or 1 (runtime), ``ask`` streams and is greedy by default, ``--json`` parses."""

import json
import subprocess
import sys

import pytest
from langchain_core.documents import Document

import langchain_ragr1
from langchain_ragr1 import RagR1Agent, cli
from langchain_ragr1.cli import main
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_empty_question(capsys):
    code, out, err = run(capsys, "ask", "   ")
    assert code == 2 and "question is empty" in err and out == ""


def test_bad_setting_fails_before_model_load(capsys):
    code, out, err = run(capsys, "ask", "Who?", "--k", "0")
    assert code == 2 and "k must be a positive integer" in err and out == ""


def test_missing_store_is_a_runtime_error_naming_the_index_command(capsys, tmp_path):
    code, out, err = run(capsys, "ask", "Who?", "--store", str(tmp_path / "nowhere"))
    assert code == 1 and "ragr1 index" in err and out == ""


def test_http_retriever_needs_url(capsys):
    code, _, err = run(capsys, "ask", "Who?", "--retriever", "http")
    assert code == 2 and "--url" in err


def test_index_needs_input(capsys, tmp_path):
    code, _, err = run(capsys, "index", "--store", str(tmp_path / "s"))
    assert code == 2 and "--bundled" in err


def test_index_rejects_a_negative_limit(capsys, tmp_path):
    code, _, err = run(capsys, "index", "--bundled", "--store", str(tmp_path / "s"), "--limit", "-1")
    assert code == 2 and "--limit" in err


def test_unknown_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ask", "Who?", "--mode", "parallel"])
    assert exc.value.code == 2 and "parallel" in capsys.readouterr().err


def test_missing_model_folder_says_what_to_do(capsys, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "title": "Paris", "text": "Paris is the capital of France."}\n')
    code, out, err = run(capsys, "ask", "Who?", "--retriever", "bm25", "--corpus", str(corpus),
                         "--model", str(tmp_path / "no-model"))
    assert code == 1 and "no-model" in err and out == ""


def test_bad_corpus_line_is_named(capsys, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "title": "A", "text": "a"}\n{"id": "2", "title": "B"}\n')
    code, _, err = run(capsys, "ask", "Who?", "--retriever", "bm25", "--corpus", str(corpus))
    assert code == 2 and "line 2" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ragr1 {langchain_ragr1.__version__}"
    assert langchain_ragr1.__version__[0].isdigit()


@pytest.mark.parametrize("command", ["ask", "eval", "index", "serve"])
def test_every_option_help_shows_its_default(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = capsys.readouterr().out
    assert "(default: " in help_text
    if command in ("ask", "eval"):
        assert "--temperature TEMPERATURE" in help_text and "(default: 0.0)" in help_text
        assert "--retriever {chroma,bm25,http,faiss,milvus}" in help_text and "(default: chroma)" in help_text


DOCS = [Document("Marie Curie was born in 1867.", id="d1", metadata={"title": "Marie Curie", "id": "d1"}),
        Document("Albert Einstein was born in 1879.", id="d2", metadata={"title": "Albert Einstein", "id": "d2"})]
TURNS = ["<think>Compare the birth years.</think> <search> Marie Curie, Albert Einstein </search>",
         "<think>1867 is earlier.</think> <answer> Marie Curie </answer>"]


@pytest.fixture
def fake_default(monkeypatch):
    """`ragr1 ask` over a scripted policy; records the options it was built with."""
    seen = {}

    def default_agent(**kwargs):
        seen.update(kwargs)
        agent_kwargs = {k: kwargs[k] for k in ("mode", "k", "max_turns")}
        return RagR1Agent(ScriptedPolicy(TURNS), MemoryRetriever(documents=DOCS), **agent_kwargs)

    monkeypatch.setattr("langchain_ragr1.agent.default_agent", default_agent)
    return seen


def test_ask_streams_each_step_to_stdout_in_order(capsys, fake_default, monkeypatch):
    printed = []
    real_turn = cli.print_turn
    monkeypatch.setattr(cli, "print_turn", lambda text, thoughts, console: (printed.append(text),
                                                                          real_turn(text, thoughts, console)))
    code, out, err = run(capsys, "ask", "Who was born first, Marie Curie or Albert Einstein?", "--k", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "think: Compare the birth years."
    assert "search: Marie Curie" in lines and "search: Albert Einstein" in lines
    assert "   retrieved for Marie Curie: Marie Curie" in lines
    assert lines[-3:] == ["think: 1867 is earlier.", "answer: Marie Curie", "retrieval turns: 1, model turns: 2"]
    assert printed == TURNS  # printed turn by turn from the graph's stream, not from the final state
    assert "loading" in err and "loading" not in out
    assert fake_default["temperature"] == 0.0  # greedy unless --temperature says otherwise


def test_ask_json_carries_what_a_script_needs(capsys, fake_default):
    code, out, err = run(capsys, "ask", "Who was born first?", "--json", "--k", "1")
    assert code == 0
    payload = json.loads(out)  # stdout is the JSON document and nothing else
    assert payload["answer"] == "Marie Curie" and payload["turns"] == 1 and payload["steps"] == 2
    assert payload["queries"] == [["Marie Curie", "Albert Einstein"]]
    assert payload["documents"] == [
        {"id": "d1", "title": "Marie Curie", "query": "Marie Curie", "turn": 1},
        {"id": "d2", "title": "Albert Einstein", "query": "Albert Einstein", "turn": 1}]
    assert payload["stop_reason"] == "answer" and payload["invalid_turns"] == 0
    assert payload["seconds"] >= 0 and "<answer> Marie Curie </answer>" in payload["trace"]


def test_ask_json_error_is_a_json_object(capsys):
    code, out, err = run(capsys, "ask", "Who?", "--json", "--k", "0")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["type"] == "ConfigError" and "k must be a positive integer" in error["message"]
    assert error["exit_code"] == 2


def test_temperature_and_seed_reach_the_policy(capsys, fake_default, monkeypatch):
    seeds = []
    monkeypatch.setattr("torch.manual_seed", seeds.append)
    code, *_ = run(capsys, "ask", "Who?", "--temperature", "0.7", "--seed", "7", "--json")
    assert code == 0 and fake_default["temperature"] == 0.7 and seeds == [7]


def test_serve_without_the_server_extra_names_it(capsys, monkeypatch):
    import importlib

    real = importlib.import_module

    def no_fastapi(name, *args):
        if name.split(".")[0] in ("fastapi", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args)

    monkeypatch.setattr("langchain_ragr1.extras.import_module", no_fastapi)
    code, _, err = run(capsys, "serve", "--retriever", "bm25")
    assert code == 1 and 'pip install "langchain-ragr1[server]"' in err and "fastapi" in err


def test_ragr1_entry_point_keeps_stdout_clean():
    """A real process: the usage error goes to stderr with exit code 2, nothing on stdout."""
    proc = subprocess.run([sys.executable, "-m", "langchain_ragr1.cli", "ask", "Who?", "--k", "0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["type"] == "ConfigError"
    assert "k must be a positive integer" in proc.stderr


def test_ask_keeps_library_bars_and_future_warnings_off_stderr_unless_verbose(capsys, monkeypatch):
    """The libraries underneath print "Loading weights" bars and FutureWarnings while the agent loads."""
    import os
    import warnings

    from transformers.utils import logging as transformers_logging

    monkeypatch.setattr(os, "environ", dict(os.environ))

    def noisy_default_agent(**kwargs):
        for _ in transformers_logging.tqdm(range(3), desc="Loading weights"):
            pass
        warnings.warn("`torch_dtype` is deprecated", FutureWarning, stacklevel=1)
        return RagR1Agent(ScriptedPolicy(TURNS), MemoryRetriever(documents=DOCS), k=1)

    monkeypatch.setattr("langchain_ragr1.agent.default_agent", noisy_default_agent)

    def bars_on():  # the hub's bars may be off in this environment: transformers' own switch is what counts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformers_logging.enable_progress_bar()

    try:
        bars_on()
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            code, _, err = run(capsys, "ask", "Who?", "--verbose")
        assert code == 0 and "Loading weights" in err and [w.category for w in shown] == [FutureWarning]
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            code, out, err = run(capsys, "ask", "Who?")
        assert code == 0 and "answer: Marie Curie" in out
        assert "Loading weights" not in err and not shown and "loading the default model" in err
    finally:
        bars_on()
        transformers_logging.set_verbosity_warning()


@pytest.mark.slow
def test_cached_real_ask_prints_only_the_packages_notices_on_stderr(default_model_dir):
    # Convert and merge the default first: on a clean RAGR1_HOME this test may run before any
    # other that does, and the one-time conversion's own notices are not what it tests.
    from langchain_ragr1.models import default_model_path

    default_model_path(show_progress=False)
    proc = subprocess.run([sys.executable, "-m", "langchain_ragr1.cli", "ask", "Who wrote Hamlet?", "--retriever", "bm25",
                           "--max-turns", "0", "--max-new-tokens", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[0].startswith("loading the default model") and lines[-1].startswith("ready in"), lines
    assert len(lines) == 2, lines  # no "Loading weights" bars, no FutureWarning


def test_ask_warms_a_vector_stores_embedder_in_a_thread():
    """The query embedder loads while the first turn is generated, not when the first search needs it."""
    import threading
    from types import SimpleNamespace

    from langchain_ragr1.cli import _warm_retriever

    loaded = threading.Event()
    retriever = SimpleNamespace(vectorstore=SimpleNamespace(embeddings=SimpleNamespace(warm=loaded.set)))
    _warm_retriever(retriever)
    assert loaded.wait(5)
    _warm_retriever(SimpleNamespace())  # a retriever without a vector store: nothing to warm, no error


@pytest.mark.slow
def test_minilm_warm_loads_the_model():
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings

    embeddings = MiniLMEmbeddings()
    assert embeddings._model is None
    embeddings.warm()
    assert embeddings._model is not None and len(embeddings.embed_query("Marie Curie")) == 384


PIPE_SCRIPT = """
import sys
from langchain_core.documents import Document
import langchain_ragr1.agent as agent
from langchain_ragr1 import RagR1Agent, cli
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

turns = ["<search> Paris </search>", "<answer> " + " ".join(f"w{i}" for i in range(15000)) + " </answer>"]
docs = [Document("Paris is the capital of France", metadata={"title": "Paris"})]
agent.default_agent = lambda **kwargs: RagR1Agent(ScriptedPolicy(turns), MemoryRetriever(documents=docs), k=1)
sys.argv = ["ragr1", "ask", "Capital of France?", "--retriever", "bm25"] + sys.argv[1:]
cli.run()
"""


@pytest.mark.parametrize("options", [[], ["--json"]])
def test_ask_into_a_closed_pipe_ends_quietly(options):
    """`ragr1 ask ... | head -c 10`: the reader goes away; no traceback, exit 1 (the --json output's
    print raised BrokenPipeError with a traceback; rich ends the text output the same way)."""
    proc = subprocess.Popen([sys.executable, "-c", PIPE_SCRIPT, *options], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()  # the ~100 kB answer cannot fit the pipe: a write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
