"""The device interface: where a benchmark cell runs. One module per kind (local, ssh, qemu).

A device runs ``targets/runner.py`` (numpy + runtime only) on one artifact per call, in a fresh process, and
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

import hashlib
import json
import signal
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeq.errors import DeviceError


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
        return cls(root=root, files=files, main=main, sha256=artifact.sha256 or _digest_files(root, files))


def _digest_files(root: Path, files: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).hexdigest().encode() + b"\n")
    return digest.hexdigest()


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
    """The on-device runner script (``targets/runner.py``, installed as ``edgeq.targets.runner``)."""
    import importlib.util

    spec = importlib.util.find_spec("edgeq.targets.runner")
    if spec is not None and spec.origin:
        return Path(spec.origin)
    fallback = Path(__file__).resolve().parents[2] / "targets" / "runner.py"
    if fallback.is_file():
        return fallback
    raise DeviceError("the edgeq runner (targets/runner.py) is missing from this installation")


def runner_sha256() -> str:
    return hashlib.sha256(runner_path().read_bytes()).hexdigest()


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
    """Where cells run. Subclasses: LocalDevice, SshDevice, QemuDevice (see ``make_device``)."""

    kind: ClassVar[str] = ""
    emulated: bool = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return str(self.config.name)

    @abstractmethod
    def prepare(self) -> None:
        """Reach the device and install the runner; ``DeviceError`` (one line) when it cannot be used."""

    @abstractmethod
    def run_cell(self, artifact: ArtifactFiles, threads: int, cpus: list[int] | None, settings: RunSettings,
                 eval_npz: Path | None, timeout_s: float, outputs_path: Path | None = None) -> dict[str, Any]:
        """Run one cell in a fresh process; the runner's JSON (+ ``outputs_path``) or ``{"ok": False, "error"}``."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """The runner's ``info`` JSON for this device; ``DeviceError`` when unreachable."""

    def provision(self, packages: list[str]) -> str:
        """Create ``workdir/venv`` and pip-install ``packages`` there; returns a one-line summary."""
        raise DeviceError(f"device {self.name!r} (kind {self.kind}) cannot be provisioned by edgeq")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections/temporary files."""

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
