"""The device interface: where a benchmark cell runs. One module per kind (local, ssh, qemu), each a small
``Device`` subclass over a ``Transport`` (push / exec / pull, ``edgeq.devices.transport``); the cell logic below
(``run_cell``, ``info``) is shared by every kind.

A device runs ``edgeq/targets/runner.py`` (numpy + runtime only) on one artifact per call, in a fresh process, and
returns the runner's JSON. Contract for implementations:

* ``prepare()`` reaches the device and installs the runner; it raises ``DeviceError`` (one line) when the device
  is unusable (unreachable, no Python). It is called once before the device's first cell.
* ``run_cell(...)`` never raises for a cell's own problems: a runner error, a crash (signal), a timeout or a lost
  connection come back as ``{"ok": False, "error": "<one line>"}``. On success it returns the runner's JSON
  (``ok, load_ms, first_ms, latency, peak_rss_mb, system, eval_samples, runtime, runtime_version, inputs,
  outputs``) plus ``"outputs_path"`` (a local .npz with ``out_0, out_1, …`` stacked over samples) when an
  eval npz was given.
* ``info()`` is the runner's ``info`` JSON (machine, CPU model + INT8 flags, Python, runtimes).
* Never two cells at once on one device: the caller serialises calls per device; devices run in parallel.
"""

from __future__ import annotations

import json
import signal
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeq.devices.transport import ExecResult, Transport
from edgeq.digest import files_sha256, sha256_file
from edgeq.errors import DeviceError
from edgeq.workdirs import TMP_PREFIX, owned


@dataclass(frozen=True)
class ArtifactFiles:
    """An artifact's files: ``root`` directory, ``files`` relative to it, ``main`` (the file the runner opens)."""

    root: Path
    files: tuple[str, ...]
    main: str
    sha256: str

    @property
    def main_path(self) -> Path:
        return self.root / self.main

    @classmethod
    def from_manifest(cls, manifest_dir: Path, artifact: Any) -> ArtifactFiles:
        """From a manifest.json row: ``path`` is relative to the manifest dir, ``files[].path`` to the artifact dir."""
        if not artifact.path:
            raise DeviceError(f"artifact {artifact.backend} has no main file in its manifest")
        main_abs = (Path(manifest_dir) / artifact.path).resolve()
        root = main_abs.parent
        candidate = (Path(manifest_dir) / artifact.backend).resolve()
        if candidate.is_dir() and main_abs.is_relative_to(candidate):
            root = candidate
        files = tuple(f.path for f in artifact.files) or (main_abs.name,)
        main = str(main_abs.relative_to(root))
        if main not in files:
            files = (*files, main)
        return cls(root=root, files=files, main=main, sha256=artifact.sha256 or files_sha256(root, files))


@dataclass(frozen=True)
class RunSettings:
    """How the runner measures one cell (identical for every backend and device of a bench)."""

    runs: int = 50
    min_seconds: float = 2.0
    warmup: int = 5
    seed: int = 0
    timing: bool = True
    profile: bool = False

    def runner_args(self) -> list[str]:
        args = ["--runs", str(self.runs), "--min-seconds", str(self.min_seconds), "--warmup", str(self.warmup),
                "--seed", str(self.seed)]
        if self.profile:
            args.append("--profile")
        return args if self.timing else [*args, "--no-timing"]

    def as_dict(self) -> dict[str, object]:
        """Settings that identify a cell (``profile`` only when on, so earlier cell ids stay valid)."""
        settings = asdict(self)
        if not self.profile:
            settings.pop("profile")
        return settings


def runner_path() -> Path:
    """The on-device runner script, ``edgeq/targets/runner.py`` (one self-contained file, copied to devices)."""
    path = Path(__file__).resolve().parents[1] / "targets" / "runner.py"
    if not path.is_file():
        raise DeviceError("the edgeq runner (edgeq/targets/runner.py) is missing from this installation")
    return path


def runner_sha256() -> str:
    return sha256_file(runner_path())


def runner_run_args(main: str, threads: int, cpus: list[int] | None, settings: RunSettings,
                    eval_npz: str | None = None, outputs: str | None = None) -> list[str]:
    """Arguments after ``runner.py``: ``run MAIN --threads N [--cpus …] …``."""
    args = ["run", main, "--threads", str(threads)]
    if cpus:
        args += ["--cpus", ",".join(str(c) for c in cpus)]
    args += settings.runner_args()
    if eval_npz:
        args += ["--eval", eval_npz, "--outputs", outputs or "outputs.npz"]
    return args


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a process's stderr, trimmed (for one-line failure reasons)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def failure(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": " ".join(reason.split())[:500]}


