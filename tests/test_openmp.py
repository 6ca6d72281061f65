"""`ragr1 ask`'s OpenMP waiting (langchain_ragr1.openmp): threads spin ~0.1 ms only on an idle machine, and the
user's own settings are kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from langchain_ragr1 import openmp
from langchain_ragr1.openmp import IDLE_SPIN_COUNT, wait_settings

SPIN = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": IDLE_SPIN_COUNT}
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("load, cpus, environ, chosen", [
    ((0.05, 1), 2, {}, SPIN),  # idle 2-core machine, this process the only task running
    ((1.7, 1), 2, {}, SPIN),  # a process stopped seconds ago (or this command's last run): the average counts it
    ((2.5, 1), 2, {}, SPIN),
    ((2.6, 1), 2, {}, PASSIVE),  # oversubscribed over the last minute: a load that comes and goes
    ((0.05, 2), 2, {}, PASSIVE),  # a process started seconds ago: running now
    ((1.0, 2), 2, {}, PASSIVE),  # one busy process beside
    ((1.0, 2), 4, {"OMP_NUM_THREADS": "2"}, SPIN),  # 2 threads on 4 cores: one busy process leaves them 2
    ((1.0, 4), 4, {"OMP_NUM_THREADS": "2"}, PASSIVE),  # 3 running now
    ((4.6, 1), 4, {"OMP_NUM_THREADS": "2"}, PASSIVE),
    ((1.0, 2), 4, {}, PASSIVE),  # torch's default: a thread per core
    ((0.0, 1), 2, {"OMP_NUM_THREADS": "x"}, SPIN),  # unreadable: a thread per core
    (None, 2, {}, PASSIVE),  # no /proc/loadavg
    ((0.0, 1), 2, {"OMP_WAIT_POLICY": "ACTIVE"}, {}),  # the user's choice, untouched
    ((0.0, 1), 2, {"GOMP_SPINCOUNT": "0"}, {}),
    ((5.0, 6), 2, {"OMP_WAIT_POLICY": "PASSIVE"}, {}),
])
def test_threads_spin_only_when_the_load_leaves_each_a_core(load, cpus, environ, chosen):
    settings, why = wait_settings(environ, load, cpus)
    assert settings == chosen
    assert why.startswith("idle" if "GOMP_SPINCOUNT" in chosen else ("busy", "the load", "OMP_WAIT_POLICY"))


def test_choose_waiting_reads_the_load_and_sets_the_environment(monkeypatch):
    monkeypatch.setattr(openmp, "machine_load", lambda: (0.1, 1))
    monkeypatch.setattr(openmp.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    environ: dict[str, str] = {}
    line = openmp.choose_waiting(environ)
    assert environ == SPIN and "GOMP_SPINCOUNT=10000" in line and "load 0.10" in line
    monkeypatch.setattr(openmp, "machine_load", lambda: (0.3, 2))
    environ = {}
    assert "busy" in openmp.choose_waiting(environ) and environ == PASSIVE


def test_machine_load_reads_proc_loadavg():
    load = openmp.machine_load()
    if sys.platform.startswith("linux"):
        assert load is not None and load[0] >= 0 and load[1] >= 1  # this process is running
    else:
        assert load is None


def test_ask_chooses_before_torch_loads_and_reports_it_in_its_timings():
    """Run as `ragr1 ask --timings` over scripted parts with the load mocked (1 or 2 tasks running): the choice is in
    the environment before torch is imported, and in the timings' first row; a user's OMP_WAIT_POLICY is left alone."""
    code = textwrap.dedent("""
        import os, sys
        import langchain_ragr1.defaults as defaults
        from langchain_ragr1 import cli, openmp
        from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

        openmp.machine_load = lambda: (0.2, int(sys.argv[1]))
        seen = []

        def policy(*args, **kwargs):
            seen.append((os.environ.get("GOMP_SPINCOUNT"), "torch" in sys.modules))
            return ScriptedPolicy(["<answer> x </answer>"])

        defaults.default_policy = policy
        defaults.make_retriever = lambda kind, **kwargs: MemoryRetriever(documents=[], k=1)
        assert cli.main(["ask", "Who?", "--timings"]) == 0
        print("SEEN", seen, os.environ.get("OMP_WAIT_POLICY"))
        """)
    runs = {}
    for load, env in (("1", {}), ("2", {}), ("1", {"OMP_WAIT_POLICY": "ACTIVE"})):
        environ = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        proc = subprocess.run([sys.executable, "-c", code, load], capture_output=True, text=True, timeout=120,
                              env={**environ, **env})
        assert proc.returncode == 0, proc.stderr
        runs[load, tuple(env.items())] = proc
    idle, busy, user = runs.values()
    assert "SEEN [('10000', False)] PASSIVE" in idle.stdout
    assert "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=10000: idle" in idle.stderr
    assert "SEEN [(None, False)] PASSIVE" in busy.stdout
    assert "OMP_WAIT_POLICY=PASSIVE: busy (load 0.20, 1 other task(s) running" in busy.stderr
    assert "SEEN [(None, False)] ACTIVE" in user.stdout and "left as set" in user.stderr


def test_in_own_thread_returns_or_raises_from_a_thread_that_ends():
    import threading

    seen = []

    def work():
        seen.append(threading.current_thread())
        return 42

    assert openmp.in_own_thread(work, "ragr1-test") == 42
    assert seen[0] is not threading.current_thread() and seen[0].name == "ragr1-test" and not seen[0].is_alive()
    with pytest.raises(KeyError, match="inside"):
        openmp.in_own_thread(lambda: {}["inside"], "ragr1-test")


def test_the_model_load_and_the_query_embedder_leave_no_thread_behind(tiny_folder, monkeypatch):
    """Their torch work runs on threads that end (so the generating thread's OpenMP pool stays the only one)."""
    import threading

    from langchain_ragr1.policies.decoder import LlamaDecoder
    from langchain_ragr1.policies.direct import load_direct
    from langchain_ragr1.retrievers.embeddings import encoder_embeddings

    where = []
    build = LlamaDecoder.from_tensors.__func__

    def from_tensors(cls, *args, **kwargs):
        where.append(threading.current_thread())
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(LlamaDecoder, "from_tensors", classmethod(from_tensors))
    before = set(threading.enumerate())
    _, decoder, _ = load_direct(tiny_folder)
    embeddings = encoder_embeddings("minilm")
    real = type(embeddings)._encode_here

    def encode_here(self, texts):
        where.append(threading.current_thread())
        return real(self, texts)

    monkeypatch.setattr(type(embeddings), "_encode_here", encode_here)
    assert len(embeddings.embed_query("Marie Curie birth year")) == 384
    assert [t.name for t in where] == ["ragr1-load-model", "ragr1-embed"]
    assert not any(t.is_alive() for t in where) and set(threading.enumerate()) <= before
    assert isinstance(decoder, LlamaDecoder)
