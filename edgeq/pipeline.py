"""The export pipeline: model → calibration → export (per backend, atomically) → verify → manifest.

Each backend writes into a private temporary directory that is renamed into place only when complete, so a
failure (or Ctrl-C) never leaves a half-written artifact. One backend's failure never stops the others.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import __version__
from edgeq.backends import get_backend, resolve
from edgeq.errors import BackendUnavailable, EdgeqError
from edgeq.manifest import MANIFEST_NAME, Artifact, FileEntry, Manifest, ModelInfo, TensorInfo, Verification
from edgeq.models import ModelSource, load_model
from edgeq.models.base import sha256_file
from edgeq.types import ExportOptions, Feeds

TOOL_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorflow", "ai-edge-litert", "litert-torch",
                 "numpy")


@dataclass
class ExportRequest:
    """Everything ``edgeq export`` needs, as given on the command line."""

    model: str
    calib: str | Path
    backends: list[str]
    out: Path
    weights: str | Path | None = None
    input_shapes: list[str] | None = None
    calib_samples: int = 300
    seed: int = 0
    holdout: str | Path | None = None
    holdout_samples: int = 200
    options: ExportOptions | None = None


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"edgeq": __version__}
    for name in TOOL_PACKAGES:
        try:
            found[name] = version(name if name != "tensorflow" else "tensorflow-cpu")
        except PackageNotFoundError:
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                continue
    return found


def check_writable(out: Path) -> None:
    """Fail early, in one line, if the output directory cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".edgeq-write-test-"):
            pass
    except OSError as exc:
        raise EdgeqError(f"output directory {out} is not writable ({exc.strerror or exc})") from None


def file_entries(directory: Path) -> list[FileEntry]:
    return [FileEntry(path=str(p.relative_to(directory)), size_bytes=p.stat().st_size, sha256=sha256_file(p))
            for p in sorted(directory.rglob("*")) if p.is_file()]


def combined_sha256(files: list[FileEntry]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda e: e.path):
        digest.update(f"{entry.path}\0{entry.sha256}\n".encode())
    return digest.hexdigest()


def _tensor_infos(details: list[Any]) -> list[TensorInfo]:
    infos = []
    for d in details:
        quant = {"scale": d.scale, "zero_point": d.zero_point} if d.scale is not None else None
        infos.append(TensorInfo(name=d.name, shape=list(d.shape), dtype=d.dtype, quantization=quant))
    return infos


def verify_artifact(main: Path, holdout: list[Feeds], references: list[list[np.ndarray]]) -> tuple[Any, Verification | None]:
    """Open the artifact in its own runtime, read its I/O details, and compare outputs with FP32 on held-out data."""
    from edgeq.metrics import fidelity
    from edgeq.targets.runner import open_session

    session = open_session(str(main), threads=1)
    if not holdout:
        return session, None
    outputs = [session.run(feeds)[0] for feeds in holdout]
    stats = fidelity([ref[0] for ref in references], outputs)
    return session, Verification(runtime_version=session.runtime_version, **stats)


