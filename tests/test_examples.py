"""The examples run (with a scripted policy in place of the bundled model)."""

import importlib.util
from pathlib import Path

from langchain_ragr1.testing import ScriptedPolicy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_documents_example_retrieves_from_the_users_store():
    example = load("own_documents")
    policy = ScriptedPolicy(["<search> Arthur's Magazine, First for Women </search>",
                             "<answer> Arthur's Magazine </answer>"])
    result = example.build_agent(llm=policy).invoke("Which magazine was started first?")
    assert result["answer"] == "Arthur's Magazine"
    assert [d.metadata["title"] for d in result["documents"]] == ["Arthur's Magazine", "First for Women"]
