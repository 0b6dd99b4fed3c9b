"""Shared OpenVINO helpers for the openvino-* backends: source → ``ov.Model`` with static shapes, IR saving,
graph inspection (transformer-like or not) and keeping NNCF quiet.

Route for PyTorch sources — measured with ``bench/openvino_route.py`` (ResNet-18 shape from bench/models.py,
224², seeded random init, openvino-int8 via NNCF with 32 samples, OpenVINO 2026.4 CPU plugin, median of 9
interleaved rounds × 60 runs (run 1: 7 × 100); 2026-11-22 on this 2-core AMD EPYC VM, which has AVX2 but *no*
AVX512/VNNI, while other jobs loaded it to a load average of 2–7, so absolute times are noisy).
onnx/torch ratio of medians:

    run   1 thread (torch ms / onnx ms)   2 threads (torch ms / onnx ms)
    1     23.94 / 23.90   0.998           28.66 / 26.47   0.924
    2     51.98 / 50.30   0.968           83.60 / 87.68   1.049
    3     33.95 / 31.79   0.936           35.54 / 31.96   0.899
    4     47.98 / 47.13   0.982           66.99 / 64.00   0.955

A tie, by construction: after compilation both IRs give the *identical* CPU runtime graph (same 55 layers,
types, precisions and shapes, bit-identical outputs; the torch IR only carries 3 extra shape ops that constant
folding removes), so the spread (ONNX lower in 6 of 8 cells, by 0.2–10 %, torch lower in one by 5 %) is
machine noise. Tie → the simpler route, which is ONNX: one conversion path for PyTorch and ONNX sources,
it reuses the FP32 ONNX that ``source.onnx_path()`` caches for the onnx-* backends, keeps the output names,
and avoids ``convert_model(module)``'s TorchScript tracing, which torch 2.13 deprecates (``torch.jit.trace``
DeprecationWarning). ``-O openvino-*.route=torch`` (``OpenvinoRouteConfig``) forces the direct route;
without it, a failing default route falls back to the other one with a note.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeq.errors import BackendError, ModelError, UnsupportedConversion, first_line
from edgeq.runtimes.attention import AttentionEvidence

ROUTES = ("torch", "onnx")
DEFAULT_TORCH_ROUTE = "onnx"

WEIGHT_LIKE_TYPES = {"Constant", "Convert", "FakeQuantize", "FakeConvert", "Reshape", "Transpose", "Multiply",
                     "Subtract", "Unsqueeze", "Squeeze"}
"""Ops that may sit between a weight constant and a MatMul (decompression, layout changes)."""


def torch_route(options: Any, backend: Any) -> str | None:
    """The route a PyTorch source must take if ``backend``'s ``route`` option says so; None = default."""
    return backend.config_of(options).route


def convert_source(source: Any, route: str | None = None, notes: list[str] | None = None) -> tuple[Any, str]:
    """The source as an ``ov.Model`` with static batch-1 input shapes, the source's input/output names and
    layout; returns ``(model, route_used)``. ``route`` ("torch" | "onnx") applies to PyTorch sources only;
    None takes the default route and falls back to the other one (with a note) if it fails."""
    framework = source.framework
    if framework == "torch":
        chosen = route or DEFAULT_TORCH_ROUTE
        try:
            return _convert_route(source, chosen), chosen
        except (BackendError, ModelError) as exc:
            if route is not None:  # asked for explicitly: no fallback
                raise
            other = "torch" if chosen == "onnx" else "onnx"
            model = _convert_route(source, other)
            if notes is not None:
                notes.append(f"{chosen} route failed ({exc}); converted via the {other} route instead")
            return model, other
    if framework in ("onnx", "keras"):
        return _convert_route(source, framework), framework
    raise UnsupportedConversion(f"OpenVINO backends do not support {framework} models")


def _convert_route(source: Any, route: str) -> Any:
    """One conversion: "torch" (``convert_model`` on the eager module, TorchScript tracing with the example
    inputs), "onnx" (``source.onnx_path()``) or "keras" (``convert_model`` on the source's SavedModel)."""
    import openvino as ov

    if route == "torch":
        import torch

        module = source.torch_module()
        examples = tuple(torch.zeros(s.shape, dtype=getattr(torch, s.dtype)) for s in source.inputs)
        with torch.no_grad():
            model = _convert(lambda: ov.convert_model(module, example_input=examples), source.name, route)
    elif route == "keras":  # faster INT8 than via tf2onnx: bench/openvino_keras_route.py
        from edgeq.models.keras_model import quiet_tf

        saved_model = str(source.saved_model_dir())  # static batch-1, the one TFLite converts too
        with quiet_tf():
            model = _convert(lambda: ov.convert_model(saved_model), source.name, route)
    else:
        onnx_file = source.onnx_path()
        model = _convert(lambda: ov.convert_model(str(onnx_file)), source.name, route)
    _fix_inputs(model, source)
    _name_outputs(model, source.output_names)
    return model


def _convert(call: Any, name: str, route: str) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - converter errors are long; keep the first line
        raise BackendError(f"OpenVINO could not convert {name} ({route} route): {first_line(exc, 200)}") from None