def _move_into_place(built: Path, final: Path) -> None:
    """Replace ``final`` by ``built`` so that readers see the old or the new artifact, never a mix."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    built.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_one(name: str, source: ModelSource, calib: Any, model_dir: Path, options: ExportOptions,
               holdout: list[Feeds], references: list[list[np.ndarray]]) -> Artifact:
    """Export, verify and describe one backend's artifact; failures become a failed Artifact, never an exception."""
    backend_cls = get_backend(name)
    row = Artifact(backend=name, runtime=backend_cls.runtime, precision=backend_cls.precision)
    try:
        backend_cls.check_available()
    except BackendUnavailable as exc:
        row.status, row.error = "skipped", str(exc)
        return row
    build = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{name}-build-"))
    started = time.perf_counter()
    try:
        files = backend_cls().export(source, calib, build, options)
        row.export_seconds = round(time.perf_counter() - started, 2)
        session, row.verification = verify_artifact(files.main, holdout, references)
        row.inputs, row.outputs = _tensor_infos(session.inputs), _tensor_infos(session.outputs)
        del session
        main_rel = files.main.relative_to(build)
        final = model_dir / name
        _move_into_place(build, final)
        row.files = file_entries(final)
        row.size_bytes = sum(f.size_bytes for f in row.files)
        row.sha256 = combined_sha256(row.files)
        row.path = f"{name}/{main_rel}"
        row.layout = source.layout
        row.recipe, row.notes = files.recipe, files.notes
    except KeyboardInterrupt:
        shutil.rmtree(build, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the others go on
        shutil.rmtree(build, ignore_errors=True)
        row.status = "failed"
        first = (str(exc).strip().splitlines() or [""])[0]
        row.error = first[:300] if isinstance(exc, EdgeqError) else f"{type(exc).__name__}: {first[:280]}"
        row.export_seconds = round(time.perf_counter() - started, 2)
    return row


def run_export(request: ExportRequest, on_step: Callable[[str], None] | None = None,
               on_progress: Callable[[str, str, int], None] | None = None) -> Manifest:
    """The whole ``edgeq export`` job; returns the manifest written to ``OUT/<model>/manifest.json``.

    ``on_step(message)`` logs a stage; ``on_progress(bar, label, total)`` advances a named progress bar
    ("calibration": one tick per validated sample, "export": one tick per backend).
    """
    from edgeq.calibration import prepare_calibration

    step = on_step or (lambda _msg: None)
    tick = on_progress or (lambda _bar, _label, _total: None)
    options = request.options or ExportOptions()
    names = resolve(request.backends)
    out = Path(request.out)
    check_writable(out)
    step("loading model")
    source = load_model(request.model, request.weights, request.input_shapes)
    try:
        step("checking calibration data")
        data = prepare_calibration(request.calib, source.inputs, source.layout, samples=request.calib_samples,
                                   seed=request.seed, holdout=request.holdout, holdout_samples=request.holdout_samples,
                                   on_sample=lambda total: tick("calibration", "validating calibration data", total))
        data.info.method = options.calib_method
        model_dir = out / source.name
        model_dir.mkdir(parents=True, exist_ok=True)
        step("running the FP32 reference on held-out data")
        holdout = list(data.holdout)
        references = [source.reference(feeds) for feeds in holdout]
        manifest = _previous_manifest(model_dir, names)
        manifest.model = ModelInfo(
            name=source.name, source=str(request.model), sha256=source.sha256(), framework=source.framework,
            layout=source.layout,
            inputs=[TensorInfo(name=s.name, shape=list(s.shape), dtype=s.dtype) for s in source.inputs],
            outputs=[TensorInfo(name=n, shape=list(np.shape(r)), dtype=str(np.asarray(r).dtype))
                     for n, r in zip(source.output_names, references[0] if references else [])],
        )
        manifest.calibration = data.info
        manifest.tools = tool_versions()
        for name in names:
            step(f"exporting {name}")
            row = export_one(name, source, data.calib, model_dir, options, holdout, references)
            tick("export", f"exported {name}", len(names))
            manifest.artifacts = [a for a in manifest.artifacts if a.backend != name] + [row]
            manifest.write(model_dir / MANIFEST_NAME)
        manifest.artifacts.sort(key=lambda a: list(_order()).index(a.backend) if a.backend in _order() else 99)
        manifest.write(model_dir / MANIFEST_NAME)
        return manifest
    finally:
        source.close()


def _order() -> list[str]:
    from edgeq.backends import REGISTRY

    return list(REGISTRY)


def _previous_manifest(model_dir: Path, names: list[str]) -> Manifest:
    """Keep artifacts of an earlier export that this run does not redo (and whose files still exist)."""
    path = model_dir / MANIFEST_NAME
    placeholder = ModelInfo(name=model_dir.name, source="", sha256="", framework="onnx")
    if not path.exists():
        return Manifest(model=placeholder)
    try:
        old = Manifest.read(path)
    except Exception:  # noqa: BLE001 - an unreadable old manifest is simply replaced
        return Manifest(model=placeholder)
    old.artifacts = [a for a in old.artifacts if a.backend not in names and a.status == "ok"
                     and a.path and (model_dir / a.path).exists()]
    return old


def export(model: Any, calib: Any, backends: list[str] | None = None, out: str | Path = "out", **kwargs: Any) -> Manifest:
    """Python API mirroring ``edgeq export``: ``edgeq.export("m.onnx", "calib/", backends=["onnx-qdq"], out="out")``."""
    option_names = {"calib_method", "tflite_io", "threads", "opset", "extra"}
    options = ExportOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in option_names})
    request = ExportRequest(model=str(model), calib=calib, backends=backends or ["all"], out=Path(out),
                            options=options, **kwargs)
    return run_export(request)
