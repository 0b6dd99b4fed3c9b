"""``edgeq devices setup-arm64``: an arm64 root for the ``qemu`` device kind (QEMU user-mode, no chroot/binfmt).

The root is made from Debian's arm64 packages and PyPI's aarch64 wheels, without touching the host's dpkg:

1. ``apt-get update`` into private lists with ``APT::Architecture=arm64`` (the host's apt sources);
2. ``apt-get download`` Python 3.11 and the libraries it needs, ``dpkg -x`` each ``.deb`` into ROOT;
3. ``pip download`` aarch64 wheels (numpy + the runtimes, pinned to versions that work under QEMU 7.2) and
   unzip them into ``ROOT/site`` (the device's PYTHONPATH);
4. check it: ``runner.py info --import-runtimes`` under ``qemu-aarch64-static`` must say ``aarch64``.

It is built in ``ROOT.tmp-*`` next to ROOT and renamed into place, and it is idempotent: ``ROOT/edgeq-arm64.json``
records what was installed; a second call with the same runtimes returns it without doing anything. Concurrent
calls (pytest-xdist workers) serialise on ``ROOT.lock``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeq.errors import DeviceError
from edgeq.workdirs import file_lock, replace_dir

DEFAULT_ROOT = Path("~/.cache/edgeq/arm64-root")
STAMP_NAME = "edgeq-arm64.json"
LAYOUT_VERSION = 2  # 2: byte-compiled (.pyc) stdlib and site
PYTHON_IN_ROOT = "usr/bin/python3.11"
QEMU_BINARY = "qemu-aarch64-static"
QEMU_HINT = "install qemu-user-static: apt-get install -y qemu-user-static"

# Debian bookworm arm64 packages for a working python3.11 (NOTES.md recipe, checked under QEMU 7.2).
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g", "libffi8",
    "libssl3", "libstdc++6", "libgcc-s1", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1", "libncursesw6",
    "libtinfo6", "libreadline8", "libdb5.3", "libgdbm6", "libcrypt1", "libnsl2", "libtirpc3", "libgssapi-krb5-2",
    "libkrb5-3", "libk5crypto3", "libcom-err2", "libkrb5support0", "libkeyutils1", "media-types",
)

# Pins that work under QEMU 7.2 user-mode: onnxruntime >= 1.31 segfaults at import, ai-edge-litert 2.3.0 in
# Interpreter(). numpy 2.4.6 satisfies all three (ORT >=1.21.6, LiteRT >=1.23.2, OpenVINO >=1.16.6,<2.6).
NUMPY_PIN = "numpy==2.4.6"
RUNTIME_PINS = {
    "onnxruntime": "onnxruntime==1.25.0",
    "ai-edge-litert": "ai-edge-litert==2.0.2",
    "openvino": "openvino==2026.4.1",
}
RUNTIME_ALIASES = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "ai-edge-litert": "ai-edge-litert",
                   "litert": "ai-edge-litert", "tflite": "ai-edge-litert", "openvino": "openvino"}
# runtime distribution -> the name the runner reports it under
RUNNER_RUNTIME = {"onnxruntime": "onnxruntime", "ai-edge-litert": "tflite", "openvino": "openvino"}
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "ai-edge-litert": "ai_edge_litert.interpreter",
                   "openvino": "openvino"}
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_28_aarch64", "manylinux_2_31_aarch64", "manylinux_2_34_aarch64",
                   "manylinux_2_35_aarch64")

Progress = Callable[[str], None]


def qemu_binary(name: str = QEMU_BINARY) -> str:
    """The absolute path of the QEMU user-mode binary; one-line ``DeviceError`` with the install hint if missing."""
    found = shutil.which(name) if os.sep not in name else (name if os.access(name, os.X_OK) else None)
    if not found:
        raise DeviceError(f"{name} not found; {QEMU_HINT}")
    return found


def qemu_version(qemu: str) -> str:
    """``qemu-aarch64-static --version`` first line (e.g. "qemu-aarch64 version 7.2.19 …")."""
    try:
        proc = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (proc.stdout.strip().splitlines() or ["unknown"])[0]


def normalise_runtimes(runtimes: Iterable[str]) -> tuple[str, ...]:
    """Runtime names → pip distributions (sorted, unique); ``DeviceError`` for an unknown one."""
    chosen = set()
    for name in runtimes:
        key = name.strip().lower().replace("_", "-")
        if key not in RUNTIME_ALIASES:
            raise DeviceError(f"unknown runtime {name!r} for the arm64 root (choose from: {', '.join(RUNTIME_PINS)})")
        chosen.add(RUNTIME_ALIASES[key])
    return tuple(sorted(chosen))


def read_stamp(root: Path) -> dict[str, Any] | None:
    """The stamp of a finished root (what was installed), or None."""
    try:
        return json.loads((Path(root).expanduser() / STAMP_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stamp_satisfies(stamp: dict[str, Any] | None, runtimes: tuple[str, ...]) -> bool:
    if not stamp or stamp.get("layout_version") != LAYOUT_VERSION:
        return False
    pins = stamp.get("pins") or {}
    return pins.get("numpy") == NUMPY_PIN and all(pins.get(rt) == RUNTIME_PINS[rt] for rt in runtimes)


def setup_arm64(root: Path | str = DEFAULT_ROOT, *, runtimes: Iterable[str] = ("onnxruntime", "ai-edge-litert", "openvino"),
                progress: Progress | None = None, force: bool = False, qemu: str = QEMU_BINARY) -> dict[str, Any]:
    """Build (or reuse) the arm64 root at ``root``; returns its stamp (``"reused": True`` when nothing was done).

    ``runtimes``: any of onnxruntime, ai-edge-litert (alias tflite), openvino. ``force`` rebuilds anyway.
    Raises ``DeviceError`` (one line) when qemu/apt-get/pip fail."""
    root = Path(root).expanduser().absolute()
    wanted = normalise_runtimes(runtimes)
    say = progress or (lambda message: None)
    qemu_path = qemu_binary(qemu)
    stamp = read_stamp(root)
    if not force and _stamp_satisfies(stamp, wanted):
        return {**stamp, "reused": True}  # type: ignore[dict-item]
    _refuse_foreign(root, stamp)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f"{root.name}.lock"):
        stamp = read_stamp(root)  # another process may have built it while we waited
        if not force and _stamp_satisfies(stamp, wanted):
            return {**stamp, "reused": True}  # type: ignore[dict-item]
        _refuse_foreign(root, stamp)
        _remove_stale_builds(root)
        if stamp and not force:  # keep the runtimes the existing root already has
            wanted = tuple(sorted(set(wanted) | set(normalise_runtimes(stamp.get("runtimes") or []))))
        return _build(root, wanted, qemu_path, say)


def _refuse_foreign(root: Path, stamp: dict[str, Any] | None) -> None:
    """Never replace a directory edgeq did not make."""
    if stamp is None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DeviceError(f"{root} exists but is not an edgeq arm64 root (no {STAMP_NAME}); "
                          "remove it or choose another --root")


def _remove_stale_builds(root: Path) -> None:
    """Leftovers of interrupted builds (we hold the lock, so nobody else is building)."""
    for pattern in (f"{root.name}.tmp-*", f"{root.name}.work-*", f"{root.name}.old-*", f".{root.name}.old-*"):
        for stale in root.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _build(root: Path, runtimes: tuple[str, ...], qemu: str, say: Progress) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    build = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=root.parent))
    work = Path(tempfile.mkdtemp(prefix=f"{root.name}.work-", dir=root.parent))
    try:
        mark = time.perf_counter()
        say(f"apt-get update (arm64 package lists, private to {work.name})")
        apt = _apt_options(work)
        _run(["apt-get", *apt, "update"], "apt-get update (arm64 lists)", timeout=900)
        debs_dir = work / "debs"
        debs_dir.mkdir()
        say(f"apt-get download {len(DEBIAN_PACKAGES)} arm64 packages (python3.11 + libraries)")
        _run(["apt-get", *apt, "download", *DEBIAN_PACKAGES], "apt-get download", cwd=debs_dir, timeout=1800)
        debs = sorted(debs_dir.glob("*.deb"))
        timings["apt_s"] = round(time.perf_counter() - mark, 1)

        mark = time.perf_counter()
        say(f"dpkg -x {len(debs)} packages into the root")
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(build)], f"dpkg -x {deb.name}", timeout=600)
        if not (build / PYTHON_IN_ROOT).is_file():
            raise DeviceError(f"the arm64 packages did not provide /{PYTHON_IN_ROOT}")
        timings["extract_debs_s"] = round(time.perf_counter() - mark, 1)

        mark = time.perf_counter()
        requirements = [NUMPY_PIN, *(RUNTIME_PINS[rt] for rt in runtimes)]
        wheels_dir = work / "wheels"
        say(f"pip download aarch64 wheels: {' '.join(requirements)}")
        _run(_pip_download_argv(wheels_dir, requirements), "pip download (aarch64 wheels)", timeout=3600)
        wheels = sorted(wheels_dir.glob("*.whl"))
        timings["pip_download_s"] = round(time.perf_counter() - mark, 1)

        mark = time.perf_counter()
        say(f"unzip {len(wheels)} wheels into site/")
        site = build / "site"
        site.mkdir()
        for wheel in wheels:
            _unpack_wheel(wheel, site)
        timings["unzip_wheels_s"] = round(time.perf_counter() - mark, 1)

        mark = time.perf_counter()
        say("byte-compiling the stdlib and site/ (compiling under emulation costs ~10 s per start)")
        _byte_compile(build, site, qemu)
        timings["compile_s"] = round(time.perf_counter() - mark, 1)

        mark = time.perf_counter()
        say("checking the root under QEMU (runner.py info --import-runtimes)")
        info = check_root(build, site, qemu, runtimes)
        timings["check_s"] = round(time.perf_counter() - mark, 1)

        stamp = {
            "layout_version": LAYOUT_VERSION,
            "root": str(root),
            "python": PYTHON_IN_ROOT,
            "site": "site",
            "runtimes": list(runtimes),
            "pins": {"numpy": NUMPY_PIN, **{rt: RUNTIME_PINS[rt] for rt in runtimes}},
            "debs": [deb.name for deb in debs],
            "wheels": [wheel.name for wheel in wheels],
            "qemu": qemu_version(qemu),
            "machine": info.get("machine"),
            "python_version": info.get("python"),
            "runtime_status": {rt: (info.get("runtimes") or {}).get(RUNNER_RUNTIME[rt]) for rt in runtimes},
            "size_mb": round(_tree_size(build) / 1e6, 1),
            "timings": {**timings, "total_s": round(time.perf_counter() - started, 1)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (build / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
        replace_dir(build, root)
        say(f"arm64 root ready at {root} ({stamp['size_mb']} MB, {stamp['timings']['total_s']} s)")
        return {**stamp, "reused": False}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


def _byte_compile(root: Path, site: Path, qemu: str) -> None:
    """Write the .pyc files up front: Debian's stdlib ships without them (postinst makes them) and without them
    every emulated start re-compiles numpy & co. (``import numpy``: 15 s instead of ~2 s under QEMU).

    .pyc files depend only on the Python minor version, so a host Python 3.11 does it natively; otherwise the
    emulated Python does it (slower, once)."""
    targets = [str(root / "usr/lib/python3.11"), str(site)]
    if sys.version_info[:2] == (3, 11):
        argv, env = [sys.executable], {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    else:
        argv, env = qemu_python_argv(qemu, root, root / PYTHON_IN_ROOT), qemu_env(site)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv += ["-m", "compileall", "-q", "-j", "0", "-x", r"[/\\](tests?|test_\w+)[/\\]|lib2to3|idlelib", *targets]
    # compileall exits 1 when any file does not compile (e.g. py2-only test data in a wheel): that is harmless
    _run_capture(argv, env, timeout=3600)


def _apt_options(work: Path) -> list[str]:
    """Private lists/cache and arm64 as the only architecture: the host's dpkg state is never touched."""
    lists, cache = work / "apt-lists", work / "apt-cache"
    (lists / "partial").mkdir(parents=True)
    (cache / "archives" / "partial").mkdir(parents=True)
    options = {
        "APT::Architecture": "arm64",
        "APT::Architectures": "arm64",
        "Dir::State::Lists": str(lists),
        "Dir::Cache": str(cache),
        "Debug::NoLocking": "true",  # lock files live in the private dirs anyway; lets non-root users run it
    }
    if os.geteuid() == 0:
        options["APT::Sandbox::User"] = "root"  # the _apt user cannot write into our private dirs
    argv = ["-q"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    return argv


def _pip_download_argv(dest: Path, requirements: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--progress-bar",
            "off", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for platform_tag in WHEEL_PLATFORMS:
        argv += ["--platform", platform_tag]
    return [*argv, "-d", str(dest), *requirements]


def _unpack_wheel(wheel: Path, site: Path) -> None:
    """Unzip a wheel into ``site`` (``*.data/purelib|platlib`` go to the top, like an install; scripts are skipped)."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            name = member.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            target = (site / name).resolve()
            if not target.is_relative_to(site.resolve()):
                raise DeviceError(f"wheel {wheel.name} has an unsafe path {member.filename!r}")
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def qemu_python_argv(qemu: str, root: Path, python: Path) -> list[str]:
    """``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11`` (append the script and its arguments)."""
    return [qemu, "-L", str(root), str(python)]


def qemu_env(site: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The host environment with PYTHONPATH=SITE; host Python settings that would leak into the arm64 Python
    (user site, PYTHONHOME, venv) are removed."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONEXECUTABLE"):
        env.pop(key, None)
    env["PYTHONPATH"] = str(site)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def check_root(root: Path, site: Path, qemu: str, runtimes: tuple[str, ...]) -> dict[str, Any]:
    """Run ``runner.py info --import-runtimes`` under QEMU; ``DeviceError`` unless it reports aarch64.

    If importing a runtime kills the emulated process, each runtime is imported on its own and the one that
    crashes is named in the error."""
    from edgeq.devices.base import runner_path, signal_name

    argv = [*qemu_python_argv(qemu, root, root / PYTHON_IN_ROOT), str(runner_path()), "info", "--import-runtimes"]
    proc = _run_capture(argv, qemu_env(site), timeout=600)
    if proc.returncode != 0:
        broken = []
        for runtime in runtimes:
            probe = [*qemu_python_argv(qemu, root, root / PYTHON_IN_ROOT), "-c", f"import {RUNTIME_MODULES[runtime]}"]
            one = _run_capture(probe, qemu_env(site), timeout=600)
            if one.returncode != 0:
                why = signal_name(-one.returncode) if one.returncode < 0 else _last_line(one.stderr)
                broken.append(f"{RUNTIME_PINS[runtime]} ({why})")
        detail = "; ".join(broken) or _last_line(proc.stderr) or f"status {proc.returncode}"
        raise DeviceError(f"the arm64 root does not work under {Path(qemu).name}: import failed: {detail}")
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise DeviceError(f"runner info under QEMU printed no JSON: {_last_line(proc.stderr)}") from None
    if info.get("machine") != "aarch64":
        raise DeviceError(f"the emulated Python reports machine {info.get('machine')!r}, expected 'aarch64'")
    for runtime in runtimes:
        status = (info.get("runtimes") or {}).get(RUNNER_RUNTIME[runtime]) or {}
        if not status.get("available") or status.get("imported") is False:
            raise DeviceError(f"{RUNTIME_PINS[runtime]} does not import in the arm64 root: "
                              f"{status.get('import_error') or 'not found'}")
    return info


def _run_capture(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{Path(argv[0]).name} timed out after {timeout:g} s") from None
    except OSError as exc:
        raise DeviceError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None


def _run(argv: list[str], what: str, cwd: Path | None = None, timeout: float = 600) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    except FileNotFoundError:
        hint = " (setup-arm64 needs a Debian/Ubuntu host with apt-get and dpkg)" if argv[0] in ("apt-get", "dpkg") else ""
        raise DeviceError(f"{argv[0]} not found{hint}") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith(("E:", "ERROR:"))]
        detail = errors[0] if errors else _last_line(proc.stderr) or _last_line(proc.stdout)
        raise DeviceError(f"{what} failed: {detail}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
