"""``edgeq package``: one tar.gz with the artifacts, manifests, reports, a model card and SHA256SUMS.

Layout inside ``NAME.tar.gz`` (everything under one top directory ``NAME/``)::

    NAME/MODEL_CARD.md
    NAME/SHA256SUMS                      sha256sum format, every other file, paths relative to NAME/
    NAME/artifacts/<model>/manifest.json
    NAME/artifacts/<model>/<backend>/... the files each exported artifact lists in its manifest
    NAME/reports/report.{md,html,json}   when --results is given
    NAME/results/results.json, results/cells/*.json

The archive is written to a temporary file next to the target and renamed into place. ``verify_package``
re-hashes every file; ``safe_extract`` refuses absolute paths, ``..`` and links that point outside.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgeq.errors import EdgeqError
from edgeq.manifest import MANIFEST_NAME, Manifest, find_manifests
from edgeq.workdirs import atomic_path

SUMS_NAME = "SHA256SUMS"
CARD_NAME = "MODEL_CARD.md"
_CHUNK = 1 << 20


class PackageError(EdgeqError):
    """A package cannot be built, read, verified or safely extracted."""


@dataclass
class PackageSummary:
    path: Path
    files: int
    size_bytes: int
    models: list[str]
    reports: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------
def package_name(out: Path) -> str:
    """Top directory inside the archive: the file name without .tar.gz / .tgz."""
    name = out.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "package"
    raise PackageError(f"--out must end with .tar.gz or .tgz, got {out.name!r}")


def _safe_relative(text: str, what: str) -> PurePosixPath:
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise PackageError(f"{what} has an unsafe path {text!r} (absolute or with '..')")
    return path


def _artifact_files(model_dir: Path, manifest: Manifest) -> list[tuple[Path, PurePosixPath, str]]:
    """(source file, path relative to the model dir, sha256 recorded in the manifest) of every ok artifact."""
    files = []
    for art in manifest.artifacts:
        if art.status != "ok" or not art.path:
            continue
        main = _safe_relative(art.path, f"artifact {art.backend}")
        art_dir = main.parent if str(main.parent) != "." else PurePosixPath(art.backend)
        entries = art.files or []
        if not entries:
            raise PackageError(f"manifest of {manifest.model.name} lists no files for {art.backend}")
        for entry in entries:
            rel = art_dir / _safe_relative(entry.path, f"a file of {art.backend}")
            source = model_dir / rel
            if not source.is_file():
                raise PackageError(f"{art.backend} file missing: {source} (listed in {model_dir / MANIFEST_NAME})")
            files.append((source, rel, entry.sha256))
    return files


class _HashingReader(io.RawIOBase):
    """Reads a file for tarfile while hashing exactly the bytes that go into the archive."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Writer:
    """Adds files to the archive under NAME/ and remembers each one's sha256 for SHA256SUMS."""

    def __init__(self, tar: tarfile.TarFile, top: str) -> None:
        self.tar, self.top = tar, top
        self.now = time.time()
        self.sums: dict[str, str] = {}

    def add_file(self, source: Path, rel: str, expected_sha256: str | None = None) -> None:
        stat = source.stat()
        with open(source, "rb") as handle:
            reader = _HashingReader(handle)
            self.tar.addfile(_tarinfo(f"{self.top}/{rel}", stat.st_size, stat.st_mtime), reader)  # type: ignore[arg-type]
        digest = reader.digest.hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise PackageError(f"{source} does not match the sha256 in its manifest (changed after export?)")
        self.sums[rel] = digest

    def add_bytes(self, rel: str, data: bytes) -> None:
        self.tar.addfile(_tarinfo(f"{self.top}/{rel}", len(data), self.now), io.BytesIO(data))
        self.sums[rel] = hashlib.sha256(data).hexdigest()

    def add_sums(self) -> None:
        text = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(self.sums.items()))
        self.tar.addfile(_tarinfo(f"{self.top}/{SUMS_NAME}", len(text.encode()), self.now),
                         io.BytesIO(text.encode()))


