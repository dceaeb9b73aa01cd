"""The error hierarchy: every error agentwatch raises on purpose derives from AgentwatchError."""

from __future__ import annotations


class AgentwatchError(Exception):
    """Base of every error agentwatch raises on purpose."""


class ConfigurationError(AgentwatchError, ValueError):
    """A setting or environment variable has a value agentwatch cannot use."""