def interpret_runner(stdout: str, stderr: str, returncode: int | None, signal_number: int | None = None) -> dict[str, Any]:
    """The runner's JSON, or a one-line failure: a crash names its signal ("runner died: SIGSEGV")."""
    if signal_number:
        detail = last_line(stderr)
        return failure(f"runner died: {signal_name(signal_number)}" + (f" ({detail})" if detail else ""))
    document = None
    for line in reversed((stdout or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                document = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if isinstance(document, dict) and "ok" in document:
        if not document["ok"]:
            return failure(f"runner: {document.get('error') or 'failed'}")
        if returncode not in (0, None):
            return failure(f"runner exited with status {returncode} after reporting success")
        return document
    detail = last_line(stderr) or "no output"
    return failure(f"runner exited with status {returncode} without a result: {detail}")


class Device(ABC):
    """Where cells run: a device kind over one ``Transport`` (see ``edgeq.devices.transport``).

    Subclasses set ``self.transport`` and ``self.python`` (the interpreter on the device) in ``__init__`` and
    implement ``prepare``; the cell and info logic here is shared by every kind."""

    kind: ClassVar[str] = ""
    emulated: bool = False
    timeout_factor: ClassVar[float] = 1.0
    """Cells may take this many times the bench's --timeout (emulation is slow)."""
    info_timeout_s: ClassVar[float] = 120.0
    transport: Transport
    python: str

    def __init__(self, config: Any) -> None:
        self.config = config
        self._runner: str | None = None
        self._eval_names: dict[tuple[str, int, int], str] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def name(self) -> str:
        return str(self.config.name)

    @abstractmethod
    def prepare(self) -> None:
        """Reach the device and install the runner; ``DeviceError`` (one line) when it cannot be used."""

    def ready(self) -> None:  # noqa: B027 - optional hook
        """Called before every cell and info call; kinds that connect lazily (ssh) prepare here."""

    # -- shared plumbing ---------------------------------------------------------------------------------
    def runner_argv(self, *args: str) -> list[str]:
        """``PYTHON RUNNER ARGS…`` on the device (the runner is pushed once, named by its digest)."""
        if self._runner is None:
            self._runner = self.transport.push(runner_path(), f"runner-{runner_sha256()[:12]}.py")
        return [str(self.python), self._runner, *args]

    def scratch_file(self, suffix: str) -> Path:
        """A fresh empty-named file path in this device's host scratch dir (removed by ``close``)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=owned(f"{TMP_PREFIX}{self.name}-"))  # a killed run's: removed later
        return Path(self._tmp.name) / f"{uuid.uuid4().hex}{suffix}"

    def _push_eval(self, eval_npz: Path) -> str:
        """Eval inputs go to ``eval/<sha256>.npz`` (hashed once per file version on this device)."""
        stat = eval_npz.stat()
        key = (str(eval_npz.absolute()), stat.st_size, stat.st_mtime_ns)
        if key not in self._eval_names:
            self._eval_names[key] = f"eval/{sha256_file(eval_npz)}.npz"
        return self.transport.push(eval_npz, self._eval_names[key])

    def timeout_message(self, limit_s: float) -> str:
        return f"timeout after {limit_s:g} s (runner killed)"

    # -- Device ------------------------------------------------------------------------------------------
    def run_cell(self, artifact: ArtifactFiles, threads: int, cpus: list[int] | None, settings: RunSettings,
                 eval_npz: Path | None, timeout_s: float, outputs_path: Path | None = None) -> dict[str, Any]:
        """Run one cell in a fresh process; the runner's JSON (+ ``outputs_path``) or ``{"ok": False, "error"}``."""
        run_dir = None
        try:
            self.ready()
            main = f"{self.transport.push_tree(artifact.root, artifact.files, f'art/{artifact.sha256}')}/{artifact.main}"
            device_eval = device_outputs = None
            if eval_npz is not None:
                device_eval = self._push_eval(Path(eval_npz))
                run_dir = self.transport.make_run_dir()
                device_outputs = f"{run_dir}/outputs.npz"
            limit = timeout_s * self.timeout_factor
            argv = self.runner_argv(*runner_run_args(main, threads, cpus, settings, device_eval, device_outputs))
            done = self.transport.exec(argv, limit)
            if done.timed_out:
                return failure(self.timeout_message(limit))
            result = interpret_runner(done.stdout, done.stderr, done.returncode, done.signal)
            if result.get("ok") and device_outputs:
                local = Path(outputs_path) if outputs_path else self.scratch_file(".npz")
                local.unlink(missing_ok=True)
                self.transport.pull(device_outputs, local)
                if not local.is_file():
                    return failure("runner reported success but wrote no outputs npz")
                result["outputs_path"] = str(local)
            return result
        except DeviceError as exc:
            return failure(str(exc).removeprefix(f"device {self.name!r}: "))
        finally:
            if run_dir is not None:
                self.transport.remove(run_dir)

    def info(self) -> dict[str, Any]:
        """The runner's ``info`` JSON for this device; ``DeviceError`` when unreachable."""
        self.ready()
        return runner_info(self.runner_argv(), lambda argv: self.transport.exec(argv, self.info_timeout_s),
                           where=f"device {self.name!r}")

    def provision(self, packages: list[str]) -> str:
        """Create ``workdir/venv`` and pip-install ``packages`` there; returns a one-line summary."""
        raise DeviceError(f"device {self.name!r} (kind {self.kind}) cannot be provisioned by edgeq")

    def close(self) -> None:
        """Release connections/temporary files."""
        self.transport.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runner_info(prefix: list[str], run: Callable[[list[str]], ExecResult], where: str) -> dict[str, Any]:
    """``runner.py info --import-runtimes``; if importing a runtime crashes the process, retry without imports."""
    done = run([*prefix, "info", "--import-runtimes"])
    crashed = bool(done.signal or done.timed_out or done.returncode != 0)
    if crashed:
        done = run([*prefix, "info"])
    if done.timed_out:
        raise DeviceError(f"{where}: runner info timed out")
    if done.signal:
        raise DeviceError(f"{where}: runner died: {signal_name(done.signal)}")
    try:
        document = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise DeviceError(f"{where}: runner info failed (status {done.returncode}): "
                          f"{last_line(done.stderr) or 'no output'}") from None
    if crashed:
        document["import_check"] = "importing a runtime crashed the runner; versions found without importing"
    return document
