"""Outputs that concatenate slices of very different magnitudes (YOLO: box pixels beside class scores) stay float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeq.cli import main
from edgeq.metrics import mixed_range_outputs


def test_mixed_range_outputs_finds_boxes_beside_scores() -> None:
    rng = np.random.default_rng(0)
    boxes, scores = rng.uniform(0, 1000, (4, 50)), rng.uniform(0, 0.9, (3, 50))
    yolo = [[np.concatenate([boxes, scores])[None]] for _ in range(2)]
    assert mixed_range_outputs(yolo)[0] > 1000
    alike = [[rng.uniform(0, 1, (1, 7, 50))], [rng.uniform(0, 1, (1, 7, 50))]]
    assert mixed_range_outputs(alike) == [0.0]
    assert mixed_range_outputs([[np.array([[1.0, 1e-6, 300.0]])]]) == [0.0]  # class scores: rank 2, never mixed
    text_map = np.zeros((1, 1, 32, 32))
    text_map[0, 0, 5:8] = 0.9  # a probability map: rows with text beside empty rows are not different units
    text_map[0, 0, 20:] = 1e-4
    assert mixed_range_outputs([[text_map]]) == [0.0]
    yolov5 = np.concatenate([rng.uniform(0, 640, (1, 50, 4)), rng.uniform(0, 1, (1, 50, 3))], axis=2)
    assert mixed_range_outputs([[yolov5]])[0] > 64  # [1, anchors, 4 + C]: the fields are the last axis


def _detector(path: Path) -> Path:
    """x -> Conv -> sigmoid -> (4 rows scaled to 0..400 px, 3 score rows) -> Concat [1, 7, 64]: the YOLOv8 head."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (7, 3, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 7, 64], np.int64), "shape"),
             numpy_helper.from_array(np.array([4, 3], np.int64), "split_sizes"),
             numpy_helper.from_array(np.array(400.0, np.float32), "pixels")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="head"),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="flat"),
             helper.make_node("Sigmoid", ["r"], ["sig"], name="sigmoid"),
             helper.make_node("Split", ["sig", "split_sizes"], ["b", "s"], axis=1, name="split"),
             helper.make_node("Mul", ["b", "pixels"], ["bp"], name="to_pixels"),
             helper.make_node("Concat", ["bp", "s"], ["y"], axis=1, name="concat")]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_qdq_keeps_a_boxes_and_scores_output_float(tmp_path: Path) -> None:
    model = _detector(tmp_path / "det.onnx")
    rng = np.random.default_rng(2)
    np.save(tmp_path / "calib.npy", rng.normal(0, 1, (48, 3, 8, 8)).astype(np.float32))
    assert main(["export", str(model), "--calib", str(tmp_path / "calib.npy"), "--input-shape", "x=1x3x8x8",
                 "-b", "onnx-qdq", "--out", str(tmp_path / "out")]) == 0
    quantized = next((tmp_path / "out" / "det" / "onnx-qdq").glob("*.onnx"))
    producers = {node.output[0]: node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert producers["y"] == "Concat"  # the output is written by the float Concat, not by a DequantizeLinear
    feeds = {"x": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)}
    ref, got = (ort.InferenceSession(str(p)).run(None, feeds)[0][0] for p in (model, quantized))
    scores_ref, scores_got = ref[4:].ravel(), got[4:].ravel()
    cosine = scores_ref @ scores_got / (np.linalg.norm(scores_ref) * np.linalg.norm(scores_got))
    assert cosine > 0.99  # one int8 scale over 0..400 px would leave the 0..1 scores 0 or 1.57
