"""Numbers ``edgeq bench`` can be trusted with, on the bundled digits example and a ResNet-18-sized model:
executed precision per cell, memory that scales with the model (with and without ``--eval``), ``--profile``
per-layer times and the ``--fail-under`` / ``--max-drop`` CI gate. Real exports, real runner processes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from models import WIDE, write_model

from edgeq.cli import main
from edgeq.gate import GATE_EXIT_CODE
from edgeq.results import CellResult

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FAST = ["--runs", "3", "--min-seconds", "0", "--warmup", "1"]
BACKENDS = ("onnx-fp32", "openvino-fp32", "tflite-fp32")

def _backend_args(*names: str) -> list[str]:
    return [arg for name in names for arg in ("-b", name)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, example_model: dict[str, str]) -> Path:
    """OUT/digits_cnn (FP32 of each runtime + the INT8 rows) and OUT/wide (FP32 of each runtime)."""
    root = tmp_path_factory.mktemp("trust")
    wide = write_model(root, WIDE, "wide.py")
    out = root / "out"
    common = ["--calib", example_model["calib"], "--holdout-samples", "20", "--out", str(out)]
    assert main(["export", example_model["model"], "--weights", example_model["weights"], *common,
                 *_backend_args(*BACKENDS, "onnx-qdq", "openvino-int8")]) == 0
    assert main(["export", f"{wide}:Wide", *common, *_backend_args(*BACKENDS)]) == 0
    return out


@pytest.fixture(scope="module")
def benched(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both models benched on this machine, once without and once with the digits eval set."""
    root = tmp_path_factory.mktemp("results")
    runs = {"plain": root / "plain", "eval": root / "eval"}
    assert main(["bench", str(exported), "--out", str(runs["plain"]), *FAST]) == 0
    assert main(["bench", str(exported), "--out", str(runs["eval"]), "--eval", "sklearn-digits:eval", *FAST]) == 0
    return runs


def _all_cells(results: Path) -> list[CellResult]:
    return [CellResult.model_validate_json(p.read_text()) for p in sorted((results / "cells").glob("*.json"))]


def _cells(results: Path) -> dict[tuple[str, str], CellResult]:
    """One-thread cells by (model, backend)."""
    return {(c.model, c.backend): c for c in _all_cells(results) if c.threads == 1}


def _model_mb(cell: CellResult) -> float:
    """What the report's "model MB" shows: peak RSS (load or inference) − RSS before the runtime import."""
    return max(float(cell.memory["model_peak_mb"]), float(cell.memory["model_load_peak_mb"]))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["plain", "eval"])
def test_memory_grows_by_the_weights_and_differs_per_runtime(benched: dict[str, Path], mode: str) -> None:
    cells = _cells(benched[mode])
    per_runtime = {}
    for backend in BACKENDS:
        small, big = cells[("digits_cnn", backend)], cells[("wide", backend)]
        assert small.status == big.status == "ok", (small.error, big.error)
        for cell in (small, big):
            memory = cell.memory
            assert memory["source"] == "/proc/self/status" and memory["peak_scope"] == "inference"
            assert memory["baseline_mb"] < memory["loaded_mb"] <= memory["peak_mb"] + 1  # type: ignore[operator]
            assert memory["runtimes_imported_before_baseline"] == []
        weights_mib = big.size_bytes / 2**20
        assert weights_mib > 40
        assert _model_mb(big) - _model_mb(small) >= weights_mib, (backend, big.memory, small.memory)
        per_runtime[backend] = _model_mb(small)
    # the runtimes' own footprints differ: no shared figure by construction (the old ru_maxrss bug gave ~147 MB
    # for every cell with --eval: the parent's peak, inherited through fork + exec)
    figures = sorted(per_runtime.values())
    assert all(b - a > 2.0 for a, b in zip(figures, figures[1:])), per_runtime


def test_eval_does_not_inflate_memory(benched: dict[str, Path]) -> None:
    plain, evaluated = _cells(benched["plain"]), _cells(benched["eval"])
    for key, cell in plain.items():
        assert abs(_model_mb(evaluated[key]) - _model_mb(cell)) < 8.0, (key, cell.memory, evaluated[key].memory)
        assert abs(float(evaluated[key].peak_rss_mb or 0) - float(cell.peak_rss_mb or 0)) < 8.0


