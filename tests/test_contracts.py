"""Contracts every registered backend and every device kind keeps, parametrised over the registries: every name in
``edgeq.backends.REGISTRY`` (opt-in backends and the plugin backends of tests/plugins included) and every kind in
``edgeq.devices.KINDS``. A backend that registers gets these tests without writing one.

Backends: the class keeps the protocol; it exports the tiny CNN, writes its manifest row, verifies against FP32 with
sane fidelity numbers and, benched on this machine, reports the precision that executed. One ``edgeq export`` of
every backend the session selects and one ``edgeq bench`` serve all these tests (shared by the xdist workers). A
backend is skipped only when edgeq skips it (runtime not installed, or refused on this CPU, e.g. openvino-bf16
without BF16 arithmetic): the manifest row then says ``skipped`` and why.

Devices: each kind prepares, describes itself and runs one cell of the same artifact, returning the same result
shape and the same outputs (local, ssh against the real sshd of tests/sshd_fixture.py, qemu on the arm64 root).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import plugins
import pytest
from bench_artifacts import INPUT_SHAPE, make_export_dir
from sshd_fixture import SSHD, start_sshd, stop_sshd

from edgeq.backends import REGISTRY, Backend, get_backend, resolve
from edgeq.cli import main
from edgeq.devices import KINDS, ArtifactFiles, Device, RunSettings, make_device
from edgeq.errors import BackendUnavailable
from edgeq.manifest import Artifact, Manifest
from edgeq.results import CellResult

with plugins.registered() as _plugin_backends:
    PLUGIN_BACKENDS = list(_plugin_backends)
BACKENDS = [*REGISTRY, *PLUGIN_BACKENDS]

RUNTIMES = ("onnxruntime", "openvino", "tflite")
"""The runtimes the runner (targets/runner.py) opens artifacts with."""
HOLDOUT = 8
FIDELITY_FLOOR = {"fp32": 0.99999, "fp16": 0.9999, "bf16": 0.999, "int8": 0.99, "dynamic": 0.99, "w8a16": 0.99,
                  "w4": 0.98}
"""Worst held-out sample's cosine vs FP32 on the tiny CNN that each precision must reach (observed on the VNNI/BF16
EPYC: ≥ 0.99995 for the INT8 rows, ≥ 0.9983 for w8a16, ≥ 0.9977 for w4, ≥ 0.999998 for the float ones)."""
PROMISES = ("fp32", "bf16", "int8")
"""Precisions that execute as their name says on every CPU that exports them (docs/trust.md). fp16 computes f16 only
where the CPU has FP16 arithmetic, else f32 (``precision_match`` false, said in the cell); the tiers and dynamic
promise no single precision (``precision_match`` null)."""
FAST_BACKENDS = {"onnx-fp32", *PLUGIN_BACKENDS}
"""Exported and verified by the quick suite; every other backend's export and every bench cell is marked slow."""
BENCH = ["--runs", "3", "--min-seconds", "0", "--warmup", "1"]


def _params(names: list[str]) -> list:
    return [pytest.param(name, marks=() if name in FAST_BACKENDS else pytest.mark.slow) for name in names]


@pytest.fixture(scope="module", autouse=True)
def plugin_backends() -> Iterator[dict[str, str]]:
    """The plugin backends are registered while this module runs, and only then."""
    with plugins.registered() as extra:
        yield extra


# --- backends -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKENDS)
def test_backend_class_keeps_the_protocol(name: str) -> None:
    cls = get_backend(name)
    assert issubclass(cls, Backend) and cls.name == name and resolve([name]) == [name]
    assert cls.runtime in RUNTIMES, cls.runtime
    precisions = typing.get_args(typing.get_args(typing.get_type_hints(Backend)["precision"])[0])
    assert cls.precision in precisions, (cls.precision, precisions)
    assert all(isinstance(module, str) and module for module in cls.requires)
    try:
        cls.check_available()
    except BackendUnavailable as exc:  # the one-line reason the export table and manifest show
        assert "\n" not in str(exc) and name in str(exc)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every pytest-xdist worker of this session sees (the parent of the workers' own temp dirs)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "contracts"
    root.mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive across processes: the first xdist worker does the work, the others wait and reuse it."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _selected_backends(session: pytest.Session) -> list[str]:
    """The backends whose export, verification or bench contract this session runs (``-k`` respected)."""
    tests = {"test_export_writes_its_manifest_row", "test_export_verifies_against_fp32",
             "test_bench_reports_the_executed_precision"}
    names = [item.callspec.params["name"] for item in session.items
             if getattr(item, "originalname", "") in tests and item.module.__name__ == __name__]
    return list(dict.fromkeys(names))


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest, tiny_model_file: Path, tiny_calib: Path, shared_dir: Path) -> Path:
    """OUT: the tiny CNN exported by one ``edgeq export`` with every backend the session's contract tests ask for
    (one FP32 reference, one model load; a failing backend leaves the others alone), once per session."""
    out = shared_dir / "export"
    with _locked(shared_dir / "export.lock"):
        if not (out / "tinycnn" / "manifest.json").is_file():
            backend_args = [arg for name in _selected_backends(request.session) for arg in ("-b", name)]
            main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                  "--holdout-samples", str(HOLDOUT), *backend_args, "--jobs", "1", "--out", str(out)])
    return out


