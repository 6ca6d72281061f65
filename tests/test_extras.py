"""A missing optional package is an error naming the extra to install, never a bare ModuleNotFoundError."""

import importlib

import pytest

from langchain_ragr1 import MissingResourceError
from langchain_ragr1.extras import EXTRAS, MissingExtraError, require


@pytest.fixture
def missing(monkeypatch):
    """Make the named top-level packages unimportable through langchain_ragr1.extras.require."""
    gone: set[str] = set()
    real = importlib.import_module

    def fake_import(name, *args):
        if name.split(".")[0] in gone:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args)

    monkeypatch.setattr("langchain_ragr1.extras.import_module", fake_import)
    return gone


def test_require_returns_the_module():
    assert require("json", "server").__name__ == "json"


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_require_names_the_pip_install_of_each_extra(missing, extra):
    missing.add("somepkg")
    with pytest.raises(MissingExtraError, match=rf'pip install "langchain-ragr1\[{extra}\]"') as exc:
        require("somepkg.sub", extra)
    assert isinstance(exc.value, MissingResourceError) and "somepkg" in str(exc.value)


def test_training_without_trl_names_the_training_extra(missing, tmp_path):
    from langchain_ragr1.tuning import run_rl, run_sft

    missing.add("trl")
    for module in (run_rl, run_sft):
        with pytest.raises(MissingExtraError, match=r'langchain-ragr1\[training\]'):
            module.parse({"output_dir": str(tmp_path)})


def test_sft_dataset_without_datasets_names_the_training_extra(missing, tmp_path):
    from langchain_ragr1.tuning.sft_data import build_sft_dataset

    missing.add("datasets")
    with pytest.raises(MissingExtraError, match=r'langchain-ragr1\[training\]'):
        build_sft_dataset([], tokenizer=None)


def test_the_core_install_does_not_need_the_training_extra_for_the_default_model():
    """The shipped adapter is merged with peft, a core dependency (it reached users missing once)."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for package in ("peft", "langchain-text-splitters", "transformers", "chromadb", "bm25s",
                    "numpy", "pydantic", "safetensors", "pyyaml"):  # imported directly by core modules
        assert package in core, package
    assert not any(p.startswith(("trl", "datasets")) for p in project["dependencies"])
