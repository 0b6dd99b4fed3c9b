"""Parallel export: disjoint core slots that never exceed the machine, same artifacts as the sequential path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeq.cli import main
from edgeq.export.executors import plan_slots
from edgeq.manifest import Manifest


def test_slots_are_disjoint_and_never_oversubscribe() -> None:
    for cores in ([0], [0, 1], list(range(8)), [2, 5, 7]):
        for jobs in ("auto", 1, 2, 3, 16):
            slots = plan_slots(jobs, backends=10, cores=cores)
            used = [c for slot in slots for c in slot]
            assert sorted(used) == sorted(cores)  # every core used once: total threads == cores
            assert all(slot for slot in slots)
    assert len(plan_slots("auto", 10, [0, 1])) == 1  # 2 cores: 2 threads per job → sequential
    assert len(plan_slots("auto", 10, list(range(8)))) == 4
    assert len(plan_slots("auto", 2, list(range(8)))) == 2  # never more slots than backends
    assert plan_slots(2, 10, [0, 1]) == [[0], [1]]
    with pytest.raises(ValueError, match="--jobs"):
        plan_slots(0, 10, [0, 1])


def test_two_jobs_give_the_sequential_artifacts(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    common = ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
              "-b", "onnx-fp32", "-b", "onnx-qdq", "-b", "openvino-fp32"]
    assert main([*common, "--jobs", "1", "--out", str(tmp_path / "seq")]) == 0
    assert main([*common, "--jobs", "2", "--out", str(tmp_path / "par")]) == 0
    seq = {a.backend: a for a in Manifest.read(tmp_path / "seq" / "tinycnn" / "manifest.json").artifacts}
    par = Manifest.read(tmp_path / "par" / "tinycnn" / "manifest.json")
    assert [a.backend for a in par.artifacts] == ["onnx-fp32", "onnx-qdq", "openvino-fp32"]  # registry order
    for art in par.artifacts:
        assert art.status == "ok", art.error
        assert art.verification.cosine_min == pytest.approx(seq[art.backend].verification.cosine_min, abs=1e-6)
    assert par.artifact("onnx-qdq").sha256 == seq["onnx-qdq"].sha256  # same calibration split, same quantization
    assert sorted(p.name for p in (tmp_path / "par" / "tinycnn").iterdir()) == [
        "logs", "manifest.json", "onnx-fp32", "onnx-qdq", "openvino-fp32"]


def test_a_failing_backend_in_a_worker_does_not_stop_the_others(tiny_model_file: Path, tiny_calib: Path,
                                                                tmp_path: Path) -> None:
    code = main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                 "-b", "onnx-fp32", "-b", "tflite-int8", "--calib-method", "mse", "--jobs", "2",
                 "--out", str(tmp_path)])
    assert code == 0
    manifest = Manifest.read(tmp_path / "tinycnn" / "manifest.json")
    assert manifest.artifact("onnx-fp32").status == "ok"
    assert manifest.artifact("tflite-int8").status == "failed"
    assert "not supported by tflite-int8" in manifest.artifact("tflite-int8").error
