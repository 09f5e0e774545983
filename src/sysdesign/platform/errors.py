"""Errors raised at start-up, before any request: shown as one clear line."""

from __future__ import annotations


class ConfigurationError(Exception):
    """A setting is wrong or a driver is missing; the message says how to fix it."""


class BackendUnavailable(Exception):
    """A configured backend could not be reached at start-up."""
