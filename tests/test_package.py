"""edgeq package: round trip (build → verify → safe extract), tampering, malicious archives, bad input."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from bench_artifacts import make_export_dir
from report_fixtures import cell, write_results

from edgeq.cli import main
from edgeq.manifest import CalibrationInfo, Manifest, Verification
from edgeq.report.package import PackageError, build_package, safe_extract, verify_package


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real FP32 + ORT-quantized QDQ ONNX artifacts with a manifest carrying calibration and fidelity records."""
    root = make_export_dir(tmp_path_factory.mktemp("export"))
    path = root / "tiny" / "manifest.json"
    manifest = Manifest.read(path)
    manifest.calibration = CalibrationInfo(source="calib/tiny.npy", samples=64, seed=0, method="minmax",
                                           preprocessing={"scale": "1/255", "mean": [0.485, 0.456, 0.406]},
                                           holdout_samples=32)
    manifest.artifact("onnx-qdq").verification = Verification(samples=32, cosine_min=0.9931, cosine_mean=0.998,
                                                              max_abs_error=0.05, mean_abs_error=0.01,
                                                              top1_agreement=0.96875)
    manifest.write(path)
    return root


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cells = [cell("host", "onnx-fp32", 1, 0.031, top1=0.60, model="tiny", size_bytes=1373),
             cell("host", "onnx-qdq", 1, 0.046, top1=0.55, cos=0.9931, agree=0.96875, model="tiny", size_bytes=2906),
             cell("host", "onnx-qdq", 2, None, error="runner died with SIGSEGV (signal 11)", model="tiny")]
    return write_results(tmp_path_factory.mktemp("bench") / "results", cells)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> None:
    """Copy a package, replacing (bytes) or dropping (None) members and adding new ones."""
    members = _members(source)
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with tarfile.open(target, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_round_trip(export_dir: Path, results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist" / "tiny-v1.tar.gz"
    summary = build_package(export_dir, out, results_dir=results_dir)
    assert summary.models == ["tiny"] and summary.warnings == []
    assert [p.name for p in out.parent.iterdir()] == ["tiny-v1.tar.gz"]  # no temp file left behind
    assert verify_package(out) == ([], summary.files - 1)

    members = _members(out)
    expected = {"tiny-v1/MODEL_CARD.md", "tiny-v1/SHA256SUMS", "tiny-v1/artifacts/tiny/manifest.json",
                "tiny-v1/artifacts/tiny/onnx-fp32/model.onnx", "tiny-v1/artifacts/tiny/onnx-qdq/model.onnx",
                "tiny-v1/reports/report.md", "tiny-v1/reports/report.html", "tiny-v1/reports/report.json",
                "tiny-v1/results/results.json"}
    assert expected <= set(members)
    assert sum(name.startswith("tiny-v1/results/cells/") for name in members) == 3
    # SHA256SUMS lists every other file with its real digest (sha256sum -c format)
    sums = members["tiny-v1/SHA256SUMS"].decode().splitlines()
    assert len(sums) == len(members) - 1
    for line in sums:
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256(members[f"tiny-v1/{rel}"]).hexdigest() == digest

    dest = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        safe_extract(tar, dest)
    for backend in ("onnx-fp32", "onnx-qdq"):
        original = (export_dir / "tiny" / backend / "model.onnx").read_bytes()
        assert (dest / "tiny-v1" / "artifacts" / "tiny" / backend / "model.onnx").read_bytes() == original
    import onnxruntime as ort  # the packaged artifact still runs

    ort.InferenceSession(str(dest / "tiny-v1/artifacts/tiny/onnx-qdq/model.onnx"), providers=["CPUExecutionProvider"])

    card = (dest / "tiny-v1" / "MODEL_CARD.md").read_text()
    assert "| x | 1×3×8×8 | float32 |" in card  # inputs
    assert "`calib/tiny.npy` — 64 samples, seed 0, method minmax" in card
    assert "  - scale: `1/255`" in card  # preprocessing from the manifest's calibration section
    assert "| onnx-qdq | onnxruntime | int8 | `onnx-qdq/model.onnx` | 0.003 |" in card
    assert "0.9931" in card and "96.9%" in card  # fidelity of the artifact
    assert "openvino-int8: failed — not exported in this test" in card
    assert "| host | onnx-qdq | 1 | 0.046 | 55.0 | -5.0 pt |" in card  # metrics per device
    assert "failed: runner died with SIGSEGV (signal 11)" in card
    report_md = (dest / "tiny-v1" / "reports" / "report.md").read_text()
    assert "top-1 drops 5.0 points vs FP32 on host (onnx-qdq)" in report_md


def test_cli_package_and_verify(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.tgz"
    assert main(["package", str(export_dir), "--out", str(out)]) == 0
    names = _members(out)
    assert "p/MODEL_CARD.md" in names and not any("/reports/" in n for n in names)  # no results → no reports
    capsys.readouterr()
    assert main(["package", "--verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("OK: 4 files match SHA256SUMS")


def test_tampered_file_fails_verify(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.tar.gz"
    build_package(export_dir, good)
    qdq = "good/artifacts/tiny/onnx-qdq/model.onnx"
    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(good, tampered, {qdq: _members(good)[qdq][:-1] + b"\x00"})
    assert verify_package(tampered)[0] == ["checksum mismatch: artifacts/tiny/onnx-qdq/model.onnx"]
    capsys.readouterr()
    assert main(["package", "--verify", str(tampered)]) == 1
    err = capsys.readouterr().err
    assert "tampered.tar.gz: checksum mismatch: artifacts/tiny/onnx-qdq/model.onnx" in err

    missing_and_extra = tmp_path / "other.tar.gz"
    _rewrite(good, missing_and_extra, {"good/artifacts/tiny/onnx-fp32/model.onnx": None, "good/extra.txt": b"hi"})
    assert verify_package(missing_and_extra)[0] == ["missing: artifacts/tiny/onnx-fp32/model.onnx",
                                                    "not listed in SHA256SUMS: extra.txt"]
    no_sums = tmp_path / "nosums.tar.gz"
    _rewrite(good, no_sums, {"good/SHA256SUMS": None})
    assert verify_package(no_sums)[0] == ["SHA256SUMS missing from the package"]


def _malicious(path: Path, member: tarfile.TarInfo, data: bytes = b"pwned") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("pkg/fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = 0 if member.issym() or member.islnk() else len(data)
        tar.addfile(member, None if member.size == 0 else io.BytesIO(data))
    return path


@pytest.mark.parametrize(("name", "kind", "link", "reason"), [
    ("/tmp/edgeq-evil.txt", tarfile.REGTYPE, "", "has an absolute path"),
    ("pkg/../../evil.txt", tarfile.REGTYPE, "", "contains '..'"),
    ("pkg/link", tarfile.SYMTYPE, "../../etc/passwd", "is a link pointing outside the destination"),
    ("pkg/abs-link", tarfile.SYMTYPE, "/etc/passwd", "is a link to an absolute path"),
    ("pkg/hard", tarfile.LNKTYPE, "../outside", "is a link pointing outside the destination"),
])
def test_safe_extract_refuses_malicious(tmp_path: Path, name: str, kind: bytes, link: str, reason: str) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    archive = _malicious(tmp_path / "evil.tar.gz", member)
    dest = tmp_path / "dest"
    with tarfile.open(archive) as tar, pytest.raises(PackageError) as info:
        safe_extract(tar, dest)
    message = str(info.value)
    assert message.startswith(f"refusing to extract: member {name!r} {reason}") and "\n" not in message
    assert not dest.exists()  # checked before anything is written
    assert not Path("/tmp/edgeq-evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    problems, _ = verify_package(archive)
    assert any(p.startswith(f"unsafe member {name!r}") for p in problems)


def test_safe_extract_allows_inner_links(tmp_path: Path) -> None:
    member = tarfile.TarInfo("pkg/sub/link")
    member.type, member.linkname = tarfile.SYMTYPE, "../fine.txt"
    archive = _malicious(tmp_path / "ok.tar.gz", member)
    with tarfile.open(archive) as tar:
        safe_extract(tar, tmp_path / "dest")
    assert (tmp_path / "dest" / "pkg" / "sub" / "link").read_text() == "ok"


def test_bad_input_one_line(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["package", str(export_dir), "--out", str(tmp_path / "x.zip")], "--out must end with .tar.gz or .tgz"),
        (["package", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.tar.gz")], "artifacts directory not found"),
        (["package", str(tmp_path), "--out", str(tmp_path / "x.tar.gz")], "no manifest.json under"),
        (["package", "--verify", str(tmp_path / "none.tar.gz")], "package not found"),
        (["package", str(export_dir)], "usage: edgeq package ARTIFACTS_DIR"),
        (["package", str(export_dir), "--verify", str(tmp_path / "a.tar.gz")], "--verify takes only the package"),
    ]
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a tarball at all")
    cases.append((["package", "--verify", str(garbage)], "is not a readable tar.gz"))
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_modified_artifact_is_refused_atomically(export_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    import shutil

    shutil.copytree(export_dir, copy)
    with open(copy / "tiny" / "onnx-qdq" / "model.onnx", "ab") as handle:
        handle.write(b"\x00")
    out = tmp_path / "dist" / "bad.tar.gz"
    with pytest.raises(PackageError, match="does not match the sha256 in its manifest"):
        build_package(copy, out)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_verify_refuses_a_pax_header_whose_length_overflows_in_one_line(tmp_path: Path) -> None:
    """Found by tests/test_fuzz_loaders.py: tarfile raised OverflowError on a pax record length > ssize_t."""
    import gzip

    record = b"99999999999999999999999 path=a\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        header = tarfile.TarInfo("PaxHeader/a")
        header.type, header.size = tarfile.XHDTYPE, len(record)
        tar.addfile(header, io.BytesIO(record))
        member = tarfile.TarInfo("a")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    bundle = tmp_path / "pax.tar.gz"
    bundle.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(PackageError, match="not a readable tar.gz"):
        verify_package(bundle)
