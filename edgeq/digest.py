"""One way to name content: a file's sha256, and an artifact's digest over its files.

The artifact digest is what ``manifest.json`` records as ``artifacts[].sha256`` and what SSH devices cache
uploads under (``art/<sha256>/``): sha256 over ``"<path>\\0<file sha256>\\n"`` lines sorted by path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple, Protocol


class _HasDigest(Protocol):
    path: str
    sha256: str


class FileDigest(NamedTuple):
    path: str
    sha256: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of one file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def combined_sha256(files: Iterable[_HasDigest]) -> str:
    """The artifact digest over its files (manifest ``FileEntry`` rows or ``FileDigest``s)."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda e: e.path):
        digest.update(f"{entry.path}\0{entry.sha256}\n".encode())
    return digest.hexdigest()


def files_sha256(root: Path, files: Iterable[str]) -> str:
    """The artifact digest of ``files`` (paths relative to ``root``), hashing each file."""
    return combined_sha256(FileDigest(rel, sha256_file(Path(root) / rel)) for rel in files)
