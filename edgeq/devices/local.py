"""kind: local — this machine; every cell is a fresh ``python edgeq/targets/runner.py run …`` subprocess."""

from __future__ import annotations

import os
import sys
from typing import Any

from edgeq.devices.base import Device, runner_path
from edgeq.devices.transport import HostTransport
from edgeq.errors import DeviceError


class LocalDevice(Device):
    """This machine. ``python`` defaults to the interpreter running edgeq."""

    kind = "local"
    emulated = False

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.python = config.python or sys.executable
        self.transport = HostTransport(self.name)

    def prepare(self) -> None:
        if not runner_path().is_file():
            raise DeviceError("edgeq/targets/runner.py is missing")
        if os.sep in self.python and not os.access(self.python, os.X_OK):
            raise DeviceError(f"device {self.name!r}: python {self.python!r} is not an executable file")
