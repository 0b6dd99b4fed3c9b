"""``edgeq export --qat``: quantization-aware training before the INT8 exports (edgeq/qat.py).

Fast tests use the tiny CNN from conftest with 64 labelled images (labels = the FP32 model's own predictions);
the slow acceptance test fine-tunes the digits CNN with a deliberately hard activation and measures eval top-1.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from cli_checks import fails_in_one_line

from edgeq.cli import main

QAT_BACKENDS = ["onnx-qdq", "openvino-int8", "tflite-int8"]


def _load_class(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"qat_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return getattr(module, name)


@pytest.fixture(scope="module")
def tiny_train(tiny_model_file: Path, tiny_calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibration images with the FP32 model's own top-1 as labels (.npz x, y)."""
    import torch

    x = np.load(tiny_calib)
    with torch.no_grad():
        y = _load_class(tiny_model_file, "TinyCNN")().eval()(torch.from_numpy(x)).argmax(1).numpy()
    path = tmp_path_factory.mktemp("train") / "train.npz"
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


def _export(model_file: Path, calib: Path, out: Path, extra: list[str]) -> tuple[dict, Path]:
    """Run ``edgeq export`` for the three INT8 backends; (manifest, model directory)."""
    args = ["export", f"{model_file}:TinyCNN", "--calib", str(calib), "--calib-samples", "16",
            "--holdout-samples", "16", "--out", str(out)]
    for backend in QAT_BACKENDS:
        args += ["-b", backend]
    assert main(args + extra) == 0
    model_dir = out / "tinycnn"
    return json.loads((model_dir / "manifest.json").read_text()), model_dir


@pytest.fixture(scope="module")
def exports(tiny_model_file: Path, tiny_calib: Path, tiny_train: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """``{"ptq": (manifest, dir), "qat": (manifest, dir)}`` for the three INT8 backends."""
    root = tmp_path_factory.mktemp("qat")
    return {"ptq": _export(tiny_model_file, tiny_calib, root / "ptq", []),
            "qat": _export(tiny_model_file, tiny_calib, root / "qat",
                           ["--qat", "--epochs", "1", "--train", str(tiny_train), "--lr", "0.0005"])}


def _rows(manifest: dict) -> dict[str, dict]:
    return {a["backend"]: a for a in manifest["artifacts"]}


def test_qat_artifacts_are_int8_and_verified(exports) -> None:
    rows = _rows(exports["qat"][0])
    for backend in QAT_BACKENDS:
        row = rows[backend]
        assert row["status"] == "ok", (backend, row.get("error"))
        assert row["precision"] == "int8"
        assert row["recipe"]["qat"]["epochs"] == 1
        assert row["recipe"]["qat"]["lr"] == 0.0005
        assert row["recipe"]["qat"]["route"]
        verification = row["verification"]
        assert verification is not None and verification["samples"] == 16
        assert verification["cosine_min"] > 0.9, (backend, verification)


def test_qat_graphs_are_really_quantized(exports) -> None:
    """QDQ pairs in the ONNX, FakeQuantize in the IR, int8 I/O in the .tflite."""
    import onnx

    manifest, model_dir = exports["qat"]
    rows = _rows(manifest)
    ops = {n.op_type for n in onnx.load(str(model_dir / rows["onnx-qdq"]["path"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert rows["openvino-int8"]["recipe"]["fake_quantize_ops"] > 0
    assert 'type="FakeQuantize"' in (model_dir / rows["openvino-int8"]["path"]).read_text()
    tensor = rows["tflite-int8"]["inputs"][0]
    assert tensor["dtype"] == "int8" and tensor["quantization"] is not None


def test_qat_artifacts_differ_from_ptq(exports) -> None:
    ptq_rows, qat_rows = _rows(exports["ptq"][0]), _rows(exports["qat"][0])
    for backend in QAT_BACKENDS:
        assert "qat" not in ptq_rows[backend]["recipe"]
        assert qat_rows[backend]["sha256"] != ptq_rows[backend]["sha256"], backend


def test_training_changes_weights_and_leaves_the_source_alone(tiny_model_file: Path, tiny_calib: Path,
                                                              tiny_train: Path) -> None:
    import torch

    from edgeq.calibration import prepare_calibration
    from edgeq.models import load_model
    from edgeq.qat import QatSettings, train_fake_quantized
    from edgeq.runtimes.onnx._qat import _qdq_quantizer

    source = load_model(f"{tiny_model_file}:TinyCNN")
    try:
        data = prepare_calibration(str(tiny_calib), source.inputs, source.layout, samples=8, holdout_samples=0)
        original = {k: v.clone() for k, v in source.torch_module().state_dict().items()}
        epochs_seen: list[int] = []
        results = {}
        for epochs in (0, 2):
            settings = QatSettings(train=str(tiny_train), epochs=epochs, lr=0.01,
                                   on_epoch=lambda _r, e, _n, loss: epochs_seen.append(e) or None)
            graph, summary = train_fake_quantized(source, _qdq_quantizer("x86-vnni")[0], data.calib, settings, "test")
            results[epochs] = (dict(graph.named_parameters()), summary)
        untrained, trained = results[0][0], results[2][0]
        assert untrained.keys() == trained.keys() and untrained
        changed = [k for k in trained if not torch.equal(trained[k], untrained[k])]
        assert changed, "two epochs of QAT left every weight as it was"
        assert epochs_seen == [1, 2]
        assert np.isfinite(results[2][1]["final_loss"])
        for key, value in source.torch_module().state_dict().items():
            assert torch.equal(value, original[key]), f"QAT modified the source model's {key}"
    finally:
        source.close()




def test_refusals_are_one_line(capsys, tiny_model_file: Path, tiny_calib: Path, tiny_train: Path,
                               tmp_path: Path) -> None:
    base = ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
            "-b", "onnx-qdq", "--out", str(tmp_path / "o")]
    fails_in_one_line(capsys, base + ["--qat"], "--qat needs labelled training data")
    fails_in_one_line(capsys, base + ["--train", str(tiny_train)], "--train is only used by --qat")
    fails_in_one_line(capsys, base + ["--qat", "--train", str(tmp_path / "missing.npz")], "not found")
    fp32_only = [a if a != "onnx-qdq" else "onnx-fp32" for a in base]
    fails_in_one_line(capsys, fp32_only + ["--qat", "--train", str(tiny_train)], "none of them was requested")
    fails_in_one_line(capsys, base + ["--qat", "--train", str(tiny_train), "--max-drop", "0.01"], "cannot be combined")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 8, 8), np.float32), y=np.zeros(4, np.int64))
    fails_in_one_line(capsys, base + ["--qat", "--train", str(bad)], "needs (3, 16, 16)")
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((4, 3, 16, 16), np.float32), y=np.array([0, 1, 2, 99]))
    fails_in_one_line(capsys, base + ["--qat", "--train", str(labels)], "outputs 10 classes")
    # an ONNX source: export one first, then ask for QAT on it
    assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                 "-b", "onnx-fp32", "--out", str(tmp_path / "fp32")]) == 0
    onnx_model = tmp_path / "fp32" / "tinycnn" / "onnx-fp32" / "model.onnx"
    fails_in_one_line(capsys, ["export", str(onnx_model), "--calib", str(tiny_calib), "-b", "onnx-qdq", "--out",
                   str(tmp_path / "o2"), "--qat", "--train", str(tiny_train)], "--qat needs a PyTorch model")


