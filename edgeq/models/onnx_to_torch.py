"""ONNX → PyTorch, so that ONNX inputs reach the TFLite backends (litert-torch consumes PyTorch modules).

Route: ``onnx2fx`` (pure Python, needs only ``onnx`` + ``torch``; Apache-2.0) builds a ``torch.fx.GraphModule``
from the ONNX graph. Its handlers read shape-like operands (Reshape targets, Slice bounds, Shape→Gather→Concat
chains…) with ``.tolist()``, which ``torch.export`` cannot trace (data-dependent values). Because edgeq fixes every
input shape (batch 1, ``--input-shape``), those operands are static: :func:`specialize_static_values` runs the
graph once on example inputs and replaces each input-independent operand by its Python value wherever that gives
bit-identical results. The module is then checked with ``torch.export`` so failures surface here, as one line.
See docs/onnx-to-tflite.md for the routes that were evaluated and why this one.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from edgeq.errors import UnsupportedConversion, first_line

LITERAL_MAX_NUMEL = 64
"""Static tensors up to this many elements may be turned into Python literals (shapes, axes, pads, scalars)."""

_INPUT_INDEPENDENT_OPS = {"Shape", "Size"}
"""Ops whose output depends only on input *shapes*, which are fixed here."""

_CONTROL_FLOW_OPS = {"If", "Loop", "Scan"}

_NONDETERMINISTIC_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                         "Bernoulli", "Dropout"}


def gather_nd(data: Any, indices: Any, batch_dims: int = 0) -> Any:
    """ONNX GatherND (``batch_dims`` 0) as one flat index lookup. onnx2fx's own handler reads every index tuple as
    Python numbers (``data[tuple(idx)]`` per row: one ``aten.item`` per coordinate), which litert-torch cannot
    lower — MiniLM-L6's ONNX export builds its attention mask this way (docs/onnx-to-tflite.md)."""
    import torch

    if batch_dims:
        raise NotImplementedError("GatherND with batch_dims > 0")
    depth = indices.shape[-1]
    index = indices.long().reshape(-1, depth)
    sizes = torch.tensor(list(data.shape[:depth]), dtype=torch.long)
    index = torch.where(index < 0, index + sizes, index)  # ONNX allows negative indices
    strides = [1] * depth
    for axis in range(depth - 2, -1, -1):
        strides[axis] = strides[axis + 1] * int(data.shape[axis + 1])
    flat = (index * torch.tensor(strides, dtype=torch.long)).sum(-1)
    rows = data.reshape((-1, *data.shape[depth:]))
    return torch.index_select(rows, 0, flat).reshape((*indices.shape[:-1], *data.shape[depth:]))


def _gather_nd_handler(builder: Any, node: Any) -> Any:  # onnx2fx handler: (GraphBuilder, NodeProto) -> fx.Node
    batch_dims = next((attr.i for attr in node.attribute if attr.name == "batch_dims"), 0)
    return builder.call_function(gather_nd, args=(builder.get_value(node.input[0]), builder.get_value(node.input[1]),
                                                  batch_dims))


def _register_handlers() -> None:
    """edgeq's replacements for onnx2fx handlers that litert-torch cannot lower (re-registering replaces them)."""
    from onnx2fx import register_op

    register_op("GatherND", _gather_nd_handler)


def unsupported_op_types(model: Any) -> list[str]:
    """Op types (``domain::Op`` outside the default domain) in the top-level graph that onnx2fx cannot convert."""
    from onnx2fx import analyze_model

    result = analyze_model(model)
    return sorted({f"{domain}::{op}" if domain else op for op, domain, _ in result.unsupported_ops})


