"""The emulated arm64 device (kind: qemu): a real arm64 root built by ``setup_arm64`` (Debian arm64 .debs + PyPI
aarch64 wheels), real QEMU user-mode emulation, real runtimes. The same tiny ONNX QDQ INT8, TFLite INT8 and
OpenVINO artifacts run on the emulated device and on this machine, and their outputs must agree.

The root is built once per machine (``~/.cache/edgeq/arm64-root``, or ``$EDGEQ_ARM64_ROOT``); the first build
downloads ~140 MB from Debian and PyPI (~45 s here). Skipped when ``qemu-aarch64-static`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import INPUT_SHAPE, make_export_dir
from models import tflite_full_integer

from edgeq.devices import ArtifactFiles, RunSettings, make_device
from edgeq.devices.arm64_root import (
    DEFAULT_ROOT,
    NUMPY_PIN,
    QEMU_BINARY,
    RUNTIME_PINS,
    WHEEL_PLATFORMS,
    setup_arm64,
)
from edgeq.devices.config import LocalDeviceConfig, QemuDeviceConfig
from edgeq.errors import DeviceError

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(QEMU_BINARY) is None,
                       reason=f"{QEMU_BINARY} not on PATH (apt-get install -y qemu-user-static)"),
]

FAST = RunSettings(runs=3, min_seconds=0.0, warmup=1)
TFLITE_SHAPE = (1, 8, 8, 3)


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    root = Path(os.environ.get("EDGEQ_ARM64_ROOT") or DEFAULT_ROOT).expanduser()
    setup_arm64(root)  # a no-op when the stamp is there; xdist workers serialise on ROOT.lock
    return root


@pytest.fixture(scope="module")
def emulated(arm64_root: Path):
    device = make_device(QemuDeviceConfig(name="arm64-emu", kind="qemu", root=str(arm64_root)))
    device.prepare()
    yield device
    device.close()


@pytest.fixture(scope="module")
def host():
    device = make_device(LocalDeviceConfig(name="host", kind="local"))
    device.prepare()
    yield device
    device.close()


def _tflite_int8(path: Path) -> None:
    """A tiny Keras CNN converted to full-integer INT8 (int8 input and output) by the TFLite converter."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=TFLITE_SHAPE[1:], batch_size=1),
        tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(5),
    ])
    calibration = np.random.default_rng(1).standard_normal((32, *TFLITE_SHAPE)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite_full_integer(model, calibration))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ArtifactFiles, np.ndarray]]:
    """ONNX QDQ INT8 (ORT quantize_static), TFLite INT8 (TFLiteConverter), OpenVINO IR; each with eval inputs."""
    import openvino as ov

    out = make_export_dir(tmp_path_factory.mktemp("export"))
    model_dir = out / "tiny"
    tflite = model_dir / "tflite-int8" / "model.tflite"
    _tflite_int8(tflite)
    ov_xml = model_dir / "openvino-fp32" / "model.xml"
    ov_xml.parent.mkdir()
    ov.save_model(ov.convert_model(str(model_dir / "onnx-fp32" / "model.onnx")), str(ov_xml), compress_to_fp16=False)
    rng = np.random.default_rng(7)
    nchw = rng.standard_normal((6, *INPUT_SHAPE)).astype(np.float32)
    nhwc = rng.standard_normal((6, *TFLITE_SHAPE)).astype(np.float32)

    def files(path: Path, *extra: str) -> ArtifactFiles:
        return ArtifactFiles(root=path.parent, files=(path.name, *extra), main=path.name, sha256="test")

    return {
        "onnx-qdq": (files(model_dir / "onnx-qdq" / "model.onnx"), nchw),
        "tflite-int8": (files(tflite), nhwc),
        "openvino-fp32": (files(ov_xml, "model.bin"), nchw),
    }


def _outputs(result: dict) -> np.ndarray:
    assert result["ok"], result.get("error")
    with np.load(result["outputs_path"]) as data:
        return data["out_0"].reshape(len(data["out_0"]), -1).astype(np.float64)


