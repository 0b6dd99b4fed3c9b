"""Issue 14's fault matrix: one test per row. Hostile or broken model files, configs, manifests, output folders,
bundles and a full disk each give one clear line (right exit code, no traceback) and never run code or read
outside their folder; nothing half-written stays behind. (Ctrl-C / SIGKILL: test_interrupt.py.)"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_checks import fails_in_one_line

from edgeq.cli import main
from edgeq.errors import ModelError
from edgeq.report import package as package_module
from edgeq.report.package import PackageError, safe_extract, verify_package

REPO = Path(__file__).resolve().parents[1]


def _cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``edgeq ARGS`` in a fresh process: what a user sees on the terminal, native (C++) output included."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it: edgeq must quiet TensorFlow itself
    return subprocess.run([sys.executable, "-c", "import sys; from edgeq.cli import main; sys.exit(main())", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _one_line(result: subprocess.CompletedProcess[str], expect: str, code: int = 2) -> None:
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, err[-3000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err[-3000:]
    assert expect.lower() in err.lower(), err


# --- model files that carry code ----------------------------------------------------------------------------------
TINY_MLP = '''
import torch


class Tiny(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2
'''


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good .pt2 and one whose sample inputs are a pickle that writes a marker file when unpickled."""
    import torch

    root = tmp_path_factory.mktemp("pt2")
    (root / "tiny.py").write_text(TINY_MLP)
    sys.path.insert(0, str(root))
    try:
        from tiny import Tiny  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(root))
    good = root / "good.pt2"
    torch.export.save(torch.export.export(Tiny(), (torch.randn(1, 4),)), str(good))
    marker = root / "MARKER"

    class Evil:
        def __reduce__(self):  # runs at unpickling time
            return (exec, (f"open({str(marker)!r}, 'w').write('code ran')",))

    payload = io.BytesIO()
    torch.save((Evil(), {}), payload)
    evil = root / "evil.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        replaced = 0
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data/sample_inputs/model.pt"):
                data, replaced = payload.getvalue(), replaced + 1
            target.writestr(info, data)
    assert replaced == 1
    garbage = root / "garbage.pt2"
    garbage.write_bytes(b"PK\x03\x04 this is not a real archive" * 20)
    return {"good": good, "evil": evil, "garbage": garbage, "marker": marker, "calib": _calib(root, (1, 4))}


def _calib(root: Path, shape: tuple[int, ...]) -> Path:
    path = root / "calib.npy"
    np.save(path, np.random.default_rng(0).standard_normal((16, *shape[1:])).astype(np.float32))
    return path


def test_malicious_pt2_never_runs_its_pickle(programs: dict[str, Path], tmp_path: Path, capsys) -> None:
    fails_in_one_line(capsys, ["export", str(programs["evil"]), "--calib", str(programs["calib"]), "-b", "onnx-fp32",
                               "--out", str(tmp_path)], "--trust-model")
    assert not programs["marker"].exists(), "code inside the .pt2 ran"
    assert not (tmp_path / "evil").exists()


def test_safe_pt2_still_loads_and_trust_model_is_the_only_way_to_run_code(programs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    from edgeq.models import load_model

    source = load_model(programs["good"])
    assert [s.shape for s in source.inputs] == [(1, 4)]
    source.close()
    assert not programs["marker"].exists()
    with pytest.raises(ModelError, match="example inputs are not tensors"):  # the opt-in unpickles it
        load_model(programs["evil"], trust_model=True)
    assert programs["marker"].exists(), "--trust-model is the opt-in that lets pickled code run"
    programs["marker"].unlink()


def test_garbage_pt2_one_line_without_torch_log(programs: dict[str, Path], tmp_path: Path) -> None:
    _one_line(_cli(["export", str(programs["garbage"]), "--calib", str(programs["calib"]), "--out", str(tmp_path)]),
              "is not a readable torch.export program")


@pytest.mark.slow  # a fresh process importing TensorFlow / exporting the digits CNN
def test_keras_lambda_layer_refused_without_trust_model(tmp_path: Path) -> None:
    import_tf = pytest.importorskip("keras")
    keras = import_tf
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Dense(3)(inputs)))
    path = tmp_path / "lam.keras"
    model.save(path)
    calib = _calib(tmp_path, (1, 4))
    result = _cli(["export", str(path), "--calib", str(calib), "-b", "onnx-fp32", "--out", str(tmp_path / "o")])
    _one_line(result, "Lambda layer")
    assert "--trust-model" in result.stderr


