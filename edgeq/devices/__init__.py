"""Devices where benchmark cells run. ``make_device(config)`` picks the implementation for ``config.kind``.

A kind is a config class in ``edgeq.devices.config.DEVICE_CONFIGS`` whose ``device_class`` (``"module:Class"``)
names its implementation; the module is imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeq.devices.base import ArtifactFiles, Device, RunSettings
from edgeq.devices.config import DEVICE_CONFIGS, KIND_NAMES, DeviceConfig, DevicesFile, load_devices
from edgeq.errors import DeviceError

KINDS: dict[str, str] = {kind: config.device_class for kind, config in zip(KIND_NAMES, DEVICE_CONFIGS)}
"""kind → ``module:Class`` of its Device."""


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
