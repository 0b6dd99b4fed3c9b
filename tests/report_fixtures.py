"""Benchmark results for report/package tests: CellResult JSON files written the way ``edgeq bench`` writes them,
with realistic numbers (anchored on NOTES.md measurements), failed cells, a slow-INT8 ARM board and an emulated
device. The expected derived values are spelled out next to the data so the tests can check them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.results import CellResult, Latency, cell_id

X86_FLAGS = {"avx2": True, "fma": True, "avx512f": True, "avx512bw": True, "avx512_vnni": True, "avx_vnni": False,
             "amx_tile": False, "amx_int8": False}
A72_FLAGS = {"asimd": True, "asimddp": False, "i8mm": False, "sve": False, "sve2": False, "bf16": False,
             "fphp": False, "asimdhp": False}


def _system(machine: str, flags: dict[str, bool], matches: bool = True) -> dict[str, Any]:
    return {"machine": machine, "system": "Linux", "python": "3.11.2", "cpu_model": "test cpu", "cpu_count": 4,
            "int8_flags": flags, "cpuinfo_arch": "arm" if "asimd" in flags else "x86",
            "cpuinfo_matches_machine": matches, "runtimes": {"onnxruntime": {"available": True, "version": "1.25.0"}}}


def _latency(p50: float, p99_factor: float = 1.3) -> Latency:
    mean = p50 * 1.04
    return Latency(p50_ms=p50, p90_ms=p50 * 1.15, p99_ms=p50 * p99_factor, mean_ms=mean, stddev_ms=p50 * 0.05,
                   min_ms=p50 * 0.95, max_ms=p50 * (p99_factor + 0.2), runs=200, throughput=1000.0 / mean)


def cell(device: str, backend: str, threads: int, p50: float | None, *, top1: float | None = None,
         cos: float | None = None, agree: float | None = None, error: str | None = None, emulated: bool = False,
         kind: str = "local", system: dict[str, Any] | None = None, p99_factor: float = 1.3,
         size_bytes: int | None = None, model: str = "resnet18") -> CellResult:
    """One cell; ``p50=None`` with ``error`` makes a failed cell."""
    runtime = {"onnx": "onnxruntime", "tflite": "tflite", "openvino": "openvino"}[backend.split("-")[0]]
    precision = "fp32" if backend.endswith("fp32") else "int8"
    size = size_bytes if size_bytes is not None else (46_800_000 if precision == "fp32" else 11_900_000)
    settings = {"threads": threads, "runs": 200, "eval": "abc123"}
    sha = f"{backend:0<64}"[:64]
    base = dict(cell_id=cell_id(sha + model, device, settings), device=device, device_kind=kind, emulated=emulated,
                model=model, backend=backend, runtime=runtime, precision=precision, artifact_sha256=sha,
                size_bytes=size, threads=threads, settings=settings)
    if p50 is None:
        return CellResult(status="failed", error=error or "failed", **base)
    fidelity: dict[str, float | None] = {}
    extra: dict[str, Any] = {}
    if precision == "fp32" and cos is None:
        extra["fidelity_reference"] = "self"
    elif cos is not None:
        fidelity = {"samples": 200, "cosine_min": cos, "cosine_mean": min(1.0, cos + 0.002),
                    "max_abs_error": 0.4, "mean_abs_error": 0.02, "top1_agreement": agree}
    return CellResult(status="ok", load_ms=35.0 + p50, first_ms=p50 * 1.8, latency=_latency(p50, p99_factor),
                      peak_rss_mb=120.0 + size / 1e6, system=system or _system("x86_64", X86_FLAGS),
                      metrics={"top1": top1} if top1 is not None else {}, fidelity=fidelity, **base, **extra)


def standard_cells() -> list[CellResult]:
    """host (x86, VNNI), pi4 (ARM Cortex-A72 over ssh: no dotprod → INT8 slower), qemu-arm64 (emulated)."""
    pi4 = _system("aarch64", A72_FLAGS)
    qemu = _system("aarch64", X86_FLAGS, matches=False)
    return [
        # host: speed-up onnx-qdq ×1 = 12.5/4.0 = 3.125; Δ top-1 = (0.905-0.912)*100 = -0.7 pt
        cell("host", "onnx-fp32", 1, 12.5, top1=0.912),
        cell("host", "onnx-qdq", 1, 4.0, top1=0.905, cos=0.9968, agree=0.985),
        # threads 2: speed-up 7.0/2.5 = 2.8; onnx-fp32 ×2 is noisy (p99 = 4 × p50)
        cell("host", "onnx-fp32", 2, 7.0, top1=0.912, p99_factor=4.0),
        cell("host", "onnx-qdq", 2, 2.5, top1=0.905, cos=0.9968, agree=0.985),
        # tflite: speed-up 20.6/5.8 = 3.5517; Δ top-1 = (0.880-0.912)*100 = -3.2 pt; low fidelity
        cell("host", "tflite-fp32", 1, 20.6, top1=0.912),
        cell("host", "tflite-int8", 1, 5.8, top1=0.880, cos=0.9812, agree=0.955),
        # openvino: no openvino FP32 → no speed-up; Δ against onnx-fp32 (other runtime): (0.909-0.912)*100 = -0.3
        cell("host", "openvino-int8", 1, 3.4, top1=0.909, cos=0.9975, agree=0.99),
        cell("host", "openvino-int8", 2, None, error="runner killed after 600 s (timeout)"),
        # pi4: INT8 slower than FP32 (52/40 = 1.3×; speed-up 0.769) on a CPU without dotprod
        cell("pi4", "onnx-fp32", 1, 40.0, top1=0.912, kind="ssh", system=pi4),
        cell("pi4", "onnx-qdq", 1, 52.0, top1=0.906, cos=0.9970, agree=0.985, kind="ssh", system=pi4),
        cell("pi4", "tflite-int8", 1, None, error="runner died with SIGSEGV (signal 11)", kind="ssh"),
        # emulated: timings meaningless → no speed-up, no ranking; accuracy is real
        cell("qemu-arm64", "onnx-fp32", 1, 900.0, top1=0.912, kind="qemu", emulated=True, system=qemu),
        cell("qemu-arm64", "onnx-qdq", 1, 1200.0, top1=0.904, cos=0.9969, agree=0.985, kind="qemu", emulated=True,
             system=qemu),
    ]


def write_results(results_dir: Path, cells: list[CellResult] | None = None, results_json: bool = True) -> Path:
    """Write cells/<id>.json (+ results.json) like ``edgeq bench``; returns ``results_dir``."""
    import json

    cells = standard_cells() if cells is None else cells
    (results_dir / "cells").mkdir(parents=True, exist_ok=True)
    for result in cells:
        (results_dir / "cells" / f"{result.cell_id}.json").write_text(result.model_dump_json(indent=2))
    if results_json:
        (results_dir / "results.json").write_text(json.dumps(
            {"schema_version": "1.0", "cells": [c.model_dump(mode="json") for c in cells]}, indent=2))
    return results_dir
