"""The one atomic file writer and the one folder swap (edgeq/workdirs.py): readers see old or new, never half."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeq.workdirs import atomic_path, atomic_write_text, clean_stale, replace_dir


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_keep_suffix_serves_writers_that_append_one(tmp_path: Path) -> None:
    target = tmp_path / "eval.npz"
    with atomic_path(target, keep_suffix=True) as tmp:
        assert tmp.name.endswith(".npz") and tmp.name.startswith(".eval.npz.pid")
        np.savez(tmp, x=np.arange(3))  # np.savez would append .npz to any other name
    with np.load(target) as archive:
        assert archive["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.npz"]


def test_temp_names_are_owner_tagged_for_clean_stale(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    with atomic_path(target) as tmp:
        dead = tmp.with_name(tmp.name.replace(f"pid{os.getpid()}", "pid999999999"))
        dead.write_text("left by a killed run")
        assert clean_stale(tmp_path) == [dead]
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_replace_dir_swaps_folders(tmp_path: Path) -> None:
    final, built = tmp_path / "best", tmp_path / ".best.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    built.mkdir()
    (built / "new.txt").write_text("new")
    replace_dir(built, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    again = tmp_path / ".again"
    again.mkdir()
    replace_dir(again, tmp_path / "fresh")  # nothing there before
    assert (tmp_path / "fresh").is_dir() and not again.exists()