@pytest.mark.slow  # a fresh process importing TensorFlow / exporting the digits CNN
def test_saved_model_with_file_writing_op_refused(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    written = tmp_path / "written_by_graph.txt"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(written), tf.strings.as_string(tf.reduce_sum(x)))
            return {"y": x * 2.0}

    module = Writer()
    saved = tmp_path / "writer_sm"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    calib = _calib(tmp_path, (1, 4))
    _one_line(_cli(["export", str(saved), "--calib", str(calib), "-b", "onnx-fp32", "--out", str(tmp_path / "o")]),
              "side effects (WriteFile)")
    assert not written.exists()


@pytest.mark.slow  # a fresh process importing TensorFlow
@pytest.mark.parametrize("kind", ["garbage.keras", "garbage.h5", "saved_model"])
def test_broken_keras_inputs_without_tf_startup_noise(tmp_path: Path, kind: str) -> None:
    if kind == "saved_model":
        path = tmp_path / "sm"
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"\x08\x01junk")
    else:
        path = tmp_path / kind
        path.write_bytes(b"not a model")
    calib = _calib(tmp_path, (1, 4))
    _one_line(_cli(["export", str(path), "--calib", str(calib), "--out", str(tmp_path / "o")]), "not a readable")


# --- ONNX external data -------------------------------------------------------------------------------------------
def _onnx_with_external(path: Path, location: str) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    for key, value in {"location": location, "offset": "0", "length": "64"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize(("location", "expect"), [
    ("missing.data", "not regular file"), ("../../etc/passwd", "outside"), ("/etc/passwd", "absolute"),
    ("link.data", "symbolic link"),
])
def test_onnx_external_data_unsafe_or_missing(tmp_path: Path, capsys, location: str, expect: str) -> None:
    model = _onnx_with_external(tmp_path / "m.onnx", location)
    (tmp_path / "link.data").symlink_to("/etc/passwd")
    fails_in_one_line(capsys, ["export", str(model), "--calib", str(_calib(tmp_path, (1, 4))), "--out",
                               str(tmp_path / "o")], expect)


# --- PyTorch classes that raise --------------------------------------------------------------------------------
RAISING = '''
import torch


class BadInit(torch.nn.Module):
    input_shape = (1, 4)

    def __init__(self):
        super().__init__()
        raise ValueError("checkpoint path not configured")


class BadForward(torch.nn.Module):
    input_shape = (1, 4)

    def forward(self, x):
        raise ValueError("expected 3 channels")
'''


@pytest.mark.parametrize(("klass", "expect"), [("BadInit", "BadInit() in"), ("BadForward", "forward raised ValueError")])
def test_pytorch_class_that_raises(tmp_path: Path, capsys, klass: str, expect: str) -> None:
    (tmp_path / "raising.py").write_text(RAISING)
    fails_in_one_line(capsys, ["export", f"{tmp_path / 'raising.py'}:{klass}", "--calib",
                               str(_calib(tmp_path, (1, 4))), "--out", str(tmp_path / "o")], expect)


# --- configs and manifests ------------------------------------------------------------------------------------
def test_devices_yaml_not_utf8(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "devices.yaml"
    bad.write_bytes(b"devices:\n  - name: h\xe9st\n    kind: local\n")
    fails_in_one_line(capsys, ["devices", "check", "--devices", str(bad)], "devices.yaml:2: not UTF-8")


def _export_dir(tmp_path: Path, path: str) -> Path:
    from bench_artifacts import make_export_dir

    root = make_export_dir(tmp_path / "export")
    manifest_path = root / "tiny" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["artifacts"][0]["path"] = path
    manifest_path.write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("path", ["onnx-fp32/mo\x00del.onnx", "../../../../etc/passwd", "/etc/passwd"])
def test_manifest_paths_outside_the_folder_are_refused(tmp_path: Path, capsys, path: str) -> None:
    root = _export_dir(tmp_path, path)
    for args in (["bench", str(root), "--out", str(tmp_path / "r"), "--runs", "1", "--min-seconds", "0"],
                 ["package", str(root), "--out", str(tmp_path / "p.tar.gz")]):
        fails_in_one_line(capsys, args, "unsafe path")
    assert not (tmp_path / "r" / "cells").exists() and not (tmp_path / "p.tar.gz").exists()


def test_manifest_file_symlinked_outside_is_refused(tmp_path: Path, capsys) -> None:
    root = _export_dir(tmp_path, "onnx-fp32/model.onnx")
    model = root / "tiny" / "onnx-fp32" / "model.onnx"
    model.unlink()
    model.symlink_to("/etc/passwd")
    fails_in_one_line(capsys, ["bench", str(root), "--out", str(tmp_path / "r")], "resolves outside")


# --- output folders of the wrong kind --------------------------------------------------------------------------
def test_output_folders_of_the_wrong_kind(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path, capsys) -> None:
    base = ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
            "-b", "onnx-fp32"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tinycnn").write_text("a file where the model folder goes")
    fails_in_one_line(capsys, [*base, "--out", str(tmp_path / "a")], "is not a folder")
    (tmp_path / "b" / "tinycnn" / "manifest.json").mkdir(parents=True)
    fails_in_one_line(capsys, [*base, "--out", str(tmp_path / "b")], "is a folder, not a file")
    (tmp_path / "c" / "tinycnn").mkdir(parents=True)
    (tmp_path / "c" / "tinycnn" / "onnx-fp32").write_text("a file where the artifact folder goes")
    assert main([*base, "--out", str(tmp_path / "c")]) == 0
    model_dir = tmp_path / "c" / "tinycnn"
    assert (model_dir / "onnx-fp32" / "model.onnx").is_file()
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".")] == []


