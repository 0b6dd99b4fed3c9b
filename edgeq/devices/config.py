"""devices.yaml: where benchmarks run. One entry per device, discriminated by ``kind`` (local | ssh | qemu).

A device kind is its config class here (listed in ``DEVICE_CONFIGS``; its ``device_class`` names the module that
implements it, imported only when used) plus that module (a ``Device`` over a ``Transport``).

``load_devices(path)`` validates the file and turns every problem into one ``ConfigError`` line that points at
the YAML line, e.g. ``devices.yaml:7: device 'pi5': field 'host' required``. ``edgeq devices schema`` prints
the JSON Schema of this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeq.errors import ConfigError
from edgeq.yamlconfig import child as _child
from edgeq.yamlconfig import compose, read_text
from edgeq.yamlconfig import line_of as _line

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _DeviceBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_class: ClassVar[str]
    """``module:Class`` of the Device for this kind (imported by ``make_device`` only when used)."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique device name (letters, digits, '_', '.', '-').")
    threads: list[int] = Field([1], min_length=1, description="Thread counts to benchmark; one cell per count.")
    cpus: list[int] | None = Field(None, description="CPU ids to pin the runner to (os.sched_setaffinity).")

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, value: list[int]) -> list[int]:
        if any(t < 1 for t in value):
            raise ValueError("thread counts must be >= 1")
        return value

    @field_validator("cpus")
    @classmethod
    def _valid_cpus(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(c < 0 for c in value)):
            raise ValueError("cpus must be a non-empty list of CPU ids >= 0")
        return value

    def host_cpus(self) -> float:
        """CPUs one cell of this device occupies on the machine that runs edgeq (a remote board: none)."""
        return 0.0


class LocalDeviceConfig(_DeviceBase):
    """This machine: the runner in a fresh subprocess per cell."""

    device_class = "edgeq.devices.local:LocalDevice"
    kind: Literal["local"]
    python: str | None = Field(None, description="Interpreter for the runner (default: the one running edgeq).")

    def host_cpus(self) -> float:
        return float(max(self.threads))


class SshDeviceConfig(_DeviceBase):
    """Any OpenSSH destination; ~/.ssh/config, the agent and known_hosts apply (the system ``ssh`` is used)."""

    device_class = "edgeq.devices.ssh:SshDevice"
    kind: Literal["ssh"]
    host: str = Field(min_length=1, description="OpenSSH destination, e.g. pi@192.168.1.50 or a Host alias.")
    port: int | None = Field(None, ge=1, le=65535)
    identity_file: str | None = Field(None, description="Private key (ssh -i).")
    python: str = Field("python3", description="Python on the device (≥ 3.8 with numpy and a runtime).")
    workdir: str = Field("~/.cache/edgeq", description="Where runner, artifacts and the optional venv live.")
    connect_timeout: float = Field(10, gt=0, description="Seconds (ssh -o ConnectTimeout).")
    ssh_options: list[str] = Field([], description="Extra `-o` options, e.g. StrictHostKeyChecking=accept-new.")

    @field_validator("host")
    @classmethod
    def _no_option_host(cls, value: str) -> str:
        if value.startswith("-") or any(ch.isspace() for ch in value):
            raise ValueError("host must be an OpenSSH destination like user@host (no spaces, no leading '-')")
        return value


class QemuDeviceConfig(_DeviceBase):
    """aarch64 user-mode emulation of a prepared arm64 root (see `edgeq devices setup-arm64`)."""

    device_class = "edgeq.devices.qemu:QemuDevice"
    kind: Literal["qemu"]
    root: str = Field(min_length=1, description="The arm64 root (Python + libraries), e.g. ~/.cache/edgeq/arm64-root.")
    site: str | None = Field(None, description="Directory of unpacked aarch64 wheels (PYTHONPATH); default ROOT/site.")
    python: str | None = Field(None, description="Python inside ROOT (default usr/bin/python3.11).")
    qemu: str = Field("qemu-aarch64-static", description="QEMU user-mode binary.")

    def host_cpus(self) -> float:
        return 1.0  # the emulator runs one thread of work at a time


DEVICE_CONFIGS: tuple[type[_DeviceBase], ...] = (LocalDeviceConfig, SshDeviceConfig, QemuDeviceConfig)
"""Every device kind, in the order error messages list them."""
KIND_NAMES: tuple[str, ...] = tuple(get_args(c.model_fields["kind"].annotation)[0] for c in DEVICE_CONFIGS)