def test_setup_is_idempotent_and_recorded(arm64_root: Path) -> None:
    started = time.perf_counter()
    stamp = setup_arm64(arm64_root)
    assert time.perf_counter() - started < 1.0
    assert stamp["reused"] is True and stamp["machine"] == "aarch64"
    assert stamp["pins"] == {"numpy": NUMPY_PIN, **RUNTIME_PINS}
    assert all(status["imported"] for status in stamp["runtime_status"].values())
    assert (arm64_root / "usr/bin/python3.11").is_file() and (arm64_root / "site/numpy").is_dir()
    assert not list(arm64_root.parent.glob(f"{arm64_root.name}.tmp-*"))


def test_setup_cli_is_a_no_op_when_complete_and_refuses_foreign_dirs(arm64_root: Path, tmp_path: Path, capsys) -> None:
    from edgeq.cli import main

    assert main(["devices", "setup-arm64", "--root", str(arm64_root)]) == 0
    assert "is complete" in capsys.readouterr().out
    foreign = tmp_path / "mine"
    (foreign / "keep").mkdir(parents=True)
    assert main(["devices", "setup-arm64", "--root", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {foreign} exists but is not an edgeq arm64 root (no edgeq-arm64.json); remove it or " \
                  "choose another --root"
    assert (foreign / "keep").is_dir() and not list(tmp_path.glob("mine.*"))
    assert main(["devices", "setup-arm64", "--root", str(foreign), "--runtime", "tensorrt"]) == 2
    assert "unknown runtime 'tensorrt'" in capsys.readouterr().err


def test_info_says_aarch64_with_the_pinned_runtimes(emulated) -> None:
    info = emulated.info()
    assert emulated.emulated is True
    assert info["machine"] == "aarch64" and info["emulated"] is True and "qemu-aarch64" in info["emulator"]
    assert info["cpuinfo_matches_machine"] is False  # QEMU user-mode shows the host's /proc/cpuinfo
    runtimes = info["runtimes"]
    assert runtimes["onnxruntime"]["version"] == RUNTIME_PINS["onnxruntime"].split("==")[1]
    assert runtimes["tflite"]["version"] == RUNTIME_PINS["ai-edge-litert"].split("==")[1]
    assert runtimes["openvino"]["version"] == RUNTIME_PINS["openvino"].split("==")[1]
    assert all(entry.get("imported") for entry in runtimes.values()), runtimes


@pytest.mark.parametrize("backend", ["onnx-qdq", "tflite-int8", "openvino-fp32"])
def test_emulated_outputs_match_host(backend: str, artifacts, emulated, host, tmp_path: Path) -> None:
    files, samples = artifacts[backend]
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, samples)
    results = {}
    for device in (host, emulated):
        results[device.name] = device.run_cell(files, 1, None, FAST, eval_npz, timeout_s=120,
                                               outputs_path=tmp_path / f"{device.name}.npz")
    arm, x86 = results["arm64-emu"], results["host"]
    assert arm["ok"], arm.get("error")
    assert arm["system"]["machine"] == "aarch64" and x86["system"]["machine"] == "x86_64"
    assert arm["eval_samples"] == len(samples) and arm["latency"]["runs"] >= FAST.runs
    ref, got = _outputs(x86), _outputs(arm)
    assert ref.shape == got.shape
    cosine = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() > 0.99, (backend, cosine)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 5 / 6


def test_bench_runs_emulated_cells(arm64_root: Path, tmp_path: Path) -> None:
    from edgeq.benchmark import BenchRequest, run_bench

    export = make_export_dir(tmp_path / "export")
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  - {name: host, kind: local}\n"
                       f"  - {{name: arm64-emu, kind: qemu, root: '{arm64_root}'}}\n")
    summary = run_bench(BenchRequest(artifacts_dir=export, out=tmp_path / "results", devices_file=devices,
                                     runs=3, min_seconds=0.0, warmup=1, timeout_s=60))
    cells = {(r.device, r.backend): r for r in summary.results}
    assert set(cells) == {(d, b) for d in ("host", "arm64-emu") for b in ("onnx-fp32", "onnx-qdq")}
    for (device, _backend), cell in cells.items():
        assert cell.status == "ok", cell.error
        assert cell.emulated is (device == "arm64-emu") and cell.device_kind == ("qemu" if cell.emulated else "local")
        assert cell.system["machine"] == ("aarch64" if cell.emulated else "x86_64")


