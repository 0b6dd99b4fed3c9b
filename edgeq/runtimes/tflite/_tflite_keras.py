"""TFLite (LiteRT) from TensorFlow / Keras sources: TensorFlow's own ``tf.lite.TFLiteConverter``.

The converter reads the source's static batch-1 SavedModel (``KerasSource.saved_model_dir``):
- fp32: plain conversion;
- fp16: ``Optimize.DEFAULT`` + ``supported_types=[tf.float16]`` (FP16 weights, dequantized at load/run time);
- dynamic: ``Optimize.DEFAULT`` alone (dynamic range: int8 weights, activations quantized at run time);
- int8: full integer — ``Optimize.DEFAULT`` + a representative dataset from the calibration set +
  ``TFLITE_BUILTINS_INT8`` only (an op without an int8 kernel fails instead of silently staying float);
  model I/O int8 (``inference_input_type/inference_output_type``) unless ``--tflite-io float``;
- w8a16 ("16x8"): the same with ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`` (int16 activations,
  int8 weights) and float model I/O.
The converter's int8 scheme: per-channel symmetric int8 weights, per-tensor asymmetric int8 activations.
Inputs keep the Keras layout (NHWC).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BackendError, UnsupportedConversion
from edgeq.models.keras_model import quiet_tf

ROUTE = "tf.lite.TFLiteConverter"
KINDS = ("fp32", "fp16", "dynamic", "int8", "w8a16")
NOTES = {
    "fp32": "FP32 baseline (tf.lite.TFLiteConverter)",
    "fp16": "FP16 weights (TFLiteConverter float16); computed in FP32 on CPUs without FP16 arithmetic",
    "dynamic": "dynamic-range: int8 weights, activations quantized at run time (TFLiteConverter)",
    "int8": "full integer: int8 weights and activations (TFLiteConverter, representative dataset)",
    "w8a16": "16x8: int8 weights, int16 activations, float I/O (TFLiteConverter, representative dataset)",
}


def _converter(source: Any) -> Any:
    import tensorflow as tf

    if source.framework != "keras":
        raise UnsupportedConversion(f"{ROUTE} route is for TensorFlow/Keras sources, not {source.framework}")
    return tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir()))


def _representative(source: Any, calib: Any) -> Any:
    """The converter's representative dataset: one list of float arrays (``inputs`` order) per calibration sample."""

    def samples() -> Iterator[list[np.ndarray]]:
        for feeds in calib:
            yield [np.asarray(feeds[spec.name], dtype=np.float32).reshape(spec.shape) for spec in source.inputs]

    return samples