def test_stale_leftovers_of_a_killed_run_are_removed(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    model_dir = tmp_path / "tinycnn"
    stale = [model_dir / f".onnx-fp32-build-pid{dead.pid}-abc", model_dir / f".onnx-qdq.old-pid{dead.pid}",
             model_dir / f".manifest.json.pid{dead.pid}-x.tmp"]
    alive = model_dir / f".onnx-fp16-build-pid{os.getppid()}-abc"  # a running process's folder stays
    for path in [*stale[:2], alive]:
        path.mkdir(parents=True)
        (path / "model.onnx").write_bytes(b"half")
    stale[2].write_text("{")
    assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                 "-b", "onnx-fp32", "--out", str(tmp_path)]) == 0
    assert not any(p.exists() for p in stale)
    assert alive.exists()
    assert (model_dir / "onnx-qdq").is_dir(), "a replaced artifact whose rename was cut short is put back"


# --- a full disk ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.mark.slow  # a fresh process importing TensorFlow / exporting the digits CNN
def test_disk_full_one_line_nothing_half_written(small_disk: Path) -> None:
    """A real full disk (1 MB tmpfs, 300 KB left): the digits CNN's FP32 ONNX (~370 KB) cannot be written."""
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 300 * 1024))
    result = _cli(["export", "edgeq/examples/digits.py:DigitsCNN", "--weights", "edgeq/examples/digits_cnn.safetensors",
                   "--calib", "calibration/digits.yaml", "--calib-samples", "16", "--holdout-samples", "8",
                   "-b", "onnx-fp32", "-b", "onnx-qdq", "--out", str(small_disk / "out")])
    _one_line(result, "disk full writing")
    assert "MB free" in result.stderr and "needs about" in result.stderr
    model_dir = small_disk / "out" / "digits_cnn"
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".")] == []
    assert not (model_dir / "onnx-fp32").exists()
    manifest = model_dir / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())


