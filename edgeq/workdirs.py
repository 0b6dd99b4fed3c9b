"""Scratch folders that name their owner process, so a later run can remove what a killed run left behind.

Every build folder, replaced-artifact folder and temporary work dir edgeq makes carries ``pid<PID>`` in its name
(``owned``); ``clean_stale`` removes the ones whose owner no longer runs. A run that is interrupted cleans up after
itself; one that is killed (SIGKILL, power loss) is cleaned up by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeq.errors import EdgeqError

_OWNER = re.compile(r"pid(\d+)(?:-|$)")
TMP_PREFIX = "edgeq-"
"""Work dirs under the system temp dir start with this."""


class DiskFull(EdgeqError):
    """No space left on the device holding the output (or the temp dir)."""


def owned(prefix: str) -> str:
    """``prefix`` + this process's owner tag, for mkdtemp/mkstemp prefixes: ``.onnx-fp32-build-pid123-``."""
    return f"{prefix}pid{os.getpid()}-"


def pid_running(pid: int) -> bool:
    """True when a process with this id exists (also one of another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(name: str) -> int | None:
    found = _OWNER.findall(name)  # the last tag: a model may be called "rapid9-…"
    return int(found[-1]) if found else None


def remove(path: Path) -> None:
    """Remove a file, link or folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(directory: Path, prefix: str = ".") -> list[Path]:
    """Remove entries of ``directory`` named ``prefix…pid<N>…`` whose owner process N no longer runs."""
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = owner_pid(entry.name) if entry.name.startswith(prefix) else None
        if pid is None or pid == os.getpid() or pid_running(pid):
            continue
        remove(entry)
        removed.append(entry)
    return removed


def clean_stale_tmp() -> list[Path]:
    """Work dirs of dead edgeq processes in the system temp dir."""
    return clean_stale(Path(tempfile.gettempdir()), TMP_PREFIX)


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is ENOSPC / EDQUOT, or a converter's message says so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(current) or "Disk quota exceeded" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(path: Path, needed_bytes: int | None = None) -> DiskFull:
    """One line naming the folder, the space free there and (when known) roughly how much is needed."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = 0
    need = f"needs about {needed_bytes / 1e6:.1f} MB, " if needed_bytes else ""
    return DiskFull(f"disk full writing {path}: {need}{free / 1e6:.1f} MB free there; nothing half-written was "
                    "kept (finished backends are in the manifest), free space and re-run")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with its folder): one holder at a time across processes."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; renamed onto ``path`` when the block succeeds, removed when it
    fails, so readers see the old or the new file, never half of one. The name carries this process's owner tag
    (``clean_stale``) and ends in ``.tmp`` — or ``.tmp<suffix>`` with ``keep_suffix`` (writers that append or
    check a suffix: ``np.savez``, ``torch.export.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=owned(f".{path.name}."),
                                suffix=f".tmp{path.suffix}" if keep_suffix else ".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_path``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(built: Path, final: Path) -> None:
    """Put the folder ``built`` (made beside ``final``) at ``final`` by renames, so readers see the old or the new
    tree, never a mix. Whatever was at ``final`` is moved aside (owner-tagged, so a killed run's leftover is
    cleaned later) and removed afterwards; if the second rename fails it is put back."""
    built, final = Path(built), Path(final)
    old = None
    if os.path.lexists(final):
        old = final.with_name(f".{final.name}.old-pid{os.getpid()}")
        remove(old)
        final.rename(old)
    try:
        built.rename(final)
    except OSError:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        remove(old)
