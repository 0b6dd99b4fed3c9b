"""Shared TFLite (LiteRT) export code: PyTorch sources through litert-torch, post-processing through ai-edge-quantizer.

Routes (checked on this machine with torch 2.13, litert-torch 0.10, ai-edge-quantizer 0.10). ONNX sources reach
litert-torch as a PyTorch module converted by onnx2fx (``OnnxSource.torch_module``).
- fp32: ``litert_torch.convert(module, sample_args)``.
- int8 (full integer, int8 model I/O): PT2E — strict ``torch.export`` → ``prepare_pt2e`` with litert-torch's
  ``PT2EQuantizer`` (symmetric, per-channel weights) → calibration forward passes → ``convert_pt2e`` → convert.
  Convolutions over < 8 input channels stay float (slower in int8 under XNNPACK on x86: docs/tflite-int8.md).
- fp16 / dynamic: the FP32 .tflite re-quantized by ai-edge-quantizer (FP16 weight casting; dynamic-range int8 weights
  with activations quantized at run time).
Inputs keep the PyTorch layout (NCHW); the manifest records it.
Keras / SavedModel sources take TensorFlow's own ``tf.lite.TFLiteConverter`` instead (``_tflite_keras.py``, NHWC).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from edgeq.errors import UnsupportedConversion
from edgeq.runtimes.attention import AttentionEvidence
from edgeq.runtimes.base import Backend, ExportedFiles


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep TF/absl/torch conversion chatter off the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    levels = {name: logging.getLogger(name).level for name in ("absl", "torch", "tensorflow")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def torch_module_or_refuse(source, backend: str):  # -> (torch.nn.Module, tuple of sample args)
    """The eager module and sample args for litert-torch: PyTorch sources as they are, ONNX sources converted
    (onnx2fx, see docs/onnx-to-tflite.md); a precise refusal for anything else or an unconvertible graph."""
    if source.framework not in ("torch", "onnx"):
        raise UnsupportedConversion(f"{backend} from {source.framework} input: no route to litert-torch")
    return source.torch_module(), source.example_inputs()


@contextlib.contextmanager
def lowering_errors(backend: str) -> Iterator[None]:
    """Turn litert-torch's lowering failures into one-line refusals that name the op: "Lowering not found: aten.X",
    and a JAX-lowered op that needs a value known at conversion time (``aten._local_scalar_dense``, a tensor read as
    a Python number — seen on MiniLM-L6's ONNX export through onnx2fx)."""
    try:
        yield
    except Exception as exc:
        text = str(exc)
        missing = re.search(r"Lowering not found: (\S+)", text)
        if missing is not None:
            raise UnsupportedConversion(f"{backend}: litert-torch has no TFLite lowering for {missing.group(1)}") from None
        traced = re.search(r"While executing .*?target=torch\.ops\.([\w.]+)", text)
        if traced is not None and type(exc).__name__ == "ConcretizationTypeError":
            raise UnsupportedConversion(
                f"{backend}: litert-torch cannot lower {traced.group(1)}: it needs a value only known at run time "
                f"(a tensor read as a number)") from None
        raise


def convert_fp32(source, out: Path, backend: str) -> Path:
    if source.framework == "keras":  # TensorFlow's own converter (edgeq/runtimes/tflite/_tflite_keras.py)
        from edgeq.runtimes.tflite import _tflite_keras

        return _tflite_keras.convert(source, out, "fp32")
    import litert_torch

    module, args = torch_module_or_refuse(source, backend)
    with quiet(), lowering_errors(backend):
        litert_torch.convert(module, args).export(str(out))
    return out


def requantize(fp32_tflite: Path, out: Path, kind: str) -> Path:
    """Apply an ai-edge-quantizer recipe to an FP32 .tflite: ``fp16`` (weight casting) or ``dynamic`` (int8 weights)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    with quiet():
        tool = quantizer.Quantizer(str(fp32_tflite))
        if kind == "fp16":
            tool.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                        num_bits=16, algorithm_key=recipe.AlgorithmName.FLOAT_CASTING)
        else:
            tool.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = tool.quantize()
        out.write_bytes(bytes(result.quantized_model))
    return out


def reads_and_writes_floats(node) -> bool:
    """Every tensor ``node`` reads and writes is floating point. PT2E's activation observers build float histograms:
    an op on int64 token ids or an integer attention mask (MiniLM) made ``prepare_pt2e`` fail with
    ``"histogram_cpu" not implemented for 'Long'``; such ops are left unannotated (integer ops stay integer)."""
    import torch

    def value(of):  # a constant read with get_attr (onnx2fx's folded static values) has no "val" metadata
        if of.op == "get_attr" and of.graph.owning_module is not None:
            found = of.graph.owning_module
            for part in str(of.target).split("."):
                found = getattr(found, part, None)
            return found
        return of.meta.get("val")

    values = [value(node), *(value(arg) for arg in node.all_input_nodes)]
    return all(not isinstance(found, torch.Tensor) or found.is_floating_point() for found in values)


def _excluding_quantizer(excluded: list[str]):
    """litert-torch's PT2EQuantizer that leaves the modules named in ``excluded`` (and their children), the
    top-level ops named ``node:<fx node name>``, and ops on integer tensors (``reads_and_writes_floats``) in float.

    Its own ``set_module_name`` refuses ``None`` and matches torch ≥ 2.9 ``nn_module_stack`` keys wrongly, so the
    same upstream annotators run with a filter on each node's module path instead.
    """
    from litert_torch.quantize import pt2e_quantizer as pq

    class ExcludingQuantizer(pq.PT2EQuantizer):
        def annotate(self, model):
            def quantize_node(node) -> bool:
                if f"node:{node.name}" in excluded or not reads_and_writes_floats(node):  # node: an onnx2fx graph's op
                    return False
                stack = node.meta.get("nn_module_stack") or {}
                path = str(list(stack.values())[-1][0]) if stack else ""
                return not path or not any(path == name or path.startswith(name + ".") for name in excluded)

            self._annotate_all_static_patterns(model, self.global_config, quantize_node)
            pq.propagate_annotation(model)
            return model

    return ExcludingQuantizer()


def has_attention(graph) -> bool:
    """An attention pattern in an exported FX graph (``edgeq.runtimes.attention``'s rule)."""
    return attention_evidence(graph).attention


WEIGHT_VIEW_OPS = ("get_attr", "transpose", "permute", "t.default", "view", "reshape", "expand", "unsqueeze",
                   "contiguous", "_to_copy", "clone", "dequantize")
"""FX ops that only re-view a weight (so a matmul reading them multiplies by a weight)."""


def _from_weights(node, depth: int = 0) -> bool:
    import torch

    if node.op == "get_attr":
        return True
    if node.op != "call_function" or depth > 6 or not any(op in str(node.target) for op in WEIGHT_VIEW_OPS):
        return False
    inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
    return bool(inputs) and all(_from_weights(a, depth + 1) for a in inputs)


def attention_evidence(graph) -> AttentionEvidence:
    """Scaled-dot-product attention ops, softmax ops and matmuls of two activations in an FX graph module."""
    import torch

    fused = softmax = activation_matmuls = 0
    for node in graph.graph.nodes:
        target = str(node.target)
        fused += "scaled_dot_product_attention" in target
        softmax += "softmax" in target
        if node.op == "call_function" and any(op in target for op in ("matmul", "bmm")):
            inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
            activation_matmuls += len(inputs) == 2 and not any(_from_weights(a) for a in inputs)
    return AttentionEvidence(fused, softmax, activation_matmuls)


def ptq_quantizer(graph, exclude_modules: list[str] | None = None):  # -> (PT2EQuantizer, per_channel)
    """litert-torch's static PT2E quantizer for ``graph``: symmetric int8, per-channel weights — per-tensor on
    attention graphs (BERT-mini in bench/peers.py: cosine min vs FP32 0.9888 per-tensor vs 0.9852 per-channel; CNNs
    gain from per-channel: ResNet-18 0.9984 vs 0.9945). ``exclude_modules`` stay float (accuracy control)."""
    per_channel = not has_attention(graph)
    return litert_quantizer(per_channel=per_channel, exclude_modules=exclude_modules), per_channel


def litert_quantizer(is_qat: bool = False, per_channel: bool = True,
                     exclude_modules: list[str] | None = None):  # -> litert_torch PT2EQuantizer
    """litert-torch's PT2E quantizer: symmetric int8 weights (per-channel by default), static int8 activations (QAT:
    fake quant); ``exclude_modules`` are left in float."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    quantizer = _excluding_quantizer(list(exclude_modules or []))
    return quantizer.set_global(get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=is_qat))


@contextlib.contextmanager
def strict_qdq_conversion() -> Iterator[None]:
    """Run litert-torch's converter passes with ``strict_qdq_mode``: every quantize / dequantize of the PT2E graph stays
    an op, so the model input and output keep their float type (a QUANTIZE after the input, a DEQUANTIZE before the
    output) while the ops between stay int8. litert-torch 0.10 sets the flag only in its V2 converter (which needs a
    newer TensorFlow), so the converter config class is wrapped for the duration of one conversion."""
    from litert_torch._convert import litert_converter

    api = litert_converter.converter_api_ext
    original = api.ConvertToTFLConfig
    if "strict_qdq_mode" not in dir(original()):
        raise UnsupportedConversion("float model I/O needs litert-torch's converter strict_qdq_mode (litert-torch 0.10)")

    def strict_config():  # -> ConvertToTFLConfig
        config = original()
        config.strict_qdq_mode = True
        return config

    api.ConvertToTFLConfig = strict_config
    try:
        yield
    finally:
        api.ConvertToTFLConfig = original


def write_quantized(graph, args, quantizer, out: Path, float_io: bool = False) -> Path:
    """Lower a ``convert_pt2e`` graph quantized by ``quantizer`` to a full-integer .tflite (int8 I/O; ``float_io``:
    float32 model inputs/outputs with int8 inside)."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    with strict_qdq_conversion() if float_io else contextlib.nullcontext():
        litert_torch.convert(graph, args, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))
    return out


# XNNPACK's x86 int8 convolution kernels read 8 input channels per kernel tap, so a dense convolution over fewer
# channels (an RGB or grey-scale stem) pays for 8: ResNet-18's 3-channel 7x7 stem ran 3.8x slower in int8 than in FP32
# (1 thread; docs/tflite-int8.md). Such convolutions stay in float when they are heavy enough to matter (at least
# NARROW_CONV_MIN_MACS multiply-adds); small ones stay int8 so small models remain full integer.
NARROW_CONV_CHANNELS = 8
NARROW_CONV_MIN_MACS = 1_000_000


def export_for_quantization(module, args, strict: bool = True):  # -> torch.fx.GraphModule
    """The ``torch.export`` graph PT2E annotates. Strict (TorchDynamo) export records ``source_fn_stack``, which
    litert-torch's add / mul / cat / pooling annotators match on; torch >= 2.9's default non-strict export does not, and
    every residual add then stays float between dequantize and quantize ops. Non-strict when Dynamo cannot trace.
    PyTorch's fused attention fast path (``aten._transformer_encoder_layer_fwd``, ``_native_multi_head_attention``)
    is switched off while exporting: litert-torch has no lowering for it."""
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        if strict:
            try:
                return torch.export.export(module, args, strict=True).module()
            except Exception:  # noqa: BLE001 - any Dynamo failure: the non-strict graph is correct, only less integer
                pass
        return torch.export.export(module, args).module()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def keep_narrow_convs_float(graph, input_qspec=None) -> list[str]:
    """Mark dense convolutions with fewer than ``NARROW_CONV_CHANNELS`` input channels and at least
    ``NARROW_CONV_MIN_MACS`` multiply-adds as already annotated (with no quantization), so the PT2E annotators leave
    them in float. ``input_qspec``: still quantize a model input such a convolution reads (for int8 model I/O).
    Returns their node names."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    kept = []
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.conv2d.default:
            continue
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
        weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
        output = node.meta.get("val")
        if groups != 1 or weight is None or output is None or weight.shape[1] >= NARROW_CONV_CHANNELS:
            continue
        if output.numel() * weight[0].numel() >= NARROW_CONV_MIN_MACS:
            source = node.args[0]
            quantize_source = input_qspec is not None and getattr(source, "op", None) == "placeholder"
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={source: input_qspec} if quantize_source else {}, _annotated=True)
            kept.append(node.name)
    return kept


def int8_interface(qdq_tflite: Path, out: Path) -> Path:
    """TFLite's ``modify_model_interface``: drop the QUANTIZE after each float input and the DEQUANTIZE before each
    float output of a strict-QDQ model, so its inputs and outputs are int8 (TFLiteConverter's inference_input_type)."""
    from ai_edge_litert import _pywrap_modify_model_interface
    from ai_edge_litert.schema_py_generated import TensorType

    status = _pywrap_modify_model_interface.modify_model_interface(str(qdq_tflite), str(out), TensorType.INT8,
                                                                    TensorType.INT8)
    if status != 0:
        raise UnsupportedConversion(f"TFLite modify_model_interface could not make the model I/O int8 (status {status})")
    return out


def calibrated_graph(source, calib, backend: str, exclude_modules: list[str] | None = None,
                     narrow_convs_float: bool = False, float_io: bool = False):  # -> (GraphModule, quantizer, ...)
    """The PT2E part of ``convert_int8``: strict export, quantizer choice (``ptq_quantizer``), optional float narrow
    convolutions, calibration on ``calib`` and ``convert_pt2e``. Returns ``(converted graph, quantizer, per_channel,
    float_reads_input, sample args)``; ``float_reads_input``: a float-kept convolution reads a model input. Run it
    inside ``quiet()`` and ``torch.no_grad()``."""
    from litert_torch.quantize.pt2e_quantizer_utils import get_input_act_qspec
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module, args = torch_module_or_refuse(source, backend)
    # integer inputs (token ids): the strict graph's add / mul annotators also match the integer mask arithmetic, and
    # with those ops left unannotated LiteRT aborted (SIGABRT) on the first inference of MiniLM-L6; the non-strict
    # graph (litert-torch's documented flow) converts and runs (docs/onnx-to-tflite.md)
    exported = export_for_quantization(module, args, strict=all(arg.is_floating_point() for arg in args))
    quantizer, per_channel = ptq_quantizer(exported, exclude_modules)
    kept = keep_narrow_convs_float(exported, None if float_io else get_input_act_qspec(quantizer.global_config)) \
        if narrow_convs_float else []
    float_reads_input = any(node.name in kept and node.args[0].op == "placeholder" for node in exported.graph.nodes)
    graph = prepare_pt2e(exported, quantizer)
    for feeds in calib:
        graph(*source.example_inputs(feeds))
    return convert_pt2e(graph, fold_quantize=False), quantizer, per_channel, float_reads_input, args


def convert_int8(source, calib, out: Path, backend: str, exclude_modules: list[str] | None = None,
                 narrow_convs_float: bool = False, float_io: bool = False) -> tuple[Path, bool]:
    """Full-integer PT2E quantization (symmetric weights, see ``ptq_quantizer``), calibrated on ``calib``; returns
    the artifact and whether weights are per-channel.

    ``exclude_modules``: module paths (``features.3``) left in float (``--max-drop`` accuracy control).
    ``narrow_convs_float``: heavy convolutions over fewer than 8 input channels stay float (``NARROW_CONV_CHANNELS``).
    ``float_io``: float32 model inputs and outputs (otherwise int8)."""
    import torch

    with quiet(), torch.no_grad(), lowering_errors(backend):
        graph, quantizer, per_channel, float_reads_input, args = calibrated_graph(
            source, calib, backend, exclude_modules, narrow_convs_float, float_io)
        if float_io or not float_reads_input:
            write_quantized(graph, args, quantizer, out, float_io=float_io)
        else:  # the default lowering would quantize a float conv between a dequantized input and a quantized output
            qdq = out.with_name(out.stem + ".qdq.tflite")
            try:
                int8_interface(write_quantized(graph, args, quantizer, qdq, float_io=True), out)
            finally:
                qdq.unlink(missing_ok=True)
    return out, per_channel


class RequantizedTflite(Backend):
    """An FP32 .tflite from litert-torch, re-quantized by ai-edge-quantizer (``requantize_kind``: fp16 | dynamic)."""

    runtime = "tflite"
    requires = ("litert_torch", "torch", "ai_edge_quantizer")
    pip_extra = "tflite"
    requantize_kind: str
    note: str

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        import tempfile

        if source.framework == "keras":  # TFLiteConverter's own fp16 / dynamic-range options
            from edgeq.runtimes.tflite import _tflite_keras

            main = _tflite_keras.convert(source, out_dir / "model.tflite", self.requantize_kind)
            return ExportedFiles(main=main, recipe=_tflite_keras.recipe(source, self.requantize_kind),
                                 notes=[_tflite_keras.NOTES[self.requantize_kind]])
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".tflite-pid{os.getpid()}-") as tmp:
            fp32 = convert_fp32(source, Path(tmp) / "fp32.tflite", self.name)
            main = requantize(fp32, out_dir / "model.tflite", self.requantize_kind)
        return ExportedFiles(main=main, recipe={"route": "litert-torch + ai-edge-quantizer", "layout": source.layout},
                             notes=[self.note])
