"""Errors that tell the user what to do."""

from __future__ import annotations


class RagR1Error(Exception):
    """Base class of this package's errors."""


class MissingResourceError(RagR1Error, FileNotFoundError):
    """A model, corpus or store is missing; the message names the package or command to fix it."""


class RetrievalError(RagR1Error, RuntimeError):
    """A retriever kept failing or timing out after its retries."""


class ConfigError(RagR1Error, ValueError):
    """A bad argument or configuration value."""


class ProtocolError(RagR1Error, ValueError):
    """Input that the RAG-R1 protocol cannot work with (e.g. an empty question, an unknown mode)."""
