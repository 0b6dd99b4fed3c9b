"""edgeq's INT8 recipes vs the upstream tools' plain defaults (ORT quantize_static, NNCF quantize), side by side.

Run: ``.venv/bin/python bench/peers.py [--models digits,resnet18,mobilenetv2,bertmini] [--rounds N] [--quick]``.
Both sides start from the FP32 ONNX that edgeq exports and get the same seeded N(0,1) calibration samples (32) and
the same 32 held-out inputs for fidelity (cosine vs FP32). Latency ratios are edgeq/peer, median of paired ratios
from ``interleaved_latency`` (one session, interleaved). Writes ``bench/results/peers.json``.
LiteRT peer: not implemented yet (reported as not measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgeq  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402

MODELS = {
    "digits": (f"{REPO}/edgeq/examples/digits.py:DigitsCNN", f"{REPO}/edgeq/examples/digits_cnn.safetensors"),
    "resnet18": (f"{REPO}/bench/models.py:ResNet18", None),
    "mobilenetv2": (f"{REPO}/bench/models.py:MobileNetV2", None),
    "bertmini": (f"{REPO}/bench/models.py:BertMini", None),
}
N_CALIB, N_HOLD = 32, 32


def input_shape(spec: str) -> tuple[int, ...]:
    """The ``input_shape`` class attribute of a ``file.py:Class`` model spec."""
    import importlib.util

    file, cls = spec.split(":")
    mod_spec = importlib.util.spec_from_file_location(Path(file).stem + "_peers", file)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return tuple(getattr(module, cls).input_shape)


def run_model(path: Path, inputs: np.ndarray) -> list[np.ndarray]:
    """First output for each input, via ORT (.onnx) or OpenVINO (.xml)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return [sess.run(None, {name: x[None]})[0].ravel() for x in inputs]
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    return [np.asarray(compiled([x[None]])[0]).ravel() for x in inputs]


def cosines(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    vals = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) for a, b in zip(ref, got)]
    return min(vals), float(np.mean(vals))


def peer_ort(fp32: Path, out: Path, samples: np.ndarray) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: x[None]} for x in samples])

        def get_next(self):  # noqa: ANN201
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader())


def peer_nncf(fp32: Path, out: Path, samples: np.ndarray) -> None:
    import nncf
    import openvino as ov

    quantized = nncf.quantize(ov.convert_model(str(fp32)), nncf.Dataset([x[None] for x in samples]))
    ov.save_model(quantized, str(out))


PAIRS = {"onnx-qdq": (peer_ort, "peer_ort.onnx"), "openvino-int8": (peer_nncf, "peer_nncf.xml")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="digits,resnet18,mobilenetv2,bertmini")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    names = ["digits", "resnet18"] if args.quick else args.models.split(",")
    rounds = 6 if args.quick else args.rounds
    console, rows = Console(), []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in names:
            spec, weights = MODELS[name]
            rng = np.random.default_rng(0)
            shape = input_shape(spec)[1:]
            calib = rng.standard_normal((N_CALIB, *shape)).astype(np.float32)
            hold = rng.standard_normal((N_HOLD, *shape)).astype(np.float32)
            calib_file = tmp / f"{name}_calib.npy"
            np.save(calib_file, calib)
            manifest = edgeq.export(spec, str(calib_file), backends=["onnx-fp32", *PAIRS], out=tmp / "out",
                                    weights=weights, calib_samples=N_CALIB, holdout_samples=8)
            model_dir = tmp / "out" / manifest.model.name
            fp32 = model_dir / manifest.artifact("onnx-fp32").path
            ref = run_model(fp32, hold)
            for backend, (peer_fn, peer_name) in PAIRS.items():
                art = manifest.artifact(backend)
                ours = model_dir / art.path
                peer = tmp / f"{name}_{peer_name}"
                start = time.perf_counter()
                peer_fn(fp32, peer, calib)
                peer_s = time.perf_counter() - start
                peer_size = sum(p.stat().st_size for p in tmp.glob(f"{name}_{Path(peer_name).stem}*"))
                lat = {t: interleaved_latency({"edgeq": ours, "peer": peer}, threads=t, rounds=rounds)
                       for t in (1, 2)}
                row = {"model": name, "backend": backend,
                       "lat_ratio_1t": 1 / lat[1]["peer"]["ratio_to_first"],
                       "lat_ratio_2t": 1 / lat[2]["peer"]["ratio_to_first"],
                       "p50_ms_2t": {k: v["p50_ms"] for k, v in lat[2].items()},
                       "cos_edgeq": cosines(ref, run_model(ours, hold)),
                       "cos_peer": cosines(ref, run_model(peer, hold)),
                       "export_s": [art.export_seconds, peer_s], "size_ratio": art.size_bytes / peer_size}
                rows.append(row)
                console.print(row)
    table = Table(title="edgeq INT8 vs upstream defaults (ratios edgeq/peer; interleaved, one run)")
    for col in ("model", "backend", "lat 1t", "lat 2t", "cos min/mean edgeq", "cos min/mean peer",
                "export s edgeq/peer", "size ratio"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["backend"], f"{r['lat_ratio_1t']:.3f}", f"{r['lat_ratio_2t']:.3f}",
                      "{:.4f}/{:.4f}".format(*r["cos_edgeq"]), "{:.4f}/{:.4f}".format(*r["cos_peer"]),
                      "{:.1f}/{:.1f}".format(*r["export_s"]), f"{r['size_ratio']:.3f}")
    console.print(table)
    out = REPO / "bench/results/peers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(rows, indent=2))
    tmp_out.replace(out)


if __name__ == "__main__":
    main()
