"""``edgeq export --eval/--metric/--max-drop``: metrics in the manifest, accuracy control on every INT8 backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from edgeq.manifest import Manifest

REPO = Path(__file__).resolve().parents[1]
SENSITIVE = REPO / "edgeq" / "examples" / "sensitive.py"
DIGITS = REPO / "edgeq" / "examples" / "digits.py"


@pytest.fixture(scope="module")
def sensitive_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeq.examples.sensitive import train

    path = tmp_path_factory.mktemp("sensitive") / "sensitive_digits.safetensors"
    assert train(path) > 0.9  # FP32 (with the outlier channels) is a good classifier
    return path


def _export(*args: str) -> int:
    return main(["export", *args])


def test_eval_metrics_in_manifest_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _export(f"{DIGITS}:DigitsCNN", "--weights", str(REPO / "edgeq/examples/digits_cnn.safetensors"),
                   "--calib", "sklearn-digits:calib", "--calib-samples", "100", "--holdout-samples", "20",
                   "--eval", "sklearn-digits:eval", "-b", "onnx-fp32", "-b", "onnx-qdq", "--out", str(tmp_path))
    assert code == 0
    manifest = Manifest.read(tmp_path / "digits_cnn" / "manifest.json")
    ev = manifest.evaluation
    assert ev is not None and ev.metric == "top1" and ev.samples == 300 and ev.ground_truth == "labels"
    assert ev.reference == pytest.approx(296 / 300)  # the committed weights' documented FP32 accuracy
    fp32, qdq = manifest.artifact("onnx-fp32"), manifest.artifact("onnx-qdq")
    assert fp32.evaluation.value == pytest.approx(ev.reference) and fp32.evaluation.drop == pytest.approx(0)
    assert fp32.evaluation.cosine_min > 0.99999
    assert qdq.evaluation.drop <= 0.005 and qdq.evaluation.top1_agreement > 0.98
    assert qdq.accuracy_control is None  # no --max-drop
    out = capsys.readouterr().out
    assert "FP32 source" in out and "top1" in out and "eval: top1 on 300 samples" in out


@pytest.mark.parametrize("backend", ["onnx-qdq", "openvino-int8", "tflite-int8"])
def test_max_drop_returns_sensitive_layers_to_float(backend: str, sensitive_weights: Path, tmp_path: Path) -> None:
    code = _export(f"{SENSITIVE}:SensitiveDigitsNet", "--weights", str(sensitive_weights),
                   "--calib", "sklearn-digits:calib", "--calib-samples", "100", "--holdout-samples", "20",
                   "--eval", "sklearn-digits:eval", "--max-drop", "0.01", "--fallback", "fp32", "-b", backend,
                   # the default fidelity floors already repair this model (onnx-qdq: int16 on the outlier activation)
                   "-O", f"{backend}.fidelity_floor=0",
                   "--out", str(tmp_path))
    assert code == 0
    art = Manifest.read(tmp_path / "sensitive_digits" / "manifest.json").artifact(backend)
    control = art.accuracy_control
    assert art.status == "ok" and control is not None
    assert control.drop_before > 0.02  # plain per-tensor PTQ is wrecked by the outlier channels
    assert control.met and control.drop_after <= 0.01 and art.evaluation.drop == pytest.approx(control.drop_after)
    assert control.layers_to_float and len(control.attempts) >= 1
    assert control.latency_ratio_vs_ptq is not None and control.latency_ratio_vs_ptq > 0  # timed, interleaved
    assert art.config is not None and art.config["fallback"] == "fp32"  # the typed options the artifact was built with
    if backend == "onnx-qdq":
        assert art.recipe["nodes_to_exclude"] == control.layers_to_float == art.config["nodes_to_exclude"]
        assert control.ranked_layers[0].startswith(control.ranked_layers[0].split(" ")[0])
        assert " 0 dB" in control.ranked_layers[0] or float(control.ranked_layers[0].split("(")[1].split()[0]) < 10
    elif backend == "tflite-int8":
        assert art.recipe["float_modules"] == control.layers_to_float == art.config["exclude_modules"]
        assert set(control.layers_to_float) <= {"stem", "mid", "mix", "head"} and "mix" in control.layers_to_float
    else:
        assert "accuracy_control" in art.recipe and art.config["preset"] == "performance"


def test_budget_not_met_keeps_artifact_and_exits_3(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # cosine vs FP32 outputs (no targets): FP16 cannot reach a zero budget, and has no layers to return to float
    code = _export(f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                   "--eval", str(tiny_calib), "--eval-samples", "8", "--metric", "cosine", "--max-drop", "0",
                   "-b", "onnx-fp16", "--out", str(tmp_path))
    assert code == 3
    art = Manifest.read(tmp_path / "tinycnn" / "manifest.json").artifact("onnx-fp16")
    assert art.status == "ok" and (tmp_path / "tinycnn" / art.path).is_file()
    assert art.accuracy_control is not None and art.accuracy_control.met is False
    assert art.evaluation.drop > 0 and "budget NOT met" in art.notes[0]
    assert "not met by onnx-fp16" in capsys.readouterr().out


def test_float_targets_mse(tiny_model_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 1, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, y=rng.standard_normal((12, 10)).astype(np.float32))
    np.save(tmp_path / "calib.npy", x[:, 0])
    assert _export(f"{tiny_model_file}:TinyCNN", "--calib", str(tmp_path / "calib.npy"),
                   "--eval", str(tmp_path / "eval.npz"), "-b", "onnx-fp32", "--out", str(tmp_path / "out")) == 0
    manifest = Manifest.read(tmp_path / "out" / "tinycnn" / "manifest.json")
    assert manifest.evaluation.metric == "mse" and manifest.evaluation.ground_truth == "targets"
    assert manifest.evaluation.higher_is_better is False and manifest.evaluation.reference > 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-drop", "0.01"], "--max-drop needs --eval EVALSET"),
    (["--eval", "sklearn-digits:eval", "--metric", "top3"], "unknown metric 'top3'"),
    (["--eval", "sklearn-digits:eval", "--max-drop", "-1"], "--max-drop must be >= 0"),
    (["--eval", "sklearn-digits:eval", "--drop-type", "percent"], "--drop-type must be absolute or relative"),
    (["--eval", "CALIB", "--metric", "top1"], "metric top1 needs integer labels"),
])
def test_bad_eval_options_one_line(extra: list[str], message: str, tiny_model_file: Path, tiny_calib: Path,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [str(tiny_calib) if e == "CALIB" else e for e in extra]
    code = _export(f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                   "-b", "onnx-fp32", "--out", str(tmp_path), *extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_eval_in_parallel_export_workers(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    # --jobs 2: each backend in its own worker process; the eval context (metric included) travels pickled
    code = _export(f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                   "--eval", str(tiny_calib), "--eval-samples", "8", "--metric", "cosine", "--max-drop", "0.05",
                   "--jobs", "2", "-b", "onnx-fp32", "-b", "onnx-qdq", "--out", str(tmp_path))
    assert code == 0
    manifest = Manifest.read(tmp_path / "tinycnn" / "manifest.json")
    for backend in ("onnx-fp32", "onnx-qdq"):
        art = manifest.artifact(backend)
        assert art.status == "ok", art.error
        assert art.evaluation is not None and art.evaluation.metric == "cosine" and art.evaluation.value > 0.95
        assert art.accuracy_control is not None and art.accuracy_control.met


@pytest.mark.slow  # ONNX → three INT8 backends, each with accuracy control: 12 s idle, ~45-60 s on a busy machine
def test_max_drop_from_onnx_source(sensitive_weights: Path, tmp_path: Path) -> None:
    assert _export(f"{SENSITIVE}:SensitiveDigitsNet", "--weights", str(sensitive_weights), "--calib",
                   "sklearn-digits:calib", "--calib-samples", "50", "-b", "onnx-fp32", "--out", str(tmp_path / "src")) == 0
    onnx_file = tmp_path / "src" / "sensitive_digits" / "onnx-fp32" / "model.onnx"
    code = _export(str(onnx_file), "--calib", "sklearn-digits:calib", "--calib-samples", "100", "--holdout-samples",
                   "20", "--eval", "sklearn-digits:eval", "--max-drop", "0.01", "-b", "onnx-qdq", "-b", "openvino-int8",
                   "-b", "tflite-int8", *(arg for b in ("onnx-qdq", "openvino-int8", "tflite-int8") for arg in ("-O", f"{b}.fidelity_floor=0")),
                   "--out", str(tmp_path / "out"))
    assert code == 0
    manifest = Manifest.read(tmp_path / "out" / "model" / "manifest.json")
    for art in manifest.artifacts:
        control = art.accuracy_control
        assert art.status == "ok" and control is not None, art.error
        assert control.drop_before > 0.02 and control.met and control.layer_tiers  # int16 (onnx-qdq) or float
        assert control.layers_to_float or set(control.layer_tiers.values()) == {"int16 activations"}
    # onnx2fx graphs have no submodules: TFLite names the float ops by their torch.export node names
    assert all(layer.startswith("node:") for layer in manifest.artifact("tflite-int8").accuracy_control.layers_to_float)