def test_cells_state_the_executed_precision(benched: dict[str, Path]) -> None:
    cells = _cells(benched["plain"])
    expected = {"onnx-fp32": "f32", "openvino-fp32": "f32", "tflite-fp32": "f32", "onnx-qdq": "int8",
                "openvino-int8": "int8"}
    for backend, precision in expected.items():
        cell = cells[("digits_cnn", backend)]
        assert cell.executed_precision == precision, (backend, cell.executed)
        assert cell.precision_match is True
    assert cells[("digits_cnn", "openvino-fp32")].pinned_precision["settings"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert cells[("digits_cnn", "tflite-fp32")].executed["xnnpack_partitions"] >= 1


def test_report_shows_precision_and_model_memory(benched: dict[str, Path], capsys) -> None:
    assert main(["report", str(benched["plain"]), "--format", "md"]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "| backend |" in line)
    assert "| ran |" in header and "| model MB |" in header
    assert re.search(r"\| digits_cnn \| openvino-fp32 \| fp32 \| f32 \|", text)


def test_fail_under_names_every_failing_cell_and_no_passing_one(benched: dict[str, Path], exported: Path,
                                                                capsys) -> None:
    """--fail-under top1=0.99 on the example (its 300 eval digits): exit 3; the named cells are exactly those under
    0.99 (re-read from the cell files; the gate checks every cell of the results directory, as the report shows)."""
    args = ["bench", str(exported / "digits_cnn"), "--out", str(benched["eval"]), "--eval", "sklearn-digits:eval",
            *FAST]
    cells = _all_cells(benched["eval"])
    assert main([*args, "--fail-under", "top1=0.99"]) == GATE_EXIT_CODE  # finished cells are reused, not re-run
    out = capsys.readouterr().out
    named = set(re.findall(r"gate failed (\S+)/(\S+) on host ×(\d+): top1 ([0-9.]+) < 0\.99", out))
    below = {(c.model, c.backend, str(c.threads)) for c in cells if c.metrics["top1"] < 0.99}
    assert any(model == "digits_cnn" for model, _b, _t in below), "the example's top-1 (98.7 %) is under 0.99"
    assert {(m, b, t) for m, b, t, _ in named} == below
    assert f"(exit {GATE_EXIT_CODE})" in out

    floor = min(c.metrics["top1"] for c in cells if c.model == "digits_cnn")
    digits_args = ["bench", str(exported / "digits_cnn"), "--out", str(benched["eval"].parent / "digits-only"),
                   "--eval", "sklearn-digits:eval", *FAST]
    assert main([*digits_args, "--fail-under", f"top1={floor - 1e-6}", "--fail-under", "fidelity=0.9",
                 "--max-drop", "0.05"]) == 0
    assert "gate: every cell passed" in capsys.readouterr().out
    assert main([*digits_args, "--max-drop", "0"]) in (0, GATE_EXIT_CODE)  # drops of exactly 0 pass
    capsys.readouterr()
    assert main([*digits_args, "--fail-under", "top1"]) == 2
    assert "--fail-under wants METRIC=VALUE" in capsys.readouterr().err
    assert main([*digits_args, "--fail-under", "speedup=100"]) == GATE_EXIT_CODE  # FP32 rows are the reference
    out = capsys.readouterr().out
    assert "gate failed digits_cnn/onnx-qdq" in out and "gate failed digits_cnn/onnx-fp32" not in out


def test_profile_gives_per_layer_times_and_report_lists_top_layers(exported: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "profiled"
    assert main(["bench", str(exported / "digits_cnn"), "--out", str(out), "--profile", *FAST]) == 0
    cells = _cells(out)
    for backend in ("onnx-fp32", "onnx-qdq", "openvino-fp32", "openvino-int8"):
        profile = cells[("digits_cnn", backend)].profile
        assert profile and not profile.get("error"), (backend, profile)
        layers = profile["layers"]
        assert layers and all(layer["ms"] >= 0 and layer["precision"] for layer in layers)
        assert [layer["ms"] for layer in layers] == sorted((layer["ms"] for layer in layers), reverse=True)
        heavy = [layer for layer in layers if layer["type"] in ("Conv", "QLinearConv", "Convolution")]
        assert heavy and {layer["precision"] for layer in heavy} <= ({"f32"} if "fp32" in backend else {"i8", "u8"})
    tflite = cells[("digits_cnn", "tflite-fp32")].profile
    assert tflite and "exposes no op profiler" in str(tflite["error"])
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Top layers by time: digits_cnn/openvino-int8 on host ×1" in text
    assert "Top layers by time: digits_cnn/onnx-qdq on host ×1" in text


def test_example_openvino_fp32_matches_onnx_fp32_within_1e5(exported: Path) -> None:
    """Acceptance: on any CPU (BF16 ones included) the example's openvino-fp32 is FP32: rel. error ≤ 1e-5."""
    import numpy as np

    from edgeq.examples.digits import load_digits_split
    from edgeq.targets.runner import open_session

    images, _labels = load_digits_split("eval")
    feeds = images.reshape(len(images), 1, 1, 8, 8).astype(np.float32)
    onnx = open_session(str(exported / "digits_cnn" / "onnx-fp32" / "model.onnx"))
    openvino = open_session(str(exported / "digits_cnn" / "openvino-fp32" / "model.xml"))
    reference = np.stack([onnx.run([x])[0] for x in feeds])
    got = np.stack([openvino.run([x])[0] for x in feeds])
    assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()
