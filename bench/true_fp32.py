"""INT8 vs *true* FP32 per backend on the ResNet-18 shape, at 1 and 2 threads, side by side in one run.

Run: ``.venv/bin/python bench/true_fp32.py [--rounds N] [--keep DIR]``.

"FP32" must be FP32: OpenVINO's CPU plugin runs an FP32 IR in BF16 by default on AVX512-BF16/AMX CPUs (and in f16
on ARM), which made INT8-vs-"FP32" speed-ups there INT8-vs-BF16. edgeq's runner pins the precision each artifact's
name promises (docs/trust.md); this script prints what each artifact **executed**, as the runtime reports it, next
to its latency, plus the CPU flags that change these numbers. On a BF16 CPU the opt-in ``openvino-bf16`` row (the
same IR at ``INFERENCE_PRECISION_HINT=bf16``) is measured too, so the old default is visible beside true FP32.

Model: ``bench/models.py:ResNet18`` (1×3×224×224, seeded weights), exported by ``edgeq.export`` to onnx-fp32 /
onnx-qdq, openvino-fp32 / openvino-int8 (/ openvino-bf16), tflite-fp32 / tflite-int8, calibrated on 32 seeded N(0,1)
inputs. Latency: per runtime and thread count, ``edgeq.measure.interleaved_latency`` on the runtime's artifacts in
one freshly spawned process (only that runtime loaded), alternating round by round; INT8/FP32 is the median of
paired per-round ratios (< 1 = INT8 faster). Writes ``bench/results/true_fp32.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgeq  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402
from edgeq.targets.runner import cpu_flags, open_session, random_feeds, reduced_float_support  # noqa: E402

MODEL = f"{REPO}/bench/models.py:ResNet18"
ROWS = {"onnxruntime": ("onnx-fp32", "onnx-qdq"), "openvino": ("openvino-fp32", "openvino-int8", "openvino-bf16"),
        "tflite": ("tflite-fp32", "tflite-int8")}
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16",
               "avx512_fp16", "amx_fp16", "asimddp", "i8mm", "fphp", "asimdhp")


def measure_runtime(paths: dict[str, str], threads: int, rounds: int) -> dict[str, Any]:
    """In a fresh process: executed precision of each artifact, then interleaved latency (first = FP32)."""
    executed = {}
    for backend, path in paths.items():
        session = open_session(path, threads=threads)
        executed[backend] = {"executed": session.executed_precision(session.prepare(random_feeds(session)))["precision"],
                             "pinned": session.precision}
        del session
    latency = interleaved_latency({b: Path(p) for b, p in paths.items()}, threads=threads, rounds=rounds,
                                  runs_per_round=2)
    return {backend: {**executed[backend], **latency[backend]} for backend in paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--keep", type=Path, default=None,
                        help="export into DIR (kept; a second run re-measures it) instead of a temp dir")
    args = parser.parse_args()
    console = Console(width=132)
    flags = cpu_flags()
    bf16 = reduced_float_support(platform.machine(), flags)["bf16"]
    backends = [b for runtime in ROWS.values() for b in runtime if b != "openvino-bf16" or bf16]

    with tempfile.TemporaryDirectory(prefix="edgeq-true-fp32-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        calib = root / "calib.npy"
        np.save(calib, np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
        kept = root / "out" / "resnet18" / "manifest.json"
        if args.keep and kept.is_file():  # re-measure a kept export
            from edgeq.manifest import Manifest

            manifest = Manifest.read(kept)
        else:
            console.print(f"exporting ResNet-18 to {', '.join(backends)} …")
            manifest = edgeq.export(MODEL, str(calib), backends=backends, out=root / "out", holdout_samples=4)
        model_dir = root / "out" / manifest.model.name
        rows = {a.backend: a for a in manifest.artifacts}
        failed = {b: a.error for b, a in rows.items() if a.status != "ok"}
        results: dict[str, dict[int, dict[str, Any]]] = {}
        for runtime, names in ROWS.items():
            paths = {b: str(model_dir / rows[b].path) for b in names if b in rows and rows[b].status == "ok"}
            if len(paths) < 2:
                continue
            results[runtime] = {}
            for threads in (1, 2):
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    results[runtime][threads] = pool.submit(measure_runtime, paths, threads, args.rounds).result()

    table = Table(title="ResNet-18 (1×3×224×224): INT8 vs true FP32, interleaved per runtime, p50 ms")
    for header in ("runtime", "artifact", "executed", "1 thread", "vs FP32", "2 threads", "vs FP32"):
        table.add_column(header, justify="left" if header in ("runtime", "artifact", "executed") else "right")
    for runtime, by_threads in results.items():
        for backend in by_threads[1]:
            one, two = by_threads[1][backend], by_threads[2][backend]
            table.add_row(runtime, backend, one["executed"], f"{one['p50_ms']:.2f}", f"{one['ratio_to_first']:.2f}×",
                          f"{two['p50_ms']:.2f}", f"{two['ratio_to_first']:.2f}×")
    console.print(table)
    for backend, error in failed.items():
        console.print(f"{backend}: not measured ({error})")
    import onnxruntime
    import openvino

    versions = {"onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version()}
    shown = [f for f in SHOWN_FLAGS if f in flags]
    console.print(f"CPU: {platform.processor() or platform.machine()}, flags: {' '.join(shown) or '(none of note)'}; "
                  f"BF16 row {'measured' if bf16 else 'refused: no avx512_bf16/amx_bf16'}; runtimes {versions}")
    out = REPO / "bench" / "results" / "true_fp32.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_flags": shown, "machine": platform.machine(), "results": results,
                               "failed": failed, "rounds": args.rounds}, indent=2))
    console.print(f"→ {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
