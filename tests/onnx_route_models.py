"""Small ONNX graphs (onnx.helper) that reproduce what broke tflite-int8 on real ONNX models (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(nodes, inputs, outputs, initializers, path: Path, opset: int) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_bn(path: Path) -> Path:
    """Conv → BatchNormalization → Relu → Conv at opset 12, weights named like PaddlePaddle's (``conv2d_0.w_0``):
    torchao's BN folding failed with ``KeyError: "attribute 'conv2d_0_w_0' already exists"``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, values: np.ndarray):
        return numpy_helper.from_array(values.astype(np.float32), name)

    initializers = [init("conv2d_0.w_0", rng.normal(size=(8, 3, 3, 3)) * 0.3),
                    init("bn_scale", rng.uniform(0.5, 1.5, 8)), init("bn_bias", rng.normal(size=8) * 0.1),
                    init("bn_mean", rng.normal(size=8) * 0.1), init("bn_var", rng.uniform(0.5, 1.5, 8)),
                    init("conv2d_1.w_0", rng.normal(size=(8, 8, 3, 3)) * 0.3)]
    nodes = [helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c0", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["b0"]),
             helper.make_node("Relu", ["b0"], ["r0"]),
             helper.make_node("Conv", ["r0", "conv2d_1.w_0"], ["y"], pads=[1, 1, 1, 1])]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], initializers, path, 12)


def shape_range(path: Path, width: int = 100) -> Path:
    """Shape → Gather → Cast → Range(0, width, 1) added to the input, as YOLOv8's anchor grid: torch.export failed
    with ``GuardOnDataDependentSymNode: Could not guard on data-dependent expression zuf2 > 0.0``."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array(1, np.int64), "axis1"),
                    numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                    numpy_helper.from_array(np.array(1.0, np.float32), "step")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "axis1"], ["n"]),
             helper.make_node("Cast", ["n"], ["n_float"], to=TensorProto.FLOAT),
             helper.make_node("Range", ["zero", "n_float", "step"], ["grid"]),
             helper.make_node("Add", ["x", "grid"], ["y"])]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], initializers, path, 17)


def outlier_mlp(path: Path, outlier: float = 400.0, channel: int = 5) -> Path:
    """A digits MLP (Reshape → MatMul → Add → Relu → Mul → MatMul → Add) trained for a few seconds, then one hidden
    channel scaled by ``outlier`` and the next layer's matching weights by 1/``outlier``: FP32 is unchanged, but
    per-tensor INT8 activations crush every other channel (issue 16: tflite-int8 "3 layers to float", drop 0.84 →
    0.84)."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgeq.examples.digits import load_digits_split

    x, y = load_digits_split("train")
    torch.manual_seed(0)
    first, second = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)
    optimizer = torch.optim.Adam([*first.parameters(), *second.parameters()], 1e-2)
    features, labels = torch.tensor(x.reshape(len(x), 64)), torch.tensor(y)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(second(torch.relu(first(features))), labels).backward()
        optimizer.step()
    w1, b1 = first.weight.detach().numpy().T, first.bias.detach().numpy()
    w2, b2 = second.weight.detach().numpy().T.copy(), second.bias.detach().numpy()
    scale = np.ones(32, np.float32)
    scale[channel] = outlier
    w2[channel] /= outlier
    initializers = [numpy_helper.from_array(a.astype(np.float32), n)
                    for a, n in ((w1, "w1"), (b1, "b1"), (scale, "s"), (w2, "w2"), (b2, "b2"))]
    initializers.append(numpy_helper.from_array(np.array([1, 64], np.int64), "flat"))
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "w1"], ["h0"], name="matmul"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="add"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
             helper.make_node("Mul", ["h2", "s"], ["h3"], name="mul"),
             helper.make_node("MatMul", ["h3", "w2"], ["o0"], name="matmul_1"),
             helper.make_node("Add", ["o0", "b2"], ["logits"], name="add_1")]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], initializers, path, 17)


def static_reshape_add(path: Path) -> Path:
    """x + Reshape(offset, [1, C, 1, 1]) with a constant offset, as PP-OCR's mobile classifier's SE blocks: the
    Reshape of a static tensor stayed in the graph and its target was read with ``.tolist()`` (``Could not extract
    specialized integer from data-dependent expression u0``)."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array([0.5, -1.5, 2.0], np.float32), "offset"),
                    numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "target")]
    nodes = [helper.make_node("Reshape", ["offset", "target"], ["offset4d"]),
             helper.make_node("Add", ["x", "offset4d"], ["y"])]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], initializers, path, 13)
