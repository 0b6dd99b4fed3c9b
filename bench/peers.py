"""edgeq's INT8 recipes vs the upstream tools' plain default recipes, side by side, per model × backend.

Run: ``.venv/bin/python bench/peers.py [--models digits,resnet18,mobilenetv2,bertmini] [--rounds N] [--quick]
[--keep DIR]``.

Peers (each the tool's documented default call, nothing tuned):
- onnx-qdq ↔ ``onnxruntime.quantization.quantize_static(fp32, out, reader)``;
- openvino-int8 ↔ ``nncf.quantize(ov.convert_model(fp32), nncf.Dataset(samples))``;
- tflite-int8 ↔ litert-torch PT2E with ``get_symmetric_quantization_config()`` (per-tensor), int8 I/O.
edgeq's side is ``edgeq.export`` (the real pipeline, whatever recipe is committed). The ONNX/OpenVINO peers start
from the FP32 ONNX that edgeq exports, the LiteRT peer from the same PyTorch module; every side gets the same
calibration samples in the same order (edgeq's seeded ``sample_order``: litert-torch's histogram observer depends on
the order, ±0.005 worst-sample cosine on BERT-mini between orders) (digits: the 300-image calib split; others: 32
seeded N(0,1) inputs). Quality: digits top-1 on the 300-image eval split (trained weights); otherwise cosine vs the
PyTorch FP32 output on 64 held-out seeded inputs (min / mean). Latency: ``edgeq.measure.interleaved_latency`` on
peer, edgeq and the runtime's FP32 artifact in one freshly spawned process (only the runtimes loaded), alternating
round by round, twice (peer first, then edgeq first, to cancel position bias); edgeq/peer is the geometric mean of
the two medians of paired per-round ratios; INT8/FP32 is the ratio of medians at 2 threads (< 1 = INT8 faster).
Export time: every quantizer is imported before anything is timed. Writes ``bench/results/peers.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgeq  # noqa: E402
from edgeq.calibration import sample_order  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402

MODELS = {
    "digits": (f"{REPO}/edgeq/examples/digits.py:DigitsCNN", f"{REPO}/edgeq/examples/digits_cnn.safetensors"),
    "resnet18": (f"{REPO}/bench/models.py:ResNet18", None),
    "mobilenetv2": (f"{REPO}/bench/models.py:MobileNetV2", None),
    "bertmini": (f"{REPO}/bench/models.py:BertMini", None),
}
BACKENDS = {"onnx-qdq": "onnx-fp32", "openvino-int8": "openvino-fp32", "tflite-int8": "tflite-fp32"}
N_CALIB, N_HOLD = 32, 64
RUNS_PER_ROUND = {"digits": 40}
"""Runs per interleaved round (the round keeps the fastest): sub-millisecond models need more to be stable."""
PROCESSES = {"digits/onnx-qdq": 9, "digits/openvino-int8": 3, "digits/tflite-int8": 3}
"""Fresh measuring processes per cell (the median is taken). A 50-µs model's 2-thread ratio varies by process: ten
processes timing the same digits onnx-qdq artifacts (10 rounds each) gave edgeq/peer 0.90-1.10 at 2 threads (median
1.015; 1 thread: 1.005-1.016); the OpenVINO and LiteRT digits cells vary far less."""


def load_torch(spec: str, weights: str | None):  # -> torch.nn.Module in eval mode
    """The PyTorch module of a ``file.py:Class`` spec (with safetensors weights when given)."""
    file, cls = spec.split(":")
    mod_spec = importlib.util.spec_from_file_location(Path(file).stem + "_peers", file)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    model = getattr(module, cls)()
    if weights:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(weights))
    return model.eval()


def data(name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(calibration inputs, held-out inputs, held-out labels or None), each input with a batch dim of 1."""
    if name == "digits":
        from edgeq.examples.digits import load_digits_split

        calib, _ = load_digits_split("calib")
        hold, labels = load_digits_split("eval")
        return calib[:, None], hold[:, None], labels
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((N_CALIB, *shape)).astype(np.float32)
    hold = rng.standard_normal((N_HOLD, *shape)).astype(np.float32)
    return calib, hold, None


