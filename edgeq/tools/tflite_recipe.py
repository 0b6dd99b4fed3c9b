"""The INT8 recipe of the onnx2tf route, picked per model by fidelity on the user's own calibration samples.

Runs inside the onnx2tf tool environment (imported by ``onnx2tf_convert.py`` as a sibling module): it must not import
edgeq, only TensorFlow 2.19 and numpy 1.26 (imported inside the functions, so edgeq can import this file too).

TFLiteConverter calibrates once (``_experimental_calibrate_only``: the float model with min/max statistics per tensor);
every candidate is quantized from that one calibration with ``mlir_quantize`` (seconds), so trying candidates costs
no new calibration pass. Candidates, in order: full integer; then the op outputs with the worst median per-channel SQNR
(TFLite's QuantizationDebugger, ``ranked_tensors``) and the ops that carry their range left float,
1, 2, 4, 8 groups. Each is scored by the worst-sample cosine of every output vs ONNX Runtime FP32 on the calibration
samples; the first that reaches ``FIDELITY_TARGET`` wins, else the best one, and a float group is only kept when it
gains at least ``MIN_GAIN`` over the full-integer model (float ops cost latency).
"""

from __future__ import annotations

FIDELITY_TARGET = 0.99
"""Worst-sample cosine per output on the calibration samples that the full-integer model must reach to be kept as it
is (the zoo's acceptance bar, docs/zoo.md)."""
MIN_GAIN = 0.002
"""A candidate with float ops replaces the full-integer model only when its worst output is this much better."""
GROUP_STEPS = (1, 2, 4, 8)
"""How many of the worst-ranked groups each candidate leaves float."""
SCORE_SAMPLES = 16
"""Calibration samples the candidates are scored and ranked on (the first ones)."""
DENSE_FLOOR = 0.05
"""Samples whose reference output norm is below this fraction of the largest count only through the pooled cosine."""


def calibrate(converter) -> bytes:
    """The calibrated float model (min/max statistics on every tensor) of a TFLiteConverter set up for INT8."""
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the documented debugger path does the same
    return converter.convert()


def quantize(calibrated: bytes, io: str, float_nodes: list[str] | None = None) -> bytes:
    """Full-integer INT8 from a calibrated model (per-channel weights), int8 or float32 model I/O; ``float_nodes``
    (op output tensor names) and so their ops stay float (selective quantization)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    dtype = tf.int8 if io == "int8" else tf.float32
    return convert.mlir_quantize(calibrated, input_data_type=dtype, output_data_type=dtype,
                                 denylisted_nodes=list(float_nodes) if float_nodes else None)


def _trailing_number(name: str) -> int:
    digits = ""
    for char in reversed(name):
        if not char.isdigit():
            break
        digits = char + digits
    return int(digits) if digits else 0


def run_tflite(np, flatbuffer: bytes, feeds_list: list[list]) -> list[list]:
    """Outputs (float) of a TFLite model for each sample (a list of input arrays in input order), in the order of the
    converted function's outputs (``Identity``, ``Identity_1`` …: TFLite may list them in another order); int8
    inputs and outputs are (de)quantized with their own parameters."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    details_in = interpreter.get_input_details()
    details_out = sorted(interpreter.get_output_details(), key=lambda d: _trailing_number(d["name"].split(":")[0]))
    results = []
    for values in feeds_list:
        for detail, value in zip(details_in, values):
            scale, zero = detail["quantization"]
            value = np.asarray(value)
            if np.issubdtype(detail["dtype"], np.integer) and scale and np.issubdtype(value.dtype, np.floating):
                info = np.iinfo(detail["dtype"])
                value = np.clip(np.round(value / scale + zero), info.min, info.max)
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]).reshape(detail["shape"]))
        interpreter.invoke()
        row = []
        for detail in details_out:
            value = np.asarray(interpreter.get_tensor(detail["index"]))
            scale, zero = detail["quantization"]
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float64) - zero) * scale
            row.append(value.astype(np.float64))
        results.append(row)
    return results


def worst_cosine(np, references: list[list], outputs: list[list]) -> list[float]:
    """Per output, the worst-sample cosine of ``outputs`` vs ``references`` (both per sample, outputs in ONNX order),
    and no better than the cosine pooled over all samples."""
    def cosine(a, b) -> float:
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        return float(a @ b / norm) if norm else float(not a.any() and not b.any())

    worst = []
    for index in range(len(references[0])):
        pairs = [(np.asarray(ref[index], np.float64).ravel(), np.asarray(out[index], np.float64).ravel())
                 for ref, out in zip(references, outputs)]
        norms = [np.linalg.norm(a) for a, _ in pairs]
        # a sample whose reference is ~0 (a text detector's map of a photo without text) has a meaningless cosine:
        # such samples count through the pooled cosine only (docs/zoo.md, "Metric")
        kept = [cosine(a, b) for (a, b), norm in zip(pairs, norms) if norm >= DENSE_FLOOR * max(norms)]
        pooled = cosine(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))
        worst.append(min([*kept, pooled]))
    return worst


