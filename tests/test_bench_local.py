"""edgeq bench on the local device: real ONNX FP32 + ORT-quantized INT8 artifacts, real runner subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import HANG_BODY, SEGV_BODY, fake_python, make_export_dir

from edgeq.benchmark import BenchRequest, run_bench
from edgeq.cli import main
from edgeq.errors import EdgeqError
from edgeq.results import CellResult

FAST = {"runs": 5, "min_seconds": 0.05, "warmup": 1}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export_dir(tmp_path_factory.mktemp("export"))


def _devices(path: Path, body: str) -> Path:
    path.write_text(f"devices:\n{body}")
    return path


def _cells(out: Path) -> dict[str, CellResult]:
    return {p.stem: CellResult.model_validate_json(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}


def test_bench_runs_every_cell_then_resumes_and_force_reruns(export_dir: Path, tmp_path: Path) -> None:
    devices = _devices(tmp_path / "devices.yaml", "  - name: host\n    kind: local\n    threads: [1, 2]\n")
    out = tmp_path / "results"
    request = BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, **FAST)
    first = run_bench(request)
    cells = _cells(out)
    # 2 ok artifacts (the failed openvino row is not benchmarked) x 2 thread counts
    assert len(first.executed) == 4 and len(cells) == 4
    assert {(c.backend, c.threads) for c in cells.values()} == {
        ("onnx-fp32", 1), ("onnx-fp32", 2), ("onnx-qdq", 1), ("onnx-qdq", 2)}
    for cell in cells.values():
        assert cell.status == "ok", cell.error
        assert cell.latency is not None and cell.latency.runs >= FAST["runs"] and cell.latency.p50_ms > 0
        assert cell.load_ms and cell.load_ms > 0 and cell.peak_rss_mb and cell.peak_rss_mb > 0
        assert cell.device == "host" and cell.device_kind == "local" and not cell.emulated
        assert cell.system["machine"]
    summary = json.loads((out / "results.json").read_text())
    assert sorted(c["cell_id"] for c in summary["cells"]) == sorted(cells)

    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    second = run_bench(request)
    assert second.executed == [] and sorted(second.skipped) == sorted(cells)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == mtimes

    # --force re-runs finished cells
    forced = run_bench(BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, force=True, **FAST))
    assert sorted(forced.executed) == sorted(cells)
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in (out / "cells").iterdir())


def test_crash_and_timeout_cells_fail_with_reason_while_others_finish(export_dir: Path, tmp_path: Path) -> None:
    segv = fake_python(tmp_path / "segv-python", SEGV_BODY)
    hang = fake_python(tmp_path / "hang-python", HANG_BODY)
    devices = _devices(tmp_path / "devices.yaml",
                       "  - name: host\n    kind: local\n"
                       f"  - name: crashy\n    kind: local\n    python: {segv}\n"
                       f"  - name: stuck\n    kind: local\n    python: {hang}\n")
    out = tmp_path / "results"
    summary = run_bench(BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, timeout_s=4, **FAST))
    assert len(summary.executed) == 6
    by_device: dict[str, list[CellResult]] = {}
    for cell in _cells(out).values():
        by_device.setdefault(cell.device, []).append(cell)
    assert [c.status for c in by_device["host"]] == ["ok", "ok"]
    for cell in by_device["crashy"]:
        assert cell.status == "failed" and cell.error is not None
        assert cell.error.startswith("runner died: SIGSEGV") and "\n" not in cell.error
    for cell in by_device["stuck"]:
        assert cell.status == "failed" and cell.error == "timeout after 4 s (runner killed)"
        assert cell.duration_s is not None and 3.5 < cell.duration_s < 30

    # failed cells are finished cells: skipped on re-run, re-run with --retry-failed
    again = run_bench(BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, device_names=["crashy"],
                                   retry_failed=True, **FAST))
    assert len(again.executed) == 2
    assert run_bench(BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices,
                                  device_names=["crashy"], **FAST)).executed == []


def test_runner_error_is_one_line(export_dir: Path, tmp_path: Path) -> None:
    """A runtime the device's Python cannot import is a failed cell with the runner's own reason."""
    # -I -S: isolated python without site-packages -> numpy/onnxruntime missing
    import sys

    isolated = fake_python(tmp_path / "bare-python", f'exec "{sys.executable}" -I -S "$@"')
    devices = _devices(tmp_path / "devices.yaml", f"  - name: bare\n    kind: local\n    python: {isolated}\n")
    summary = run_bench(BenchRequest(artifacts_dir=export_dir, out=tmp_path / "r", devices_file=devices, **FAST))
    assert summary.results and all(r.status == "failed" for r in summary.results)
    assert all("numpy" in (r.error or "") and "\n" not in (r.error or "") for r in summary.results)


def test_cli_bench_and_bad_input(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devices = _devices(tmp_path / "devices.yaml", "  - name: host\n    kind: local\n")
    out = tmp_path / "results"
    code = main(["bench", str(export_dir), "--devices", str(devices), "--out", str(out), "--runs", "3",
                 "--min-seconds", "0.02", "--warmup", "0"])
    assert code == 0
    assert len(list((out / "cells").glob("*.json"))) == 2
    capsys.readouterr()
    assert main(["bench", str(tmp_path / "nowhere"), "--devices", str(devices), "--out", str(out)]) == 2
    assert "artifacts directory not found" in capsys.readouterr().err
    assert main(["bench", str(export_dir), "--devices", str(devices), "--device", "pi9", "--out", str(out)]) == 2
    assert "unknown device 'pi9'" in capsys.readouterr().err
    bad = _devices(tmp_path / "bad.yaml", "  - name: pi\n    kind: ssh\n    threads: [1]\n")
    assert main(["bench", str(export_dir), "--devices", str(bad), "--out", str(out)]) == 2
    assert f"{bad}:2: device 'pi': field 'host' required" in capsys.readouterr().err
    with pytest.raises(EdgeqError, match="no manifest.json"):
        run_bench(BenchRequest(artifacts_dir=tmp_path / "results", out=tmp_path / "x", devices_file=devices))


def test_eval_metrics_and_fidelity(export_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("edgeq.calibration", reason="edgeq.calibration (open_dataset) not written yet")
    from edgeq import calibration

    if not hasattr(calibration, "open_dataset"):
        pytest.skip("edgeq.calibration.open_dataset not available yet")
    rng = np.random.default_rng(3)
    data = rng.standard_normal((12, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "eval.npy", data)
    devices = _devices(tmp_path / "devices.yaml", "  - name: host\n    kind: local\n")
    out = tmp_path / "results"
    run_bench(BenchRequest(artifacts_dir=export_dir, out=out, devices_file=devices, eval_spec=str(tmp_path / "eval.npy"),
                           **FAST))
    cells = {c.backend: c for c in _cells(out).values()}
    assert cells["onnx-fp32"].eval_samples == 12  # type: ignore[attr-defined]
    assert cells["onnx-fp32"].fidelity == {} and cells["onnx-fp32"].fidelity_reference == "self"  # type: ignore[attr-defined]
    quality = cells["onnx-qdq"].fidelity
    assert quality["samples"] == 12 and 0.9 < quality["cosine_mean"] <= 1.0 + 1e-6
    assert (out / "outputs" / f"{cells['onnx-qdq'].cell_id}.npz").is_file()
