"""`ragr1 ask`'s start and end (issue 22): the first line before any heavy import, `--timings`' phases, and
the end without Python's module teardown only where nothing is left to close or wait for."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import cli
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

#: Each takes from a few tenths of a second (NumPy) to seconds (torch, transformers) to import on a small machine.
#: (``langchain_core`` itself is light: its heavy parts are these submodules.)
HEAVY = ("torch", "transformers", "chromadb", "langgraph", "langsmith", "numpy", "langchain_core.runnables",
         "langchain_core.language_models", "langchain_core.vectorstores")
#: What `ragr1 ask` over a Llama folder never imports (policies.direct, retrievers.bert, json_tokenizer): transformers
#: (its model loading code, and the torch.distributed.tensor, _dynamo and SymPy that imports: about 1.2 s on 2 cores;
#: its tokenizer modules, transformers.tokenization_utils*: about 0.45 s), PEFT.
MODELING = ("transformers", "transformers.modeling_utils", "transformers.models", "transformers.tokenization_utils_base",
            "transformers.tokenization_utils_tokenizers", "torch._dynamo", "torch.distributed.tensor", "sympy", "peft")
TURNS = ["<think>Compare the birth years.</think> <search> Marie Curie </search>",
         "<think>1867 is earlier.</think> <answer> Marie Curie </answer>"]
DOCS = [Document(page_content="Marie Curie (born 1867) was a physicist.", metadata={"title": "Marie Curie", "id": "d1"})]


def _python(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *argv], capture_output=True, text=True,
                          timeout=120)


def test_the_first_line_is_printed_before_any_heavy_import():
    """`ragr1 ask` says what it loads before LangGraph, LangChain, torch, transformers, Chroma or NumPy is imported
    (each is most of a second or more on a small machine)."""
    proc = _python(f"""
        import sys
        import rich.console
        from langchain_ragr1 import cli

        real_print = rich.console.Console.print

        def first_print(self, *args, **kwargs):
            loaded = sorted(set(sys.modules) & set({HEAVY!r}))
            sys.__stdout__.write(f"{{args[0]}}|{{loaded}}\\n")
            sys.__stdout__.flush()
            raise SystemExit(0)  # the rest would load the model

        rich.console.Console.print = first_print
        cli.main(["ask", "Who was born first, Marie Curie or Albert Einstein?"])
        """)
    assert proc.returncode == 0, proc.stderr
    line, loaded = proc.stdout.strip().split("|")
    assert "loading the default model and the chroma retriever" in line
    assert loaded == "[]"


def test_importing_the_package_or_its_command_loads_no_heavy_library():
    proc = _python(f"""
        import sys
        import langchain_ragr1, langchain_ragr1.cli, langchain_ragr1.policies, langchain_ragr1.retrievers.factory
        print(sorted(set(sys.modules) & set({HEAVY!r})))
        langchain_ragr1.RagR1Agent  # a lazy name still resolves
        print("langgraph" in sys.modules)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "True"]


