"""Verification: every output checked (schema 1.1), the floored worst-sample cosine, verification in child
processes (a native abort is one failed row), and diagnostics kept in OUT/<model>/logs/<backend>.log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from edgeq.manifest import Manifest
from edgeq.metrics import cosine_per_sample, fidelity, floored_cosine_per_sample, is_class_scores


# ---------------------------------------------------------------------------------------------------------------
# The worst-sample measure (docs/fidelity.md)
# ---------------------------------------------------------------------------------------------------------------
def _maps(count: int, seed: int = 0) -> list[np.ndarray]:
    """Probability maps (1, 1, 32, 32): "text" blocks at 1.0 on a background at ~1e-6."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(count):
        m = np.full((1, 1, 32, 32), 1e-6, dtype=np.float32)
        r, c = rng.integers(0, 24, size=2)
        m[..., r:r + 8, c:c + 8] = 1.0
        maps.append(m)
    return maps


def test_floored_cosine_near_zero_reference_is_meaningful() -> None:
    rng = np.random.default_rng(1)
    reference = _maps(8)
    reference.append(np.full((1, 1, 32, 32), 1e-6, dtype=np.float32) * rng.random((1, 1, 32, 32)))  # no text
    # INT8-like candidate: ± 1/255 noise everywhere, background clamped at >= 0
    noisy = [np.clip(r + rng.uniform(-1 / 510, 1 / 510, r.shape), 0, None).astype(np.float32) for r in reference]
    plain = cosine_per_sample(reference, noisy)
    floored = floored_cosine_per_sample(reference, noisy)
    assert plain[-1] < 0.9  # the plain cosine of two near-zero vectors is noise: this harmless sample looks worst
    assert floored[-1] > 0.99  # floored: the empty map is judged against the floor, and the noise is tiny there
    assert np.allclose(floored[:-1], plain[:-1], atol=2e-4)  # samples with signal: the plain cosine
    # a candidate that invents text where FP32 has none is the worst sample, clearly
    invented = list(noisy)
    invented[-1] = invented[-1].copy()
    invented[-1][..., :8, :8] = 1.0
    stats = fidelity(reference, invented)
    assert stats["cosine_min"] < 0.5 and stats["top1_agreement"] is None
    # all-zero FP32 outputs: no scale to floor against, the plain rule (identical → 1, different → 0)
    zeros = [np.zeros((1, 4), np.float32)] * 2
    assert list(floored_cosine_per_sample(zeros, zeros)) == [1.0, 1.0]
    assert list(floored_cosine_per_sample(zeros, [np.ones((1, 4), np.float32)] * 2)) == [0.0, 0.0]


def test_top1_agreement_only_for_class_score_vectors() -> None:
    assert is_class_scores(np.zeros((1, 10)))
    assert not is_class_scores(np.zeros((1, 1)))
    assert not is_class_scores(np.zeros((1, 5, 4)))  # boxes
    assert not is_class_scores(np.zeros((1, 1, 8, 8)))  # a map
    assert not is_class_scores(np.zeros((10,)))
    boxes = [np.random.default_rng(i).standard_normal((1, 5, 4)) for i in range(3)]
    assert fidelity(boxes, boxes)["top1_agreement"] is None


