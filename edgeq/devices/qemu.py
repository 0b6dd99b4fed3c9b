"""kind: qemu — an emulated aarch64 device: every cell is a fresh host process
``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11 edgeq/targets/runner.py run …`` with ``PYTHONPATH=SITE``.

The arm64 root comes from ``edgeq devices setup-arm64`` (see ``edgeq.devices.arm64_root``). QEMU user-mode
shares the host's file system, so the transport is the local one with the emulator in front: artifacts and eval
inputs are read in place (no copies).
Latencies under emulation mean nothing; outputs and accuracy are those of the real aarch64 kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeq.devices.arm64_root import (
    PYTHON_IN_ROOT,
    RUNTIME_ALIASES,
    STAMP_NAME,
    qemu_binary,
    qemu_env,
    qemu_python_argv,
    qemu_version,
    read_stamp,
    setup_arm64,
)
from edgeq.devices.base import Device, runner_path
from edgeq.devices.transport import HostTransport
from edgeq.errors import DeviceError

# Emulation is ~10-50× slower than the host for compute: cells get this many times the bench's --timeout.
TIMEOUT_FACTOR = 10.0
INFO_TIMEOUT_S = 600.0


class QemuTransport(HostTransport):
    """Host processes behind ``qemu-aarch64-static -L ROOT`` (argv[0] is the Python inside ROOT)."""

    def __init__(self, name: str, root: Path, site: Path, qemu_name: str) -> None:
        super().__init__(name)
        self.root, self.site, self.qemu_name = root, site, qemu_name
        self._qemu: str | None = None

    @property
    def qemu(self) -> str:
        if self._qemu is None:
            self._qemu = qemu_binary(self.qemu_name)
        return self._qemu

    def command(self, argv: Sequence[str]) -> list[str]:
        return [*qemu_python_argv(self.qemu, self.root, Path(argv[0])), *argv[1:]]

    def environment(self) -> dict[str, str]:
        return qemu_env(self.site)


class QemuDevice(Device):
    """aarch64 under QEMU user-mode emulation of a prepared arm64 root (``emulated = True``)."""

    kind = "qemu"
    emulated = True
    timeout_factor = TIMEOUT_FACTOR
    info_timeout_s = INFO_TIMEOUT_S

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.root = Path(config.root).expanduser().absolute()
        self.site = Path(config.site).expanduser().absolute() if config.site else self.root / "site"
        self.python = str(self.root / (config.python or PYTHON_IN_ROOT).lstrip("/"))
        self.transport = QemuTransport(self.name, self.root, self.site, config.qemu)

    @property
    def qemu(self) -> str:
        return self.transport.qemu

    def timeout_message(self, limit_s: float) -> str:
        return f"timeout after {limit_s:g} s under emulation ({TIMEOUT_FACTOR:g}× --timeout; runner killed)"

    # -- Device ------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        where = f"device {self.name!r}"
        try:
            self.qemu  # noqa: B018 - resolves the binary or raises with the install hint
        except DeviceError as exc:
            raise DeviceError(f"{where}: {exc}") from None
        setup_hint = f"run: edgeq devices setup-arm64 --root {self.root}"
        if not self.root.is_dir():
            raise DeviceError(f"{where}: arm64 root {self.root} not found; {setup_hint}")
        if not Path(self.python).is_file():
            raise DeviceError(f"{where}: no arm64 Python at {self.python}; {setup_hint}")
        if not self.site.is_dir():
            raise DeviceError(f"{where}: site directory {self.site} (aarch64 wheels) not found; {setup_hint}")
        if not runner_path().is_file():
            raise DeviceError("edgeq/targets/runner.py is missing")

    def info(self) -> dict[str, Any]:
        self.prepare()
        document = super().info()
        document["emulated"] = True
        document["emulator"] = qemu_version(self.qemu)
        stamp = read_stamp(self.root)
        if stamp:
            document["arm64_root"] = {"pins": stamp.get("pins"), "created": stamp.get("created")}
        return document

    def provision(self, packages: list[str]) -> str:
        """Add runtimes to an edgeq-made root (rebuilt atomically with the pinned aarch64 wheels)."""
        if read_stamp(self.root) is None or self.site != self.root / "site":
            raise DeviceError(f"device {self.name!r}: {self.root} was not made by `edgeq devices setup-arm64` "
                              f"(no {STAMP_NAME}); provision it yourself")
        runtimes = [p for p in packages if p.lower().replace("_", "-") in RUNTIME_ALIASES]
        unknown = [p for p in packages if p not in runtimes and p != "numpy"]
        if unknown:
            raise DeviceError(f"device {self.name!r}: cannot provision {', '.join(unknown)} in the arm64 root")
        stamp = setup_arm64(self.root, runtimes=runtimes or [], qemu=self.qemu)
        if stamp.get("reused"):
            return f"arm64 root already has {', '.join(stamp['pins'].values())}"
        return f"rebuilt {self.root} with {', '.join(stamp['pins'].values())}"