HARD_SCALE = 300.0
"""Channel 0 after the first Conv+BN+ReLU is this much larger than before; the next conv divides it back."""


@pytest.mark.slow
def test_qat_recovers_accuracy_that_ptq_loses(tmp_path: Path) -> None:
    """Digits CNN with one hard activation: FP32 outputs unchanged, but a per-tensor INT8 range for that activation
    leaves the other 31 channels almost no quantization steps, so PTQ loses most of its accuracy. QAT (2 epochs on
    sklearn-digits:train, Adam lr 1e-4) must win it back on sklearn-digits:eval (300 samples); the margins are the
    measured gains (README, QAT section) minus a safety margin."""
    import torch
    from safetensors.torch import save_file

    import edgeq
    from edgeq.backends.options import validate_configs
    from edgeq.examples.digits import load_digits_split, load_pretrained
    from edgeq.qat import QatSettings
    from edgeq.targets.runner import open_session

    state = {k: v.clone() for k, v in load_pretrained().state_dict().items()}
    state["features.1.weight"][0] *= HARD_SCALE  # BN gamma/beta of channel 0: ReLU keeps the factor
    state["features.1.bias"][0] *= HARD_SCALE
    state["features.3.weight"][:, 0] /= HARD_SCALE
    weights = tmp_path / "hard.safetensors"
    save_file(state, str(weights))
    model = f"{Path(edgeq.__file__).parent}/examples/digits.py:DigitsCNN"
    x, y = load_digits_split("eval")

    def top1(manifest, backend: str, out: Path) -> float:
        row = manifest.artifact(backend)
        assert row.status == "ok", row.error
        session = open_session(str(out / manifest.model.name / row.path), threads=1)
        logits = np.concatenate([session.run({"x": x[i:i + 1]})[0] for i in range(len(x))])
        return float((logits.argmax(1) == y).mean())

    common = dict(backends=list(MIN_GAIN), weights=str(weights), holdout_samples=50)
    # against plain PTQ: the default fidelity floors repair this model without training (tflite-int8 top-1 0.987)
    ptq = edgeq.export(model, "sklearn-digits:calib", out=tmp_path / "ptq",
                       configs=validate_configs({backend: {"fidelity_floor": 0} for backend in MIN_GAIN}), **common)
    qat = edgeq.export(model, "sklearn-digits:calib", out=tmp_path / "qat",
                       qat=QatSettings(train="sklearn-digits:train", epochs=2, lr=1e-4), **common)
    with torch.no_grad():
        fp32 = float((load_pretrained()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    for backend, gain in MIN_GAIN.items():
        before, after = top1(ptq, backend, tmp_path / "ptq"), top1(qat, backend, tmp_path / "qat")
        print(f"{backend}: FP32 {fp32:.3f}  PTQ {before:.3f}  QAT {after:.3f}")
        assert after >= before + gain, (backend, before, after)


MIN_GAIN = {"tflite-int8": 0.30, "onnx-qdq": 0.30, "openvino-int8": 0.15}
"""Smallest accepted QAT − PTQ gain in eval top-1 per backend (measured gains in README, QAT section)."""