def test_missing_root_is_one_line_error(tmp_path: Path) -> None:
    device = make_device(QemuDeviceConfig(name="emu", kind="qemu", root=str(tmp_path / "nowhere")))
    with pytest.raises(DeviceError, match=r"^device 'emu': arm64 root .*nowhere not found; run: edgeq devices "
                                          r"setup-arm64 --root "):
        device.prepare()


def test_missing_qemu_is_one_line_error(arm64_root: Path) -> None:
    device = make_device(QemuDeviceConfig(name="emu", kind="qemu", root=str(arm64_root), qemu="no-such-qemu"))
    with pytest.raises(DeviceError, match=r"^device 'emu': no-such-qemu not found; install qemu-user-static: "
                                          r"apt-get install -y qemu-user-static$"):
        device.prepare()


@pytest.fixture(scope="module")
def site_with_broken_ort(arm64_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root's site dir, but with onnxruntime 1.32.0 (the version that segfaults at import under QEMU 7.2)."""
    site = tmp_path_factory.mktemp("site-ort-1.32")
    wheels = tmp_path_factory.mktemp("wheels")
    argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
            "3.11", "--implementation", "cp", "--abi", "cp311", "-d", str(wheels), "onnxruntime==1.32.0"]
    for tag in WHEEL_PLATFORMS:
        argv += ["--platform", tag]
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    import zipfile

    for wheel in wheels.glob("*.whl"):
        zipfile.ZipFile(wheel).extractall(site)
    for entry in (arm64_root / "site").iterdir():  # everything else (numpy, …) from the working root
        if not entry.name.startswith("onnxruntime"):
            (site / entry.name).symlink_to(entry)
    return site


def test_runtime_that_crashes_under_emulation_is_reported(artifacts, arm64_root: Path, site_with_broken_ort: Path,
                                                          tmp_path: Path) -> None:
    device = make_device(QemuDeviceConfig(name="emu-ort132", kind="qemu", root=str(arm64_root),
                                          site=str(site_with_broken_ort)))
    files, samples = artifacts["onnx-qdq"]
    np.savez(tmp_path / "eval.npz", samples)
    result = device.run_cell(files, 1, None, FAST, tmp_path / "eval.npz", timeout_s=60)
    assert result == {"ok": False, "error": result["error"]}
    assert result["error"].startswith("runner died: SIGSEGV"), result["error"]
    info = device.info()  # the import crash is caught: versions are reported without importing
    assert info["machine"] == "aarch64" and info["runtimes"]["onnxruntime"]["version"] == "1.32.0"
    assert "crashed" in info["import_check"]


def test_profile_and_executed_precision_on_the_emulated_device(artifacts, emulated, host) -> None:
    """``--profile`` goes through the same runner on the arm64 device: per-layer times from ONNX Runtime profiling
    and OpenVINO performance counters (real aarch64 kernels), a precise refusal for LiteRT; precision pinned f32."""
    settings = RunSettings(runs=2, min_seconds=0.0, warmup=1, profile=True)
    for device in (emulated, host):
        results = {name: device.run_cell(files, 1, None, settings, None, timeout_s=300)
                   for name, (files, _samples) in artifacts.items()}
        for name in ("onnx-qdq", "openvino-fp32"):
            result = results[name]
            assert result["ok"], result.get("error")
            layers = result["profile"]["layers"]
            assert layers and all(layer["ms"] >= 0 and layer["precision"] for layer in layers), result["profile"]
            assert result["memory"]["model_loaded_mb"] > 0 and result["memory"]["peak_mb"] > 0
        assert results["onnx-qdq"]["executed"]["precision"] == "int8"
        assert {layer["precision"] for layer in results["onnx-qdq"]["profile"]["layers"]
                if layer["type"] in ("QLinearConv", "QGemm", "QLinearMatMul")} <= {"i8", "u8"}
        # OpenVINO on ARM defaults to f16: the pinned hint keeps the FP32 IR in f32 there too
        assert results["openvino-fp32"]["pinned_precision"]["settings"]["INFERENCE_PRECISION_HINT"] == "f32"
        assert results["openvino-fp32"]["executed"]["precision"] == "f32"
        tflite = results["tflite-int8"]
        assert tflite["ok"] and "exposes no op profiler" in tflite["profile"]["error"]
        assert tflite["executed"]["precision"] == "int8"
