"""The ``edgeq export`` run: model → calibration → FP32 references → export (per backend) → manifest.

``run_export`` is a short sequence of small steps: load the model, train with QAT (``--qat``), check the
calibration data, run the FP32 reference, merge with the previous manifest, set up the evaluation budget, and
schedule the backends on an executor (``edgeq.export.executors``), writing the manifest after every backend.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq._version import __version__
from edgeq.backends import resolve
from edgeq.errors import EdgeqError
from edgeq.evaluation import EvalSet, load_eval_set
from edgeq.export.candidate import backend_log, restore_replaced
from edgeq.export.context import (
    EvalContext,
    ExportContext,
    ExportRequest,
    load_calibration,
    load_source,
    noting_interrupts,
)
from edgeq.export.control import check_eval_request, fidelity_floor, prepare_evaluation
from edgeq.export.executors import Executor, PinnedParallelExecutor, SequentialExecutor, plan_slots
from edgeq.manifest import MANIFEST_NAME, Artifact, Manifest, ModelInfo, TensorInfo
from edgeq.models import ModelSource
from edgeq.types import ExportOptions, Feeds
from edgeq.workdirs import clean_stale, clean_stale_tmp, disk_full_error, is_disk_full

if TYPE_CHECKING:
    from edgeq.calibration import CalibrationData

TOOL_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorflow", "ai-edge-litert", "litert-torch",
                 "numpy")

Step = Callable[[str], None]
Progress = Callable[[str, str, int], None]


class Interrupted(EdgeqError):
    """Ctrl-C: what finished is kept (manifest written per backend); the message says how far it got."""

    exit_code = 130


def run_export(request: ExportRequest, on_step: Step | None = None, on_progress: Progress | None = None) -> Manifest:
    """The whole ``edgeq export`` job; returns the manifest written to ``OUT/<model>/manifest.json``.

    ``on_step(message)`` logs a stage; ``on_progress(bar, label, total)`` advances a named progress bar
    ("calibration": one tick per validated sample, "export": one tick per backend).
    """
    step: Step = on_step or (lambda _msg: None)
    tick: Progress = on_progress or (lambda _bar, _label, _total: None)
    names = resolve(request.backends)
    stack = contextlib.ExitStack()
    check_eval_request(request)
    out = Path(request.out)
    check_writable(out)
    step("loading model")
    source = load_source(request)
    finished = 0
    model_dir = out / source.name
    try:
        stack.enter_context(noting_interrupts())
        options = _train_qat(source, request.options or ExportOptions(), names, tick)
        step("checking calibration data")
        data = load_calibration(request, source,
                                on_sample=lambda total: tick("calibration", "validating calibration data", total))
        data.info.method = options.calib_method
        prepare_model_dir(model_dir)
        holdout = list(data.holdout)
        eval_set = (load_eval_set(str(request.eval_spec), list(source.inputs), source.layout, request.eval_samples)
                    if request.eval_spec else None)
        step("running the FP32 reference on held-out data" + (" and the eval set" if eval_set else ""))
        all_references = _references(request, source, holdout, eval_set, model_dir)
        references = all_references[:len(holdout)]
        manifest = previous_manifest(model_dir)
        manifest.model = describe_model(request, source, references)
        manifest.calibration = data.info
        manifest.tools = tool_versions()
        evaluation = _evaluation(request, manifest, data, eval_set, all_references)
        context = ExportContext(source, data.calib, model_dir, options, holdout, references, evaluation)
        for row in _executor(request, names, options, step).run(names, context):
            tick("export", f"exported {row.backend}", len(names))
            _record(manifest, row, model_dir)  # after every backend: a kill loses at most the one running
            finished += 1
        _write_manifest(manifest, model_dir)
        return manifest
    except KeyboardInterrupt:
        if model_dir.is_dir():
            clean_stale(model_dir)  # parallel workers were stopped: their build folders go now
        raise Interrupted(f"interrupted: {finished} of {len(names)} backends finished, re-run to continue") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(out) from None
        raise
    finally:
        stack.close()
        source.close()


def check_writable(out: Path) -> None:
    """Fail early, in one line, if the output directory cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".edgeq-write-test-"):
            pass
    except OSError as exc:
        raise EdgeqError(f"output directory {out} is not writable ({exc.strerror or exc})") from None


