"""Policies: what writes the model turns."""

from langchain_ragr1.policies.base import Generation, Policy
from langchain_ragr1.policies.transformers import TransformersPolicy

__all__ = ["Generation", "Policy", "TransformersPolicy"]
