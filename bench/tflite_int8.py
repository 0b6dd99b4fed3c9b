"""TFLite INT8 recipes side by side: latency vs the same model's FP32 .tflite (1 and 2 threads, interleaved) and fidelity.

Every variant is a real litert-torch PT2E export of the same model, calibrated on the same samples; only the recipe
changes. The ``edgeq`` and ``narrow-float`` rows are ``convert_int8`` itself (what ``edgeq export -b tflite-int8``
writes, without and with ``--tflite-narrow-convs float``).

    peer-default   torch.export (non-strict, torch's default), per-tensor weights: litert-torch's documented recipe
    before         non-strict export, per-channel weights: edgeq's recipe before this benchmark
    edgeq          strict (TorchDynamo) export, per-channel: residual adds / pooling annotated, the graph fully int8
    narrow-float   edgeq + narrow heavy convolutions (< 8 input channels, >= 1 M MACs) kept float

Run: ``.venv/bin/python bench/tflite_int8.py [--model resnet18|digits|mobilenetv2|convs|all] [--rounds 15]``
(ResNet-18: ~3 min on 2 shared cores). Columns: latency ratio to FP32 (median of per-round ratios), cosine vs FP32
(min over held-out inputs), top-1 agreement, input dtype, ops: float heavy ops (CONV/FC/DEPTHWISE left float) and
QUANTIZE/DEQUANTIZE counts in the .tflite.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeq.measure import interleaved_latency  # noqa: E402

MODELS = {
    "resnet18": {"spec": f"{REPO}/bench/models.py:ResNet18", "weights": None, "calib": 16, "holdout": 8},
    "mobilenetv2": {"spec": f"{REPO}/bench/models.py:MobileNetV2", "weights": None, "calib": 16, "holdout": 8},
    "digits": {"spec": f"{REPO}/edgeq/examples/digits.py:DigitsCNN",
               "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors", "calib": 300, "holdout": 300},
}
VARIANTS = {  # name: (strict export, per-channel weights, narrow convs float)
    "peer-default": (False, False, False),
    "before": (False, True, False),
}
HEAVY = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"}


def samples(name: str, source, count: int, split: str) -> list[dict[str, np.ndarray]]:
    """Calibration / held-out feeds: the digits splits for digits, seeded random images otherwise (disjoint seeds)."""
    spec = source.inputs[0]
    if name == "digits":
        from edgeq.examples.digits import load_digits_split

        x, _ = load_digits_split("calib" if split == "calib" else "eval")
        return [{spec.name: x[i:i + 1]} for i in range(min(count, len(x)))]
    rng = np.random.default_rng(0 if split == "calib" else 1)
    return [{spec.name: rng.standard_normal(spec.shape).astype(np.float32)} for _ in range(count)]


def build_variant(source, calib, out: Path, strict: bool, per_channel: bool, narrow_float: bool) -> Path:
    """One PT2E INT8 export with the given recipe switches (the same calls convert_int8 makes)."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeq.runtimes.tflite._tflite import (
        export_for_quantization,
        keep_narrow_convs_float,
        quiet,
        write_quantized,
    )

    module, args = source.torch_module(), source.example_inputs()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    with quiet(), torch.no_grad():
        graph = export_for_quantization(module, args, strict=strict)
        if narrow_float:
            keep_narrow_convs_float(graph)
        graph = prepare_pt2e(graph, quantizer)
        for feeds in calib:
            graph(*source.example_inputs(feeds))
        return write_quantized(convert_pt2e(graph, fold_quantize=False), args, quantizer, out)


