"""kind: local — this machine; every cell is a fresh ``python targets/runner.py run …`` subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from edgeq.devices.base import (
    ArtifactFiles,
    Device,
    RunSettings,
    failure,
    interpret_runner,
    last_line,
    runner_path,
    runner_run_args,
    signal_name,
)
from edgeq.errors import DeviceError


def host_cell_result(stdout: str, stderr: str, code: int | None, sig: int | None, outputs: Path | None) -> dict[str, Any]:
    """The runner's result for a cell run as a host process (local or emulated), with its outputs file checked."""
    result = interpret_runner(stdout, stderr, code, sig)
    if result.get("ok") and outputs is not None:
        if not outputs.is_file():
            return failure("runner reported success but wrote no outputs npz")
        result["outputs_path"] = str(outputs)
    return result


def run_process(argv: list[str], timeout_s: float, cwd: Path | None = None, env: dict[str, str] | None = None,
                stdin_path: Path | None = None, stdout_path: Path | None = None,
                ) -> tuple[str, str, int | None, int | None, bool]:
    """Run ``argv`` in its own process group; returns (stdout, stderr, returncode, signal, timed_out).

    ``stdin_path``/``stdout_path`` connect stdin/stdout to files (binary); then the returned stdout is "".
    On timeout the whole group is killed (runtimes may start helper threads/processes)."""
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        stdout_target = stack.enter_context(open(stdout_path, "wb")) if stdout_path else subprocess.PIPE
        try:
            proc = subprocess.Popen(argv, stdout=stdout_target, stderr=subprocess.PIPE, stdin=stdin, cwd=cwd,
                                    env=env, start_new_session=True)
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
        return stdout, stderr, code, None, True
    return stdout, stderr, code, (-code if code is not None and code < 0 else None), False


_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


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


class LocalDevice(Device):
    """This machine. ``python`` defaults to the interpreter running edgeq."""

    kind = "local"
    emulated = False

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.python = config.python or sys.executable
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def prepare(self) -> None:
        if not runner_path().is_file():
            raise DeviceError("targets/runner.py is missing")
        if os.sep in self.python and not os.access(self.python, os.X_OK):
            raise DeviceError(f"device {self.name!r}: python {self.python!r} is not an executable file")

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
        argv = [self.python, str(runner_path()),
                *runner_run_args(str(artifact.main_path), threads, cpus, settings,
                                 str(eval_npz) if eval_npz else None, str(outputs) if outputs else None)]
        try:
            stdout, stderr, code, sig, timed_out = run_process(argv, timeout_s)
        except DeviceError as exc:
            return failure(str(exc))
        if timed_out:
            return failure(f"timeout after {timeout_s:g} s (runner killed)")
        return host_cell_result(stdout, stderr, code, sig, outputs)

    def info(self) -> dict[str, Any]:
        return runner_info([self.python, str(runner_path())], run=lambda argv: run_process(argv, 120),
                           where=f"device {self.name!r}")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def runner_info(prefix: list[str], run: Any, where: str) -> dict[str, Any]:
    """``runner.py info --import-runtimes``; if importing a runtime crashes the process, retry without imports."""
    stdout, stderr, code, sig, timed_out = run([*prefix, "info", "--import-runtimes"])
    if sig or timed_out or code != 0:
        stdout, stderr, code, sig, timed_out = run([*prefix, "info"])
        crashed = True
    else:
        crashed = False
    if timed_out:
        raise DeviceError(f"{where}: runner info timed out")
    if sig:
        raise DeviceError(f"{where}: runner died: {signal_name(sig)}")
    try:
        document = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise DeviceError(f"{where}: runner info failed (status {code}): {last_line(stderr) or 'no output'}") from None
    if crashed:
        document["import_check"] = "importing a runtime crashed the runner; versions found without importing"
    return document