# ---------------------------------------------------------------------------------------------------------------
# A three-output ONNX model: class scores, boxes, a probability map
# ---------------------------------------------------------------------------------------------------------------
def _three_output_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...], scale: float = 0.5) -> onnx.TensorProto:
        return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32), name)

    inits = [weight("w_hidden", (16, 32)), weight("w_scores", (32, 10)), weight("w_boxes", (32, 12)),
             weight("w_map", (32, 64), 2.0), numpy_helper.from_array(np.array([1, 3, 4], np.int64), "boxes_shape"),
             numpy_helper.from_array(np.array([1, 1, 8, 8], np.int64), "map_shape")]
    nodes = [
        helper.make_node("MatMul", ["x", "w_hidden"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "w_scores"], ["scores"]),
        helper.make_node("MatMul", ["h", "w_boxes"], ["b0"]), helper.make_node("Reshape", ["b0", "boxes_shape"], ["boxes"]),
        helper.make_node("MatMul", ["h", "w_map"], ["m0"]), helper.make_node("Reshape", ["m0", "map_shape"], ["m1"]),
        helper.make_node("Sigmoid", ["m1"], ["prob_map"]),
    ]
    graph = helper.make_graph(
        nodes, "three_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4]),
         helper.make_tensor_value_info("prob_map", TensorProto.FLOAT, [1, 1, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def three_heads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("three_heads")
    calib = folder / "calib.npy"
    np.save(calib, np.random.default_rng(3).standard_normal((48, 1, 16)).astype(np.float32))
    return _three_output_model(folder / "three_heads.onnx"), calib


def test_three_output_model_every_output_verified(three_heads: tuple[Path, Path], tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.ui import console

    monkeypatch.setattr(console, "width", 200)  # the table on one line per row
    model, calib = three_heads
    capsys.readouterr()
    code = main(["export", str(model), "--calib", str(calib), "--calib-samples", "24", "-b", "onnx-fp32",
                 "-b", "onnx-qdq", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    manifest = Manifest.read(tmp_path / "three_heads" / "manifest.json")
    assert manifest.schema_version == "1.2"
    for art in manifest.artifacts:
        assert art.status == "ok", art.error
        ver = art.verification
        assert ver is not None and ver.samples == 24
        assert [(o.name, o.shape) for o in ver.outputs] == [("scores", [1, 10]), ("boxes", [1, 3, 4]),
                                                            ("prob_map", [1, 1, 8, 8])]
        assert [o.top1_agreement is not None for o in ver.outputs] == [True, False, False]
        first = ver.outputs[0]  # the top-level fields stay output 0's, for schema 1.0 readers
        assert (ver.cosine_min, ver.max_abs_error, ver.top1_agreement) == (
            first.cosine_min, first.max_abs_error, first.top1_agreement)
    qdq = manifest.artifact("onnx-qdq").verification
    assert len({round(o.cosine_min, 6) for o in qdq.outputs}) == 3  # each output has its own fidelity
    worst = min(qdq.outputs, key=lambda o: o.cosine_min)
    assert qdq.worst() == worst
    from edgeq.report.export_table import export_rows

    row = next(r for r in export_rows(manifest) if r["backend"] == "onnx-qdq")
    assert row["cosine_worst"] == f"{worst.cosine_min:.4f} ({worst.name})"
    assert row["max_abs_error"] == f"{worst.max_abs_error:.3g}"
    printed_row = next(line for line in printed.splitlines() if line.lstrip("│ ").startswith("onnx-qdq"))
    assert f"{worst.cosine_min:.4f} ({worst.name})" in printed_row  # the printed table names the worst output


# ---------------------------------------------------------------------------------------------------------------
# Isolation: a native abort in a verification child
# ---------------------------------------------------------------------------------------------------------------
ABORT_HOOK = '''
import ctypes, os
_cmd = open("/proc/self/cmdline", "rb").read().split(b"\\0")
if any(part.endswith(b"runner.py") for part in _cmd) and any(b"openvino" in part for part in _cmd):
    _libc = ctypes.CDLL(None)
    _message = b"LLVM ERROR: out of space (injected by the edgeq test)\\n"
    _libc.write(2, _message, len(_message))
    _libc.abort()
'''


def test_native_abort_in_verification_is_one_failed_row(three_heads: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The openvino-fp32 verification child (runner.py on the .xml) really aborts (libc abort(), SIGABRT) after a
    native message on fd 2; the export goes on, onnx-fp32 is verified, the manifest is written."""
    pytest.importorskip("openvino")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ABORT_HOOK)  # imported at start-up by child processes only
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    model, calib = three_heads
    out = tmp_path / "out"
    code = main(["export", str(model), "--calib", str(calib), "--calib-samples", "24", "-b", "onnx-fp32",
                 "-b", "openvino-fp32", "--jobs", "1", "--out", str(out)])
    assert code == 0  # documented: non-zero only when every requested backend failed (or a budget is missed)
    document = json.loads((out / "three_heads" / "manifest.json").read_text())
    rows = {a["backend"]: a for a in document["artifacts"]}
    assert rows["onnx-fp32"]["status"] == "ok" and rows["onnx-fp32"]["verification"]["max_abs_error"] < 1e-5
    failed = rows["openvino-fp32"]
    log = out / "three_heads" / "logs" / "openvino-fp32.log"
    assert failed["status"] == "failed"
    assert "SIGABRT" in failed["error"] and "LLVM ERROR: out of space" in failed["error"]
    assert str(log) in failed["error"]
    assert "LLVM ERROR: out of space (injected by the edgeq test)" in log.read_text()
    assert not (out / "three_heads" / "openvino-fp32").exists()  # nothing half-built left in place
    assert not [p for p in (out / "three_heads").iterdir() if p.name.startswith(".")]
    assert "openvino-fp32" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# Diagnostics: traceback in the log, --debug prints it
# ---------------------------------------------------------------------------------------------------------------
def test_failed_backend_traceback_in_log_and_debug(three_heads: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from edgeq.backends import get_backend

    def broken_export(self, source, calib, out, options):  # noqa: ANN001 - the backend's signature
        print("converter says: lowering failed")  # noqa: T201 - what a converter prints
        raise RuntimeError("converter exploded deep inside")

    monkeypatch.setattr(get_backend("onnx-fp16"), "export", broken_export)
    model, calib = three_heads
    args = [str(model), "--calib", str(calib), "--calib-samples", "24", "-b", "onnx-fp32", "-b", "onnx-fp16",
            "--jobs", "1", "--out", str(tmp_path)]
    capsys.readouterr()
    assert main(["export", *args]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    manifest = Manifest.read(tmp_path / "three_heads" / "manifest.json")
    row = manifest.artifact("onnx-fp16")
    log = tmp_path / "three_heads" / "logs" / "onnx-fp16.log"
    assert row.status == "failed" and row.error is not None
    assert row.error.startswith("RuntimeError: converter exploded deep inside") and str(log) in row.error
    text = log.read_text()
    assert "converter says: lowering failed" in text
    assert "Traceback (most recent call last)" in text and "in broken_export" in text

    assert main(["--debug", "export", *args]) == 0
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "converter exploded deep inside" in err
    import logging

    assert main(["export", *args]) == 0  # --debug does not stick to later runs in the same process
    assert logging.getLogger("edgeq").level == logging.NOTSET
    assert "Traceback" not in capsys.readouterr().err


def test_bench_fidelity_per_output(three_heads: tuple[Path, Path], tmp_path: Path) -> None:
    """``edgeq bench --eval``: every output of every cell vs the FP32 cell; the report shows the worst output."""
    from edgeq.benchmark import BenchRequest, run_bench
    from edgeq.report.bench_report import build_rows

    model, calib = three_heads
    assert main(["export", str(model), "--calib", str(calib), "--calib-samples", "24", "-b", "onnx-fp32",
                 "-b", "onnx-qdq", "--holdout-samples", "0", "--out", str(tmp_path / "art")]) == 0
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  - name: host\n    kind: local\n")
    summary = run_bench(BenchRequest(artifacts_dir=tmp_path / "art", out=tmp_path / "res", devices_file=devices,
                                     eval_spec=str(calib), eval_samples=16, runs=3, min_seconds=0.0, warmup=0))
    cells = {c.backend: c for c in summary.results}
    qdq = cells["onnx-qdq"]
    assert qdq.output_names == ["scores", "boxes", "prob_map"]
    outputs = qdq.fidelity_outputs
    assert [(o["name"], o["shape"], o["samples"]) for o in outputs] == [
        ("scores", [1, 10], 16), ("boxes", [1, 3, 4], 16), ("prob_map", [1, 1, 8, 8], 16)]
    assert [o["top1_agreement"] is not None for o in outputs] == [True, False, False]
    assert qdq.fidelity["cosine_min"] == outputs[0]["cosine_min"]  # ``fidelity`` stays output 0's
    worst = min(outputs, key=lambda o: o["cosine_min"])
    row = next(r for r in build_rows(summary.results) if r.backend == "onnx-qdq")
    assert row.cosine_min == worst["cosine_min"] and row.top1_agreement == outputs[0]["top1_agreement"]


@pytest.mark.parametrize("asked", [["-b", "onnx-fp16"], ["-b", "onnx-fp16", "-b", "onnx-fp16"]])
def test_exit_1_only_when_every_requested_backend_failed(three_heads: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, asked: list[str]) -> None:
    from edgeq.backends import get_backend

    def broken_export(self, source, calib, out, options):  # noqa: ANN001 - the backend's signature
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(get_backend("onnx-fp16"), "export", broken_export)
    model, calib = three_heads
    common = [str(model), "--calib", str(calib), "--calib-samples", "24", "--jobs", "1"]
    assert main(["export", *common, *asked, "--out", str(tmp_path / "alone")]) == 1
    assert main(["export", *common, *asked, "-b", "onnx-fp32", "--out", str(tmp_path / "with_ok")]) == 0