def _row(out: Path, name: str) -> Artifact:
    """The backend's manifest row; a skip with edgeq's reason when edgeq skipped it (runtime missing or refused)."""
    row = Manifest.read(out / "tinycnn" / "manifest.json").artifact(name)
    if row.status == "skipped":
        pytest.skip(f"edgeq skipped {name}: {row.error}")
    assert row.status == "ok", row.error
    return row


@pytest.mark.parametrize("name", _params(BACKENDS))
def test_export_writes_its_manifest_row(name: str, exported: Path) -> None:
    row = _row(exported, name)
    cls = get_backend(name)
    model_dir = exported / "tinycnn"
    manifest = Manifest.read(model_dir / "manifest.json")
    order = [a.backend for a in manifest.artifacts]
    assert order == sorted(order, key=list(REGISTRY).index)  # manifest order is registry order
    assert (row.runtime, row.precision) == (cls.runtime, cls.precision)
    assert row.path and row.path.startswith(f"{name}/") and (model_dir / row.path).is_file()
    folder = (model_dir / row.path).parent
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert sorted(f.path for f in row.files) == on_disk and row.size_bytes == sum(f.size_bytes for f in row.files)
    for entry in row.files:
        assert hashlib.sha256((folder / entry.path).read_bytes()).hexdigest() == entry.sha256
    assert row.sha256 and len(row.sha256) == 64
    assert [t.shape for t in row.inputs] == [[1, 3, 16, 16]]  # names are the runtime's (TFLite: serving_default_…)
    assert [t.shape for t in row.outputs] == [[1, 10]] and row.layout == "NCHW"
    assert row.export_seconds is not None and row.export_seconds > 0 and isinstance(row.recipe, dict)
    assert manifest.model.name == "tinycnn" and manifest.calibration is not None and manifest.tools.get("edgeq")


@pytest.mark.parametrize("name", _params(BACKENDS))
def test_export_verifies_against_fp32(name: str, exported: Path) -> None:
    row = _row(exported, name)
    check = row.verification
    assert check is not None and check.samples == HOLDOUT and check.runtime_version
    assert 0.0 < check.cosine_min <= check.cosine_mean <= 1.0 + 1e-6
    assert 0.0 <= check.mean_abs_error <= check.max_abs_error
    assert check.top1_agreement is not None and 0.0 <= check.top1_agreement <= 1.0
    assert len(check.outputs) == 1 and check.outputs[0].cosine_min == check.cosine_min
    assert check.outputs[0].shape == [1, 10]
    assert check.cosine_min >= FIDELITY_FLOOR[row.precision], (row.precision, check.cosine_min)


@pytest.fixture(scope="module")
def benched(exported: Path, shared_dir: Path) -> dict[str, CellResult]:
    """``edgeq bench`` of every exported artifact on this machine (one thread), once per session; cells by backend."""
    results = shared_dir / "results"
    with _locked(shared_dir / "bench.lock"):
        if not (results / "results.json").is_file():
            devices = shared_dir / "devices.yaml"
            devices.write_text("devices:\n  - name: host\n    kind: local\n    threads: [1]\n")
            main(["bench", str(exported), "--devices", str(devices), "--out", str(results), *BENCH])
    cells = [CellResult.model_validate_json(p.read_text()) for p in (results / "cells").glob("*.json")]
    assert len({c.backend for c in cells}) == len(cells)  # one cell per artifact
    return {c.backend: c for c in cells}


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKENDS)
def test_bench_reports_the_executed_precision(name: str, exported: Path, benched: dict[str, CellResult]) -> None:
    row = _row(exported, name)
    cell = benched[name]
    assert cell.status == "ok", cell.error
    assert (cell.backend, cell.precision, cell.artifact_sha256) == (name, row.precision, row.sha256)
    assert cell.executed_precision, cell.executed  # what the runtime says it ran (f32, f16, bf16, int8+f32 …)
    if row.precision == "fp16":
        assert cell.executed_precision in ("f16", "f32"), cell.executed
        assert cell.precision_match is (cell.executed_precision == "f16")
    else:
        assert cell.precision_match is (True if row.precision in PROMISES else None), cell.executed
    assert cell.latency is not None and cell.latency.p50_ms > 0


# --- device kinds -------------------------------------------------------------------------------------------------
CELL_KEYS = {"ok", "load_ms", "first_ms", "latency", "peak_rss_mb", "system", "eval_samples", "runtime",
             "runtime_version", "inputs", "outputs", "outputs_path"}
