"""Precision tiers side by side in one run: per runtime, FP32 / INT8 / W8A16 / INT4 weight-only artifacts of one model,
with size / FP32, latency / FP32 at 1 and 2 threads (interleaved in one session per runtime, median of paired
ratios), fidelity vs the FP32 source (held-out cosine) and top-1 on the digits eval split; then the accuracy-control
comparison: INT8 with FP32-only fallback vs the tiered fallback, at the same --max-drop.

Run: ``.venv/bin/python bench/precision.py [--model digits|bert|resnet18|all] [--rounds N] [--skip-fallback]``.
- digits: the bundled example CNN (top-1 on the 300-image ``sklearn-digits:eval`` split).
- bert: BERT-mini shape (bench/models.py: 4 layers, hidden 256, outlier LayerNorm dims), seeded random weights and
  inputs: fidelity only.
- resnet18: ResNet-18 shape (random weights): fidelity only (slow: LiteRT 16x8 calibration runs reference kernels).
- fallback: the sensitive digits model (edgeq/examples/sensitive.py, --max-drop 0.01, top-1) and BERT-mini
  (--metric cosine vs FP32, --max-drop 0.002) through onnx-qdq with ``--fallback fp32`` and ``--fallback tiered``.
Artifacts run through edgeq's runner (edgeq/targets/runner.py) with the runtime's defaults: OpenVINO's CPU plugin computes
float layers at its default inference precision (bf16 on AVX512-BF16 CPUs).
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
from edgeq.targets.runner import cpu_flags  # noqa: E402

RUNTIMES = {
    "onnxruntime": ["onnx-fp32", "onnx-qdq", "onnx-w8a16", "onnx-w4"],
    "openvino": ["openvino-fp32", "openvino-int8", "openvino-w4"],
    "tflite": ["tflite-fp32", "tflite-int8", "tflite-w8a16", "tflite-w4"],
}


def models(tmp: Path, which: str) -> list[dict]:
    found = []
    if which in ("digits", "all"):
        found.append({"label": "digits CNN", "model": f"{REPO}/edgeq/examples/digits.py:DigitsCNN",
                      "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors", "calib": "sklearn-digits:calib",
                      "eval_spec": "sklearn-digits:eval", "calib_samples": 300})
    if which in ("bert", "all"):
        rng = np.random.default_rng(0)
        np.save(tmp / "bert_calib.npy", rng.standard_normal((32, 128, 256)).astype(np.float32))
        found.append({"label": "BERT-mini", "model": f"{REPO}/bench/models.py:BertMini", "weights": None,
                      "calib": tmp / "bert_calib.npy", "eval_spec": None, "calib_samples": 32})
    if which in ("resnet18", "all"):
        from bench.accuracy import smooth_images

        np.save(tmp / "resnet_calib.npy", smooth_images(32, 0))
        found.append({"label": "ResNet-18", "model": f"{REPO}/bench/models.py:ResNet18", "weights": None,
                      "calib": tmp / "resnet_calib.npy", "eval_spec": None, "calib_samples": 32})
    return found


def tier_rows(case: dict, out: Path, rounds: int, table: Table) -> None:
    names = [name for group in RUNTIMES.values() for name in group]
    manifest = edgeq.export(case["model"], case["calib"], backends=names, out=out, weights=case["weights"],
                            calib_samples=case["calib_samples"], holdout_samples=20, eval_spec=case["eval_spec"])
    model_dir = out / manifest.model.name
    arts = {a.backend: a for a in manifest.artifacts}
    for group in RUNTIMES.values():
        ok = [name for name in group if arts[name].status == "ok"]
        timed: dict[int, dict[str, dict[str, float]]] = {}
        if group[0] in ok:
            for threads in (1, 2):
                timed[threads] = interleaved_latency({name: model_dir / arts[name].path for name in ok},
                                                     threads=threads, rounds=rounds)
        for name in group:
            art = arts[name]
            if art.status != "ok":
                table.add_row(case["label"], name, art.precision, f"{art.status}: {art.error}"[:70])
                continue
            fp32 = arts[group[0]]
            lat = [timed[t][name] for t in (1, 2)] if timed else []
            top1 = f"{100 * art.evaluation.value:.2f}%" if art.evaluation is not None else ""
            executes = str(art.recipe.get("executes") or art.recipe.get("activation_type") or "")
            table.add_row(case["label"], name, art.precision, f"{art.size_bytes / fp32.size_bytes:.3f}",
                          f"{lat[0]['ratio_to_first']:.2f}" if lat else "", f"{lat[1]['ratio_to_first']:.2f}" if lat else "",
                          f"{lat[0]['p50_ms']:.3f}" if lat else "", f"{art.verification.cosine_min:.4f}", top1,
                          executes[:70])


def fallback_rows(tmp: Path, rounds: int, table: Table) -> None:
    from edgeq.examples.sensitive import train

    train(tmp / "sensitive.safetensors")
    rng = np.random.default_rng(1)
    np.save(tmp / "bert_fb_calib.npy", rng.standard_normal((32, 128, 256)).astype(np.float32))
    np.savez(tmp / "bert_eval.npz", x=rng.standard_normal((24, 128, 256)).astype(np.float32))
    cases = [
        {"label": "sensitive digits", "model": f"{REPO}/edgeq/examples/sensitive.py:SensitiveDigitsNet",
         "weights": tmp / "sensitive.safetensors", "calib": "sklearn-digits:calib", "eval_spec": "sklearn-digits:eval",
         "metric": None, "max_drop": 0.01, "calib_samples": 300},
        {"label": "BERT-mini", "model": f"{REPO}/bench/models.py:BertMini", "weights": None,
         "calib": tmp / "bert_fb_calib.npy", "eval_spec": str(tmp / "bert_eval.npz"), "metric": "cosine",
         "max_drop": 0.002, "calib_samples": 32},
    ]
    for case in cases:
        common = {"weights": case["weights"], "calib_samples": case["calib_samples"], "holdout_samples": 20,
                  "eval_spec": case["eval_spec"], "metric": case["metric"]}
        base = edgeq.export(case["model"], case["calib"], backends=["onnx-fp32"], out=tmp / "fb_fp32", **common)
        paths = {"fp32": tmp / "fb_fp32" / base.model.name / base.artifact("onnx-fp32").path}
        rows = {}
        for fallback in ("fp32", "tiered"):
            work = tmp / f"fb_{fallback}"
            result = edgeq.export(case["model"], case["calib"], backends=["onnx-qdq"], out=work,
                                  max_drop=case["max_drop"], configs={"onnx-qdq": {"fallback": fallback}}, **common)
            art = result.artifact("onnx-qdq")
            rows[fallback] = art
            paths[fallback] = work / result.model.name / art.path
        timed = {t: interleaved_latency(paths, threads=t, rounds=rounds) for t in (1, 2)}
        for fallback, art in rows.items():
            control = art.accuracy_control
            e = art.evaluation
            unit, scale = ("%", 100) if e.metric in ("top1", "top5") else ("", 1)
            tiers = control.layer_tiers if control else {}
            fp32_size = base.artifact("onnx-fp32").size_bytes
            table.add_row(case["label"], f"--fallback {fallback}", f"{scale * e.value:.4g}{unit}",
                          f"{scale * e.drop:+.3g}{unit}" + ("" if control is None or control.met else " NOT met"),
                          f"{scale * control.drop_before:+.3g}{unit}" if control else "",
                          f"{art.size_bytes / fp32_size:.3f}", f"{timed[1][fallback]['ratio_to_first']:.2f}",
                          f"{timed[2][fallback]['ratio_to_first']:.2f}",
                          ", ".join(f"{k}: {v}" for k, v in tiers.items())[:70] or "plain PTQ within budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["digits", "bert", "resnet18", "all"], default="digits,bert")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds per runtime and thread count")
    parser.add_argument("--skip-fallback", action="store_true", help="skip the accuracy-control comparison")
    args = parser.parse_args()
    console = Console(width=200)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "asimddp"})
    table = Table(title=f"edgeq precision tiers · ratios vs the same runtime's FP32 artifact, interleaved, median of "
                        f"paired ratios · CPU flags: {' '.join(flags)}")
    for col in ("model", "backend", "prec.", "size/FP32", "lat/FP32 1t", "lat/FP32 2t", "p50 ms 1t", "cos min",
                "top-1", "executes"):
        table.add_column(col)
    which = ["digits", "bert"] if args.model == "digits,bert" else [args.model]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, case in enumerate(case for w in which for case in models(tmp, w)):
            tier_rows(case, tmp / f"out{i}", args.rounds, table)
        console.print(table)
        if not args.skip_fallback:
            fallback = Table(title="accuracy control on onnx-qdq: INT8 with FP32-only fallback vs tiered fallback (int16 "
                                   "activations first), same budget; latency vs onnx-fp32, interleaved")
            for col in ("model", "fallback", "metric", "drop", "PTQ drop", "size/FP32", "lat/FP32 1t", "lat/FP32 2t",
                        "layers moved (tier)"):
                fallback.add_column(col)
            fallback_rows(tmp, args.rounds, fallback)
            console.print(fallback)


if __name__ == "__main__":
    main()
