"""The ssh device kind against a real OpenSSH server on 127.0.0.1 (own host key, user key and sshd_config)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import make_export_dir
from sshd_fixture import SSHD, Sshd, free_port, start_sshd, stop_sshd

from edgeq.benchmark import BenchRequest, run_bench
from edgeq.cli import main
from edgeq.devices import ArtifactFiles, RunSettings, make_device
from edgeq.devices.config import SshDeviceConfig
from edgeq.manifest import Manifest
from edgeq.results import CellResult

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not SSHD.exists(), reason="/usr/sbin/sshd missing (apt-get install openssh-server)")]

FAST = {"runs": 5, "min_seconds": 0.05, "warmup": 1}
HANG_SECONDS = 127  # unique, so the test can look for a leftover process


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export_dir(tmp_path_factory.mktemp("export"))


def _entry(sshd: Sshd, name: str, workdir: Path, python: str = sys.executable, identity: Path | None = None,
           port: int | None = None) -> str:
    options = "".join(f"\n      - {option}" for option in sshd.ssh_options)
    return (f"  - name: {name}\n    kind: ssh\n    host: {sshd.destination}\n    port: {port or sshd.port}\n"
            f"    identity_file: {identity or sshd.identity}\n    python: {python}\n    workdir: {workdir}\n"
            f"    connect_timeout: 5\n    ssh_options:{options}\n")


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_bench_over_ssh_with_failures(sshd: Sshd, export_dir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "device"
    # a python that starts the real runner and has it killed by SIGSEGV 0.5 s later (before the runner can be done:
    # on a fast host its 100,000-run cap on the tiny artifact was reached in < 1.5 s, and the cell came back ok)
    killer = _script(tmp_path / "killer", 'case "$2" in run) (sleep 0.5; kill -SEGV $$) >/dev/null 2>&1 & ;; esac\n'
                                          f'exec "{sys.executable}" "$@"')
    hang = _script(tmp_path / "hang", f'case "$2" in run) exec sleep {HANG_SECONDS} ;; esac\nexec "{sys.executable}" "$@"')
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n" + "".join([
        _entry(sshd, "board", workdir),
        _entry(sshd, "wrongkey", workdir, identity=sshd.wrong_identity),
        _entry(sshd, "offline", workdir, port=free_port()),
        _entry(sshd, "crashy", workdir / "crashy", python=killer),
        _entry(sshd, "stuck", workdir / "stuck", python=hang),
    ]))
    out = tmp_path / "results"
    request = BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, timeout_s=6,
                           runs=5, min_seconds=5.0, warmup=1)
    request_fast = BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, device_names=["board"], **FAST)
    run_bench(request_fast)  # the good board, fast timing
    summary = run_bench(BenchRequest(**{**request.__dict__, "device_names": ["wrongkey", "offline", "crashy", "stuck"]}))
    assert len(summary.executed) == 8
    cells: dict[str, list[CellResult]] = {}
    for path in (out / "cells").glob("*.json"):
        cell = CellResult.model_validate_json(path.read_text())
        cells.setdefault(cell.device, []).append(cell)
    assert sorted(c.status for c in cells["board"]) == ["ok", "ok"]
    assert all(c.device_kind == "ssh" and c.latency and c.latency.p50_ms > 0 for c in cells["board"])
    for device, expected in (("wrongkey", "Permission denied"), ("offline", "Connection refused"),
                             ("crashy", "runner died: SIGSEGV"), ("stuck", "timeout after 6 s (runner killed)")):
        for cell in cells[device]:
            assert cell.status == "failed" and cell.error and expected in cell.error, (device, cell.error)
            assert "\n" not in cell.error
    assert "device unavailable" in cells["offline"][0].error  # type: ignore[operator]
    leftover = subprocess.run(["pgrep", "-f", f"sleep {HANG_SECONDS}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "a timed-out runner was left running on the device"

    # uploads are cached per artifact sha256: a forced re-run does not copy the files again
    manifest = Manifest.read(export_dir / "tiny" / "manifest.json")
    uploaded = [workdir / "art" / a.sha256 / "model.onnx" for a in manifest.artifacts if a.status == "ok"]
    mtimes = [p.stat().st_mtime_ns for p in uploaded]
    forced = run_bench(BenchRequest(**{**request_fast.__dict__, "force": True}))
    assert len(forced.executed) == 2
    assert [p.stat().st_mtime_ns for p in uploaded] == mtimes


def test_eval_outputs_come_back_like_local(sshd: Sshd, export_dir: Path, tmp_path: Path) -> None:
    config = SshDeviceConfig(name="board", kind="ssh", host=sshd.destination, port=sshd.port,
                             identity_file=str(sshd.identity), python=sys.executable,
                             workdir=str(tmp_path / "device"), ssh_options=sshd.ssh_options)
    manifest_dir = export_dir / "tiny"
    artifact = Manifest.read(manifest_dir / "manifest.json").artifact("onnx-qdq")
    files = ArtifactFiles.from_manifest(manifest_dir, artifact)
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, x=np.random.default_rng(0).standard_normal((6, 1, 3, 8, 8)).astype(np.float32))
    settings = RunSettings(timing=False)
    with make_device(config) as remote:
        remote.prepare()
        result = remote.run_cell(files, 1, None, settings, eval_npz, 60)
        assert result["ok"], result
        remote_out = np.load(result["outputs_path"])["out_0"]
    from edgeq.devices.config import LocalDeviceConfig

    with make_device(LocalDeviceConfig(name="host", kind="local")) as local:
        local_result = local.run_cell(files, 1, None, settings, eval_npz, 60)
        local_out = np.load(local_result["outputs_path"])["out_0"]
    assert remote_out.shape == (6, 1, 5)
    np.testing.assert_array_equal(remote_out, local_out)


def test_devices_check_over_ssh(sshd: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.ui import console

    monkeypatch.setattr(console, "width", 300)  # one table row per line
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n" + _entry(sshd, "board", tmp_path / "device")
                       + _entry(sshd, "offline", tmp_path / "device", port=free_port()))
    assert main(["devices", "check", "--devices", str(devices), "--device", "board"]) == 0
    shown = capsys.readouterr().out
    assert "board" in shown and "x86_64" in shown and "onnxruntime" in shown
    assert main(["devices", "check", "--devices", str(devices)]) == 1
    assert "Connection refused" in capsys.readouterr().out