def _fix_inputs(model: Any, source: Any) -> None:
    """Give every input the source's name and its concrete shape (matched by name, else by position)."""
    import openvino as ov

    specs = list(source.inputs)
    ports = list(model.inputs)
    if len(ports) != len(specs):
        raise BackendError(f"OpenVINO sees {len(ports)} inputs in {source.name}, the source declares {len(specs)}")
    by_name = {spec.name: spec for spec in specs}
    if all(by_name.keys() & port.get_names() for port in ports):
        ordered = [by_name[sorted(by_name.keys() & port.get_names())[0]] for port in ports]
    else:
        ordered = specs
    shapes: dict[Any, ov.PartialShape] = {}
    for port, spec in zip(ports, ordered):
        port.get_tensor().set_names({spec.name})
        shapes[port] = ov.PartialShape(list(spec.shape))
    if any(port.get_partial_shape() != shape for port, shape in shapes.items()):
        try:
            model.reshape(shapes)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"OpenVINO cannot fix the input shapes of {source.name}: {first_line(exc, 200)}") from None


def _name_outputs(model: Any, names: list[str]) -> None:
    """Outputs carry the source's output names (the torch route leaves them unnamed; the keras route's SavedModel
    names them ``output_0`` …; a single name, so that ``get_any_name`` reports it)."""
    outputs = list(model.outputs)
    if len(outputs) != len(names):
        return
    for port, name in zip(outputs, names):
        if port.get_names() != {name}:
            port.get_tensor().set_names({name})


def save_ir(model: Any, out_dir: Path, compress_to_fp16: bool, precision: str = "fp32") -> Path:
    """Write ``model.xml`` + ``model.bin`` into ``out_dir`` (the pipeline's private build directory).

    The IR records the compute precision its backend name promises (rt_info ``edgeq/inference_precision``:
    f32 for fp32 and int8, f16, bf16); the runner pins OpenVINO's ``INFERENCE_PRECISION_HINT`` to it."""
    import openvino as ov

    from edgeq.targets.runner import OV_PRECISION_RT_KEY, compute_precision

    out_dir.mkdir(parents=True, exist_ok=True)
    main = out_dir / "model.xml"
    model.set_rt_info(compute_precision(precision), OV_PRECISION_RT_KEY)
    ov.save_model(model, str(main), compress_to_fp16=compress_to_fp16)
    return main


def op_counts(model: Any) -> Counter[str]:
    """How many ops of each type the model holds (``Convolution``, ``MatMul``, ``FakeQuantize`` …)."""
    return Counter(op.get_type_name() for op in model.get_ops())


def _from_weights(node: Any, depth: int = 0) -> bool:
    """True when ``node`` is a constant or only transforms constants (decompression, transposes)."""
    kind = node.get_type_name()
    if kind == "Constant":
        return True
    if kind not in WEIGHT_LIKE_TYPES or depth > 6:
        return False
    return all(_from_weights(value.get_node(), depth + 1) for value in node.input_values())


def activation_matmuls(model: Any) -> int:
    """MatMuls whose two operands are both activations (Q·Kᵀ and attention·V in attention blocks)."""
    count = 0
    for op in model.get_ops():
        if op.get_type_name() == "MatMul" and not any(_from_weights(v.get_node()) for v in op.input_values()):
            count += 1
    return count


def graph_kind(model: Any) -> tuple[str, dict[str, int]]:
    """``("transformer", evidence)`` for attention graphs (SDPA op, or Softmax fed by activation×activation
    MatMuls), ``("cnn", evidence)`` otherwise. Evidence is the op counts the decision used."""
    counts = op_counts(model)
    evidence = {"Convolution": counts["Convolution"] + counts["GroupConvolution"], "MatMul": counts["MatMul"],
                "Softmax": counts["Softmax"] + counts["SoftMax"], "activation_MatMul": activation_matmuls(model),
                "ScaledDotProductAttention": counts["ScaledDotProductAttention"]}
    attention = AttentionEvidence(evidence["ScaledDotProductAttention"], evidence["Softmax"],
                                  evidence["activation_MatMul"]).attention
    return ("transformer" if attention else "cnn"), evidence


@contextlib.contextmanager
def quiet_nncf(warnings: list[str]) -> Iterator[None]:
    """NNCF at WARNING level with its warnings collected into ``warnings`` (not printed) and its rich progress
    bars (written to ``sys.stdout``) swallowed, for the duration of the block."""
    import nncf
    from nncf.common.logging import nncf_logger

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = record.getMessage().strip().splitlines()
            if line and line[0] not in warnings:
                warnings.append(line[0][:200])

    nncf.set_log_level(logging.WARNING)
    saved = [(h, h.level) for h in nncf_logger.handlers]
    for handler, _ in saved:
        handler.setLevel(logging.CRITICAL + 1)
    collector = _Collect(logging.WARNING)
    nncf_logger.addHandler(collector)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.removeHandler(collector)
        for handler, level in saved:
            handler.setLevel(level)
