"""Precision tiers beyond INT8: W8A16 (onnx-w8a16, tflite-w8a16), INT4 weight-only (onnx-w4, openvino-w4, tflite-w4)
from the digits example (PyTorch and its ONNX file), the typed INT4 options, and accuracy control's fallback tiers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from models import TRANSFORMERS, write_model

from edgeq.cli import main
from edgeq.manifest import Manifest
from edgeq.targets.runner import open_session, random_feeds

pytest.importorskip("litert_torch")
pytest.importorskip("nncf")

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "edgeq" / "examples" / "digits.py"
SENSITIVE = REPO / "edgeq" / "examples" / "sensitive.py"
TIERS = ["onnx-w8a16", "onnx-w4", "openvino-w4", "tflite-w8a16", "tflite-w4"]
PRECISION = {"onnx-w8a16": "w8a16", "tflite-w8a16": "w8a16", "onnx-w4": "w4", "openvino-w4": "w4", "tflite-w4": "w4"}
FAST = ["--calib-samples", "64", "--holdout-samples", "40", "--eval", "sklearn-digits:eval", "--eval-samples", "150"]


def _export(model: str, out: Path, backends: list[str], *extra: str, calib: str = "sklearn-digits:calib") -> Path:
    """Run ``edgeq export`` and return the model's output directory (with manifest.json)."""
    args = ["export", model, "--calib", calib, *FAST, "--out", str(out), *extra]
    for name in backends:
        args += ["-b", name]
    assert main(args) == 0
    return next(out.glob("*/manifest.json")).parent


@pytest.fixture(scope="module")
def from_torch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(f"{DIGITS}:DigitsCNN", tmp_path_factory.mktemp("tiers_torch"), ["onnx-fp32", "tflite-fp32", *TIERS],
                   "--weights", str(REPO / "edgeq/examples/digits_cnn.safetensors"))


def _check_tiers(model_dir: Path) -> Manifest:
    manifest = Manifest.read(model_dir / "manifest.json")
    arts = {a.backend: a for a in manifest.artifacts}
    for name in TIERS:
        art = arts[name]
        assert art.status == "ok", f"{name}: {art.error}"
        assert art.precision == PRECISION[name]
        assert art.recipe.get("executes"), name  # what the runtime actually computes is recorded
        assert art.verification.cosine_min > 0.95, name
        assert art.verification.top1_agreement >= 0.95, name
        assert art.evaluation.drop <= 0.02, name  # top-1 on 150 eval digits within 2 points of FP32
    return manifest


def test_every_tier_from_pytorch_verifies_with_precision_and_size(from_torch: Path) -> None:
    arts = {a.backend: a for a in _check_tiers(from_torch).artifacts}
    onnx, tflite = arts["onnx-fp32"].size_bytes, arts["tflite-fp32"].size_bytes
    assert arts["onnx-w8a16"].size_bytes / onnx < 0.35  # int8 weights (+ int16 scales)
    assert arts["tflite-w8a16"].size_bytes / tflite < 0.35
    assert arts["tflite-w4"].size_bytes / tflite < 0.2  # INT4 convolutions per channel: ~1/8 of FP32
    assert arts["openvino-w4"].size_bytes / onnx < 0.4  # INT4 classifier, INT8 convolutions (NNCF's backup)
    w4 = arts["onnx-w4"].recipe  # ORT has no weight-only convolution: only the Gemm head (as MatMul) is INT4
    assert w4["gemm_rewritten"] == 1 and len(w4["int4_layers"]) == 1 and w4["convolutions"] == "fp32"
    assert arts["openvino-w4"].recipe["weight_elements"]["int4"] == 128 * 10
    assert arts["onnx-w8a16"].recipe["activation_type"] == "QInt16"
    assert arts["tflite-w8a16"].inputs[0].dtype == "int16" and arts["tflite-w8a16"].inputs[0].quantization
    session = open_session(str(from_torch / arts["tflite-w8a16"].path))  # what LiteRT's kernels really run
    executed = session.executed_precision(session.prepare(random_feeds(session)))
    assert executed["precision"].startswith("int16"), executed  # 16x8 kernels, not labelled int8


def test_onnx_w8a16_holds_int16_qdq_and_ort_cpu_runs_it(from_torch: Path) -> None:
    import onnx
    import onnxruntime as ort

    art = Manifest.read(from_torch / "manifest.json").artifact("onnx-w8a16")
    path = from_torch / art.path
    graph = onnx.load(str(path)).graph
    zero_points = {init.data_type for init in graph.initializer if init.name.endswith("_zero_point")}
    assert {onnx.TensorProto.INT16, onnx.TensorProto.INT8} <= zero_points
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {art.inputs[0].name: np.zeros((1, 1, 8, 8), np.float32)})[0]
    assert out.shape == (1, 10) and np.isfinite(out).all()