def _train_qat(source: ModelSource, options: ExportOptions, names: list[str], tick: Progress) -> ExportOptions:
    """``--qat``: PyTorch sources only, training data checked now, epochs on a bar; the options the INT8 backends
    then export with (unchanged without --qat)."""
    if options.qat is None:
        return options
    from edgeq.qat import prepare

    return prepare(source, options, tick, names)


def prepare_model_dir(model_dir: Path) -> None:
    """Create OUT/<model> (one line when something in the way is not a folder), and remove what killed runs left
    there and in the temp dir (build folders, replaced artifacts, temp files of processes that no longer run)."""
    if model_dir.exists() and not model_dir.is_dir():
        raise EdgeqError(f"{model_dir} exists and is not a folder: move it away or choose another --out")
    manifest_path = model_dir / MANIFEST_NAME
    if manifest_path.is_dir():
        raise EdgeqError(f"{manifest_path} is a folder, not a file: move it away or choose another --out")
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeqError(f"cannot create {model_dir}: {exc.strerror or exc}") from None
    restore_replaced(model_dir)
    clean_stale(model_dir)
    clean_stale_tmp()


def _references(request: ExportRequest, source: ModelSource, holdout: list[Feeds], eval_set: EvalSet | None,
                model_dir: Path) -> list[list[np.ndarray]]:
    """The FP32 source model's outputs on the held-out then the eval samples, computed in a child process."""
    from edgeq.verification import SampleFiles, reference_weights, run_reference

    samples = SampleFiles(holdout, eval_set.samples if eval_set is not None else [])
    if not samples.count:
        return []
    weights = reference_weights(source, str(request.model), request.weights, samples.scratch())
    return run_reference(str(request.model), weights, request.input_shapes, samples,
                         backend_log(model_dir, "reference"), request.trust_model)


# ---------------------------------------------------------------------------------------------------------------
# The manifest: the previous run's intact artifacts, this run's model, evaluation and rows
# ---------------------------------------------------------------------------------------------------------------
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


def describe_model(request: ExportRequest, source: ModelSource, references: list[list[np.ndarray]]) -> ModelInfo:
    """The manifest's model entry (output shapes and dtypes from the FP32 reference, when it ran)."""
    return ModelInfo(
        name=source.name, source=str(request.model), sha256=source.sha256(), framework=source.framework,
        layout=source.layout,
        inputs=[TensorInfo(name=s.name, shape=list(s.shape), dtype=s.dtype) for s in source.inputs],
        outputs=[TensorInfo(name=n, shape=list(np.shape(r)), dtype=str(np.asarray(r).dtype))
                 for n, r in zip(source.output_names, references[0] if references else [])],
    )


def _evaluation(request: ExportRequest, manifest: Manifest, data: CalibrationData, eval_set: EvalSet | None,
                all_references: list[list[np.ndarray]]) -> EvalContext | None:
    """This run's evaluation budget (None without --eval / --min-fidelity), recorded in ``manifest.evaluation``;
    kept artifacts scored on another eval set lose their (no longer comparable) scores."""
    holdout = list(data.holdout)
    if request.min_fidelity is not None and not request.eval_spec:
        evaluation, manifest.evaluation = fidelity_floor(request, holdout, all_references[:len(holdout)],
                                                         data.info.holdout_source)
        return evaluation
    if not request.eval_spec:  # without --eval, the previous eval info stays with the artifacts it scored
        return None
    assert eval_set is not None
    previous = manifest.evaluation
    evaluation, manifest.evaluation = prepare_evaluation(
        request, eval_set, [np.asarray(r[0]) for r in all_references[len(holdout):]])
    if manifest.evaluation.source == data.info.source:
        manifest.evaluation.note = "the eval set is the calibration source: scores may be optimistic"
    if previous is None or (previous.source, previous.samples, previous.metric) != (
            manifest.evaluation.source, manifest.evaluation.samples, manifest.evaluation.metric):
        for kept in manifest.artifacts:  # scored on another eval set: not comparable, dropped
            kept.evaluation, kept.accuracy_control = None, None
    return evaluation


