"""The INT8 recipe of the onnx2tf route, picked per model by fidelity on the user's own calibration samples.

Runs inside the onnx2tf tool environment (imported by ``onnx2tf_convert.py`` as a sibling module): it must not import
edgeq, only TensorFlow 2.19 and numpy 1.26 (imported inside the functions, so edgeq can import this file too).

TFLiteConverter calibrates once (``_experimental_calibrate_only``: the float model with min/max statistics per tensor);
every candidate is quantized from that one calibration with ``mlir_quantize`` (seconds), so trying candidates costs
no new calibration pass. Candidates, in order: full integer; then the op outputs with the worst median per-channel SQNR
(TFLite's QuantizationDebugger, ``_ranked_tensors`` of the convert script) and the ops that carry their range left float,
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
