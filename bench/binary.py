"""Binary weights and activations for real: Larq (training) + Larq Compute Engine (converter and runtime with binarized
kernels), on the digits data, against INT8 and FP32 twins of the same network run by the same LCE interpreter.

Larq needs Keras 2 (``tf-keras``) and LCE's interpreter was built against numpy 1.x, so both live in an isolated tool
environment under ``~/.cache/edgeq/larq`` that this script builds once from PyPI (nothing goes into the project venv):
- ``site/``: larq, tf-keras (matching the venv's TensorFlow), terminaltables, larq-compute-engine (``pip --target``,
  no deps) — imported by the venv's Python with ``TF_USE_LEGACY_KERAS=1`` for training and conversion;
- ``venv-run/``: numpy 1.26.4 + larq-compute-engine (only its interpreter is used) — runs the three .tflite files.
PyPI has larq-compute-engine wheels for x86-64 only (no aarch64 wheel): the emulated arm64 device cannot run it.

Run: ``.venv/bin/python bench/binary.py [--epochs N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = Path.home() / ".cache" / "edgeq" / "larq"
PINS = ["larq==0.14.0", "larq-compute-engine==0.16.0", "terminaltables==3.1.10"]
RUN_PINS = ["numpy==1.26.4", "flatbuffers", "tqdm", "larq-compute-engine==0.16.0"]

TRAIN = r'''
import json, sys
import numpy as np
import tensorflow as tf
import larq as lq
import larq_compute_engine as lce
sys.path.insert(0, sys.argv[1])
from edgeq.examples.digits import load_digits_split

out, epochs = sys.argv[2], int(sys.argv[3])
tf.keras.utils.set_random_seed(0)
(x, y), (xc, _), (xe, ye) = (load_digits_split(s) for s in ("train", "calib", "eval"))
x, xc, xe = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, xc, xe))


def network(binary):
    """DigitsCNN's shape in NHWC: conv 32 → conv 64 → maxpool → conv 128 → global pool → dense 10. Binary: weights
    of every conv ±1; activations ±1 into the 2nd and 3rd convs (the first conv reads the image, the head is float)."""
    def conv(filters, first=False):
        if not binary:
            return tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
        return lq.layers.QuantConv2D(filters, 3, padding="same", use_bias=False, kernel_quantizer="ste_sign",
                                     kernel_constraint="weight_clip", input_quantizer=None if first else "ste_sign")
    act = [] if binary else [tf.keras.layers.ReLU()]
    layers = [tf.keras.Input((8, 8, 1)), conv(32, True), tf.keras.layers.BatchNormalization(), *act,
              conv(64), tf.keras.layers.BatchNormalization(), *act, tf.keras.layers.MaxPool2D(2),
              conv(128), tf.keras.layers.BatchNormalization(), *act, tf.keras.layers.GlobalAveragePooling2D(),
              tf.keras.layers.Dense(10)]
    return tf.keras.Sequential(layers)


report = {}
for name, binary in (("binary", True), ("float", False)):
    model = network(binary)
    model.compile(tf.keras.optimizers.Adam(1e-2 if binary else 1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    report[f"{name}_keras_top1"] = float(model.evaluate(xe, ye, verbose=0)[1])
    if binary:
        open(f"{out}/binary.tflite", "wb").write(lce.convert_keras_model(model))
        continue
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    open(f"{out}/fp32.tflite", "wb").write(converter.convert())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([xc[i:i + 1]] for i in range(len(xc)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    open(f"{out}/int8.tflite", "wb").write(converter.convert())
np.savez(f"{out}/eval.npz", x=xe, y=ye)
json.dump(report, open(f"{out}/train.json", "w"))
'''

RUN = r'''
import importlib.util, json, sys, time, types
import numpy as np
spec = importlib.util.find_spec("larq_compute_engine")
package = types.ModuleType("larq_compute_engine")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["larq_compute_engine"] = package  # skip the package __init__: it imports the TF converter
from larq_compute_engine.tflite.python.interpreter import Interpreter

out, rounds = sys.argv[1], int(sys.argv[2])
data = np.load(f"{out}/eval.npz")
xe, ye = data["x"], data["y"]
names = ("fp32", "int8", "binary")
result = {}
for threads in (1, 2):
    sessions = {n: Interpreter(open(f"{out}/{n}.tflite", "rb").read(), num_threads=threads) for n in names}
    for name, it in sessions.items():
        scale, zero = (it.input_scales[0], it.input_zero_points[0]) if it.input_types[0] == np.int8 else (None, 0)
        def feed(a):
            return a if scale is None else np.clip(np.round(a / scale) + zero, -128, 127).astype(np.int8)
        out_scale = it.output_scales[0] if it.output_types[0] == np.int8 else None
        preds = np.concatenate([it.predict(feed(xe[i:i + 1])) for i in range(len(xe))])
        result.setdefault(name, {})["top1"] = float((preds.argmax(1) == ye).mean())
        result[name]["int_io"] = out_scale is not None
    per_round = {n: [] for n in names}  # interleaved: every artifact once per round, best of 3 runs
    for _ in range(rounds):
        for name, it in sessions.items():
            x0 = xe[:1] if it.input_types[0] != np.int8 else np.zeros((1, 8, 8, 1), np.int8)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                it.predict(x0)
                best = min(best, time.perf_counter() - start)
            per_round[name].append(best * 1e3)
    for name in names:
        result[name][f"p50_ms_{threads}t"] = float(np.median(per_round[name]))
        result[name][f"ratio_fp32_{threads}t"] = float(np.median(np.asarray(per_round[name]) / np.asarray(per_round["fp32"])))
print(json.dumps(result))
'''


def ensure_env() -> tuple[Path, Path]:
    """Build the isolated Larq / LCE tool environment once; returns (site dir, runner python)."""
    import tensorflow as tf

    site, venv = ENV / "site", ENV / "venv-run"
    if not (site / "larq").exists() or not (site / "tf_keras").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), *PINS,
                        f"tf-keras=={tf.__version__}"], check=True)
    python = venv / "bin" / "python"
    if not python.exists():
        base = Path(getattr(sys, "_base_executable", sys.executable))
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *RUN_PINS], check=True)
    return site, python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    site, runner = ensure_env()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(site), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        (Path(tmp) / "train.py").write_text(TRAIN)
        (Path(tmp) / "run.py").write_text(RUN)
        subprocess.run([sys.executable, f"{tmp}/train.py", str(REPO), tmp, str(args.epochs)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        trained = json.loads((Path(tmp) / "train.json").read_text())
        sizes = {n: (Path(tmp) / f"{n}.tflite").stat().st_size for n in ("fp32", "int8", "binary")}
        ops = subprocess.run([sys.executable, "-c", "import sys; from ai_edge_litert.interpreter import Interpreter as I;"
                              "print(sorted({o['op_name'] for o in I(sys.argv[1])._get_ops_details()}))",
                              f"{tmp}/binary.tflite"], capture_output=True, text=True).stdout.strip()
        measured = json.loads(subprocess.run([str(runner), f"{tmp}/run.py", tmp, str(args.rounds)], check=True,
                                             capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(f"Larq {PINS[0].split('==')[1]} + LCE {PINS[1].split('==')[1]} · digits eval (300) · same LCE interpreter "
          f"for all three · {args.epochs} epochs · Keras top-1 binary {trained['binary_keras_top1']:.4f}, float "
          f"{trained['float_keras_top1']:.4f}")
    print(f"binary .tflite ops: {ops}")
    print("| artifact | top-1 | size bytes | size / FP32 | p50 ms 1t | lat/FP32 1t | p50 ms 2t | lat/FP32 2t |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("fp32", "int8", "binary"):
        m = measured[name]
        print(f"| {name} | {m['top1']:.4f} | {sizes[name]} | {sizes[name] / sizes['fp32']:.3f} | {m['p50_ms_1t']:.4f} | "
              f"{m['ratio_fp32_1t']:.2f} | {m['p50_ms_2t']:.4f} | {m['ratio_fp32_2t']:.2f} |")


if __name__ == "__main__":
    main()