def previous_manifest(model_dir: Path) -> Manifest:
    """Artifacts of an earlier export whose files are still intact on disk (every listed file there, same size),
    including the ones this run redoes: each is replaced only when its new row is ready, so an interrupted or
    killed run never loses an artifact it did not get to."""
    path = model_dir / MANIFEST_NAME
    placeholder = ModelInfo(name=model_dir.name, source="", sha256="", framework="onnx")
    if not path.is_file():
        return Manifest(model=placeholder)
    try:
        old = Manifest.read(path)
    except Exception:  # noqa: BLE001 - an unreadable old manifest is simply replaced
        return Manifest(model=placeholder)
    old.artifacts = [a for a in old.artifacts if _intact(model_dir, a)]
    return old


def _intact(model_dir: Path, artifact: Artifact) -> bool:
    """An ok artifact whose main file and listed files exist inside ``model_dir`` with the recorded sizes."""
    if artifact.status != "ok" or not artifact.path:
        return False
    try:
        artifact.check_inside(model_dir)
        folder = (model_dir / artifact.path).parent
        return (model_dir / artifact.path).is_file() and all(
            (folder / f.path).is_file() and (folder / f.path).stat().st_size == f.size_bytes for f in artifact.files)
    except (OSError, EdgeqError):
        return False


def _record(manifest: Manifest, row: Artifact, model_dir: Path) -> None:
    """Put a finished backend's row in the manifest (replacing its previous one) and write the manifest."""
    manifest.artifacts = [a for a in manifest.artifacts if a.backend != row.backend] + [row]
    _write_manifest(manifest, model_dir)


def _write_manifest(manifest: Manifest, model_dir: Path) -> None:
    from edgeq.backends import REGISTRY

    order = list(REGISTRY)
    manifest.artifacts.sort(key=lambda a: order.index(a.backend) if a.backend in order else 99)
    manifest.write(model_dir / MANIFEST_NAME)


# ---------------------------------------------------------------------------------------------------------------
# Scheduling
# ---------------------------------------------------------------------------------------------------------------
def _executor(request: ExportRequest, names: list[str], options: ExportOptions, step: Step) -> Executor:
    """Pinned parallel workers when ``--jobs`` and the cores give more than one slot, else this process (always
    with ``--qat``: one trained model, in memory)."""
    slots = plan_slots(request.jobs, len(names)) if options.qat is None else [[]]
    if len(slots) > 1:
        step(f"exporting {len(names)} backends, {len(slots)} at a time on cores {slots}")
        return PinnedParallelExecutor(request, slots)
    return SequentialExecutor(on_started=lambda name: step(f"exporting {name}"))


def export(model: Any, calib: Any, backends: list[str] | None = None, out: str | Path = "out", **kwargs: Any) -> Manifest:
    """Python API mirroring ``edgeq export``: ``edgeq.export("m.onnx", "calib/", backends=["onnx-qdq"], out="out")``."""
    option_names = {"calib_method", "tflite_io", "tflite_narrow_convs", "threads", "opset", "configs", "qat"}
    options = ExportOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in option_names})
    request = ExportRequest(model=str(model), calib=calib, backends=backends or ["all"], out=Path(out),
                            options=options, **kwargs)
    return run_export(request)
