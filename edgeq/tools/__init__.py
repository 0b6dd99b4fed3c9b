"""Isolated, pinned tool environments that edgeq creates on first use and caches (``edgeq tools setup onnx2tf``).

``onnx2tf`` pins exact old versions of numpy / onnx / onnxruntime / TensorFlow, so it cannot share edgeq's
environment. It gets its own venv under ``~/.cache/edgeq/tools/onnx2tf``, built from PyPI only with every
distribution pinned (``onnx2tf-requirements.txt``, installed with ``--no-deps``), and is run as a subprocess
(``onnx2tf_convert.py``), which also keeps its crashes out of edgeq's process.

Like the arm64 root (``edgeq/devices/arm64_root.py``): built in ``NAME.tmp-*`` beside the target and renamed into
place, a stamp (``edgeq-tool.json``) records the requirements' digest (a changed pin list rebuilds it), and
concurrent callers serialise on ``NAME.lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgeq.errors import BackendUnavailable
from edgeq.workdirs import file_lock, replace_dir

TOOLS_ROOT_ENV = "EDGEQ_TOOLS_DIR"
DEFAULT_TOOLS_ROOT = Path("~/.cache/edgeq/tools")
STAMP_NAME = "edgeq-tool.json"
HERE = Path(__file__).resolve().parent
TOOLS = {"onnx2tf": HERE / "onnx2tf-requirements.txt"}
CONVERT_SCRIPTS = {"onnx2tf": HERE / "onnx2tf_convert.py"}
MIN_PYTHON = (3, 10)


def tools_root() -> Path:
    return Path(os.environ.get(TOOLS_ROOT_ENV) or DEFAULT_TOOLS_ROOT).expanduser()


def _requirements(tool: str) -> list[str]:
    lines = TOOLS[tool].read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _digest(tool: str) -> str:
    return hashlib.sha256("\n".join(_requirements(tool)).encode()).hexdigest()[:16]


def tool_python(tool: str, root: Path | None = None) -> Path:
    return (root or tools_root()) / tool / "bin" / "python"


def installed(tool: str, root: Path | None = None) -> dict | None:
    """The stamp of a complete environment for ``tool`` with the current pins, or None."""
    directory = (root or tools_root()) / tool
    try:
        stamp = json.loads((directory / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return stamp if stamp.get("digest") == _digest(tool) and tool_python(tool, root).exists() else None


def _base_python() -> str:
    """An interpreter to build the venv from: this one (a venv's ``python -m venv`` uses its base interpreter)."""
    if sys.version_info[:2] < MIN_PYTHON:
        raise BackendUnavailable(f"the onnx2tf tool environment needs Python >= {'.'.join(map(str, MIN_PYTHON))}")
    return sys.executable


def setup(tool: str, root: Path | None = None, force: bool = False,
          progress: Callable[[str], None] | None = None) -> dict:
    """Create (or return the cached) pinned environment for ``tool``; returns its stamp. Raises BackendUnavailable
    with pip's last line when PyPI cannot provide it."""
    if tool not in TOOLS:
        raise BackendUnavailable(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")
    root = root or tools_root()
    say = progress or (lambda _text: None)
    with file_lock(root / f"{tool}.lock"):
        stamp = installed(tool, root)
        if stamp is not None and not force:
            return stamp
        started = time.perf_counter()
        building = Path(tempfile.mkdtemp(dir=root, prefix=f"{tool}.tmp-"))
        try:
            say(f"creating a venv for {tool} in {root / tool}")
            subprocess.run([_base_python(), "-m", "venv", "--clear", str(building)], check=True, capture_output=True)
            # the venv must work at its final path: pip's scripts carry absolute paths, so run pip as a module
            say(f"installing {len(_requirements(tool))} pinned distributions from PyPI (about 2.6 GB)")
            done = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--no-deps",
                                   "--disable-pip-version-check", "-q", "-r", str(TOOLS[tool])],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                last = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
                raise BackendUnavailable(f"cannot build the {tool} tool environment: pip failed "
                                         f"({last[-1][:200] if last else done.returncode})")
            final = root / tool
            replace_dir(building, final)
            _fix_venv_paths(building, final)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        stamp = {"tool": tool, "digest": _digest(tool), "requirements": _requirements(tool),
                 "python": sys.version.split()[0], "seconds": round(time.perf_counter() - started, 1)}
        (final / STAMP_NAME).write_text(json.dumps(stamp, indent=1))
        say(f"{tool} ready in {stamp['seconds']} s")
        return stamp


def _fix_venv_paths(old: Path, new: Path) -> None:
    """A renamed venv: point ``pyvenv.cfg``-independent absolute paths (activate scripts, pip shebangs) at ``new``.
    edgeq itself only runs ``bin/python``, which works wherever the venv lies."""
    for script in (new / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            with contextlib.suppress(UnicodeDecodeError, OSError):
                text = script.read_text()
                if str(old) in text:
                    script.write_text(text.replace(str(old), str(new)))


def ensure(tool: str, progress: Callable[[str], None] | None = None) -> Path:
    """The tool environment's Python, building the environment on first use (``EDGEQ_NO_TOOL_SETUP=1``: never build,
    refuse instead)."""
    if installed(tool) is None:
        if os.environ.get("EDGEQ_NO_TOOL_SETUP"):
            raise BackendUnavailable(f"the {tool} tool environment is not set up (run: edgeq tools setup {tool})")
        setup(tool, progress=progress)
    return tool_python(tool)