def pick(np, calibrated: bytes, io: str, rank, samples: list[list], references: list[list],
         log, base: list[str] | None = None) -> tuple[bytes, dict]:
    """The candidate to keep and the record of the search (``recipe_search`` in the route's report). ``rank()``: the
    ranked groups (``{"tensor", "consumers"}``, worst first), computed only when the full-integer model misses the
    target. ``base``: op outputs every candidate keeps float (mixed-range outputs)."""
    tried: list[dict] = []

    def score(float_nodes: list[str]) -> tuple[bytes, float]:
        float_nodes = list(dict.fromkeys([*(base or []), *float_nodes]))
        flatbuffer = quantize(calibrated, io, float_nodes)
        worst = worst_cosine(np, references, run_tflite(np, flatbuffer, samples))
        tried.append({"float_groups": len(tried), "float_tensors": len(float_nodes),
                      "worst_cosine": [round(w, 5) for w in worst]})
        log(f"recipe candidate with {len(float_nodes)} float tensor(s): worst cosine per output "
            f"{[round(w, 4) for w in worst]}")
        return flatbuffer, min(worst)

    plain, plain_score = score([])
    best = (plain, plain_score, [])
    if plain_score < FIDELITY_TARGET:
        ranked = rank()
        for count in GROUP_STEPS:
            if count > len(ranked):
                break
            nodes = list(dict.fromkeys(n for group in ranked[:count] for n in [group["tensor"], *group["consumers"]]))
            flatbuffer, value = score(nodes)
            tried[-1]["float_groups"] = count
            if value > best[1]:
                best = (flatbuffer, value, nodes)
            if value >= FIDELITY_TARGET:
                break
    if best[2] and best[1] < plain_score + MIN_GAIN:
        best = (plain, plain_score, [])
    record = {"metric": f"worst-sample cosine per output vs ONNX Runtime FP32 on {len(samples)} calibration samples",
              "target": FIDELITY_TARGET, "tried": tried, "chosen_float_tensors": list(dict.fromkeys([*(base or []), *best[2]])),
              "chosen_worst_cosine": round(best[1], 5)}
    return best[0], record


def channel_sqnr(pre, post) -> float:
    """Median over channels (last axis: TFLite is channel-last) of the SQNR in dB of ``post`` vs ``pre``."""
    import numpy as np

    pre, post = np.asarray(pre, np.float64), np.asarray(post, np.float64)
    pre, post = pre.reshape(-1, pre.shape[-1] if pre.ndim else 1), post.reshape(-1, post.shape[-1] if post.ndim else 1)
    signal, noise = (pre ** 2).sum(0), ((pre - post) ** 2).sum(0)
    live = signal > 0
    if not live.any():
        return float("inf")
    return float(np.median(10 * np.log10(signal[live] / np.maximum(noise[live], 1e-30))))


def dequantized(np, values, scale: float, zero_point: int):
    """An op's quantized output as float (a float tensor as it is: some ops of the debug model run float)."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating) or not scale:
        return values.astype(np.float64)
    return (values.astype(np.float64) - zero_point) * scale


CHANNEL_MIXING_OPS = {"FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}
"""Ops that mix channels: an outlier channel's range stops at their output, so float fallback stops there."""


def consumers(ops: list[dict], names: dict[int, str], tensor: int | None, depth: int = 8) -> list[str]:
    """Output tensors of the ops that read ``tensor``, followed through ops that keep channels apart (elementwise,
    reshape, pooling …) up to and including the first channel-mixing op: keeping one activation float means every
    op that carries its range until then runs float too."""
    found: list[str] = []
    frontier = [tensor] if tensor is not None else []
    for _ in range(depth):
        following = []
        for op in ops:
            if not any(index in list(op["inputs"]) for index in frontier):
                continue
            for out in op["outputs"]:
                if out in names and names[out] not in found:
                    found.append(names[out])
                    if op["op_name"] not in CHANNEL_MIXING_OPS:
                        following.append(out)
        if not following:
            break
        frontier = following
    return found


def ranked_tensors(tf, np, calibrated: bytes, representative) -> list[dict]:
    """Per-op quantization error of the INT8 model, worst first: TFLite's QuantizationDebugger runs each quantized op
    beside its float version on the same (quantized) inputs; the error is the median per-channel SQNR of the op's
    output. Each entry names the op's output tensor and the output tensors of the ops that read it (to leave a
    tensor float, its producer and consumers both run float)."""
    import csv
    import io

    from tensorflow.lite.python import convert as tflite_convert

    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=tflite_convert.mlir_quantize(calibrated, enable_numeric_verify=True),
        debug_dataset=representative,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"sqnr": lambda f, q, s, z: channel_sqnr(f, dequantized(np, q, s, z))}))
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = [row for row in csv.DictReader(io.StringIO(dump.getvalue())) if row.get("sqnr")]
    # the op graph of the plain quantized model; its tensor names are the statistics' names, except where the
    # converter added a suffix digit to keep names unique (a float I/O model's last op output 'PartitionedCall:01')
    interpreter = tf.lite.Interpreter(model_content=tflite_convert.mlir_quantize(calibrated))
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - inputs / outputs per op
    known = {row["tensor_name"] for row in rows}

    def stat_name(name: str) -> str:
        return name if name in known or name[:-1] not in known else name[:-1]

    by_name = {stat_name(name): index for index, name in names.items()}
    ranked = []
    for row in rows:
        readers = [stat_name(n) for n in consumers(ops, names, by_name.get(row["tensor_name"]))]
        ranked.append({"tensor": row["tensor_name"], "op": row["op_name"], "sqnr_db": float(row["sqnr"]),
                       "consumers": [n for n in dict.fromkeys(readers) if n in known]})
    return sorted(ranked, key=lambda r: r["sqnr_db"])
