"""Policies: what writes the model turns.

``TransformersPolicy`` loads torch, so it is imported on first access only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_ragr1.policies.base import Generation, Policy

if TYPE_CHECKING:
    from langchain_ragr1.policies.transformers import TransformersPolicy

__all__ = ["Generation", "Policy", "TransformersPolicy"]


def __getattr__(name: str) -> Any:
    if name == "TransformersPolicy":
        from langchain_ragr1.policies.transformers import TransformersPolicy

        return TransformersPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
