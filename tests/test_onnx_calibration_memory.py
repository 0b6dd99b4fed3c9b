"""onnx-qdq calibrates in ORT's strided passes so memory is bounded by the pass, not by the calibration set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.runtimes.onnx import onnx_qdq


def _conv_model(path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return path


def test_stride_fits_the_memory_budget_and_divides_the_samples(tmp_path: Path, monkeypatch) -> None:
    model = _conv_model(tmp_path / "m.onnx")
    per_sample = 4 * (8 * 32 * 32 * 2)  # c and y
    monkeypatch.setattr(onnx_qdq, "CALIBRATION_MEMORY_BYTES", 5 * per_sample)
    assert onnx_qdq.calibration_stride(model, 20) == 5
    assert onnx_qdq.calibration_stride(model, 12) == 4  # largest divisor of 12 within 5 samples
    assert onnx_qdq.calibration_stride(model, 7) == 1  # a prime count goes one sample per pass
    assert onnx_qdq.calibration_stride(model, 3) == 3
    monkeypatch.setattr(onnx_qdq, "CALIBRATION_MEMORY_BYTES", 1)
    assert onnx_qdq.calibration_stride(model, 20) == 1
    shapeless = onnx.load(str(model))
    del shapeless.graph.value_info[:]
    shapeless.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "h"  # a dynamic dim: size unknown
    onnx.save(shapeless, tmp_path / "shapeless.onnx")
    monkeypatch.setattr(onnx_qdq, "CALIBRATION_MEMORY_BYTES", 1 << 30)
    assert onnx_qdq.calibration_stride(tmp_path / "shapeless.onnx", 20) == 4  # 256 MB assumed per sample


@pytest.mark.parametrize("method", ["MinMax", "Percentile"])
def test_strided_calibration_gives_the_one_pass_ranges(tmp_path: Path, method: str) -> None:
    """ORT merges ranges (MinMax) and histograms (Percentile) across passes; the reader must hand out each sample
    exactly once, in order, whatever the stride."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    model = _conv_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    samples = [{"x": rng.normal(0, 1 + i, (1, 3, 32, 32)).astype(np.float32)} for i in range(6)]

    def ranges(stride: int | None) -> dict[str, tuple[float, float]]:
        calibrator = create_calibrator(model, augmented_model_path=str(tmp_path / f"aug{stride}.onnx"),
                                       calibrate_method=getattr(CalibrationMethod, method))
        reader = onnx_qdq._Reader(samples, ["x"])
        if stride is None:
            calibrator.collect_data(reader)
        else:
            assert len(reader) == 6
            for start in range(0, len(reader), stride):
                reader.set_range(start, start + stride)
                calibrator.collect_data(reader)
        data = calibrator.compute_data()
        return {name: tuple(float(np.ravel(v)[0]) for v in data[name].range_value) for name in ("c", "y")}

    one_pass = ranges(None)
    assert one_pass["c"][1] > 5  # the last, widest sample was seen
    for stride in (1, 2, 3):
        got = ranges(stride)
        for name, (low, high) in one_pass.items():
            assert got[name] == pytest.approx((low, high), rel=0.05 if method == "Percentile" else 1e-6)