def convert(source: Any, out: Path, kind: str, calib: Any = None, io: str = "int8") -> Path:
    """Write ``out`` (a .tflite) for ``kind`` in fp32 | fp16 | dynamic | int8 (``io`` int8 | float for int8)."""
    import tensorflow as tf

    if kind not in KINDS:
        raise BackendError(f"unknown TFLite conversion {kind!r}; one of {', '.join(KINDS)}")
    converter = _converter(source)
    if kind != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if kind == "w8a16":
        converter.representative_dataset = _representative(source, calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if kind == "int8":
        converter.representative_dataset = _representative(source, calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with quiet_tf():
            flatbuffer = converter.convert()
    except Exception as exc:  # noqa: BLE001 - converter errors are long; keep the meaningful line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "error:" in line), lines[0] if lines else type(exc).__name__)
        raise UnsupportedConversion(f"{ROUTE} failed for {source.name} ({kind}): {detail[:220]}") from None
    out.write_bytes(_outputs_in_source_order(bytes(flatbuffer), source.output_names))
    return out


def search_int8(source: Any, calib: Any, main: Path, io: str) -> dict[str, object] | None:
    """The onnx2tf route's INT8 recipe search (``edgeq/tools/tflite_recipe.py``) for Keras sources: when ``main``
    (TFLiteConverter's full-integer model) misses ``FIDELITY_TARGET`` worst-sample cosine on the first calibration
    samples, calibrate once, rank the op outputs by TFLite's QuantizationDebugger (median per-channel SQNR) and try
    the worst 1, 2, 4, 8 groups left float (selective quantization, ``mlir_quantize``); ``main`` is replaced by a
    candidate only when its worst output gains ``MIN_GAIN``. Each candidate is scored as an artifact in a runner
    child. Returns the search record for the recipe (None when the plain model reached the target)."""
    import itertools

    import tensorflow as tf

    from edgeq.runtimes._picking import ChildScorer
    from edgeq.tools import tflite_recipe

    scorer = ChildScorer(source, itertools.islice(iter(calib), tflite_recipe.SCORE_SAMPLES))
    plain = scorer(main)
    record: dict[str, object] = {
        "metric": f"worst-sample cosine per output vs the Keras model on {len(scorer.samples)} calibration samples",
        "target": tflite_recipe.FIDELITY_TARGET, "tried": [{"float_tensors": 0, "worst_cosine": round(plain[0], 5)}]}
    if plain[0] >= tflite_recipe.FIDELITY_TARGET:
        return None
    converter = _converter(source)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(source, calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    first = _representative(source, scorer.samples)
    with quiet_tf():
        calibrated = tflite_recipe.calibrate(converter)
        ranked = tflite_recipe.ranked_tensors(tf, np, calibrated, first)
    best: tuple[Path | None, tuple[float, float], list[str]] = (None, plain, [])
    for count in tflite_recipe.GROUP_STEPS:
        if count > len(ranked):
            break
        nodes = list(dict.fromkeys(n for group in ranked[:count] for n in [group["tensor"], *group["consumers"]]))
        candidate = main.with_name(f"candidate-{count}.tflite")
        with quiet_tf():
            flatbuffer = bytes(tflite_recipe.quantize(calibrated, io, nodes))
        candidate.write_bytes(_outputs_in_source_order(flatbuffer, source.output_names))
        try:
            score = scorer(candidate)
        except Exception as exc:  # noqa: BLE001 - a candidate the runtime cannot run is skipped
            record["tried"].append({"float_tensors": len(nodes), "error": str(exc)[:160]})
            candidate.unlink()
            continue
        record["tried"].append({"float_tensors": len(nodes), "worst_cosine": round(score[0], 5)})
        if score > best[1]:
            if best[0] is not None:
                best[0].unlink()
            best = (candidate, score, nodes)
        else:
            candidate.unlink()
        if score[0] >= tflite_recipe.FIDELITY_TARGET:
            break
    chosen, score, nodes = best
    if chosen is not None and score[0] >= plain[0] + tflite_recipe.MIN_GAIN:
        chosen.replace(main)
        record |= {"chosen_float_tensors": nodes, "chosen_worst_cosine": round(score[0], 5)}
    else:
        if chosen is not None:
            chosen.unlink()
        record |= {"chosen_float_tensors": [], "chosen_worst_cosine": round(plain[0], 5)}
    return record


def _outputs_in_source_order(flatbuffer: bytes, output_names: list[str]) -> bytes:
    """The converter orders a subgraph's outputs by tensor index, not as the model returns them (a two-head
    Keras model came out swapped); runtimes list outputs in that order. Reorder the subgraph's output list
    to the source's order, read from the serving signature (``output_<i>`` from ``model.export``, or the
    output names of a SavedModel signature). Tensors and the signature map are untouched."""
    if len(output_names) < 2:
        return flatbuffer
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    if len(model.subgraphs) != 1 or not model.signatureDefs or len(model.signatureDefs) != 1:
        return flatbuffer
    by_key = {(t.name.decode() if isinstance(t.name, bytes) else t.name): int(t.tensorIndex)
              for t in model.signatureDefs[0].outputs}
    wanted = [by_key.get(name, by_key.get(f"output_{i}")) for i, name in enumerate(output_names)]
    subgraph = model.subgraphs[0]
    if None in wanted or sorted(wanted) != sorted(int(i) for i in subgraph.outputs):
        return flatbuffer
    if wanted == [int(i) for i in subgraph.outputs]:
        return flatbuffer
    subgraph.outputs = wanted
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def recipe(source: Any, kind: str, io: str = "int8") -> dict[str, object]:
    """What the manifest records for a Keras-route TFLite artifact."""
    base: dict[str, object] = {"route": ROUTE, "layout": source.layout}
    if kind == "fp16":
        base["weights"] = "fp16"
    elif kind == "dynamic":
        base["weights"] = "int8 (dynamic range, activations quantized at run time)"
    elif kind == "int8":
        base |= {"weights": "int8 symmetric per-channel", "activations": "int8 asymmetric per-tensor",
                 "calibration": "minmax", "io": io, "ops": "TFLITE_BUILTINS_INT8"}
    elif kind == "w8a16":
        base |= {"weights": "int8 symmetric per-channel", "activations": "int16 symmetric per-tensor",
                 "calibration": "minmax", "io": "float", "ops": "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"}
    return base
