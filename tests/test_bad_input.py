"""Every bad input gives one clear line on stderr, a non-zero exit, and leaves nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_checks import fails_in_one_line

from edgeq.backends import REGISTRY
from edgeq.cli import main


def test_missing_model_file(capsys, tiny_calib: Path, tmp_path: Path) -> None:
    fails_in_one_line(capsys, ["export", str(tmp_path / "nope.onnx"), "--calib", str(tiny_calib), "--out", str(tmp_path)],
          "model file not found")


def test_not_a_model_file(capsys, tiny_calib: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_text("this is not protobuf at all, just text\n" * 10)
    fails_in_one_line(capsys, ["export", str(fake), "--calib", str(tiny_calib), "--out", str(tmp_path / "o")], "onnx")


def test_truncated_onnx(capsys, tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                 "-b", "onnx-fp32", "--out", str(tmp_path / "ok")]) == 0
    data = (tmp_path / "ok" / "tinycnn" / "onnx-fp32" / "model.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    fails_in_one_line(capsys, ["export", str(cut), "--calib", str(tiny_calib), "--out", str(tmp_path / "o")], "onnx")
    assert not (tmp_path / "o" / "cut").exists()


def test_unknown_file_format(capsys, tiny_calib: Path, tmp_path: Path) -> None:
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"\0" * 16)
    fails_in_one_line(capsys, ["export", str(weird), "--calib", str(tiny_calib), "--out", str(tmp_path)], "cannot tell the format")


def test_pytorch_class_not_found(capsys, tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:Missing", "--calib", str(tiny_calib), "--out", str(tmp_path)],
          "no torch.nn.Module class 'Missing'")
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:NotAModule", "--calib", str(tiny_calib), "--out", str(tmp_path)],
          "found: TinyCNN")


def test_weights_that_do_not_fit(capsys, tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"head.weight": torch.zeros(3, 3)}, str(bad))
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--weights", str(bad), "--calib", str(tiny_calib),
                   "--out", str(tmp_path)], "do not fit")


def test_calibration_shape_mismatch(capsys, tiny_model_file: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((8, 3, 32, 32), np.float32))
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(wrong), "--out", str(tmp_path / "o")], "shape")
    assert not (tmp_path / "o" / "tinycnn").exists()


def test_calibration_dtype_mismatch(capsys, tiny_model_file: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "ints.npy"
    np.save(wrong, np.zeros((8, 3, 16, 16), np.int64))
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(wrong), "--out", str(tmp_path / "o")], "dtype")


def test_empty_calibration_source(capsys, tiny_model_file: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(empty), "--out", str(tmp_path / "o")], "empty")


def test_nan_in_calibration(capsys, tiny_model_file: Path, tmp_path: Path) -> None:
    data = np.zeros((8, 3, 16, 16), np.float32)
    data[5, 0, 0, 0] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, data)
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(path), "--out", str(tmp_path / "o")], "nan")


def test_unknown_backend(capsys, tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "-b", "onnx-int3",
                   "--out", str(tmp_path)], "unknown backend 'onnx-int3'")


def test_usage_errors_are_click_messages_not_tracebacks(capsys, tiny_model_file: Path, tmp_path: Path) -> None:
    """A missing required option or an unknown flag: click's usage message and exit code 2 (typer ≥ 0.2x raises its
    vendored click's exceptions, which once escaped as a traceback)."""
    for args, expect in ((["export", f"{tiny_model_file}:TinyCNN", "-b", "onnx-fp32", "--out", str(tmp_path)],
                          "Missing option '--calib'"),
                         (["export", "--bogus"], "No such option: --bogus")):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err, err


def test_output_dir_not_writable(capsys, tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    fails_in_one_line(capsys, ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--out", str(blocker / "out")],
          "not writable")


def test_failing_backend_leaves_nothing_and_others_finish(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend that crashes after writing part of its files leaves no trace; the next backend still exports."""
    from edgeq.manifest import Manifest
    from edgeq.runtimes.onnx.onnx_fp16 import OnnxFp16

    def half_then_crash(self, source, calib, out_dir, options):
        (out_dir / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(OnnxFp16, "export", half_then_crash)
    code = main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                 "-b", "onnx-fp16", "-b", "onnx-fp32", "--out", str(tmp_path)])
    assert code == 0  # one of two succeeded
    model_dir = tmp_path / "tinycnn"
    manifest = Manifest.read(model_dir / "manifest.json")
    assert manifest.artifact("onnx-fp16").status == "failed"
    assert "converter exploded" in manifest.artifact("onnx-fp16").error
    assert manifest.artifact("onnx-fp32").status == "ok"
    assert sorted(p.name for p in model_dir.iterdir()) == ["logs", "manifest.json", "onnx-fp32"]
    assert f"(details: {model_dir / 'logs' / 'onnx-fp16.log'})" in manifest.artifact("onnx-fp16").error
    assert "RuntimeError: converter exploded" in (model_dir / "logs" / "onnx-fp16.log").read_text()  # traceback
    # reference.log: what the FP32 reference's child process printed
    assert sorted(p.name for p in (model_dir / "logs").iterdir()) == ["onnx-fp16.log", "onnx-fp32.log",
                                                                      "reference.log"]


def test_help_does_not_import_heavy_frameworks() -> None:
    code = ("import sys\nfrom edgeq.cli import main\nmain(['--help'])\nmain(['export', '--help'])\n"
            "heavy = {'torch', 'tensorflow', 'openvino', 'nncf', 'onnxruntime'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--calib" in result.stdout


def test_backends_lists_all(capsys) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