def build_package(artifacts_dir: Path, out: Path, results_dir: Path | None = None,
                  on_step: Callable[[str], None] | None = None) -> PackageSummary:
    """Write ``out`` (a .tar.gz) atomically: artifacts + manifests, reports and model card, SHA256SUMS."""
    from edgeq.report.model_card import model_card

    step = on_step or (lambda message: None)
    artifacts_dir, out = Path(artifacts_dir), Path(out)
    top = package_name(out)
    if not artifacts_dir.is_dir():
        raise PackageError(f"artifacts directory not found: {artifacts_dir}")
    manifests = find_manifests(artifacts_dir)
    report = None
    reports: dict[str, str] = {}
    warnings: list[str] = []
    if results_dir is not None:
        from edgeq.report.bench_render import render
        from edgeq.report.bench_report import build_report

        step("rendering reports")
        report = build_report(Path(results_dir))
        reports = {f"report.{fmt}": render(report, fmt) for fmt in ("md", "html", "json")}
        warnings += report.problems
        packaged = {m.model.name for _, m in manifests}
        if not packaged & {r.model for r in report.rows}:
            warnings.append(f"results in {results_dir} have no cells for {', '.join(sorted(packaged))} "
                            f"(models measured: {', '.join(sorted({r.model for r in report.rows}))})")
    try:
        with atomic_path(out) as tmp, open(tmp, "wb") as raw, \
                tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
            writer = _Writer(tar, top)
            used: set[str] = set()
            for model_dir, manifest in manifests:
                rel_dir = model_dir.relative_to(artifacts_dir).as_posix()
                prefix = f"artifacts/{manifest.model.name if rel_dir == '.' else rel_dir}"
                if prefix in used:
                    raise PackageError(f"two manifests map to {prefix} in the package")
                used.add(prefix)
                step(f"adding {manifest.model.name}")
                writer.add_file(model_dir / MANIFEST_NAME, f"{prefix}/{MANIFEST_NAME}")
                for source, rel, sha in _artifact_files(model_dir, manifest):
                    writer.add_file(source, f"{prefix}/{rel.as_posix()}", expected_sha256=sha)
            if results_dir is not None:
                results_dir = Path(results_dir)
                base = results_dir if results_dir.is_dir() else results_dir.parent
                raw_results = [base / "results.json"] + sorted((base / "cells").glob("*.json"))
                for path in raw_results:
                    if path.is_file():
                        writer.add_file(path, f"results/{path.relative_to(base).as_posix()}")
                for name, text in reports.items():
                    writer.add_bytes(f"reports/{name}", text.encode())
            writer.add_bytes(CARD_NAME, model_card([m for _, m in manifests], report).encode())
            writer.add_sums()
            count = len(writer.sums) + 1
    except OSError as exc:
        raise PackageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return PackageSummary(path=out, files=count, size_bytes=out.stat().st_size,
                          models=[m.model.name for _, m in manifests],
                          reports=[f"reports/{name}" for name in reports], warnings=warnings)


