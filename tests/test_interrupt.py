"""Interrupted or killed exports lose nothing finished (issue 14): Ctrl-C / SIGKILL at a random point of
``edgeq export ... -b all`` over a complete earlier export of the bundled digits example, then a re-run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = ["edgeq/examples/digits.py:DigitsCNN", "--weights", "edgeq/examples/digits_cnn.safetensors",
        "--calib", "calibration/digits.yaml", "--holdout-samples", "300"]
ALL_BACKENDS = 10


def _edgeq(args: list[str]) -> subprocess.Popen[str]:
    """``edgeq ARGS`` in its own process group (so a signal reaches it and its workers, like Ctrl-C does)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", "import sys; from edgeq.cli import main; sys.exit(main())", *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _export(out: Path, *extra: str) -> subprocess.Popen[str]:
    return _edgeq(["export", *DEMO, "--out", str(out), *extra])


def _artifacts(model_dir: Path) -> dict[str, str]:
    """backend → combined sha256 from the manifest, after checking every listed file on disk matches it."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    found = {}
    for art in manifest["artifacts"]:
        assert art["status"] == "ok", art
        folder = (model_dir / art["path"]).parent
        for entry in art["files"]:
            assert hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry
        found[art["backend"]] = art["sha256"]
    return found


def _wait_for_backends(model_dir: Path, count: int, proc: subprocess.Popen[str]) -> None:
    """Until ``count`` backends of this run have started (each builds in OUT/<model>/.<backend>-build-pid<PID>-*)."""
    seen: set[str] = set()
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        seen |= {p.name.split("-build-pid")[0] for p in model_dir.glob(".*-build-pid*")}
        if len(seen) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"only {sorted(seen)} started (exit {proc.poll()})")


def _leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".") and "pid" in p.name)


@pytest.fixture(scope="module")
def complete_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("complete")
    proc = _export(out, "-b", "all")
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    assert len(_artifacts(out / "digits_cnn")) == ALL_BACKENDS
    return out


def _interrupt_then_rerun(complete: Path, tmp_path: Path, sig: signal.Signals, jobs: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(complete, out)
    model_dir = out / "digits_cnn"
    before = _artifacts(model_dir)
    rng = random.Random()
    started_backends, delay = rng.randint(1, ALL_BACKENDS - 2), rng.uniform(0, 3)
    print(f"{sig.name} {delay:.1f} s after backend #{started_backends} starts (--jobs {jobs})")
    proc = _export(out, "-b", "all", "--jobs", jobs)
    _wait_for_backends(model_dir, started_backends, proc)
    time.sleep(delay)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    after = _artifacts(model_dir)
    assert set(after) == set(before), "a backend intact on disk was dropped from the manifest"
    redone = [b for b in after if after[b] != before[b]]
    print(f"exit {proc.returncode}; re-exported with new checksums: {redone}; stderr: {err.strip()!r}")
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("interrupted: ") and f"of {ALL_BACKENDS} backends finished, re-run to continue" \
            in lines[0], err
        assert _leftovers(model_dir) == []
    else:
        assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)  # the killed run's workers die with it (PR_SET_PDEATHSIG)
    rerun = _export(out, "-b", "onnx-fp32")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    final = _artifacts(model_dir)
    assert set(final) == set(before)
    assert {b: s for b, s in final.items() if b != "onnx-fp32"} == {b: s for b, s in after.items() if b != "onnx-fp32"}
    assert _leftovers(model_dir) == [], "the re-run did not remove the killed run's build folders"
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("edgeq-digits_cnn-pid*")
                if int(p.name.split("pid")[-1].split("-")[0]) == proc.pid]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "jobs"), [(signal.SIGINT, "1"), (signal.SIGINT, "2"), (signal.SIGKILL, "2")])
def test_interrupted_export_loses_nothing(complete_export: Path, tmp_path: Path, sig: signal.Signals,
                                          jobs: str) -> None:
    _interrupt_then_rerun(complete_export, tmp_path, sig, jobs)