def op_summary(path: Path) -> tuple[str, str]:
    """(input dtype, 'float heavy N · Q/DQ M') from the .tflite's own tensors."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    counts = Counter(op["op_name"] for op in ops)
    float_heavy = sum(1 for op in ops if op["op_name"] in HEAVY
                      and np.dtype(tensors[op["inputs"][0]]["dtype"]) == np.float32)
    input_dtype = np.dtype(interp.get_input_details()[0]["dtype"]).name
    return input_dtype, f"float heavy {float_heavy} · Q {counts['QUANTIZE']} DQ {counts['DEQUANTIZE']}"


def fidelity(fp32: Path, path: Path, holdout: list[dict[str, np.ndarray]]) -> tuple[float, float]:
    """(min cosine, top-1 agreement) of ``path`` vs the FP32 .tflite, outputs dequantized by the runner."""
    from edgeq.targets.runner import open_session

    ref, test = open_session(str(fp32), threads=2), open_session(str(path), threads=2)
    cosines, agree = [], []
    for feeds in holdout:
        a = np.asarray(ref.run(feeds)[0], dtype=np.float64).ravel()
        b = np.asarray(test.run(feeds)[0], dtype=np.float64).ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
        agree.append(int(a.argmax() == b.argmax()))
    return min(cosines), float(np.mean(agree))


def run(name: str, rounds: int, tmp: Path) -> list[list[str]]:
    from edgeq.models import load_model
    from edgeq.runtimes.tflite._tflite import convert_fp32, convert_int8, quiet

    case = MODELS[name]
    source = load_model(case["spec"], case["weights"])
    calib, holdout = samples(name, source, case["calib"], "calib"), samples(name, source, case["holdout"], "eval")
    with quiet(), contextlib.redirect_stdout(io.StringIO()):  # litert-torch prints conversion progress
        paths = {"fp32": convert_fp32(source, tmp / f"{name}-fp32.tflite", "tflite-fp32")}
        for variant, switches in VARIANTS.items():
            paths[variant] = build_variant(source, calib, tmp / f"{name}-{variant}.tflite", *switches)
        paths["edgeq"] = convert_int8(source, calib, tmp / f"{name}-edgeq.tflite", "tflite-int8")[0]
        paths["narrow-float"] = convert_int8(source, calib, tmp / f"{name}-narrow.tflite", "tflite-int8",
                                             narrow_convs_float=True)[0]
    print(f"{name}: built {len(paths)} .tflite files, timing", file=sys.stderr, flush=True)
    ratios = {t: interleaved_latency(paths, threads=t, rounds=rounds) for t in (1, 2)}
    rows = []
    for variant, path in paths.items():
        cosine, top1 = fidelity(paths["fp32"], path, holdout)
        dtype, ops = op_summary(path)
        rows.append([name, variant, f"{ratios[1][variant]['p50_ms']:.2f}", f"{ratios[1][variant]['ratio_to_first']:.3f}",
                     f"{ratios[2][variant]['ratio_to_first']:.3f}", f"{cosine:.4f}", f"{top1:.3f}", dtype, ops])
    return rows


CONV_SHAPES = {  # name: (in channels, out channels, kernel, stride, input H=W, repeats) - ResNet-18's conv shapes
    "stem 3->64 7x7/2 @224": (3, 64, 7, 2, 224, 1),
    "3x3 64->64 @56": (64, 64, 3, 1, 56, 4),
    "3x3 128->128 @28": (128, 128, 3, 1, 28, 4),
    "3x3 256->256 @14": (256, 256, 3, 1, 14, 4),
    "3x3 512->512 @7": (512, 512, 3, 1, 7, 4),
    "1x1 256->256 @14": (256, 256, 1, 1, 14, 4),
}


def run_convs(rounds: int, tmp: Path) -> list[list[str]]:
    """XNNPACK kernel level: a stack of identical conv+ReLU layers, FP32 vs INT8 (strict, per-channel, all int8)."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeq.runtimes.tflite._tflite import quiet, write_quantized

    rows = []
    for label, (cin, cout, kernel, stride, size, repeats) in CONV_SHAPES.items():
        layers = [torch.nn.Conv2d(cin if i == 0 else cout, cout, kernel, stride, kernel // 2) for i in range(repeats)]
        module = torch.nn.Sequential(*[m for conv in layers for m in (conv, torch.nn.ReLU())]).eval()
        args = (torch.randn(1, cin, size, size),)
        fp32, int8 = tmp / "conv-fp32.tflite", tmp / "conv-int8.tflite"
        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        with quiet(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            litert_torch.convert(module, args).export(str(fp32))
            graph = prepare_pt2e(torch.export.export(module, args, strict=True).module(), quantizer)
            for seed in range(4):
                graph(torch.randn(1, cin, size, size, generator=torch.Generator().manual_seed(seed)))
            write_quantized(convert_pt2e(graph, fold_quantize=False), args, quantizer, int8)
        ratios = {t: interleaved_latency({"fp32": fp32, "int8": int8}, threads=t, rounds=rounds) for t in (1, 2)}
        rows.append(["convs", label, f"{ratios[1]['fp32']['p50_ms']:.2f}", f"{ratios[1]['int8']['ratio_to_first']:.3f}",
                     f"{ratios[2]['int8']['ratio_to_first']:.3f}", "", "", "", f"x{repeats}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all", "convs"], default="resnet18",
                        help="convs: single conv shapes of ResNet-18, FP32 vs INT8 (the XNNPACK kernels alone)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    names = list(MODELS) if args.model == "all" else [args.model]
    header = ["model", "recipe", "p50 ms 1thr", "lat/FP32 1thr", "lat/FP32 2thr", "cosine min", "top-1 agree",
              "input", "ops"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for name in names:
            rows += run_convs(args.rounds, Path(tmp_name)) if name == "convs" else run(name, args.rounds, Path(tmp_name))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
