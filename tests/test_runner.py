"""edgeq/targets/runner.py: the self-contained on-device runner, against tiny real ONNX / OpenVINO / TFLite artifacts."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models import tflite_full_integer, two_outputs

from edgeq.targets import runner
from edgeq.targets.runner import IODetail, RunnerError, measure, open_session, peak_rss_mb, system_info

RUNNER_FILE = Path(runner.__file__)
INPUT_SHAPE = [1, 3, 8, 8]


# ------------------------------------------------------------------------------------------------
# fixtures: real artifacts made with the real tools
# ------------------------------------------------------------------------------------------------
def _onnx_reference(path: Path, x: np.ndarray) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(o) for o in ReferenceEvaluator(str(path)).run(None, {"x": x})]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """ONNX model and its OpenVINO IR (fast to build)."""
    import openvino as ov

    root = tmp_path_factory.mktemp("runner_artifacts")
    onnx_path = root / "tiny.onnx"
    two_outputs(onnx_path)
    xml_path = root / "tiny.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return {"onnx": onnx_path, "openvino": xml_path}


@pytest.fixture(scope="module")
def keras_tflite(tmp_path_factory) -> dict:
    """A tiny Keras CNN, its float TFLite model and its full-integer INT8 (int8 I/O) TFLite model."""
    tf = pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("runner_tflite")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(8, 8, 3), batch_size=1),
            tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(5),
        ]
    )
    rng = np.random.default_rng(1)
    calibration = rng.standard_normal((32, 1, 8, 8, 3)).astype(np.float32)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_path = root / "tiny_fp32.tflite"
    float_path.write_bytes(converter.convert())

    int8_path = root / "tiny_int8.tflite"
    int8_path.write_bytes(tflite_full_integer(model, calibration))

    samples = rng.standard_normal((6, 1, 8, 8, 3)).astype(np.float32)
    reference = np.stack([model(s, training=False).numpy() for s in samples])
    return {"float": float_path, "int8": int8_path, "samples": samples, "reference": reference}


def _run_cli(*args: str, python_flags: tuple[str, ...] = (), script: Path = RUNNER_FILE):
    proc = subprocess.run(
        [sys.executable, *python_flags, str(script), *args], capture_output=True, text=True, timeout=300
    )
    return proc


def _single_json(stdout: str) -> dict:
    """stdout must hold exactly one JSON document on one line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


