"""User-facing errors: each one prints as a single clear line (no traceback unless --debug)."""

from __future__ import annotations


class EdgeqError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class ModelError(EdgeqError):
    """The model file is missing, corrupt, or cannot be loaded."""


class CalibrationError(EdgeqError):
    """The calibration (or evaluation) data is missing, empty, or does not fit the model."""


class BackendError(EdgeqError):
    """A backend is unknown, unavailable, or failed to export."""


class BackendUnavailable(BackendError):
    """A backend's Python packages are not installed; the message carries the pip hint."""


class UnsupportedConversion(BackendError):
    """This (input format, backend) cell cannot be produced; the message says precisely why."""


class DeviceError(EdgeqError):
    """A device is misconfigured, unreachable, or its runner failed."""


class ConfigError(EdgeqError):
    """A YAML configuration (devices, recipe) is invalid."""


def first_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty), cut to ``limit`` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """How a failure reads in a table or manifest: an EdgeqError's own line, anything else prefixed by its type."""
    if isinstance(exc, EdgeqError):
        return first_line(exc, limit)
    return f"{type(exc).__name__}: {first_line(exc, limit - 20)}"
