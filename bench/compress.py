"""Pruned vs unpruned digits CNN after INT8 quantization: ONNX Runtime QDQ (per-channel) latency, interleaved.

Run: ``.venv/bin/python bench/compress.py [--compressed DIR]`` (about a minute; without ``--compressed`` it
first runs ``recipes/digits-prune.yaml``). Both models go through ``edgeq.export`` (backends onnx-fp32 and
onnx-qdq: ORT ``quantize_static``, QDQ, per-channel weights, calibrated on the digits calib split); the compressed
one is given to ``edgeq export`` as the generated ``DIR/model.py:CompressedModel`` + ``DIR/model.safetensors``.
Latency: ``edgeq.measure.interleaved_latency`` (both sessions in one process, rounds interleaved, ratio of
medians of per-round ratios) at 1 and 2 threads. Top-1 of every artefact on the digits eval split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgeq  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402


def onnx_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    hits = sum(int(session.run(None, {name: x[i:i + 1]})[0].argmax() == y[i]) for i in range(len(y)))
    return hits / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compressed", type=Path, help="output DIR of a finished `edgeq compress` run")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    console = Console(width=140)
    from edgeq.examples.digits import load_digits_split

    x_eval, y_eval = load_digits_split("eval")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        compressed = args.compressed
        if compressed is None:
            from edgeq.compress.runner import CompressRequest, run_compress

            compressed = tmp / "compressed"
            console.print("running recipes/digits-prune.yaml …")
            run_compress(CompressRequest(
                model=f"{REPO}/edgeq/examples/digits.py:DigitsCNN", weights=REPO / "edgeq/examples/digits_cnn.safetensors",
                recipe=REPO / "recipes/digits-prune.yaml", out=compressed, train="sklearn-digits:train",
                eval="sklearn-digits:eval", show_progress=False, log=lambda _m: None))
        cases = {
            "original": (f"{REPO}/edgeq/examples/digits.py:DigitsCNN", f"{REPO}/edgeq/examples/digits_cnn.safetensors"),
            "pruned": (f"{compressed}/model.py:CompressedModel", f"{compressed}/model.safetensors"),
        }
        paths: dict[str, Path] = {}
        rows: dict[str, dict] = {}
        for label, (model, weights) in cases.items():
            out = tmp / f"export-{label}"
            manifest = edgeq.export(model, "sklearn-digits:calib", backends=["onnx-fp32", "onnx-qdq"], out=out,
                                    weights=weights, calib_samples=300, holdout_samples=0)
            model_dir = out / manifest.model.name
            for backend in ("onnx-fp32", "onnx-qdq"):
                artifact = manifest.artifact(backend)
                if artifact.status != "ok":
                    raise SystemExit(f"{label} {backend} failed: {artifact.error}")
                key = f"{label} {'int8' if backend == 'onnx-qdq' else 'fp32'}"
                paths[key] = model_dir / artifact.path
                rows[key] = {"size": artifact.size_bytes, "top1": onnx_top1(model_dir / artifact.path, x_eval, y_eval)}
        order = ["original int8", "pruned int8", "original fp32", "pruned fp32"]
        timing = {t: interleaved_latency({k: paths[k] for k in order}, threads=t, rounds=args.rounds) for t in (1, 2)}
        table = Table(title="digits CNN: pruned (recipes/digits-prune.yaml) vs original, ONNX Runtime, batch 1")
        for column in ("artefact", "size KiB", "top-1 eval", "p50 ms 1 thr", "÷ original int8", "p50 ms 2 thr",
                       "÷ original int8 "):
            table.add_column(column, justify="right")
        for key in order:
            table.add_row(key, f"{rows[key]['size'] / 1024:.1f}", f"{rows[key]['top1']:.2%}",
                          f"{timing[1][key]['p50_ms']:.4f}", f"{timing[1][key]['ratio_to_first']:.3f}",
                          f"{timing[2][key]['p50_ms']:.4f}", f"{timing[2][key]['ratio_to_first']:.3f}")
        console.print(table)


if __name__ == "__main__":
    main()
