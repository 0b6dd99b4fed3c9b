"""Backend options from the command line: ``-O BACKEND.KEY=VALUE`` (repeatable; VALUE is a YAML scalar or list, e.g.
``-O onnx-qdq.nodes_to_exclude=[Conv_3,Add_7]``) and ``--backend-config FILE.yaml`` (a mapping backend → options).

Each backend's options are its typed config (``Backend.Config``, pydantic, unknown keys refused). Precedence, lowest
first: the file, the dedicated flags (``--fallback``, ``--tflite-route``, ``--w4-*``), then ``-O``. Every mistake is
one ``ConfigError`` line (exit 2) saying where (``FILE:LINE`` or the ``-O`` text), the backend, the bad key and the
allowed keys, e.g. ``opts.yaml:3: onnx-qdq: unknown key 'percentil'; allowed: fallback, target, …``.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeq.backend_config import BackendConfig, FallbackConfig, Int4Config
from edgeq.backends import REFUSED, backend_names, get_backend
from edgeq.errors import ConfigError
from edgeq.yamlconfig import child, compose, key_node, line_of, read_text


@dataclass(frozen=True)
class OptionEntry:
    """Options for one backend from one place (``where`` labels errors: ``FILE:LINE`` or ``-O TEXT``)."""

    backend: str
    values: dict[str, Any]
    where: str
    lines: dict[str, str] | None = None
    """Per key, a more precise ``FILE:LINE`` (the key's own line in a YAML file)."""


def parse_assignment(text: str) -> OptionEntry:
    """One ``-O BACKEND.KEY=VALUE``; VALUE is read as YAML (``99.99`` a number, ``[a, b]`` a list, ``true`` a bool)."""
    import yaml

    where = f"-O {text}"
    target, sep, raw = text.partition("=")
    backend, dot, key = target.strip().partition(".")
    if not sep or not dot or not backend or not key:
        raise ConfigError(f"{where}: expected BACKEND.KEY=VALUE, e.g. onnx-qdq.percentile=99.99")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except Exception as exc:  # noqa: BLE001 - yaml raises several types; one line
        raise ConfigError(f"{where}: value is not a YAML scalar or list: {' '.join(str(exc).split())[:160]}") from None
    return OptionEntry(backend.strip(), {key.strip(): value}, where)


def read_options_file(path: str | Path) -> list[OptionEntry]:
    """``--backend-config FILE``: ``backend: {key: value, …}`` per backend; problems are one line with FILE:LINE."""
    return parse_options_text(read_text(path, "backend options file"), str(path))


def parse_options_text(text: str, filename: str) -> list[OptionEntry]:
    """The backend options YAML text (``filename`` only labels the errors)."""
    root, data = compose(text, filename)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:{line_of(root) or 1}: expected a mapping of backend name → options, e.g. "
                          "'onnx-qdq: {percentile: 99.99}'")
    entries = []
    for backend, values in data.items():
        where = f"{filename}:{line_of(key_node(root, str(backend))) or 1}"
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: {backend}: expected a mapping of options (key: value), got "
                              f"{type(values).__name__}")
        node = child(root, str(backend))
        lines = {str(k): f"{filename}:{line_of(key_node(node, str(k)))}" for k in values}
        entries.append(OptionEntry(str(backend), {str(k): v for k, v in values.items()}, where, lines))
    return entries


def flag_entries(fallback: str | None = None, tflite_route: str | None = None, w4_group_size: int | None = None,
                 w4_ratio: float | None = None, w4_asym: bool = False) -> list[OptionEntry]:
    """The dedicated flags as entries into the same typed configs (None / False = flag not given): ``--fallback``
    sets every accuracy-controlled backend's ``fallback``, ``--tflite-route`` tflite-int8's ``route``, ``--w4-*``
    every INT4 backend's ``group_size`` / ``ratio`` / ``symmetric``."""
    flags: list[tuple[str, type[BackendConfig] | str, str, Any]] = [
        (f"--fallback {fallback}", FallbackConfig, "fallback", fallback),
        (f"--tflite-route {tflite_route}", "tflite-int8", "route", tflite_route),
        (f"--w4-group-size {w4_group_size}", Int4Config, "group_size", w4_group_size),
        (f"--w4-ratio {w4_ratio}", Int4Config, "ratio", w4_ratio),
        ("--w4-asym", Int4Config, "symmetric", False if w4_asym else None)]
    entries = []
    for where, scope, key, value in flags:
        if value is None:
            continue
        names = [scope] if isinstance(scope, str) else [n for n in backend_names()
                                                         if issubclass(get_backend(n).Config, scope)]
        entries += [OptionEntry(name, {key: value}, where) for name in names]
    return entries


