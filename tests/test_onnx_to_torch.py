"""ONNX → PyTorch (onnx2fx + static specialization): the route that lets ONNX inputs reach litert-torch/TFLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2fx")

from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

from edgeq.errors import UnsupportedConversion  # noqa: E402
from edgeq.models.onnx_model import OnnxSource  # noqa: E402
from edgeq.models.onnx_to_torch import onnx_to_torch, specialize_static_values  # noqa: E402


class TinyCNN(nn.Module):
    """Conv/BN/Relu/MaxPool/GlobalAveragePool/Flatten/Concat/Gemm/Reshape/Softmax/Add in the legacy export."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.skip = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features[:4](x)
        y = self.features[4:](y) + self.skip(y)
        pooled = [torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1),
                  torch.flatten(nn.functional.adaptive_max_pool2d(y, 1), 1)]
        return torch.softmax(self.fc(torch.cat(pooled, 1)).reshape(1, 10), -1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class ResNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(ResBlock(16, 16, 1), ResBlock(16, 32, 2), ResBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1))


def _export(module: nn.Module, shape: tuple[int, ...], path: Path, dynamo: bool) -> Path:
    torch.manual_seed(0)
    for sub in module.modules():  # non-trivial BN statistics, so folding mistakes would show
        if isinstance(sub, nn.BatchNorm2d):
            sub.running_mean.uniform_(-0.5, 0.5)
            sub.running_var.uniform_(0.5, 2.0)
    module.eval()
    torch.onnx.export(module, (torch.randn(shape),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17 if not dynamo else 18, dynamo=dynamo)
    return path


def _compare_with_ort(source: OnnxSource, seed: int = 1) -> float:
    spec = source.inputs[0]
    x = np.random.default_rng(seed).standard_normal(spec.shape).astype(np.float32)
    expected = source.reference({spec.name: x})[0]
    with torch.no_grad():
        got = source.torch_module()(*source.example_inputs({spec.name: x}))
    assert got.shape == expected.shape
    return float(np.abs(got.numpy() - expected).max())


def test_tiny_cnn_matches_ort_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _export(TinyCNN(), (1, 3, 8, 8), tmp_path / "tiny.onnx", dynamo=False)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Conv", "Relu", "MaxPool", "GlobalAveragePool", "Concat", "Gemm", "Reshape", "Softmax", "Add"} <= ops
    source = OnnxSource(path, {})
    assert _compare_with_ort(source) < 1e-5
    module = source.torch_module()
    assert source.torch_module() is module  # cached
    exported = torch.export.export(module, source.example_inputs())  # what the TFLite backends do
    assert exported.module()(*source.example_inputs()).shape == (1, 10)


def test_resnetish_from_dynamo_exporter_matches_ort(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _export(ResNetish(), (1, 3, 32, 32), tmp_path / "resnetish.onnx", dynamo=True)
    source = OnnxSource(path, {})
    assert _compare_with_ort(source) < 1e-4


def _shape_chain_model() -> onnx.ModelProto:
    """y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])): a shape computation torch.export cannot trace as is."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24])],
        initializer=[helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                     helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_static_shape_chain_is_specialized_for_export() -> None:
    import onnx2fx

    model = _shape_chain_model()
    x = torch.randn(1, 2, 3, 4)
    raw = onnx2fx.convert(model)
    with pytest.raises(Exception):  # noqa: B017 - the upstream module alone is not exportable (data-dependent)
        torch.export.export(raw, (x,))
    assert specialize_static_values(raw, (x,)) >= 1
    assert torch.equal(raw(x), torch.relu(x.reshape(1, -1)))
    module = onnx_to_torch(model, (x,), "chain")
    assert torch.equal(torch.export.export(module, (x,)).module()(x), torch.relu(x.reshape(1, -1)))


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_unsupported_standard_op_is_named(tmp_path: Path) -> None:
    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], pooled_shape=[2, 2])
    graph = helper.make_graph(
        [node], "roi", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                        helper.make_tensor_value_info("rois", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
    )
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "roi.onnx")
    source = OnnxSource(path, {})
    with pytest.raises(UnsupportedConversion, match=r"unsupported op type\(s\) MaxRoiPool") as info:
        source.torch_module()
    assert "\n" not in str(info.value)


def test_custom_domain_ops_are_named_with_domain() -> None:
    nodes = [helper.make_node("Frobnicate", ["x"], ["h"], domain="com.acme"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Twiddle", ["r"], ["y"], domain="com.acme")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    with pytest.raises(UnsupportedConversion, match=r"com\.acme::Frobnicate, com\.acme::Twiddle$"):
        onnx_to_torch(model, (torch.zeros(1, 4),), "custom")


def test_if_on_input_value_is_refused_in_one_line() -> None:
    def branch(name: str, value: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Mul", ["x", f"{name}_k"], [f"{name}_out"])], name, [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 4])],
            initializer=[helper.make_tensor(f"{name}_k", TensorProto.FLOAT, [], [value])],
        )

    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("then", 2.0), else_branch=branch("else", -1.0))]
    graph = helper.make_graph(nodes, "cond", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedConversion, match="If control flow depends on input values") as info:
        onnx_to_torch(model, (torch.ones(1, 4),), "cond")
    assert "\n" not in str(info.value)


def test_gather_nd_is_one_lookup_without_run_time_scalars(tmp_path: Path) -> None:
    """GatherND on input-dependent indices (how MiniLM-L6's export builds its attention mask): same values as ONNX
    Runtime, negative indices included, and no ``aten.item`` left for litert-torch to choke on."""
    node = helper.make_node("GatherND", ["data", "indices"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3, 4]),
                                            helper.make_tensor_value_info("indices", TensorProto.INT64, [5, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 4])])
    source = OnnxSource(_save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                              tmp_path / "gather_nd.onnx"), {})
    feeds = {"data": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
             "indices": np.array([[0, 0], [1, 2], [-1, -3], [0, 2], [1, -1]], dtype=np.int64)}
    expected = source.reference(feeds)[0]
    module = source.torch_module()
    with torch.no_grad():
        got = module(*source.example_inputs(feeds))
    assert np.array_equal(got.numpy(), expected)
    exported = torch.export.export(module, source.example_inputs(feeds))
    assert not [n for n in exported.graph.nodes if "item" in str(n.target) or "local_scalar" in str(n.target)]