def test_opening_a_chroma_store_imports_no_torch():
    """The store's query embedder loads torch when it first embeds, not when the store opens."""
    proc = _python("""
        import sys
        import langchain_ragr1.retrievers.chroma
        print("torch" in sys.modules, "transformers" in sys.modules)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


@pytest.fixture
def fake_parts(monkeypatch):
    """The real default_agent over a scripted policy and an in-memory retriever: its phases are the real ones."""
    import langchain_ragr1.defaults as defaults

    monkeypatch.setattr(defaults, "make_retriever", lambda kind, **kwargs: MemoryRetriever(documents=DOCS, k=1))
    monkeypatch.setattr(defaults, "default_policy", lambda *args, **kwargs: ScriptedPolicy(TURNS))


def _timing_rows(err: str) -> list[tuple[str, float | None, float]]:
    """(phase, start or None for a moment, end) of each row of the --timings table (fixed columns; other lines of
    stderr between its rows are left out)."""
    lines = [line for line in err.split("timings:\n", 1)[1].splitlines() if line.startswith("  ")]
    assert lines[0].split()[:4] == ["phase", "start", "end", "seconds"]
    rows = []
    for line in lines[1:]:
        start = line[19:25].strip()
        rows.append((line[2:18].strip(), float(start) if start else None, float(line[26:32])))
    return rows


def test_timings_list_each_phase_in_order(capsys, fake_parts):
    assert cli.main(["ask", "Who was born first?", "--timings"]) == 0
    captured = capsys.readouterr()
    assert "answer: Marie Curie" in captured.out and "timings" not in captured.out  # stdout carries results only
    rows = _timing_rows(captured.err)
    assert [name for name, *_ in rows] == ["imports", "first line", "graph imports", "retriever open", "model load",
                                           "graph build", "episode"]
    assert all(start is None or start <= end for _, start, end in rows)
    ends = [end for *_, end in rows]
    assert ends == sorted(ends) and rows[0][1] == 0.0  # one after the other, counted from the process's start
    assert cli.main(["ask", "Who was born first?"]) == 0
    assert "timings" not in capsys.readouterr().err


_RUN = """
    import atexit, os, sys, threading, time
    from langchain_core.documents import Document
    import langchain_ragr1.defaults as defaults
    from langchain_ragr1 import cli
    from langchain_ragr1.errors import MissingResourceError
    from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

    flags = {a for a in sys.argv[1:] if a.startswith("+")}

    def make_retriever(kind, **kwargs):
        if "+no-store" in flags:
            raise MissingResourceError("no store here")
        doc = Document(page_content="Marie Curie (born 1867).", metadata={"title": "Marie Curie"})
        return MemoryRetriever(documents=[doc], k=1)

    defaults.make_retriever = make_retriever
    defaults.default_policy = lambda *args, **kwargs: ScriptedPolicy(%r)

    class Teardown:  # deleted by the interpreter's teardown of this module, which a quick end skips
        def __del__(self):
            os.write(2, b"TEARDOWN RAN\\n")

    keep = Teardown()
    atexit.register(lambda: os.write(2, b"atexit ran\\n"))
    if "+thread" in flags:  # a non-daemon thread still running when the command is done
        real_main = cli._main

        def main_then_thread(argv):
            done = real_main(argv)
            threading.Thread(target=lambda: (time.sleep(0.3), os.write(2, b"thread done\\n"))).start()
            return done

        cli._main = main_then_thread
    sys.argv = ["ragr1", "ask", "Who was born first?", *[a for a in sys.argv[1:] if not a.startswith("+")]]
    cli.run()
""" % (TURNS,)


def test_ask_ends_without_the_module_teardown_after_closing_and_flushing():
    proc = _python(_RUN, "--timings")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["answer: Marie Curie", "retrieval turns: 1, model turns: 2"]
    assert "atexit ran" in proc.stderr and "TEARDOWN RAN" not in proc.stderr
    rows = _timing_rows(proc.stderr)
    assert rows[-1][0] == "exit" and rows[-1][1] is not None  # measured: the closing and the atexit handlers


def test_a_failed_ask_keeps_its_exit_code():
    proc = _python(_RUN, "+no-store")
    assert proc.returncode == 1 and "no store here" in proc.stderr and "atexit ran" in proc.stderr


@pytest.mark.parametrize("argv", [["+thread"], ["--retriever", "milvus"]])
def test_ask_exits_as_usual_when_a_thread_runs_or_the_retriever_closes_in_its_teardown(argv):
    """A non-daemon thread still running is waited for; milvus-lite stops its server in a ``__del__``."""
    proc = _python(_RUN, *argv)
    assert proc.returncode == 0, proc.stderr
    assert "atexit ran" in proc.stderr and "TEARDOWN RAN" in proc.stderr
    if "+thread" in argv:
        assert "thread done" in proc.stderr


def test_close_clients_stops_every_open_chroma_store_and_a_later_open_works(tmp_path):
    from chromadb.api.shared_system_client import SharedSystemClient
    from langchain_core.embeddings.fake import DeterministicFakeEmbedding

    from langchain_ragr1.retrievers.chroma import build_chroma_store, close_clients, open_chroma_store

    embeddings = DeterministicFakeEmbedding(size=8)
    for name in ("a", "b"):
        build_chroma_store(DOCS, tmp_path / name, embeddings=embeddings, show_progress=False)
    opened = {key for key in SharedSystemClient._identifier_to_system if str(tmp_path) in key}
    assert len(opened) == 2
    close_clients()
    assert not set(SharedSystemClient._identifier_to_system) & opened
    store = open_chroma_store(tmp_path / "a", embeddings=embeddings)
    assert [d.metadata["title"] for d in store.similarity_search("Marie Curie", k=1)] == ["Marie Curie"]


def test_phases_are_kept_only_while_recording_and_the_first_of_each_name_wins():
    import time

    from langchain_ragr1 import timings

    with timings.phase("unrecorded"):
        timings.mark("unrecorded moment")
    with timings.recording() as record:
        assert timings.current() is record
        with timings.phase("work"):
            time.sleep(0.01)
        with pytest.raises(ValueError), timings.phase("failed"):
            raise ValueError("kept all the same")
        timings.mark("first token")
        first = record.moments["first token"]
        timings.mark("first token")
    assert timings.current() is None
    assert set(record.spans) == {"work", "failed"} and set(record.moments) == {"first token"}
    start, end = record.spans["work"]
    assert end - start >= 0.01 and record.moments["first token"] == first
    assert record.origin <= start  # the process started before anything it timed


@pytest.mark.parametrize("backend", ["transformers", "fast"])
def test_both_local_backends_mark_the_first_generated_token(tiny_model, smollm2_tokenizer, backend):
    import time

    from langchain_ragr1 import timings
    from langchain_ragr1.policies import Sampling, TransformersPolicy
    from langchain_ragr1.policies.fast import FastPolicy
    from langchain_ragr1.protocol import make_prompt

    cls = FastPolicy if backend == "fast" else TransformersPolicy
    with cls(tiny_model, smollm2_tokenizer, sampling=Sampling(max_new_tokens=4, temperature=0)) as policy:
        prompt = [policy.render_prompt(make_prompt("Who wrote Hamlet?"))]
        with timings.recording() as record:
            started = time.perf_counter()
            policy.generate(prompt)
            ended = time.perf_counter()
    assert started < record.moments["first token"] < ended


def test_a_cached_ask_imports_no_transformers(tiny_folder):
    """`ragr1 ask` over a Llama folder (the default's kind), to its end: transformers is never imported, neither its
    model loading code (and the torch.distributed.tensor, _dynamo and SymPy it imports, about 1.2 s on 2 cores) nor
    its tokenizer modules (the tokenizer is the folder's tokenizer.json, json_tokenizer)."""
    proc = _python(f"""
        import atexit, os, sys
        from langchain_core.documents import Document
        import langchain_ragr1.defaults as defaults
        from langchain_ragr1 import cli
        from langchain_ragr1.testing import MemoryRetriever

        doc = Document(page_content="Marie Curie (born 1867).", metadata={{"title": "Marie Curie"}})
        defaults.make_retriever = lambda kind, **kwargs: MemoryRetriever(documents=[doc], k=1)
        atexit.register(lambda: os.write(1, ("MODULES " + repr(sorted(set(sys.modules) & set({MODELING!r})))
                                             + " " + repr("torch" in sys.modules) + "\\n").encode()))
        sys.argv = ["ragr1", "ask", "Who was born first?", "--model", sys.argv[1], "--max-new-tokens", "8",
                    "--max-turns", "1"]
        cli.run()
        """, str(tiny_folder))
    assert proc.returncode == 0, proc.stderr
    assert "MODULES [] True" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.slow
def test_a_cached_default_ask_imports_no_transformers():
    """The README's `ragr1 ask` (the trained default, the shipped Chroma store and its MiniLM embedder), to its
    end."""
    proc = _python(f"""
        import atexit, os, sys
        from langchain_ragr1 import cli

        atexit.register(lambda: os.write(1, ("MODULES " + repr(sorted(set(sys.modules) & set({MODELING!r})))
                                             + "\\n").encode()))
        sys.argv = ["ragr1", "ask", "Who was born first, Marie Curie or Albert Einstein?"]
        cli.run()
        """)
    assert proc.returncode == 0, proc.stderr
    assert "MODULES []" in proc.stdout and "answer:" in proc.stdout, proc.stdout[-2000:]
