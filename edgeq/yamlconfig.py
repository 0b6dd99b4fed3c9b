"""YAML configuration files with line numbers: every problem becomes one ``ConfigError`` line ``FILE:LINE: what``.

Shared by devices.yaml (``edgeq.devices.config``) and the backend options file (``edgeq.backends.options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError


def read_text(path: Path | str, what: str) -> str:
    """A config file's UTF-8 text; one ConfigError line when it is missing, unreadable or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_utf8(data, path)


def decode_utf8(data: bytes, path: Path | str) -> str:
    """A config file's text; a ConfigError naming the line and byte when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def compose(text: str, filename: str) -> tuple[Any, Any]:
    """(node tree with line marks, plain data) of YAML text; invalid YAML is one ConfigError line with file:line."""
    import yaml

    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{filename}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except Exception as exc:  # noqa: BLE001 - PyYAML also raises ValueError/OverflowError on e.g. "\U99999999"
        raise ConfigError(f"{filename}: invalid YAML: {' '.join(str(exc).split())[:200]}") from None


def line_of(node: Any) -> int | None:
    """1-based line where a composed YAML node starts (None for no node)."""
    return node.start_mark.line + 1 if node is not None and getattr(node, "start_mark", None) else None


def child(node: Any, part: Any) -> Any:
    """The value node under mapping key ``part`` or sequence index ``part`` (None when there is none)."""
    import yaml

    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if key.value == part:
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]
    return None


def key_node(node: Any, part: str) -> Any:
    """The key node of mapping key ``part`` (where an unknown key is written), None when absent."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, _value in node.value:
            if key.value == part:
                return key
    return None