# --- bundles ------------------------------------------------------------------------------------------------------
def _bundle(path: Path, members: list[tuple[str, bytes, str]]) -> Path:
    """A tar.gz with (name, type, link target) members; regular files hold a few bytes."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"pwned" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def test_verify_refuses_link_chains_out_of_the_bundle(tmp_path: Path) -> None:
    archive = _bundle(tmp_path / "chain.tar.gz", [
        ("pkg/SHA256SUMS", tarfile.REGTYPE, ""), ("pkg/up", tarfile.SYMTYPE, ".."),
        ("pkg/up2", tarfile.SYMTYPE, "up/.."), ("pkg/up2/FILE", tarfile.REGTYPE, ""),
        ("pkg/hard", tarfile.LNKTYPE, "pkg/up2/FILE")])
    problems, _ = verify_package(archive)
    assert any("'pkg/up2'" in p and "resolving outside" in p for p in problems), problems
    assert any("'pkg/up2/FILE'" in p and "written through a link" in p for p in problems), problems
    assert any("'pkg/hard'" in p and "hard link" in p for p in problems), problems
    dest = tmp_path / "dest" / "inner"
    with tarfile.open(archive) as tar, pytest.raises(PackageError, match="refusing to extract"):
        safe_extract(tar, dest)
    assert not (tmp_path / "dest" / "FILE").exists() and not dest.exists()
    assert main(["package", "--verify", str(archive)]) == 1


def test_verify_refuses_device_nodes(tmp_path: Path) -> None:
    archive = _bundle(tmp_path / "dev.tar.gz", [("pkg/SHA256SUMS", tarfile.REGTYPE, ""),
                                                ("pkg/null", tarfile.CHRTYPE, "")])
    assert any("device" in p for p in verify_package(archive)[0])


def test_gzip_bomb_refused_fast(tmp_path: Path) -> None:
    """256 MiB of zeros declared by one member, ~250 KB on disk: refused from the header, before decompressing."""
    bomb = tmp_path / "bomb.tar.gz"
    size = 256 << 20
    with gzip.open(bomb, "wb", compresslevel=9) as raw:
        info = tarfile.TarInfo("pkg/zeros.bin")
        info.size = size
        raw.write(info.tobuf())
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            raw.write(chunk)
        raw.write(b"\0" * 1024)
    started = time.perf_counter()
    problems, checked = verify_package(bomb)
    seconds = time.perf_counter() - started
    print(f"bomb: {bomb.stat().st_size} bytes on disk, refused in {seconds:.3f} s: {problems}")
    assert checked == 0 and len(problems) == 1 and "decompression bomb" in problems[0]
    assert seconds < 2.0


def test_member_count_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_module, "MAX_BUNDLE_FILES", 3)
    archive = _bundle(tmp_path / "many.tar.gz", [(f"pkg/f{i}", tarfile.REGTYPE, "") for i in range(5)])
    assert verify_package(archive)[0] == ["refused: more than 3 members (cap EDGEQ_BUNDLE_MAX_FILES)"]


def test_verify_cli_one_line_for_refused_bundle(tmp_path: Path, capsys) -> None:
    archive = _bundle(tmp_path / "chain.tar.gz", [("pkg/up", tarfile.SYMTYPE, ".."), ("pkg/up2", tarfile.SYMTYPE,
                                                                                      "up/..")])
    capsys.readouterr()
    assert main(["package", "--verify", str(archive)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unsafe member 'pkg/up2'" in err
