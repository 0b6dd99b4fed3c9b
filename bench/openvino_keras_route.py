"""Which route should Keras sources take into OpenVINO: ``convert_model(static SavedModel)`` or via ONNX (tf2onnx)?

Builds a Keras model (``--model mobilenetv2``: ``keras.applications.MobileNetV2(weights=None)`` at 224², seeded
random init, no download; ``--model digits``: the Keras digits twin with its trained weights), exports
``openvino-fp32`` and ``openvino-int8`` both ways (NNCF, the same calibration samples), then times all IRs with the
OpenVINO CPU plugin, interleaved: each round runs every IR ``--runs`` times (order rotating per round); the table
reports median ms over all rounds and the onnx/keras ratio of medians. Usage::

    .venv/bin/python bench/openvino_keras_route.py [--model mobilenetv2|digits] [--rounds 7] [--runs 50] [--threads 1 2]

Measured 2026-11-24 on the 2-core AVX2 EPYC VM while other jobs kept the load average at 8–12 (absolute ms are
noise, ratios are what counts). onnx/keras ratio of medians (> 1: the keras route is faster):

    model        run  rounds×runs  1 thr fp32  1 thr int8  2 thr fp32  2 thr int8
    mobilenetv2  1    5×30         1.004       1.058       1.061       1.151
    mobilenetv2  2    11×30        1.028       0.999       0.997       1.000
    digits       1    7×200        0.984       0.991       0.874       0.976

A tie within noise at run time (the keras route never clearly slower; its compiled graph is smaller: mobilenetv2 113
vs 116 runtime layers, 1 vs 2 Reorder; digits: one Reorder and one Reshape fewer, from tf2onnx's Squeeze before
the classifier's MatMul). The keras route (``convert_model`` on the static
SavedModel that TFLite also converts) is kept: no tf2onnx in the OpenVINO path and the fewer runtime layers.
Its conversion is slower than reading the ONNX (mobilenetv2 fp32 export 13–17 s vs 4–6 s, not counting tf2onnx).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROUTES = ("keras", "onnx")


def make_model(kind: str, work: Path) -> Path:
    import keras

    if kind == "digits":
        from edgeq.examples.digits_keras import save

        return save(work / "digits_keras.keras")
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    path = work / "mobilenetv2.keras"
    model.save(str(path))
    return path


def export_all(model_path: Path, calib_count: int, work: Path) -> tuple[dict[str, Path], dict[str, float], dict]:
    from unittest import mock

    from edgeq.models import load_model
    from edgeq.runtimes.openvino import _openvino
    from edgeq.runtimes.openvino.openvino_fp32 import OpenvinoFp32
    from edgeq.runtimes.openvino.openvino_int8 import OpenvinoInt8
    from edgeq.types import ExportOptions

    source = load_model(model_path)
    rng = np.random.default_rng(0)
    spec = source.inputs[0]
    calib = [{spec.name: rng.standard_normal(spec.shape).astype(np.float32)} for _ in range(calib_count)]
    source.onnx_path()  # tf2onnx once, outside the timed exports
    paths, seconds = {}, {}
    real = _openvino._convert_route
    for route in ROUTES:
        # force the route for this keras source (the backend code itself is unchanged)
        with mock.patch.object(_openvino, "_convert_route", lambda src, _r, route=route: real(src, route)):
            for backend in (OpenvinoFp32, OpenvinoInt8):
                out = work / f"{route}-{backend.precision}"
                out.mkdir()
                started = time.perf_counter()
                files = backend().export(source, calib, out, ExportOptions())
                seconds[f"{route}-{backend.precision}"] = time.perf_counter() - started
                paths[f"{route}-{backend.precision}"] = files.main
    return paths, seconds, calib[0]


def op_summary(path: Path) -> str:
    import openvino as ov

    from edgeq.targets.runner import openvino_config

    model = ov.Core().compile_model(str(path), "CPU", openvino_config(1, "f32")).get_runtime_model()
    counts = Counter(op.get_rt_info()["layerType"].astype(str) for op in model.get_ops())
    return f"{sum(counts.values())} runtime layers, {counts['Transpose']} Transpose, {counts['Reorder']} Reorder"


def time_interleaved(paths: dict[str, Path], feeds: dict, threads: int, rounds: int, runs: int) -> dict[str, float]:
    import openvino as ov

    core = ov.Core()
    from edgeq.targets.runner import openvino_config

    config = openvino_config(threads, "f32")  # pinned: the CPU plugin's default is bf16 on AVX512-BF16/AMX CPUs
    requests = {key: core.compile_model(str(path), "CPU", config).create_infer_request() for key, path in paths.items()}
    value = next(iter(feeds.values()))
    samples: dict[str, list[float]] = {key: [] for key in requests}
    for request in requests.values():
        for _ in range(10):
            request.infer([value])
    order = list(requests)
    for round_index in range(rounds):
        shift = round_index % len(order)
        for key in order[shift:] + order[:shift]:
            request = requests[key]
            for _ in range(runs):
                started = time.perf_counter()
                request.infer([value])
                samples[key].append((time.perf_counter() - started) * 1000)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mobilenetv2", "digits"], default="mobilenetv2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, seconds, feeds = export_all(make_model(args.model, work), args.calib, work)
        print(f"model {args.model}; export seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
        for key, path in paths.items():
            print(f"  {key:14s} {op_summary(path)}")
        print(f"\nmedian ms over {args.rounds} interleaved rounds × {args.runs} runs")
        print(f"{'threads':>7} {'precision':>9} {'keras':>9} {'onnx':>9} {'onnx/keras':>10}")
        for threads in args.threads:
            medians = time_interleaved(paths, feeds, threads, args.rounds, args.runs)
            for precision in ("fp32", "int8"):
                keras_ms, onnx_ms = medians[f"keras-{precision}"], medians[f"onnx-{precision}"]
                print(f"{threads:>7} {precision:>9} {keras_ms:9.3f} {onnx_ms:9.3f} {onnx_ms / keras_ms:10.3f}")


if __name__ == "__main__":
    main()
