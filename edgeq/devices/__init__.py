"""Devices where benchmark cells run. ``make_device(config)`` picks the implementation for ``config.kind``.

Kinds are registered here as ``kind: "module:Class"`` and imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeq.devices.base import ArtifactFiles, Device, RunSettings
from edgeq.devices.config import DeviceConfig, DevicesFile, load_devices
from edgeq.errors import DeviceError

KINDS: dict[str, str] = {
    "local": "edgeq.devices.local:LocalDevice",
    "ssh": "edgeq.devices.ssh:SshDevice",
    "qemu": "edgeq.devices.qemu:QemuDevice",
}


def make_device(config: Any) -> Device:
    """The Device for one devices.yaml entry."""
    try:
        target = KINDS[config.kind]
    except KeyError:
        raise DeviceError(f"unknown device kind {config.kind!r} (known: {', '.join(KINDS)})") from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise DeviceError(f"device kind {config.kind!r} is not available in this edgeq build") from None
        raise
    return getattr(module, class_name)(config)


__all__ = ["ArtifactFiles", "Device", "DeviceConfig", "DevicesFile", "KINDS", "RunSettings", "load_devices",
           "make_device"]