"""What ``Device.run_cell`` returns on success with an eval npz (edgeq/devices/base.py)."""
EVAL_SAMPLES = 4


def _kind_params() -> list:
    marks = {"ssh": [pytest.mark.ssh], "qemu": [pytest.mark.qemu, pytest.mark.slow]}
    return [pytest.param(kind, marks=marks.get(kind, [])) for kind in KINDS]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    if not SSHD.exists():
        pytest.skip("/usr/sbin/sshd missing (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


def _device_config(kind: str, request: pytest.FixtureRequest, workdir: Path):
    """A devices.yaml entry of ``kind`` that reaches a real device here; a new kind adds its line."""
    from edgeq.devices.config import LocalDeviceConfig, QemuDeviceConfig, SshDeviceConfig

    if kind == "local":
        return LocalDeviceConfig(name="host", kind="local")
    if kind == "ssh":
        server = request.getfixturevalue("sshd")
        return SshDeviceConfig(name="board", kind="ssh", host=server.destination, port=server.port,
                               identity_file=str(server.identity), python=sys.executable, workdir=str(workdir),
                               connect_timeout=5, ssh_options=server.ssh_options)
    if kind == "qemu":
        from edgeq.devices.arm64_root import DEFAULT_ROOT, QEMU_BINARY, setup_arm64

        if shutil.which(QEMU_BINARY) is None:
            pytest.skip(f"{QEMU_BINARY} not on PATH (apt-get install -y qemu-user-static)")
        root = Path(os.environ.get("EDGEQ_ARM64_ROOT") or DEFAULT_ROOT).expanduser()
        setup_arm64(root)  # a no-op when built before
        return QemuDeviceConfig(name="arm64-emu", kind="qemu", root=str(root))
    raise AssertionError(f"no contract device for kind {kind!r}: add it to _device_config")


@pytest.fixture(scope="module")
def cell_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactFiles, Path]:
    """The tiny ONNX classifier (tests/bench_artifacts.py) and an eval npz of EVAL_SAMPLES inputs."""
    root = tmp_path_factory.mktemp("device_contract")
    model_dir = make_export_dir(root) / "tiny"
    manifest = Manifest.read(model_dir / "manifest.json")
    files = ArtifactFiles.from_manifest(model_dir, manifest.artifact("onnx-fp32"))
    samples = np.random.default_rng(5).standard_normal((EVAL_SAMPLES, *INPUT_SHAPE)).astype(np.float32)
    np.savez(root / "eval.npz", x=samples)
    return files, root / "eval.npz"


def _run_one_cell(device: Device, cell_input: tuple[ArtifactFiles, Path], outputs: Path) -> dict:
    files, eval_npz = cell_input
    settings = RunSettings(runs=3, min_seconds=0.0, warmup=1)
    return device.run_cell(files, 1, None, settings, eval_npz, timeout_s=300, outputs_path=outputs)


@pytest.fixture(scope="module")
def local_cell(cell_input, tmp_path_factory: pytest.TempPathFactory) -> dict:
    with make_device(_device_config("local", None, Path())) as device:  # type: ignore[arg-type]
        device.prepare()
        return _run_one_cell(device, cell_input, tmp_path_factory.mktemp("local_cell") / "outputs.npz")


@pytest.mark.parametrize("kind", _kind_params())
def test_device_kind_runs_one_cell_with_the_common_result_shape(kind: str, request: pytest.FixtureRequest,
                                                                cell_input, local_cell: dict, tmp_path: Path) -> None:
    with make_device(_device_config(kind, request, tmp_path / "workdir")) as device:
        assert device.kind == kind
        device.prepare()
        info = device.info()
        assert info["machine"] in ("x86_64", "aarch64") and "onnxruntime" in info["runtimes"]
        result = _run_one_cell(device, cell_input, tmp_path / "outputs.npz")
    assert result.get("ok"), result.get("error")
    assert set(result) >= CELL_KEYS, CELL_KEYS - set(result)
    assert set(result) == set(local_cell), set(result) ^ set(local_cell)
    assert set(result["latency"]) == set(local_cell["latency"]) and result["latency"]["p50_ms"] > 0
    assert set(result["system"]) == set(local_cell["system"])
    assert result["eval_samples"] == EVAL_SAMPLES and result["runtime"] == "onnxruntime"
    assert result["inputs"] == local_cell["inputs"] and result["outputs"] == local_cell["outputs"]
    with np.load(result["outputs_path"]) as got, np.load(local_cell["outputs_path"]) as expected:
        assert sorted(got.files) == sorted(expected.files) == ["out_0"]
        assert got["out_0"].shape == (EVAL_SAMPLES, 1, 5)
        np.testing.assert_allclose(got["out_0"], expected["out_0"], rtol=1e-4, atol=1e-4)