@pytest.mark.slow  # five exports from the ONNX file, each verified and scored: ~1 min on a busy machine
def test_every_tier_from_the_onnx_file(from_torch: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    manifest = Manifest.read(from_torch / "manifest.json")
    shutil.copy(from_torch / manifest.artifact("onnx-fp32").path, src / "digits.onnx")
    model_dir = _export(str(src / "digits.onnx"), tmp_path / "out", TIERS)
    assert Manifest.read(model_dir / "manifest.json").model.framework == "onnx"
    _check_tiers(model_dir)


@pytest.fixture(scope="module")
def transformer_calib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("block")
    write_model(folder, TRANSFORMERS, "block.py")
    np.save(folder / "calib.npy", np.random.default_rng(0).standard_normal((16, 16, 64)).astype(np.float32))
    return folder / "block.py", folder / "calib.npy"


@pytest.mark.slow  # six INT4 exports of a transformer block: ~1.5 min on a busy machine
def test_int4_ratio_and_group_size_are_honoured_on_a_transformer(transformer_calib: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, calib = transformer_calib  # group 32: the default 128 is larger than the block's 64 input channels
    args = ["export", f"{model}:Block", "--calib", str(calib), "--calib-samples", "16", "--holdout-samples", "8",
            "-b", "onnx-w4", "-b", "openvino-w4", "-b", "tflite-w4"]
    assert main([*args, "--w4-group-size", "32", "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--w4-ratio", "0.5", "--w4-group-size", "32", "--out", str(tmp_path / "half")]) == 0
    full = {a.backend: a for a in Manifest.read(tmp_path / "all" / "block" / "manifest.json").artifacts}
    half = {a.backend: a for a in Manifest.read(tmp_path / "half" / "block" / "manifest.json").artifacts}
    for name in ("onnx-w4", "openvino-w4", "tflite-w4"):
        assert full[name].status == "ok" and half[name].status == "ok", (full[name].error, half[name].error)
        assert full[name].recipe["int4_param_fraction"] > 0.9, name
        assert 0.2 < half[name].recipe["int4_param_fraction"] < 0.8, name
        assert half[name].recipe["group_size"] == 32
        assert half[name].size_bytes > full[name].size_bytes  # INT8 layers are twice the INT4 ones
        assert half[name].verification.cosine_min > 0.95, name
    assert full["onnx-w4"].recipe["int8_layers"] == [] and half["onnx-w4"].recipe["int8_layers"]


@pytest.mark.parametrize(("flag", "value"), [("--w4-ratio", "1.5"), ("--w4-group-size", "100")])
def test_bad_int4_options_are_one_line(flag: str, value: str, transformer_calib: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    model, calib = transformer_calib
    code = main(["export", f"{model}:Block", "--calib", str(calib), "-b", "onnx-w4", flag, value,
                 "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "INT4" in err and "Traceback" not in err
    assert not (tmp_path / "block").exists()


def test_tiered_fallback_puts_the_sensitive_tensor_in_int16(tmp_path: Path) -> None:
    """The sensitive digits model: plain INT8 PTQ loses > 2 points; the tiered fallback meets --max-drop 0.01 with
    int16 activations on the outlier tensor (weights stay int8), the fp32 fallback with float layers."""
    from edgeq.examples.sensitive import train

    weights = tmp_path / "sensitive.safetensors"
    train(weights)
    dirs = {}
    for fallback in ("tiered", "fp32"):
        dirs[fallback] = _export(f"{SENSITIVE}:SensitiveDigitsNet", tmp_path / fallback, ["onnx-qdq"], "--weights",
                                 str(weights), "--max-drop", "0.01", "--fallback", fallback,
                                 "-O", "onnx-qdq.fidelity_floor=0")  # the default floor alone repairs it
    tiered = Manifest.read(dirs["tiered"] / "manifest.json").artifact("onnx-qdq")
    float_only = Manifest.read(dirs["fp32"] / "manifest.json").artifact("onnx-qdq")
    for art in (tiered, float_only):
        assert art.accuracy_control.drop_before > 0.02 and art.accuracy_control.met
    assert set(tiered.accuracy_control.layer_tiers.values()) == {"int16 activations"}
    assert tiered.recipe["int16_tensors"] == list(tiered.accuracy_control.layer_tiers)
    assert tiered.accuracy_control.layers_to_float == []
    assert set(float_only.accuracy_control.layer_tiers.values()) == {"fp32"}
    assert tiered.size_bytes < float_only.size_bytes  # int8 weights kept



def test_openvino_w8a16_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", f"{DIGITS}:DigitsCNN", "--calib", "sklearn-digits:calib", "-b", "openvino-w8a16",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and "no int16 kernels" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_keras_digits_twin_reaches_the_tflite_tiers(tmp_path: Path) -> None:
    """Keras sources: tflite-w8a16 through TFLiteConverter's 16x8 ops set (float I/O), tflite-w4 through the
    converter's FP32 .tflite + ai-edge-quantizer."""
    pytest.importorskip("tensorflow")
    from edgeq.examples.digits_keras import save

    model = save(tmp_path / "digits_keras.keras")
    model_dir = _export(str(model), tmp_path / "out", ["tflite-fp32", "tflite-w8a16", "tflite-w4"])
    arts = {a.backend: a for a in Manifest.read(model_dir / "manifest.json").artifacts}
    for name in ("tflite-w8a16", "tflite-w4"):
        assert arts[name].status == "ok", arts[name].error
        assert arts[name].layout == "NHWC" and arts[name].evaluation.drop <= 0.02
    assert arts["tflite-w8a16"].recipe["ops"] == "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"
    assert arts["tflite-w8a16"].inputs[0].dtype == "float32"
    assert arts["tflite-w4"].size_bytes / arts["tflite-fp32"].size_bytes < 0.2