def outputs(path: Path, inputs: np.ndarray) -> list[np.ndarray]:
    """First output (float, dequantized) per input, through edgeq's runner (ORT, OpenVINO or LiteRT)."""
    from edgeq.targets.runner import open_session

    session = open_session(str(path), threads=2)
    return [np.asarray(session.run([x])[0], dtype=np.float64).ravel() for x in inputs]


def quality(ref: list[np.ndarray], got: list[np.ndarray], labels: np.ndarray | None) -> dict[str, float]:
    cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) for a, b in zip(ref, got)]
    result = {"cos_min": min(cos), "cos_mean": float(np.mean(cos))}
    if labels is not None:
        result["top1"] = float(np.mean([int(np.argmax(g)) == int(y) for g, y in zip(got, labels)]))
    return result


def peer_ort(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """ONNX Runtime's default call: ``quantize_static(fp32, out, reader)``."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):  # noqa: ANN201
            return next(self.it, None)

    path = out / "model.onnx"
    quantize_static(str(fp32), str(path), Reader())
    return path


def peer_nncf(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """NNCF's default call: ``nncf.quantize(ov.convert_model(fp32), nncf.Dataset(samples))``."""
    import nncf
    import openvino as ov

    quantized = nncf.quantize(ov.convert_model(str(fp32)), nncf.Dataset(feeds))
    path = out / "model.xml"
    ov.save_model(quantized, str(path))
    return path


def peer_litert(fp32: Path, out: Path, calib: np.ndarray, model: Any) -> Path:
    """litert-torch's documented PT2E flow with ``get_symmetric_quantization_config()`` defaults."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    samples = [tuple(torch.from_numpy(np.asarray(a)) for a in (x if isinstance(x, tuple) else (x,))) for x in calib]
    args = samples[0]  # calib: arrays of the single input, or one tuple of arrays per sample (several inputs)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config())
    with torch.no_grad():
        graph = prepare_pt2e(torch.export.export(model, args).module(), quantizer)
        for sample in samples:
            graph(*sample)
        graph = convert_pt2e(graph, fold_quantize=False)
        path = out / "model.tflite"
        litert_torch.convert(graph, args, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return path


def onnx_input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


PEERS = {"onnx-qdq": peer_ort, "openvino-int8": peer_nncf}
"""The ONNX-based peers (the LiteRT peer starts from the PyTorch module: ``litert_peer_job``)."""


def litert_peer_job(spec: str, weights: str | None, calib_file: Path, out: Path) -> tuple[Path, float]:
    """The LiteRT peer in a worker process: (artifact, export seconds, imports excluded)."""
    preload_tools()
    model = load_torch(spec, weights)
    calib = np.load(calib_file)[:, None]
    start = time.perf_counter()
    path = peer_litert(out, out, calib, model)
    return path, time.perf_counter() - start


def latency(peer: Path, ours: Path, fp32: Path, threads: int, rounds: int, runs: int) -> dict[str, Any]:
    """edgeq/peer latency ratio and p50s, from two interleaved passes in opposite orders (cancels position bias).

    The ratio is the geometric mean of the two passes' medians of paired per-round ratios; p50s are the mean of
    the passes' medians.
    """
    first = interleaved_latency({"peer": peer, "edgeq": ours, "fp32": fp32}, threads=threads, rounds=rounds,
                                runs_per_round=runs)
    second = interleaved_latency({"edgeq": ours, "peer": peer, "fp32": fp32}, threads=threads, rounds=rounds,
                                 runs_per_round=runs)
    ratio = (first["edgeq"]["ratio_to_first"] / second["peer"]["ratio_to_first"]) ** 0.5
    return {"edgeq/peer": ratio, "p50_ms": {k: (first[k]["p50_ms"] + second[k]["p50_ms"]) / 2 for k in first}}


def latency_in_clean_process(peer: Path, ours: Path, fp32: Path, rounds: int, runs: int,
                             processes: int = 1) -> dict[int, dict[str, Any]]:
    """``latency`` at 1 and 2 threads, each measured in ``processes`` freshly spawned processes that import only the
    runtimes; ratios and p50s are the medians over the processes.

    The benchmark process has TensorFlow, JAX and PyTorch loaded by the exports, with thread pools of their own. And
    a 50-µs model's 2-thread ratio depends on the process itself: six fresh processes timing the same digits
    artifacts gave edgeq/peer 0.95, 1.00, 1.01, 1.02, 1.09, 1.10 (``PROCESSES``)."""
    passes = []
    for _ in range(processes):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            passes.append(pool.submit(_latency_both, peer, ours, fp32, rounds, runs).result())
    return {t: {"edgeq/peer": float(np.median([p[t]["edgeq/peer"] for p in passes])),
                "p50_ms": {k: float(np.median([p[t]["p50_ms"][k] for p in passes])) for k in passes[0][t]["p50_ms"]}}
            for t in (1, 2)}


def _latency_both(peer: Path, ours: Path, fp32: Path, rounds: int, runs: int) -> dict[int, dict[str, Any]]:
    return {t: latency(peer, ours, fp32, t, rounds, runs) for t in (1, 2)}


def preload_tools() -> None:
    """Import every quantizer once up front, so neither side's export time includes a first import."""
    import litert_torch  # noqa: F401
    import nncf  # noqa: F401
    import onnxruntime.quantization  # noqa: F401
    import openvino  # noqa: F401
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_model(name: str, tmp: Path, rounds: int, backends: list[str], console: Console) -> list[dict[str, Any]]:
    spec, weights = MODELS[name]
    model = load_torch(spec, weights)
    shape = tuple(model.input_shape)
    calib, hold, labels = data(name, shape)
    files = {"calib": tmp / f"{name}_calib.npy", "hold": tmp / f"{name}_hold.npy",
             "peer_calib": tmp / f"{name}_peer_calib.npy"}
    np.save(files["calib"], calib[:, 0])
    np.save(files["hold"], hold[:, 0])
    calib = calib[sample_order(len(calib))]  # the peers see the samples in the order edgeq feeds them
    np.save(files["peer_calib"], calib[:, 0])
    import torch

    with torch.no_grad():
        ref = [model(torch.from_numpy(x)).numpy().astype(np.float64).ravel() for x in hold]
    wanted = [b for b in BACKENDS if b in backends]
    onnx_peer_needs = ["onnx-fp32"] if set(wanted) & set(PEERS) else []  # the ONNX/OpenVINO peers start from it
    litert_dir = tmp / f"{name}_tflite-int8_peer"
    litert_dir.mkdir()
    # The LiteRT peer needs only the PyTorch module: it is built in a second process while edgeq exports (each
    # side then has one of the two cores; both conversions are single-threaded Python/MLIR work).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        litert_job = pool.submit(litert_peer_job, spec, weights, files["peer_calib"], litert_dir) \
            if "tflite-int8" in wanted else None
        manifest = edgeq.export(spec, str(files["calib"]), backends=list(dict.fromkeys([*onnx_peer_needs, *(BACKENDS[b] for b in wanted), *wanted])),
                                out=tmp / "out", weights=weights, calib_samples=len(calib),
                                holdout=str(files["hold"]), holdout_samples=4)
        litert_result = litert_job.exception() or litert_job.result() if litert_job else None
    model_dir = tmp / "out" / manifest.model.name
    rows = []
    for backend in wanted:
        row: dict[str, Any] = {"model": name, "backend": backend}
        rows.append(row)
        art, fp32_art = manifest.artifact(backend), manifest.artifact(BACKENDS[backend])
        if art.status != "ok" or fp32_art.status != "ok":
            row["error"] = f"edgeq: {art.error or fp32_art.error}"
            console.print(row)
            continue
        ours, fp32 = model_dir / art.path, model_dir / fp32_art.path
        peer_dir = tmp / f"{name}_{backend}_peer"
        peer_dir.mkdir(exist_ok=True)
        try:
            if backend == "tflite-int8":
                if isinstance(litert_result, BaseException):
                    raise litert_result
                peer, peer_s = litert_result
            else:
                fp32_onnx = model_dir / manifest.artifact("onnx-fp32").path
                input_name = onnx_input_name(fp32_onnx)
                feeds = [{input_name: x} for x in calib]
                start = time.perf_counter()
                peer = PEERS[backend](fp32_onnx, peer_dir, feeds)
                peer_s = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - a failing peer is reported, the others go on
            row["error"] = f"peer: {type(exc).__name__}: {str(exc)[:200]}"
            console.print(row)
            continue
        lat = latency_in_clean_process(peer, ours, fp32, rounds,
                                       RUNS_PER_ROUND.get(name, 3), PROCESSES.get(f"{name}/{backend}", 1))
        row.update({
            "lat_ratio_1t": lat[1]["edgeq/peer"], "lat_ratio_2t": lat[2]["edgeq/peer"],
            "p50_ms_2t": lat[2]["p50_ms"],
            "int8_vs_fp32_2t": {k: lat[2]["p50_ms"][k] / lat[2]["p50_ms"]["fp32"] for k in ("edgeq", "peer")},
            "quality_edgeq": quality(ref, outputs(ours, hold), labels),
            "quality_peer": quality(ref, outputs(peer, hold), labels),
            "quality_fp32": quality(ref, outputs(fp32, hold), labels),
            "export_s": {"edgeq": art.export_seconds, "peer": round(peer_s, 2)},
            "size_ratio": art.size_bytes / dir_size(peer_dir), "recipe": art.recipe,
        })
        console.print({k: row[k] for k in row if k != "recipe"})
    return rows


def quality_text(q: dict[str, float]) -> str:
    return f"{q['top1']:.3f} top1" if "top1" in q else f"{q['cos_min']:.4f}/{q['cos_mean']:.4f}"


def render(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="edgeq INT8 vs upstream default recipes (edgeq/peer ratios, interleaved in one run; < 1 = edgeq "
                        "faster/smaller). Quality: digits top-1 (eval 300), else cos min/mean vs PyTorch FP32")
    for col in ("model", "backend", "lat 1 thr", "lat 2 thr", "quality edgeq", "quality peer", "INT8/FP32 2 thr edgeq",
                "INT8/FP32 2 thr peer", "export edgeq/peer", "size"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], r["backend"], r["error"][:90])
            continue
        table.add_row(r["model"], r["backend"], f"{r['lat_ratio_1t']:.3f}", f"{r['lat_ratio_2t']:.3f}",
                      quality_text(r["quality_edgeq"]), quality_text(r["quality_peer"]),
                      f"{r['int8_vs_fp32_2t']['edgeq']:.3f}", f"{r['int8_vs_fp32_2t']['peer']:.3f}",
                      f"{r['export_s']['edgeq'] / r['export_s']['peer']:.2f} "
                      f"({r['export_s']['edgeq']:.1f}/{r['export_s']['peer']:.1f} s)", f"{r['size_ratio']:.3f}")
    console.print(table)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (for docs/recipes.md)."""
    lines = ["| model | backend | lat edgeq/peer 1 thr | lat edgeq/peer 2 thr | quality edgeq | quality peer | "
             "INT8/FP32 2 thr edgeq | INT8/FP32 2 thr peer | export edgeq/peer | size edgeq/peer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | {r['error']} | | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['backend']} | {r['lat_ratio_1t']:.3f} | {r['lat_ratio_2t']:.3f} | "
                     f"{quality_text(r['quality_edgeq'])} | {quality_text(r['quality_peer'])} | "
                     f"{r['int8_vs_fp32_2t']['edgeq']:.3f} | {r['int8_vs_fp32_2t']['peer']:.3f} | "
                     f"{r['export_s']['edgeq'] / r['export_s']['peer']:.2f} ({r['export_s']['edgeq']:.1f} / "
                     f"{r['export_s']['peer']:.1f} s) | {r['size_ratio']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet18,mobilenetv2,bertmini")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="digits + resnet18, 6 rounds")
    parser.add_argument("--keep", type=Path, help="keep every artifact in this directory")
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/peers.json")
    parser.add_argument("--render", type=Path, help="only print the tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.render is not None:
        rows = json.loads(args.render.read_text())
        render(rows, Console(width=200))
        print(markdown(rows))
        return
    names = ["digits", "resnet18"] if args.quick else args.models.split(",")
    unknown = sorted(set(names) - set(MODELS)) + sorted(set(args.backends.split(",")) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown model/backend: {', '.join(unknown)}")
    rounds = 6 if args.quick else args.rounds
    console, rows, started = Console(width=200), [], time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="peers-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    preload_tools()
    try:
        for name in names:
            rows += bench_model(name, tmp, rounds, args.backends.split(","), console)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    render(rows, console)
    print(markdown(rows))
    console.print(f"total {time.perf_counter() - started:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.json.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(rows, indent=2, default=str))
    tmp_out.replace(args.json)


if __name__ == "__main__":
    main()
