"""The RL run's questions: loading them, and the paper's filter (keep the questions the policy
solves sometimes, plus a share of the always-solved ones) that ``training/filter_rl_data.py`` runs."""

from __future__ import annotations

from typing import Any, Sequence

from langchain_ragr1.errors import ConfigError


def load_questions(script: Any, seed: int) -> list:
    """The run's questions (``script.data`` through ``load_qa``), a ``seed``-ed subset if ``script.max_questions``."""
    import random

    from langchain_ragr1.data import load_qa

    items = load_qa(script.data)
    if not items:
        raise ConfigError(f"RL: data {script.data!r} has no questions (an empty filter_rl_data.py output?)")
    if script.max_questions and script.max_questions < len(items):
        items = random.Random(seed).sample(items, script.max_questions)
    return items


def solve_counts(agent: Any, items: Sequence[Any], attempts: int, *, chunk: int = 8,
                 progress: bool = True) -> list[int]:
    """How many of ``attempts`` episodes of ``agent`` answer each item exactly right (batched, concurrent)."""
    from tqdm.auto import tqdm

    from langchain_ragr1.protocol import exact_match

    counts: list[int] = []
    with tqdm(total=len(items), desc=f"sampling {attempts} attempts", unit="question", disable=not progress) as bar:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            questions = [it.question for it in part for _ in range(attempts)]
            results = agent.batch(questions, config={"max_concurrency": len(questions)})
            for i, item in enumerate(part):
                episodes = results[i * attempts:(i + 1) * attempts]
                counts.append(int(sum(exact_match(r.get("answer"), item.golden_answers) for r in episodes)))
            bar.update(len(part))
    return counts


def select_rl_questions(items: Sequence[Any], counts: Sequence[int], attempts: int, *,
                        keep_solved: float = 0.25, seed: int = 0) -> tuple[list, dict[str, int]]:
    """The paper's RL filter: questions solved sometimes (0 < count < attempts), plus a seeded
    ``keep_solved`` fraction of the always-solved ones; never-solved ones are dropped.
    Returns the kept items (in input order) and the counts per group."""
    import random

    sometimes = [i for i, c in enumerate(counts) if 0 < c < attempts]
    always = [i for i, c in enumerate(counts) if c >= attempts]
    kept_always = random.Random(seed).sample(always, round(keep_solved * len(always)))
    keep = sorted(sometimes + kept_always)
    stats = {"questions": len(items), "never_solved": len(items) - len(sometimes) - len(always),
             "sometimes_solved": len(sometimes), "always_solved": len(always),
             "always_solved_kept": len(kept_always), "kept": len(keep)}
    return [items[i] for i in keep], stats