# ---------------------------------------------------------------------------------------------------------------
# Safety and verification
# ---------------------------------------------------------------------------------------------------------------
def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` on its own could write outside the destination (None when it is safe); links
    that escape only through other links (``up→..``, ``up2→up/..``) are found by ``link_problems``."""
    name = member.name
    path = PurePosixPath(name.replace("\\", "/"))
    if "\0" in name or "\0" in member.linkname:
        return "has a NUL byte in its name"
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in path.parts:
        return "contains '..'"
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname.replace("\\", "/"))
        if target.is_absolute() or re.match(r"^[A-Za-z]:", member.linkname):
            return f"is a link to an absolute path ({member.linkname})"
        joined = (path.parent / target) if member.issym() else target
        depth = 0
        for part in joined.parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                return f"is a link pointing outside the destination ({member.linkname})"
    elif not (member.isfile() or member.isdir()):
        return "is a device, FIFO or other special file"
    return None


_MAX_LINK_HOPS = 40


def _resolve(parts: list[str], links: dict[tuple[str, ...], str]) -> tuple[str, ...] | None:
    """Where ``parts`` lands inside the destination once the archive's symlinks exist (None: outside, or a loop)."""
    out: list[str] = []
    queue = list(parts)
    hops = 0
    while queue:
        part = queue.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        target = links.get(tuple(out))
        if target is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return None
            out.pop()
            queue = target.replace("\\", "/").split("/") + queue
    return tuple(out)


def link_problems(members: list[tarfile.TarInfo]) -> list[tuple[str, str]]:
    """(member name, reason) for members that leave the destination through a chain of symlinks: a link whose
    target resolves outside, or any member written through a link that leads outside."""
    links = {tuple(p for p in m.name.split("/") if p not in ("", ".")): m.linkname for m in members if m.issym()}
    problems = []
    for member in members:
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        if parts and _resolve(parts[:-1], links) is None:
            problems.append((member.name, "is written through a link that leads outside the destination"))
        elif member.issym() and _resolve([*parts[:-1], *member.linkname.split("/")], links) is None:
            problems.append((member.name, f"is a link resolving outside the destination ({member.linkname})"))
        elif member.islnk() and _resolve(member.linkname.split("/"), links) is None:
            problems.append((member.name, f"is a hard link resolving outside the destination ({member.linkname})"))
    return problems


def safe_extract(tar: tarfile.TarFile, dest: Path) -> list[Path]:
    """Extract every member under ``dest`` after checking all of them; refuses unsafe archives in one line."""
    dest = Path(dest)
    members = tar.getmembers()
    for member in members:
        reason = unsafe_reason(member)
        if reason:
            raise PackageError(f"refusing to extract: member {member.name!r} {reason}")
    for name, reason in link_problems(members):
        raise PackageError(f"refusing to extract: member {name!r} {reason}")
    dest.mkdir(parents=True, exist_ok=True)
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
    else:  # pragma: no cover - Python without extraction filters; members were checked above
        tar.extractall(dest, members=members)  # noqa: S202
    return [dest / m.name for m in members if m.isfile()]


_DAMAGED = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, TypeError, OverflowError, struct.error)
"""What tarfile/gzip raise on a corrupt or hostile archive (fuzzing found each, e.g. OverflowError from a pax
header whose record length does not fit in C ssize_t)."""

MAX_BUNDLE_BYTES = int(os.environ.get("EDGEQ_BUNDLE_MAX_BYTES", 32 << 30))
"""Largest total of member sizes ``--verify`` accepts (32 GiB; env EDGEQ_BUNDLE_MAX_BYTES)."""
MAX_BUNDLE_FILES = int(os.environ.get("EDGEQ_BUNDLE_MAX_FILES", 100_000))
"""Most members ``--verify`` accepts (env EDGEQ_BUNDLE_MAX_FILES)."""
MAX_EXPANSION = 100
"""Members may declare at most this many times the archive's compressed size (once past 64 MiB): model weights
compress ~1.1×, a decompression bomb 1000×. Checked from tar headers, before reading the data."""
_SUMS_MAX_BYTES = 64 << 20


class _TooBig(Exception):
    """The archive crosses one of the caps above."""


def _check_caps(count: int, declared: int, compressed: int) -> None:
    if count > MAX_BUNDLE_FILES:
        raise _TooBig(f"more than {MAX_BUNDLE_FILES} members (cap EDGEQ_BUNDLE_MAX_FILES)")
    if declared > MAX_BUNDLE_BYTES:
        raise _TooBig(f"members add up to more than {MAX_BUNDLE_BYTES} bytes (cap EDGEQ_BUNDLE_MAX_BYTES)")
    if declared > 64 << 20 and declared > MAX_EXPANSION * max(compressed, 1):
        raise _TooBig(f"members declare {declared} bytes from a {compressed}-byte file (over {MAX_EXPANSION}× "
                      "expansion: a decompression bomb?)")


def _hash_stream(handle: io.BufferedReader | None) -> str:
    digest = hashlib.sha256()
    while handle is not None and (chunk := handle.read(_CHUNK)):
        digest.update(chunk)
    return digest.hexdigest()


def _scan(path: Path) -> tuple[list[tarfile.TarInfo], dict[str, str], bytes | None, list[str]]:
    """One streamed pass over the archive (never all of it in memory): members, sha256 of each regular file,
    SHA256SUMS' text (the top-level one), and problems found on the way. Raises _TooBig at a cap."""
    if not Path(path).is_file():
        raise PackageError(f"package not found: {path}")
    compressed = Path(path).stat().st_size
    members: list[tarfile.TarInfo] = []
    digests: dict[str, str] = {}
    sums: bytes | None = None
    problems: list[str] = []
    declared = 0
    with open(path, "rb") as raw:
        try:
            tar = tarfile.open(fileobj=raw, mode="r|*")  # noqa: SIM115 - closed by the with below
        except _DAMAGED as exc:
            raise PackageError(f"{path} is not a readable tar.gz ({' '.join(str(exc).split())[:120]})") from None
        with tar:
            for member in tar:
                members.append(member)
                declared += max(member.size, 0)
                _check_caps(len(members), declared, compressed)
                reason = unsafe_reason(member)
                if reason:
                    problems.append(f"unsafe member {member.name!r}: {reason}")
                elif member.isfile():
                    if member.name in digests:
                        problems.append(f"member {member.name!r} appears twice")
                    parts = PurePosixPath(member.name).parts
                    if parts and parts[-1] == SUMS_NAME and len(parts) <= 2 and member.size <= _SUMS_MAX_BYTES:
                        handle = tar.extractfile(member)
                        data = handle.read() if handle else b""
                        sums = data if sums is None else sums
                        digests[member.name] = hashlib.sha256(data).hexdigest()
                    else:
                        digests[member.name] = _hash_stream(tar.extractfile(member))  # type: ignore[arg-type]
    for name, reason in link_problems(members):
        problems.append(f"unsafe member {name!r}: {reason}")
    return members, digests, sums, problems


def _parse_sums(text: str, problems: list[str]) -> dict[str, str]:
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.rstrip("\r"))
        if not match:
            if line.strip():
                problems.append(f"{SUMS_NAME} line {number} is malformed: {line[:80]!r}")
            continue
        listed[match.group(2)] = match.group(1).lower()
    return listed


def verify_package(path: Path) -> tuple[list[str], int]:
    """(problems, files checked): every file listed in SHA256SUMS is present and matches; nothing unlisted; no
    member that could land outside the destination (also through link chains), no device nodes; size caps.
    Streamed: one pass, one file's chunk in memory at a time. A missing or unreadable file is a PackageError."""
    try:
        members, digests, sums, problems = _scan(path)
    except _TooBig as exc:
        return [f"refused: {exc}"], 0
    except _DAMAGED as exc:
        return [f"archive is damaged: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"], 0
    if not members:
        raise PackageError(f"{path} is not a readable tar.gz (no members)")
    sums_names = [n for n in digests if PurePosixPath(n).name == SUMS_NAME and len(PurePosixPath(n).parts) <= 2]
    if len(sums_names) != 1 or sums is None:
        problems.append(f"{SUMS_NAME} missing from the package" if not sums_names
                        else f"more than one {SUMS_NAME} in the package")
        return problems, 0
    sums_name = sums_names[0]
    top = str(PurePosixPath(sums_name).parent)
    prefix = "" if top == "." else f"{top}/"
    listed = _parse_sums(sums.decode("utf-8", errors="replace"), problems)
    checked = 0
    for rel, expected in sorted(listed.items()):
        digest = digests.get(prefix + rel)
        if digest is None:
            problems.append(f"missing: {rel}")
            continue
        checked += 1
        if digest != expected:
            problems.append(f"checksum mismatch: {rel}")
    for name in sorted(digests):
        rel = name[len(prefix):] if name.startswith(prefix) else name
        if name != sums_name and rel not in listed:
            problems.append(f"not listed in {SUMS_NAME}: {rel}")
    return problems, checked
