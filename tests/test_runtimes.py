"""edgeq/runtimes: one package per runtime, its backends found by the registry, one RuntimeAdapter each, one
attention rule over three graph types."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq import backends
from edgeq.runtimes import backend_classes, discover_backends, runtime_packages
from edgeq.runtimes.adapter import RuntimeAdapter, adapter_of, adapters
from edgeq.runtimes.attention import AttentionEvidence
from edgeq.runtimes.precision import PRECISIONS

MANIFEST_ORDER = ["onnx-fp32", "onnx-fp16", "onnx-qdq", "onnx-w8a16", "onnx-w4",
                  "openvino-fp32", "openvino-fp16", "openvino-int8", "openvino-bf16", "openvino-w4",
                  "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-w8a16", "tflite-w4"]


def test_registry_is_discovered_from_the_runtime_packages_in_manifest_order() -> None:
    assert runtime_packages()[:3] == ["onnx", "openvino", "tflite"]
    assert [n for n in backends.REGISTRY if n in MANIFEST_ORDER] == MANIFEST_ORDER
    for name, target in backends.REGISTRY.items():
        cls = backends.get_backend(name)
        assert cls.name == name and target.startswith(f"edgeq.runtimes.{name.split('-')[0]}.")


def test_tiers_and_opt_in_follow_the_backends_precision() -> None:
    assert backends.TIERS == ("onnx-w8a16", "onnx-w4", "openvino-w4", "tflite-w8a16", "tflite-w4")
    assert {"openvino-bf16", *backends.TIERS} == backends.OPT_IN
    assert backends.resolve(["all"]) == [n for n in MANIFEST_ORDER if n not in backends.OPT_IN]


@pytest.mark.parametrize("name", list(backends.REGISTRY))
def test_every_backend_has_an_adapter_of_its_runtime_and_a_known_precision(name: str) -> None:
    cls = backends.get_backend(name)
    adapter = backends.adapter_for(name)
    assert isinstance(adapter, RuntimeAdapter)
    assert adapter.runtime == cls.runtime
    assert cls.precision in adapter.precisions()
    assert cls.precision in PRECISIONS, f"{name}: reports have no entry for precision {cls.precision!r}"


def test_capabilities_come_from_the_adapters() -> None:
    from edgeq.qat import qat_backends

    assert qat_backends() == ["onnx-qdq", "openvino-int8", "tflite-int8"]
    controlled = [n for n in backends.REGISTRY if backends.adapter_for(n).supports_accuracy_control(n)]
    assert controlled == ["onnx-qdq", "openvino-int8", "tflite-int8"]
    assert [a.artifact_suffix for a in adapters()] == [".onnx", ".xml", ".tflite"]
    with pytest.raises(Exception, match="unknown backend"):
        backends.adapter_for("onnx-int3")


def test_a_backend_registered_from_outside_gets_the_adapter_of_its_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.runtimes.base import Backend

    class Outside(Backend):
        name = "outside-int8"
        runtime = "openvino"
        precision = "int8"

    monkeypatch.setitem(backends.REGISTRY, Outside.name, f"{__name__}:Outside")
    monkeypatch.setattr(sys.modules[__name__], "Outside", Outside, raising=False)
    adapter = backends.adapter_for("outside-int8")
    assert adapter.runtime == "openvino" and not adapter.supports_qat("outside-int8")
    from edgeq.qat import qat_backends

    assert "outside-int8" not in qat_backends()


RUNTIME_INIT = '"""A runtime added by one package."""\n'
BACKEND_MODULE = '''
from edgeq.runtimes.base import Backend, ExportedFiles


class ToyInt8(Backend):
    name = "toy-int8"
    runtime = "onnxruntime"
    precision = "int8"


class ToyFp32(Backend):
    name = "toy-fp32"
    runtime = "onnxruntime"
    precision = "fp32"
'''


def test_a_new_runtime_package_and_its_backend_modules_are_found(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a runtime = one package; adding a backend = one ``<runtime>_*.py`` module in it."""
    import edgeq.runtimes

    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text(RUNTIME_INIT)
    (package / "toy_int8.py").write_text(BACKEND_MODULE)
    (package / "_helpers.py").write_text("raise AssertionError('private helpers are not backend modules')\n")
    monkeypatch.setattr(edgeq.runtimes, "__path__", [*edgeq.runtimes.__path__, str(tmp_path)])
    try:
        assert runtime_packages() == ["onnx", "openvino", "tflite", "toy"]
        assert [cls.name for cls in backend_classes("toy")] == ["toy-fp32", "toy-int8"]  # by precision
        assert list(discover_backends())[-2:] == ["toy-fp32", "toy-int8"]
    finally:
        for module in [m for m in sys.modules if m.startswith("edgeq.runtimes.toy")]:
            del sys.modules[module]


def test_one_attention_rule() -> None:
    assert AttentionEvidence(1, 0, 0).attention  # a fused attention op
    assert AttentionEvidence(0, 1, 2).attention  # Softmax beside Q·Kᵀ and attention·V
    assert not AttentionEvidence(0, 1, 1).attention  # a softmax classifier after one activation product
    assert not AttentionEvidence(0, 0, 4).attention


def _onnx_graph(attention: bool):  # -> onnx.ModelProto
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.ones(64, np.float32).tolist())
    if attention:  # q·kᵀ → softmax → ·v, all activations
        nodes = [helper.make_node("MatMul", ["x", "w"], ["q"]), helper.make_node("Transpose", ["q"], ["kt"]),
                 helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"]),
                 helper.make_node("MatMul", ["p", "q"], ["y"])]
    else:  # a linear layer and a softmax classifier
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])], [w])
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


@pytest.mark.parametrize("attention", [True, False])
def test_onnx_and_openvino_detect_attention_by_the_same_rule(attention: bool, tmp_path: Path) -> None:
    import onnx

    model = _onnx_graph(attention)
    assert adapter_of("onnx").has_attention(model.graph) is attention
    pytest.importorskip("openvino")
    import openvino as ov

    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    assert adapter_of("openvino").has_attention(ov.convert_model(str(path))) is attention


def test_tflite_detects_attention_in_the_fx_graph() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgeq.runtimes.tflite._tflite import export_for_quantization

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(8, 24)

        def forward(self, x):  # type: ignore[no-untyped-def]
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8, 4))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.softmax(x @ self.weight, dim=-1)  # softmax after a weight matmul: no attention

    tflite = adapter_of("tflite")
    assert tflite.has_attention(export_for_quantization(Attention().eval(), (torch.randn(1, 4, 8),)))
    assert not tflite.has_attention(export_for_quantization(Classifier().eval(), (torch.randn(1, 8),)))
