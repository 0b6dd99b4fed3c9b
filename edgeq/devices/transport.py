"""How edgeq reaches a device: push files to it, exec a command on it, pull a file back, a scratch dir per cell.

Every device kind is a ``Device`` (``edgeq.devices.base``) over one ``Transport``; the cell logic (upload the
artifact and eval inputs, run the runner, fetch the outputs, clean up) is written once, in ``Device.run_cell``.
A new kind (e.g. adb: ``adb push`` / ``adb shell`` / ``adb pull``) is one module with a Transport and a small
Device subclass.

Paths on the device are strings. ``push`` names are relative to the device's cache dir and content-addressed by
the caller (``art/<sha256>``, ``eval/<sha256>.npz``), so a transport may skip what the device already holds.
A transport whose device sees this machine's files (local, qemu) returns the local paths and copies nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgeq.errors import DeviceError
from edgeq.workdirs import TMP_PREFIX, owned


@dataclass(frozen=True)
class ExecResult:
    """A finished command: its output, exit status, the signal that killed it, or that it ran out of time."""

    stdout: str
    stderr: str
    returncode: int | None
    signal: int | None = None
    timed_out: bool = False


class Transport(Protocol):
    """push / exec / pull on one device, plus the lifecycle of per-cell scratch dirs there."""

    def push(self, local: Path, remote: str) -> str:
        """Put one file at ``remote`` (relative to the device's cache dir) unless it is there; its device path."""

    def push_tree(self, root: Path, files: Sequence[str], remote: str) -> str:
        """Put ``files`` (relative to ``root``) into the dir ``remote`` once, atomically; the dir's device path."""

    def exec(self, argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> ExecResult:
        """Run ``argv`` on the device; a timed-out command is killed there. ``DeviceError`` if the link is lost."""

    def pull(self, remote: str, local: Path) -> None:
        """Bring the device file ``remote`` to ``local`` (``DeviceError`` when that fails)."""

    def make_run_dir(self) -> str:
        """A fresh, empty scratch dir on the device for one cell."""

    def remove(self, remote: str) -> None:
        """Delete a scratch dir made by ``make_run_dir`` (never raises)."""

    def close(self) -> None:
        """Release connections and scratch space."""


# -- host processes -----------------------------------------------------------------------------------------
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def run_process(argv: Sequence[str], timeout_s: float, cwd: Path | None = None, env: Mapping[str, str] | None = None,
                stdin_path: Path | None = None, stdout_path: Path | None = None) -> ExecResult:
    """Run ``argv`` on this machine in its own process group.

    ``stdin_path``/``stdout_path`` connect stdin/stdout to files (binary); then the returned stdout is "".
    On timeout the whole group is killed (runtimes may start helper threads/processes)."""
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        stdout_target = stack.enter_context(open(stdout_path, "wb")) if stdout_path else subprocess.PIPE
        try:
            proc = subprocess.Popen(list(argv), stdout=stdout_target, stderr=subprocess.PIPE, stdin=stdin, cwd=cwd,
                                    env=None if env is None else dict(env), start_new_session=True)
        except OSError as exc:
            raise DeviceError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        timed_out = False
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
        except BaseException:  # Ctrl-C: never leave a runner behind
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    stdout = (out or b"").decode(errors="replace")
    stderr = (err or b"").decode(errors="replace")
    code = proc.returncode
    if timed_out:
        return ExecResult(stdout, stderr, code, None, True)
    return ExecResult(stdout, stderr, code, -code if code is not None and code < 0 else None)


def kill_running() -> None:
    """Kill every runner/ssh process started by ``run_process`` (Ctrl-C: they run in their own sessions)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class HostTransport:
    """A device that is a process on this machine and sees its files (kind local; qemu adds an emulator prefix).

    Pushes copy nothing (the device path is the absolute local path); outputs are written in a host scratch dir
    and moved to where the caller wants them."""

    def __init__(self, name: str, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.env = env
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """The host argv that runs ``argv`` on the device (here: itself)."""
        return list(argv)

    def environment(self) -> Mapping[str, str] | None:
        """The environment commands run with (None: this process's)."""
        return self.env

    def push(self, local: Path, remote: str) -> str:
        return str(Path(local).absolute())

    def push_tree(self, root: Path, files: Sequence[str], remote: str) -> str:
        return str(Path(root).absolute())

    def exec(self, argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> ExecResult:
        return run_process(self.command(argv), timeout_s, env=env if env is not None else self.environment())

    def pull(self, remote: str, local: Path) -> None:
        if Path(remote).is_file() and Path(remote) != Path(local):
            shutil.move(remote, local)

    def make_run_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=owned(f"{TMP_PREFIX}{self.name}-"))  # a killed run's: removed later
        run_dir = Path(self._tmp.name) / f"run-{uuid.uuid4().hex}"
        run_dir.mkdir()
        return str(run_dir)

    def remove(self, remote: str) -> None:
        shutil.rmtree(remote, ignore_errors=True)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