def onnx_to_torch(model: Any, example_inputs: tuple[Any, ...], name: str = "model") -> Any:
    """Convert an ``onnx.ModelProto`` with static input shapes into an exportable ``torch.nn.Module``.

    ``example_inputs`` are tensors in graph-input order (initializer inputs excluded). Raises
    :class:`UnsupportedConversion` naming the op type(s) that cannot be converted, or why tracing fails.
    """

    missing = unsupported_op_types(model)
    if missing:
        raise UnsupportedConversion(
            f"ONNX model {name} cannot be converted to PyTorch for TFLite: unsupported op type(s) {', '.join(missing)}"
        )
    _register_handlers()
    module, failure = _converted(model, example_inputs, name, fold_large=False)
    if failure is not None and "DataDependent" in type(failure).__name__ + str(failure):
        # a handler reads a static tensor computed in the graph with .item() (YOLOv8's float Range limits): fold
        # such tensors into constants and try again; keep the first error if that does not trace either
        module, second = _converted(model, example_inputs, name, fold_large=True)
        failure = None if second is None else failure
    if failure is not None:
        control = sorted({node.op_type for node in model.graph.node} & _CONTROL_FLOW_OPS)
        hint = f" (its {'/'.join(control)} control flow depends on input values)" if control else ""
        raise UnsupportedConversion(
            f"ONNX model {name} was converted to PyTorch but torch.export cannot trace it{hint}, which litert-torch "
            f"needs: {type(failure).__name__}: {first_line(failure)}"
        )
    return module


def _converted(model: Any, example_inputs: tuple[Any, ...], name: str, fold_large: bool) -> tuple[Any, Any]:
    """onnx2fx conversion, static specialization and frozen weights; returns ``(module, torch.export failure or
    None)``. Conversion failures raise UnsupportedConversion."""
    import onnx2fx
    import torch

    try:
        module = onnx2fx.convert(model)
    except onnx2fx.UnsupportedOpError as exc:  # ops inside If/Loop bodies are only seen here
        op = f"{exc.domain}::{exc.op_type}" if exc.domain else exc.op_type
        raise UnsupportedConversion(
            f"ONNX model {name} cannot be converted to PyTorch for TFLite: unsupported op type(s) {op}"
        ) from None
    except (onnx2fx.Onnx2FxError, ValueError, TypeError, RuntimeError) as exc:
        raise UnsupportedConversion(f"ONNX model {name} cannot be converted to PyTorch for TFLite: {first_line(exc)}") from None
    module.eval()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            specialize_static_values(module, example_inputs, fold_large=fold_large)
        weights_as_parameters(module)
    except Exception as exc:  # noqa: BLE001 - any failure of the eager run means the conversion is unusable
        raise UnsupportedConversion(
            f"ONNX model {name}: the converted PyTorch module fails on the example inputs ({type(exc).__name__}: "
            f"{first_line(exc)})"
        ) from None
    try:  # a failing GraphModule prints its whole generated code to stderr: keep that off the terminal
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            torch.export.export(module, tuple(example_inputs))
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; the message is what matters
        return module, exc
    return module, None


