"""How torch's OpenMP threads wait between parallel regions, chosen before torch loads (issue 22).

A batch-1 decode step runs ~150 short OpenMP regions. With ``OMP_WAIT_POLICY=PASSIVE`` (what ``ragr1`` has set
since its threads shared small machines with training runs) the second thread sleeps after each region and is woken
for the next: a bf16 step of the default model was ~35 ms on 2 idle cores, and 23 ms when idle threads spin ~0.1 ms
first (``GOMP_SPINCOUNT=10000``, libgomp's spin count, read once when torch loads). With one busy process beside it,
though, spinning threads made the same step 2.6-3x slower than passive ones (reports/benchmarks/ask_startup.md,
profile_decode_b1.md).

Spinning needs one more thing: libgomp keeps a pool of OpenMP threads for each thread that runs parallel regions, and
once it manages more threads than there are CPUs it stops spinning (with ``OMP_WAIT_POLICY=PASSIVE``). The model load
in the main thread and the query embedder in a retrieval thread each left a pool beside the generating thread's, so
in an ``ask`` the spin count did nothing (a forward pass 33 ms either way); :func:`in_own_thread` runs such work on a
thread that ends, and with it its pool.

So ``ragr1 ask`` (a few seconds, one question) spins only when the machine is idle when it starts
(:func:`wait_settings`: no other task running, a 1-minute load average of at most the CPUs + 0.5). Anything the user set
(``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) is kept as it is.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Mapping, MutableMapping, TypeVar

__all__ = ["IDLE_SPIN_COUNT", "choose_waiting", "in_own_thread", "machine_load", "wait_settings"]

T = TypeVar("T")

#: ``GOMP_SPINCOUNT`` on an idle machine: ~0.1 ms of spinning (3000: 25 ms a step, 1000: 26.5 ms, 10000: 23 ms).
IDLE_SPIN_COUNT = "10000"
#: How far the 1-minute load average may exceed the CPUs on an idle machine.
_SLACK = 0.5


def machine_load() -> tuple[float, int] | None:
    """(1-minute load average, tasks runnable right now, this process among them) from ``/proc/loadavg``, or
    ``None`` where it cannot be read."""
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            fields = handle.read().split()
        return float(fields[0]), int(fields[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_settings(environ: Mapping[str, str], load: tuple[float, int] | None, cpus: int) -> tuple[dict[str, str], str]:
    """The OpenMP settings to add to ``environ`` and why: none when the user set ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT``; else ``OMP_WAIT_POLICY=PASSIVE``, with ``GOMP_SPINCOUNT`` = :data:`IDLE_SPIN_COUNT` when
    ``load`` (:func:`machine_load`) says the machine is idle for the ``OMP_NUM_THREADS`` (default: ``cpus``) threads:
    no other task running now beyond the cores they leave free, and the 1-minute load average at most ``cpus`` + 0.5
    (not oversubscribed of late: a load that comes and goes). The average alone cannot tell: it counts a process
    stopped seconds ago, and this command's own runs (~2 while threads spin), so back-to-back asks would each make the
    next one wait passively; it misses one started seconds ago, which the running tasks show."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}, "OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user"
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    if load is None:
        return passive, "the load is unknown"
    try:
        threads = int(environ.get("OMP_NUM_THREADS", "") or cpus)
    except ValueError:
        threads = cpus
    average, running = load
    spare = cpus - min(threads, cpus)
    why = f"load {average:.2f}, {running - 1} other task(s) running, {cpus} CPU(s), {threads} thread(s)"
    if running - 1 <= spare and average <= cpus + _SLACK:
        return {**passive, "GOMP_SPINCOUNT": IDLE_SPIN_COUNT}, f"idle ({why})"
    return passive, f"busy ({why})"


def choose_waiting(environ: MutableMapping[str, str] | None = None) -> str:
    """Add :func:`wait_settings`' settings for this machine to ``environ`` (default ``os.environ``; before torch
    loads, or they do nothing) and say what was chosen, for a debug line."""
    environ = os.environ if environ is None else environ
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    settings, why = wait_settings(environ, machine_load(), cpus)
    environ.update(settings)
    chosen = ", ".join(f"{k}={v}" for k, v in settings.items()) or "left as set"
    return f"OpenMP waiting: {chosen}: {why}"


def in_own_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on a new thread named ``name`` that ends when it returns (its exception raised here): torch work
    done so leaves no OpenMP pool behind, so that the generating thread's pool stays the only one and its idle
    threads may spin (see the module docstring). Costs one thread start (~0.1 ms)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