# ------------------------------------------------------------------------------------------------
# in-process API (the host uses the same code for verification)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_float_outputs_match_onnx_reference(artifacts, kind):
    session = open_session(str(artifacts[kind]), threads=1)
    assert session.runtime == {"onnx": "onnxruntime", "openvino": "openvino"}[kind]
    assert session.runtime_version
    assert [d.name for d in session.inputs] == ["x"]
    assert session.inputs[0].shape == INPUT_SHAPE and session.inputs[0].dtype == "float32"
    assert [d.name for d in session.outputs] == ["logits", "features"]
    x = np.random.default_rng(3).standard_normal(INPUT_SHAPE).astype(np.float32)
    outputs = session.run({"x": x})
    expected = _onnx_reference(artifacts["onnx"], x)
    assert len(outputs) == 2
    for got, want in zip(outputs, expected, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_feeds_map_by_position_when_names_differ_and_errors_when_counts_differ(artifacts):
    session = open_session(str(artifacts["onnx"]))
    x = np.random.default_rng(4).standard_normal(INPUT_SHAPE)  # float64: prepare must cast
    by_name = session.run({"x": x})[0]
    by_position = session.run({"whatever": x})[0]
    np.testing.assert_array_equal(by_name, by_position)
    with pytest.raises(RunnerError, match="inputs do not match"):
        session.prepare({"a": x, "b": x})


@pytest.mark.parametrize("kind", ["onnx", "openvino", "tflite"])
def test_prepared_runs_repeat_and_alternate(kind, artifacts, request):
    """Repeated run_prepared (no input copy in the loop) stays correct; switching prepared objects switches inputs."""
    if kind == "tflite":
        path, shape = request.getfixturevalue("keras_tflite")["int8"], [1, 8, 8, 3]
    else:
        path, shape = artifacts[kind], INPUT_SHAPE
    session = open_session(str(path))
    rng = np.random.default_rng(5)
    feed_a, feed_b = rng.standard_normal(shape), rng.standard_normal(shape)
    fresh_a = session.run([feed_a])[0]
    fresh_b = session.run([feed_b])[0]
    assert not np.allclose(fresh_a, fresh_b)
    first, second = session.prepare([feed_a]), session.prepare([feed_b])
    for _ in range(3):
        session.run_prepared(first)
    np.testing.assert_array_equal(session.outputs_float()[0], fresh_a)
    session.run_prepared(second)
    np.testing.assert_array_equal(session.outputs_float()[0], fresh_b)
    session.run_prepared(first)
    np.testing.assert_array_equal(session.outputs_float()[0], fresh_a)


def test_tflite_float_matches_keras(keras_tflite):
    session = open_session(str(keras_tflite["float"]), threads=2)
    assert session.runtime == "tflite" and session.runtime_version.startswith(
        ("ai-edge-litert", "tflite-runtime")
    )
    assert session.inputs[0].dtype == "float32" and session.inputs[0].scale is None
    for sample, want in zip(keras_tflite["samples"], keras_tflite["reference"], strict=True):
        (got,) = session.run({"anything": sample})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tflite_int8_io_is_quantized_with_the_artifacts_own_parameters(keras_tflite):
    session = open_session(str(keras_tflite["int8"]))
    (inp,), (out,) = session.inputs, session.outputs
    assert inp.dtype == "int8" and out.dtype == "int8"
    assert inp.quantized and out.quantized and inp.scale > 0 and out.scale > 0
    prepared = session.prepare({inp.name: keras_tflite["samples"][0]})
    ((_, raw_input),) = prepared
    assert raw_input.dtype == np.int8
    np.testing.assert_array_equal(
        raw_input, np.clip(np.round(keras_tflite["samples"][0] / inp.scale) + inp.zero_point, -128, 127)
    )
    got = np.stack([session.run({inp.name: s})[0] for s in keras_tflite["samples"]])
    want = keras_tflite["reference"]
    assert got.dtype == np.float32
    # int8 weights + activations on a 3-layer net: error of a few output quantization steps
    error = np.abs(got - want)
    assert error.max() <= 0.1 * np.abs(want).max() + 4 * out.scale, (error.max(), out.scale)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_quantize_dequantize_roundtrip():
    detail = IODetail(name="t", shape=[4], dtype="uint8", scale=0.5, zero_point=10)
    q = runner.quantize(np.array([-100.0, 0.0, 1.26, 1000.0]), detail)
    assert q.dtype == np.uint8 and q.tolist() == [0, 10, 13, 255]
    np.testing.assert_allclose(runner.dequantize(q, detail), [-5.0, 0.0, 1.5, 122.5])
    plain = IODetail(name="f", shape=[2], dtype="float16")
    assert runner.dequantize(np.array([1, 2], dtype=np.float16), plain).dtype == np.float32


def test_measure_meets_both_minimums_and_orders_percentiles(artifacts):
    session = open_session(str(artifacts["onnx"]))
    prepared = session.prepare(runner.random_feeds(session, seed=0))
    stats = measure(session, prepared, min_runs=30, min_seconds=0.2, warmup=2)
    assert stats["runs"] >= 30 and stats["duration_s"] >= 0.2
    assert stats["first_ms"] is not None and stats["first_ms"] > 0
    assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["throughput_ips"] == pytest.approx(1000.0 / stats["mean_ms"])
    capped = measure(session, prepared, min_runs=5, min_seconds=60.0, warmup=0, max_runs=7)
    assert capped["runs"] == 7


def test_open_session_errors(tmp_path, artifacts):
    with pytest.raises(RunnerError, match="artifact not found"):
        open_session(str(tmp_path / "missing.onnx"))
    odd = tmp_path / "model.pb"
    odd.write_bytes(b"x")
    with pytest.raises(RunnerError, match="unknown artifact extension"):
        open_session(str(odd))
    with pytest.raises(RunnerError, match="threads"):
        open_session(str(artifacts["onnx"]), threads=0)


def test_system_info_and_rss():
    info = system_info()
    assert info["machine"] and info["python"] and info["cpu_count"] >= 1
    assert set(info["runtimes"]) == {"onnxruntime", "openvino", "tflite"}
    assert info["runtimes"]["onnxruntime"]["available"] and info["runtimes"]["onnxruntime"]["version"]
    assert isinstance(info["int8_flags"], dict) and info["int8_flags"]
    assert peak_rss_mb() > 10


# ------------------------------------------------------------------------------------------------
# CLI, as the device runs it
# ------------------------------------------------------------------------------------------------
def _artifact_for(kind: str, artifacts: dict, keras_tflite: dict | None) -> Path:
    return keras_tflite["int8"] if kind == "tflite" else artifacts[kind]


@pytest.mark.parametrize("kind", ["onnx", "openvino", "tflite"])
def test_cli_run_prints_one_json_document_with_sane_latency(kind, artifacts, request):
    keras = request.getfixturevalue("keras_tflite") if kind == "tflite" else None
    path = _artifact_for(kind, artifacts, keras)
    proc = _run_cli(
        "run", str(path), "--threads", "2", "--runs", "20", "--min-seconds", "0.2", "--warmup", "2"
    )
    assert proc.returncode == 0, proc.stderr
    doc = _single_json(proc.stdout)
    assert doc["ok"] is True and doc["threads"] == 2
    assert doc["runtime"] == {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "tflite"}[kind]
    assert doc["load_ms"] > 0 and doc["first_ms"] > 0 and doc["peak_rss_mb"] > 10
    latency = doc["latency"]
    assert latency["runs"] >= 20 and latency["duration_s"] >= 0.2
    assert latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["throughput_ips"] > 0
    assert doc["inputs"][0]["shape"][1:] in ([3, 8, 8], [8, 8, 3])
    assert doc["system"]["machine"] and doc["eval_samples"] == 0


def test_cli_eval_roundtrip_matches_in_process_results(artifacts, tmp_path):
    samples = np.random.default_rng(7).standard_normal((5, 3, 8, 8)).astype(np.float32)  # (N, *shape[1:])
    eval_path, out_path = tmp_path / "eval.npz", tmp_path / "out.npz"
    np.savez(eval_path, x=samples)
    proc = _run_cli(
        "run", str(artifacts["openvino"]), "--eval", str(eval_path), "--outputs", str(out_path), "--no-timing"
    )
    assert proc.returncode == 0, proc.stderr
    doc = _single_json(proc.stdout)
    assert doc["ok"] and doc["eval_samples"] == 5 and doc["latency"] is None
    with np.load(out_path) as data:
        assert sorted(data.files) == ["out_0", "out_1"]
        logits, features = data["out_0"], data["out_1"]
    assert logits.shape == (5, 1, 5) and features.shape == (5, 1, 4, 8, 8)
    for i in range(5):
        want_logits, want_features = _onnx_reference(artifacts["onnx"], samples[i : i + 1])
        np.testing.assert_allclose(logits[i], want_logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(features[i], want_features, rtol=1e-4, atol=1e-4)
    # batch-1 samples stacked with their batch dim (N, *shape) give the same outputs
    np.savez(eval_path, samples[:, None])
    proc = _run_cli(
        "run", str(artifacts["onnx"]), "--eval", str(eval_path), "--outputs", str(out_path), "--no-timing"
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(out_path) as data:
        np.testing.assert_allclose(data["out_0"], logits, rtol=1e-4, atol=1e-4)


def test_cli_eval_int8_tflite(keras_tflite, tmp_path):
    eval_path, out_path = tmp_path / "eval.npz", tmp_path / "out.npz"
    np.savez(eval_path, keras_tflite["samples"])
    proc = _run_cli(
        "run", str(keras_tflite["int8"]), "--eval", str(eval_path), "--outputs", str(out_path), "--no-timing"
    )
    assert proc.returncode == 0, proc.stderr
    assert _single_json(proc.stdout)["eval_samples"] == 6
    with np.load(out_path) as data:
        got = data["out_0"]
    assert got.shape == keras_tflite["reference"].shape
    assert np.corrcoef(got.ravel(), keras_tflite["reference"].ravel())[0, 1] > 0.99


def test_cli_inputs_file_and_fixed_seed_are_deterministic(artifacts, tmp_path):
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, np.ones(INPUT_SHAPE, dtype=np.float32))
    proc = _run_cli("run", str(artifacts["onnx"]), "--inputs", str(feeds), "--no-timing")
    assert proc.returncode == 0 and _single_json(proc.stdout)["ok"], proc.stdout + proc.stderr
    a = runner.random_feeds(open_session(str(artifacts["onnx"])), seed=3)["x"]
    b = runner.random_feeds(open_session(str(artifacts["onnx"])), seed=3)["x"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("suffix", [".onnx", ".xml", ".tflite"])
def test_cli_corrupt_artifact_gives_one_line_error(tmp_path, suffix):
    bad = tmp_path / f"corrupt{suffix}"
    bad.write_bytes(b"\x00\x01 this is not a model \xff" * 16)
    if suffix == ".xml":
        bad.with_suffix(".bin").write_bytes(b"\x00" * 16)
    proc = _run_cli("run", str(bad), "--no-timing")
    assert proc.returncode == 1
    doc = _single_json(proc.stdout)
    assert doc["ok"] is False and "\n" not in doc["error"] and ": " in doc["error"]


def test_cli_missing_file_and_bad_arguments(tmp_path):
    proc = _run_cli("run", str(tmp_path / "nope.onnx"))
    assert proc.returncode == 1
    assert _single_json(proc.stdout) == {
        "ok": False,
        "error": f"RunnerError: artifact not found: {tmp_path / 'nope.onnx'}",
    }
    proc = _run_cli("run")
    assert proc.returncode == 1 and _single_json(proc.stdout)["ok"] is False
    proc = _run_cli("run", str(tmp_path / "nope.onnx"), "--eval", str(tmp_path / "e.npz"))
    assert proc.returncode == 1 and "--eval needs --outputs" in _single_json(proc.stdout)["error"]


def test_cli_stdout_survives_runtime_noise_on_fd1(artifacts, tmp_path):
    """Native code writing to fd 1 (as OpenVINO/LiteRT C++ may) and Python prints go to stderr, not stdout."""
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import runner; original = runner.open_session\n"
        "def noisy(*a, **k):\n"
        "    os.write(1, b'native noise on fd 1\\n'); print('python noise'); return original(*a, **k)\n"
        "runner.open_session = noisy\n"
        "sys.exit(runner.main(['run', sys.argv[2], '--runs', '2', '--min-seconds', '0']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(RUNNER_FILE.parent), str(artifacts["onnx"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _single_json(proc.stdout)["ok"] is True
    assert "native noise on fd 1" in proc.stderr and "python noise" in proc.stderr


def test_cli_cpus_pins_the_process(artifacts):
    proc = _run_cli("run", str(artifacts["onnx"]), "--cpus", "0", "--no-timing")
    assert proc.returncode == 0, proc.stderr
    doc = _single_json(proc.stdout)
    assert doc["cpus"] == [0] and doc["system"]["usable_cpus"] == 1
    proc = _run_cli("run", str(artifacts["onnx"]), "--cpus", "zero")
    assert proc.returncode == 1 and "--cpus" in _single_json(proc.stdout)["error"]


def test_cli_info_lists_runtimes():
    proc = _run_cli("info")
    assert proc.returncode == 0, proc.stderr
    info = _single_json(proc.stdout)
    assert info["runtimes"]["onnxruntime"]["available"] is True
    assert info["runtimes"]["tflite"]["module"] in (
        "ai_edge_litert.interpreter",
        "tflite_runtime.interpreter",
    )


# ------------------------------------------------------------------------------------------------
# self-containment: the file must run alone on a board
# ------------------------------------------------------------------------------------------------
def test_runner_imports_only_stdlib_numpy_and_runtimes_and_parses_as_python38():
    tree = ast.parse(RUNNER_FILE.read_text(), feature_version=(3, 8))
    allowed = set(sys.stdlib_module_names) | {
        "numpy",
        "onnxruntime",
        "openvino",
        "ai_edge_litert",
        "tflite_runtime",
    }
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            assert node.attr not in {"system", "popen", "fork", "execv", "execvp", "spawnv", "posix_spawn"}
    assert imported <= allowed, imported - allowed
    assert "subprocess" not in imported and "multiprocessing" not in imported
    assert "__future__" in imported  # annotations stay strings on old Pythons


def test_runner_runs_isolated_from_a_copy_without_edgeq(artifacts, tmp_path):
    copy = tmp_path / "runner.py"
    shutil.copy(RUNNER_FILE, copy)
    proc = _run_cli(
        "run", str(artifacts["onnx"]), "--runs", "3", "--min-seconds", "0", python_flags=("-I",), script=copy
    )
    assert proc.returncode == 0, proc.stderr
    assert _single_json(proc.stdout)["ok"] is True
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); import runner; "
        "code = runner.main(['run', sys.argv[2], '--no-timing']); "
        "assert code == 0; assert not [m for m in sys.modules if m.split('.')[0] == 'edgeq'], 'edgeq imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", check, str(tmp_path), str(artifacts["onnx"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _single_json(proc.stdout)["ok"] is True


# ------------------------------------------------------------------------------------------------
# emulated arm64 (shared/NOTES.md recipe): opt-in, needs qemu-user-static + an arm64 root + aarch64 wheels
# ------------------------------------------------------------------------------------------------
@pytest.mark.qemu
@pytest.mark.slow
def test_runner_on_emulated_arm64_matches_host(request, tmp_path):
    qemu = shutil.which("qemu-aarch64-static")
    root, site = os.environ.get("EDGEQ_QEMU_ROOT"), os.environ.get("EDGEQ_QEMU_SITE")
    if not (qemu and root and site):
        pytest.skip("set EDGEQ_QEMU_ROOT (arm64 root with python3.11) and EDGEQ_QEMU_SITE (aarch64 wheels)")
    artifacts, keras_tflite = request.getfixturevalue("artifacts"), request.getfixturevalue("keras_tflite")
    cases = [
        (artifacts["onnx"], np.random.default_rng(11).standard_normal((3, 3, 8, 8)).astype(np.float32)),
        (keras_tflite["int8"], keras_tflite["samples"][:3]),
    ]
    for artifact, samples in cases:
        eval_path = tmp_path / "eval.npz"
        np.savez(eval_path, samples)
        outputs = {}
        for where in ("host", "arm64"):
            out_path = tmp_path / f"{where}.npz"
            args = ["run", str(artifact), "--eval", str(eval_path), "--outputs", str(out_path), "--runs", "2"]
            args += ["--min-seconds", "0"]
            if where == "host":
                command = [sys.executable, str(RUNNER_FILE), *args]
            else:
                command = [qemu, "-L", root, f"{root}/usr/bin/python3.11", str(RUNNER_FILE), *args]
            env = dict(os.environ, PYTHONPATH=site) if where == "arm64" else None
            proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            doc = _single_json(proc.stdout)
            assert doc["ok"] is True
            if where == "arm64":
                assert doc["system"]["machine"] == "aarch64"
            with np.load(out_path) as data:
                outputs[where] = [data[k] for k in sorted(data.files)]
        for host, arm in zip(outputs["host"], outputs["arm64"], strict=True):
            np.testing.assert_allclose(arm, host, rtol=1e-3, atol=1e-3)