def specialize_static_values(module: Any, example_inputs: tuple[Any, ...], fold_large: bool = False) -> int:
    """Replace input-independent operands by Python literals where results stay identical; return how many.

    Runs the FX graph node by node on ``example_inputs``. A value is *static* when it comes from a constant, from
    ``Shape``/``Size`` (shapes are fixed) or only from static values. For every node that is not static, each
    static operand that is small (a shape, axes, a scalar) is tried as a Python literal and kept only if the node
    then returns exactly the same result. ``fold_large``: any other static operand computed in the graph (a ``Range``
    of anchor offsets, a shape-derived grid) is folded into a constant buffer, because ``torch.export`` would
    otherwise trace the handlers' ``.item()`` reads of it as data-dependent values (YOLOv8's ONNX export:
    ``GuardOnDataDependentSymNode: Could not guard on data-dependent expression zuf2 > 0.0``, from ``Range`` →
    ``torch.arange``; PP-OCR's classifier: a Reshape of a static SE offset read with ``.tolist()``). Not by default:
    a folded buffer's *values* are unknown to the tracer, while a scalar computed from shapes is a known constant.
    Dead static nodes are removed afterwards.
    """
    import torch
    from torch.fx.node import map_arg

    graph = module.graph
    env: dict[Any, Any] = {}
    static: set[Any] = set()
    feeds = iter(example_inputs)
    replaced = folded = 0
    with torch.no_grad():
        for node in list(graph.nodes):
            if node.op == "placeholder":
                env[node] = next(feeds)
                continue
            if node.op == "get_attr":
                env[node] = _fetch_attr(module, node.target)
                static.add(node)
                continue
            if node.op == "output":
                break
            call = _callable(module, node)
            args = map_arg(node.args, lambda n: env[n])
            kwargs = map_arg(node.kwargs, lambda n: env[n])
            value = call(*args, **kwargs)
            env[node] = value
            op_type = node.meta.get("onnx_op_type")
            if op_type not in _NONDETERMINISTIC_OPS and (
                op_type in _INPUT_INDEPENDENT_OPS or all(n in static for n in node.all_input_nodes)
            ):
                static.add(node)
                continue
            for operand in list(node.all_input_nodes):
                if operand not in static:
                    continue
                if not _literal_able(env[operand]):
                    folded += _fold_into_buffer(module, node, operand, env[operand]) if fold_large else 0
                    continue
                literal = _to_literal(env[operand])
                trial_args = map_arg(node.args, lambda n, op=operand, lit=literal: lit if n is op else env[n])
                trial_kwargs = map_arg(node.kwargs, lambda n, op=operand, lit=literal: lit if n is op else env[n])
                try:
                    trial = call(*trial_args, **trial_kwargs)
                except Exception:  # noqa: BLE001 - the handler needs a tensor here: keep the operand (or fold it)
                    folded += _fold_into_buffer(module, node, operand, env[operand]) if fold_large else 0
                    continue
                if _identical(trial, value):
                    node.args = map_arg(node.args, lambda n, op=operand, lit=literal: lit if n is op else n)
                    node.kwargs = map_arg(node.kwargs, lambda n, op=operand, lit=literal: lit if n is op else n)
                    replaced += 1
                elif fold_large:
                    folded += _fold_into_buffer(module, node, operand, env[operand])
    graph.eliminate_dead_code()
    _drop_unused_buffers(module)
    module.recompile()
    return replaced + folded


def _fold_into_buffer(module: Any, node: Any, operand: Any, value: Any) -> int:
    """Replace ``operand`` (a static value computed in the graph) in ``node`` by a constant buffer; 1 if done."""
    import torch

    if operand.op == "get_attr" or not isinstance(value, torch.Tensor):
        return 0
    name = f"_folded_{operand.name}"
    if not hasattr(module, name):
        module.register_buffer(name, value.detach().clone())
    with module.graph.inserting_before(node):
        constant = module.graph.get_attr(name)
    node.replace_input_with(operand, constant)
    return 1


def _callable(module: Any, node: Any):
    if node.op == "call_function":
        return node.target
    if node.op == "call_module":
        return module.get_submodule(node.target)
    if node.op == "call_method":
        return lambda self, *a, **k: getattr(self, node.target)(*a, **k)
    raise UnsupportedConversion(f"unexpected FX node kind {node.op!r} in the converted ONNX graph")


def _fetch_attr(module: Any, target: str) -> Any:
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _literal_able(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() <= LITERAL_MAX_NUMEL and value.dtype not in (torch.complex64, torch.complex128)
    return isinstance(value, (int, float, bool, list, tuple, torch.Size))


def _to_literal(value: Any) -> Any:
    import torch

    return value.tolist() if isinstance(value, torch.Tensor) else value


def _identical(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def weights_as_parameters(module: Any) -> int:
    """Turn the module's floating-point buffers (onnx2fx keeps every initializer as a buffer) into frozen
    parameters; return how many. torchao's ``prepare_pt2e`` folds BatchNorm into the preceding convolution by
    registering the folded weight as a *parameter* under the weight's name, which fails on a buffer of that name
    (``KeyError: "attribute 'conv2d_0_w_0' already exists"`` on every PaddlePaddle export, whose BatchNormalization
    nodes are not folded)."""
    import torch

    moved = 0
    for name, buffer in list(module.named_buffers(recurse=False)):
        if buffer.is_floating_point():
            delattr(module, name)
            module.register_parameter(name, torch.nn.Parameter(buffer, requires_grad=False))
            moved += 1
    return moved


def _drop_unused_buffers(module: Any) -> None:
    used = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    for buffer_name in [name for name, _ in module.named_buffers(recurse=False) if name not in used]:
        delattr(module, buffer_name)