def build_configs(entries: Iterable[OptionEntry]) -> dict[str, BackendConfig]:
    """Validate every entry against its backend's typed config (one-line ConfigError naming where) and merge them,
    later entries winning key by key."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        cls = _config_class(entry.backend, entry.where)
        _validate(cls, entry)
        merged.setdefault(entry.backend, {}).update(entry.values)
    return {name: get_backend(name).Config.model_validate(values) for name, values in merged.items()}


def validate_configs(configs: Mapping[str, Any], where: str = "configs") -> dict[str, BackendConfig]:
    """The Python API's ``configs={backend: {key: value} | Config}`` as validated typed configs."""
    return build_configs(OptionEntry(name, value.model_dump() if isinstance(value, BackendConfig) else dict(value or {}),
                                     f"{where}[{name!r}]") for name, value in configs.items())


def _config_class(backend: str, where: str) -> type[BackendConfig]:
    if backend in REFUSED:
        raise ConfigError(f"{where}: {REFUSED[backend]}")
    if backend not in backend_names():
        raise ConfigError(f"{where}: unknown backend {backend!r}; choose from: {', '.join(backend_names())}")
    return get_backend(backend).Config


def _validate(cls: type[BackendConfig], entry: OptionEntry) -> None:
    try:
        cls.model_validate(entry.values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        where = (entry.lines or {}).get(key, entry.where)
        allowed = ", ".join(cls.model_fields) or "none (this backend has no options)"
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{where}: {entry.backend}: unknown key {key!r}; allowed: {allowed}") from None
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        got = repr(error.get("input"))
        shown = "" if got in message else f" (got {got})"
        raise ConfigError(f"{where}: {entry.backend}.{field}: {message}{shown}") from None


# ---------------------------------------------------------------------------------------------------------------
# The options table (docs/recipes.md is generated from it; `edgeq backends --options` prints it)
# ---------------------------------------------------------------------------------------------------------------
def options_table(names: list[str] | None = None) -> list[tuple[str, str, str, str, str]]:
    """(backends, key, type, default, description) for every option of ``names`` (default: every registered
    backend); backends sharing a config share rows."""
    by_class: dict[type[BackendConfig], list[str]] = {}
    for name in names or backend_names():
        by_class.setdefault(get_backend(name).Config, []).append(name)
    rows = []
    for cls, names in by_class.items():
        for key, field in cls.model_fields.items():
            rows.append((", ".join(f"`{n}`" for n in names), key, type_label(field.annotation),
                         json.dumps(field.default), field.description or ""))
    return rows


def options_markdown(names: list[str] | None = None) -> str:
    """The options table as Markdown (the block between the backend-options markers in docs/recipes.md)."""
    lines = ["| backend | option | type | default | what |", "|---|---|---|---|---|"]
    lines += [f"| {b} | `{k}` | {t.replace('|', '&#124;')} | `{d}` | {w} |" for b, k, t, d, w in options_table(names)]
    without = [n for n in names or backend_names() if not get_backend(n).Config.model_fields]
    return "\n".join(lines) + f"\n\nNo options: {', '.join(f'`{n}`' for n in without)}.\n"


def type_label(annotation: Any) -> str:
    """A short type name: ``"performance" | "mixed"``, ``bool | null``, ``list[str]``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in args)
    if origin is list:
        return f"list[{type_label(args[0])}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))
