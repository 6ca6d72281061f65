"""What a wheel user gets: typed package, license, URLs, version, the data files it needs."""

import tomllib
from fnmatch import fnmatch
from importlib.metadata import metadata, version
from pathlib import Path

import langchain_ragr1

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_matches_the_installed_metadata():
    assert langchain_ragr1.__version__ == version("langchain-ragr1") == PROJECT["project"]["version"]


def test_license_file_and_project_urls():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert PROJECT["project"]["license"] == "Apache-2.0"
    assert {"Homepage", "Source", "Issues"} <= set(PROJECT["project"]["urls"])
    assert metadata("langchain-ragr1").get_all("Project-URL")


def _packaged(package: str) -> list[str]:
    return PROJECT["tool"]["setuptools"]["package-data"][package]


def test_data_the_package_needs_is_package_data():
    package_dir = ROOT / "langchain_ragr1"
    wanted = {
        "langchain_ragr1": ["py.typed", "embeddings/wiki-summaries-minilm.npy", "embeddings/wiki-summaries-minilm.json",
                            "adapters/smollm2-ragr1-sft/adapter_model.safetensors"],
        "langchain_ragr1.tuning": ["configs/rl_cpu.yaml", "configs/sft_default.yaml"],
    }
    for package, files in wanted.items():
        folder = package_dir.joinpath(*package.split(".")[1:])
        for name in files:
            assert (folder / name).is_file(), name
            assert any(fnmatch(name, pattern) for pattern in _packaged(package)), f"{name} is not package data"


def test_optional_packages_are_extras_not_core():
    core = " ".join(PROJECT["project"]["dependencies"])
    extras = PROJECT["project"]["optional-dependencies"]
    for extra, package in [("training", "trl"), ("server", "fastapi"), ("openai", "langchain-openai"),
                           ("vllm", "vllm"), ("langgraph", "langgraph-cli")]:
        assert any(dep.startswith(package) for dep in extras[extra]), (extra, package)
        assert package not in core