DeviceConfig = Annotated[Union[DEVICE_CONFIGS], Field(discriminator="kind")]  # noqa: UP007 - built from the tuple


class DevicesFile(BaseModel):
    """The whole devices.yaml."""

    model_config = ConfigDict(extra="forbid")
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> DevicesFile:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"device name {device.name!r} is used twice (names must be unique)")
            seen.add(device.name)
        return self

    def select(self, names: list[str] | None) -> list[DeviceConfig]:
        """The devices called ``names`` (all when empty), with a one-line error for unknown names."""
        if not names:
            return list(self.devices)
        by_name = {d.name: d for d in self.devices}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"unknown device {unknown[0]!r}; devices.yaml has: {', '.join(by_name)}")
        return [by_name[n] for n in names]


def devices_json_schema() -> str:
    return json.dumps(DevicesFile.model_json_schema(), indent=2)


def load_devices(path: str | Path) -> DevicesFile:
    """Read and validate devices.yaml; every problem is one ``ConfigError`` line with file:line."""
    return parse_devices(read_text(path, "devices file"), str(path))


def parse_devices(text: str, filename: str = "devices.yaml") -> DevicesFile:
    """Validate devices.yaml text (``filename`` only labels the errors)."""
    node, data = compose(text, filename)
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:1: expected a mapping with a 'devices:' list")
    _check_unique_names(data, node, filename)
    try:
        return DevicesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc.errors()[0], node, data, filename)) from None


def _describe_error(error: Any, root: Any, data: Any, filename: str) -> str:
    """One line: file:line: device 'name': what is wrong."""
    loc = [part for part in error["loc"]]
    node, line = root, _line(root)
    device_name = None
    value = data
    consumed: list[Any] = []
    for part in loc:
        child = _child(node, part)
        if child is None:
            continue  # discriminator tags ('ssh') and validator names are not YAML nodes
        node, line = child, _line(child)
        consumed.append(part)
        value = value[part] if isinstance(value, (dict, list)) else None
        if len(consumed) == 2 and consumed[0] == "devices" and isinstance(value, dict):
            device_name = value.get("name")
    field_parts = [str(p) for p in consumed[2:]] if consumed[:1] == ["devices"] else [str(p) for p in consumed]
    missing = [str(p) for p in loc if p not in consumed and isinstance(p, str) and p not in _TAGS]
    where = f"{filename}:{line}" if line else filename
    prefix = f"device {device_name!r}: " if device_name else (
        f"device #{consumed[1] + 1}: " if len(consumed) >= 2 and consumed[0] == "devices" else "")
    kind = error["type"]
    if consumed == ["devices"] and kind == "too_short":
        return f"{where}: no devices listed under 'devices:'"
    if kind == "missing":
        field = ".".join(field_parts + missing) or "?"
        return f"{where}: {prefix}field {field!r} required"
    if kind == "extra_forbidden":
        return f"{where}: {prefix}unknown field {'.'.join(field_parts)!r}"
    if kind == "union_tag_invalid":
        kind_node = _child(node, "kind")
        where = f"{filename}:{_line(kind_node)}" if kind_node is not None else where
        return f"{where}: {prefix}kind must be one of {', '.join(KIND_NAMES)}"
    if kind == "union_tag_not_found":
        return f"{where}: {prefix}field 'kind' required ({', '.join(KIND_NAMES[:-1])} or {KIND_NAMES[-1]})"
    message = error["msg"].removeprefix("Value error, ")
    field = ".".join(p for p in field_parts if not p.isdigit()) if field_parts else ""
    return f"{where}: {prefix}{field + ': ' if field else ''}{message}"


_TAGS = set(KIND_NAMES)


def _check_unique_names(data: dict[str, Any], root: Any, filename: str) -> None:
    devices = data.get("devices")
    if not isinstance(devices, list):
        return
    seen: set[str] = set()
    for index, entry in enumerate(devices):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in seen:
            line = _line(_child(_child(root, "devices"), index))
            raise ConfigError(f"{filename}:{line}: device name {name!r} is used twice (names must be unique)")
        if isinstance(name, str):
            seen.add(name)
