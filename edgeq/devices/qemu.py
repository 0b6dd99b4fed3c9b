"""kind: qemu — an emulated aarch64 device: every cell is a fresh host process
``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11 targets/runner.py run …`` with ``PYTHONPATH=SITE``.

The arm64 root comes from ``edgeq devices setup-arm64`` (see ``edgeq.devices.arm64_root``). QEMU user-mode
shares the host's file system, so artifacts, eval inputs and outputs are read/written in place (no copies).
Latencies under emulation mean nothing; outputs and accuracy are those of the real aarch64 kernels.
"""

from __future__ import annotations

import tempfile
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
from edgeq.devices.base import (
    ArtifactFiles,
    Device,
    RunSettings,
    failure,
    runner_path,
    runner_run_args,
)
from edgeq.devices.local import host_cell_result, run_process, runner_info
from edgeq.errors import DeviceError

# Emulation is ~10-50× slower than the host for compute: cells get this many times the bench's --timeout.
TIMEOUT_FACTOR = 10.0
INFO_TIMEOUT_S = 600.0


class QemuDevice(Device):
    """aarch64 under QEMU user-mode emulation of a prepared arm64 root (``emulated = True``)."""

    kind = "qemu"
    emulated = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.root = Path(config.root).expanduser().absolute()
        self.site = Path(config.site).expanduser().absolute() if config.site else self.root / "site"
        self.python = self.root / (config.python or PYTHON_IN_ROOT).lstrip("/")
        self.qemu_name = config.qemu
        self._qemu: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- command line ------------------------------------------------------------------------------------
    @property
    def qemu(self) -> str:
        if self._qemu is None:
            self._qemu = qemu_binary(self.qemu_name)
        return self._qemu

    def command(self, *runner_args: str) -> list[str]:
        """The full argv that runs ``runner.py RUNNER_ARGS…`` on the emulated device."""
        return [*qemu_python_argv(self.qemu, self.root, self.python), str(runner_path()), *runner_args]

    def env(self) -> dict[str, str]:
        return qemu_env(self.site)

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
        if not self.python.is_file():
            raise DeviceError(f"{where}: no arm64 Python at {self.python}; {setup_hint}")
        if not self.site.is_dir():
            raise DeviceError(f"{where}: site directory {self.site} (aarch64 wheels) not found; {setup_hint}")
        if not runner_path().is_file():
            raise DeviceError("targets/runner.py is missing")

    def _scratch(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"edgeq-{self.name}-")
        return Path(self._tmp.name)

    def run_cell(self, artifact: ArtifactFiles, threads: int, cpus: list[int] | None, settings: RunSettings,
                 eval_npz: Path | None, timeout_s: float, outputs_path: Path | None = None) -> dict[str, Any]:
        outputs = None
        if eval_npz is not None:
            outputs = outputs_path or Path(tempfile.mkstemp(dir=self._scratch(), suffix=".npz")[1])
            outputs.unlink(missing_ok=True)
        limit = timeout_s * TIMEOUT_FACTOR
        try:
            argv = self.command(*runner_run_args(str(Path(artifact.main_path).absolute()), threads, cpus, settings,
                                                 str(Path(eval_npz).absolute()) if eval_npz else None,
                                                 str(Path(outputs).absolute()) if outputs else None))
            stdout, stderr, code, sig, timed_out = run_process(argv, limit, env=self.env())
        except DeviceError as exc:
            return failure(str(exc))
        if timed_out:
            return failure(f"timeout after {limit:g} s under emulation ({TIMEOUT_FACTOR:g}× --timeout; runner killed)")
        return host_cell_result(stdout, stderr, code, sig, outputs)

    def info(self) -> dict[str, Any]:
        self.prepare()
        env = self.env()
        document = runner_info(self.command(), run=lambda argv: run_process(argv, INFO_TIMEOUT_S, env=env),
                               where=f"device {self.name!r}")
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

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
