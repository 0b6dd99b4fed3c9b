"""The export pipeline: model → calibration → export (per backend, atomically) → verify → manifest.

Each backend writes into a private temporary directory that is renamed into place only when complete, so a
failure (or Ctrl-C) never leaves a half-written artifact. One backend's failure never stops the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import __version__
from edgeq.backends import get_backend, resolve
from edgeq.digest import combined_sha256, sha256_file
from edgeq.errors import BackendUnavailable, EdgeqError, failure_reason
from edgeq.evaluation import EvalSet, choose_metric, fidelity_summary, ground_truth, load_eval_set, score
from edgeq.export_jobs import export_in_parallel, plan_slots
from edgeq.manifest import (
    MANIFEST_NAME,
    Artifact,
    EvalInfo,
    Evaluation,
    FileEntry,
    Manifest,
    ModelInfo,
    OutputFidelity,
    TensorInfo,
    Verification,
)
from edgeq.metrics import Metric, metric_drop, resolve_metric
from edgeq.models import ModelSource, load_model
from edgeq.types import ExportOptions, Feeds
from edgeq.ui import native_output_to
from edgeq.verification import SampleFiles
from edgeq.workdirs import (
    clean_stale,
    clean_stale_tmp,
    disk_full_error,
    is_disk_full,
    owned,
    owner_pid,
    pid_running,
    remove,
)

INTERRUPTED = threading.Event()
"""Set by Ctrl-C during ``run_export``: some converters (dynamo, TF) turn KeyboardInterrupt into their own errors."""

logger = logging.getLogger(__name__)

LOG_DIR = "logs"
"""OUT/<model>/logs/<backend>.log: what each backend's converters printed (kept off the terminal)."""

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
    eval_spec: str | None = None
    eval_samples: int | None = None
    metric: str | None = None
    max_drop: float | None = None
    drop_type: str = "absolute"
    min_fidelity: float | None = None
    """Label-free floor: worst-sample cosine vs FP32 of every output on the held-out samples (edgeq/accuracy.py)."""
    jobs: int | str = "auto"
    """Backends exported at once, each on its own cores ("auto": one per two cores; see edgeq/export_jobs.py)."""
    trust_model: bool = False
    """``--trust-model``: code inside the model file may run (edgeq/models/safety.py)."""


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


def _tensor_infos(details: list[dict[str, Any]]) -> list[TensorInfo]:
    """The runner's input/output details (JSON) as manifest tensors."""
    infos = []
    for d in details:
        quant = {"scale": d["scale"], "zero_point": d["zero_point"]} if d.get("scale") is not None else None
        infos.append(TensorInfo(name=d["name"], shape=list(d["shape"]), dtype=d["dtype"], quantization=quant))
    return infos


@dataclass
class VerifyContext:
    """What verifying one backend needs: the samples (held-out + eval, one npz) and the FP32 outputs on them."""

    samples: SampleFiles
    references: list[list[np.ndarray]]
    """Per held-out sample, every FP32 output."""
    output_names: list[str]


def verification_of(outputs: list[list[np.ndarray]], context: VerifyContext, runtime_version: str | None) -> Verification:
    """Every output's fidelity vs FP32 (``outputs`` in the source's output order); top level = output 0."""
    from edgeq.metrics import fidelity_per_output

    per_output = fidelity_per_output(context.output_names, context.references, outputs)
    first = {k: v for k, v in per_output[0].items() if k not in ("name", "shape")}
    entries = [OutputFidelity(**{k: v for k, v in o.items() if k != "samples"}) for o in per_output]
    return Verification(runtime_version=runtime_version, outputs=entries, **first)


def verify_artifact(main: Path, context: VerifyContext, evaluation: EvalContext | None,
                    log: Path) -> tuple[dict[str, Any], Verification | None, Evaluation | None]:
    """Run the artifact on the held-out and eval samples in one runner child process (edgeq/verification.py) and
    compare with FP32: (runner JSON with the I/O details, verification, evaluation)."""
    from edgeq.verification import match_outputs, run_artifact

    described, outputs = run_artifact(main, context.samples, log)
    verification = evaluated = None
    order = [0]  # without held-out references, the eval set is scored on the artifact's first output
    if context.references:
        shapes = [list(np.shape(o)) for o in context.references[0]]
        order = match_outputs(context.output_names, shapes, described.get("outputs", []))
        held = [[sample[i] for i in order] for sample in outputs[:len(context.samples.holdout)]]
        verification = verification_of(held, context, described.get("runtime_version"))
    if evaluation is not None:  # --min-fidelity scores every output (EvalContext.all_references)
        runs = [[sample[i] for i in order] for sample in outputs[len(context.samples.holdout):]]
        evaluated = evaluation.evaluate([run[0] for run in runs], runs)
    return described, verification, evaluated


def _move_into_place(built: Path, final: Path) -> None:
    """Replace ``final`` by ``built`` so that readers see the old or the new artifact, never a mix. Whatever was
    at ``final`` (a folder, a stray file or link) is removed afterwards; a killed run's leftovers carry its PID."""
    old = None
    if os.path.lexists(final):
        old = final.with_name(f".{final.name}.old-pid{os.getpid()}")
        remove(old)
        final.rename(old)
    built.rename(final)
    if old is not None:
        remove(old)


@dataclass
class Candidate:
    """One built (not yet installed) artifact: its build directory, files, verification and evaluation."""

    build: Path
    files: Any
    verification: Verification | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    evaluation: Evaluation | None
    seconds: float

    def discard(self) -> None:
        shutil.rmtree(self.build, ignore_errors=True)


def build_candidate(name: str, source: ModelSource, calib: Any, model_dir: Path, options: ExportOptions,
                    context: VerifyContext, evaluation: EvalContext | None = None) -> Candidate:
    """Export into a private build directory, verify against FP32 and evaluate (in a child process); raises on
    failure (dir removed)."""
    backend_cls = get_backend(name)
    build = Path(tempfile.mkdtemp(dir=model_dir, prefix=owned(f".{name}-build-")))
    started = time.perf_counter()
    log = backend_log(model_dir, name)
    try:
        with native_output_to(log):
            files = backend_cls().export(source, calib, build, options)
            files.config = backend_cls.config_of(options).model_dump(mode="json")
            seconds = round(time.perf_counter() - started, 2)
        described, verification, evaluated = verify_artifact(files.main, context, evaluation, log)
        inputs, outputs = _tensor_infos(described["inputs"]), _tensor_infos(described["outputs"])
        return Candidate(build, files, verification, inputs, outputs, evaluated, seconds)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def export_one(name: str, source: ModelSource, calib: Any, model_dir: Path, options: ExportOptions,
               holdout: list[Feeds], references: list[list[np.ndarray]],
               evaluation: EvalContext | None = None) -> Artifact:
    """Export, verify, evaluate (and with a --max-drop budget, accuracy-control) and describe one backend's
    artifact; failures become a failed Artifact, never an exception."""
    backend_cls = get_backend(name)
    row = Artifact(backend=name, runtime=backend_cls.runtime, precision=backend_cls.precision)
    try:
        backend_cls.check_available()
    except BackendUnavailable as exc:
        row.status, row.error = "skipped", str(exc)
        return row
    started = time.perf_counter()
    candidate: Candidate | None = None
    context = VerifyContext(SampleFiles(holdout, evaluation.eval_set.samples if evaluation is not None else []),
                            references, list(source.output_names))
    try:
        candidate = build_candidate(name, source, calib, model_dir, options, context, evaluation)
        if evaluation is not None and evaluation.max_drop is not None:
            from edgeq.accuracy import control_accuracy

            def rebuild(changed: ExportOptions) -> Candidate:
                return build_candidate(name, source, calib, model_dir, changed, context, evaluation)

            candidate, row.accuracy_control = control_accuracy(name, source, calib, options, candidate, rebuild,
                                                               evaluation)
        row.export_seconds = round(time.perf_counter() - started, 2)  # accuracy control included
        row.verification, row.evaluation = candidate.verification, candidate.evaluation
        row.inputs, row.outputs = candidate.inputs, candidate.outputs
        main_rel = candidate.files.main.relative_to(candidate.build)
        final = model_dir / name
        _move_into_place(candidate.build, final)
        row.files = file_entries(final)
        row.size_bytes = sum(f.size_bytes for f in row.files)
        row.sha256 = combined_sha256(row.files)
        row.path = f"{name}/{main_rel}"
        row.layout = source.layout
        row.recipe, row.notes = candidate.files.recipe, candidate.files.notes
        row.config = candidate.files.config
        if row.accuracy_control is not None and not row.accuracy_control.met:
            row.notes = [f"accuracy budget NOT met: best drop {row.accuracy_control.drop_after:.4g} > "
                         f"{row.accuracy_control.budget:g} (kept the best artifact found)"] + row.notes
    except KeyboardInterrupt:
        if candidate is not None:
            candidate.discard()
        raise
    except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the others go on
        if candidate is not None:
            candidate.discard()
        if INTERRUPTED.is_set():  # a converter caught Ctrl-C's KeyboardInterrupt and raised its own error
            raise KeyboardInterrupt from None
        if is_disk_full(exc):  # not this backend's fault: stop, say where and how much
            raise disk_full_error(model_dir / name, _space_needed(source, model_dir / name)) from None
        row.status = "failed"
        row.error = f"{failure_reason(exc)} (details: {log_failure(model_dir, name, exc)})"
        row.export_seconds = round(time.perf_counter() - started, 2)
    return row


def backend_log(model_dir: Path, name: str) -> Path:
    """OUT/<model>/logs/<backend>.log: converter output, verification child output, tracebacks."""
    return model_dir / LOG_DIR / f"{name}.log"


def failure_marker(name: str) -> str:
    """The line in a backend's log that starts its failure traceback."""
    return f"--- {name} failed ---"


def log_failure(model_dir: Path, name: str, exc: BaseException) -> Path:
    """Append ``exc``'s full traceback to the backend's log (and show it on stderr with ``--debug``)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log = backend_log(model_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"\n{failure_marker(name)}\n{text}")
    logger.debug("%s failed (log: %s)\n%s", name, log, text.rstrip())
    return log


@dataclass
class EvalContext:
    """``--eval``: samples, metric, ground truth, the FP32 source model's outputs and score, and the budget."""

    eval_set: EvalSet
    metric: Metric
    truth: np.ndarray | None
    references: list[np.ndarray]
    reference_value: float
    drop_type: str = "absolute"
    max_drop: float | None = None
    all_references: list[list[np.ndarray]] | None = None
    """--min-fidelity: every FP32 output per sample; the value is then the worst-sample fidelity of every output."""

    def drop(self, value: float) -> float:
        return metric_drop(self.reference_value, value, self.metric.higher_is_better, self.drop_type)

    def evaluate(self, outputs: list[np.ndarray], all_outputs: list[list[np.ndarray]] | None = None) -> Evaluation:
        if self.all_references is not None and all_outputs is not None:
            from edgeq.metrics import worst_fidelity_per_output

            value = min(worst_fidelity_per_output(self.all_references, all_outputs))
        else:
            value = score(self.metric, outputs, self.truth)
        return Evaluation(metric=self.metric.name, value=value, drop=self.drop(value), drop_type=self.drop_type,
                          **fidelity_summary(self.references, outputs))


def prepare_evaluation(request: ExportRequest, eval_set: EvalSet,
                       references: list[np.ndarray]) -> tuple[EvalContext, EvalInfo]:
    """Given the eval set and the FP32 source model's first output on it: choose the metric, score the reference."""
    metric = choose_metric(request.metric, eval_set, references)
    truth, kind = ground_truth(metric, eval_set, references)
    reference_value = score(metric, references, truth)
    context = EvalContext(eval_set, metric, truth, references, reference_value, request.drop_type, request.max_drop)
    info = EvalInfo(source=eval_set.description, samples=len(eval_set), metric=metric.name,
                    higher_is_better=metric.higher_is_better, ground_truth=kind, reference=reference_value)
    return context, info


def fidelity_floor(request: ExportRequest, holdout: list[Feeds], references: list[list[np.ndarray]],
                   source: str) -> tuple[EvalContext, EvalInfo]:
    """``--min-fidelity C`` without ``--eval``: the held-out samples become the eval set, the value is the worst-sample
    cosine of every output vs FP32 (1.0 for FP32 itself), and the budget is a drop of 1 - C."""
    from edgeq.metrics import resolve_metric

    if not holdout:
        raise EdgeqError("--min-fidelity needs held-out samples (--holdout-samples > 0)")
    floor = float(request.min_fidelity or 0.0)
    eval_set = EvalSet(spec="held-out", description=source, samples=holdout)
    first = [np.asarray(r[0]) for r in references]
    context = EvalContext(eval_set, resolve_metric("fidelity"), np.stack(first), first, 1.0, "absolute",
                          round(1.0 - floor, 10), all_references=references)
    info = EvalInfo(source=source, samples=len(holdout), metric="fidelity", higher_is_better=True,
                    ground_truth="fp32 outputs", reference=1.0,
                    note=f"--min-fidelity {floor:g}: worst-sample cosine of every output on held-out inputs")
    return context, info


def check_eval_request(request: ExportRequest) -> None:
    """Inconsistent --eval/--metric/--max-drop/--min-fidelity options fail in one line before any work."""
    if request.min_fidelity is not None:
        if not 0.0 < request.min_fidelity <= 1.0:
            raise EdgeqError(f"--min-fidelity must be in (0, 1] (got {request.min_fidelity})")
        if request.max_drop is not None or request.eval_spec:
            raise EdgeqError("give one budget: --max-drop (a metric on --eval) or --min-fidelity (label-free, on the "
                             "held-out samples, without --eval)")
    if request.max_drop is not None and not request.eval_spec:
        raise EdgeqError("--max-drop needs --eval EVALSET (the budget is measured on the eval set)")
    if request.metric and not request.eval_spec:
        raise EdgeqError("--metric needs --eval EVALSET")
    if request.drop_type not in ("absolute", "relative"):
        raise EdgeqError(f"--drop-type must be absolute or relative (got {request.drop_type!r})")
    if request.max_drop is not None and request.max_drop < 0:
        raise EdgeqError(f"--max-drop must be >= 0 (got {request.max_drop})")
    if request.metric:
        resolve_metric(request.metric)


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
    stack = contextlib.ExitStack()
    check_eval_request(request)
    out = Path(request.out)
    check_writable(out)
    step("loading model")
    source = load_model(request.model, request.weights, request.input_shapes, request.trust_model)
    finished = 0
    model_dir = out / source.name
    try:
        stack.enter_context(noting_interrupts())
        if options.qat is not None:  # --qat: PyTorch sources only, training data checked now, epochs on a bar
            from edgeq.qat import prepare

            options = prepare(source, options, tick, names)
        step("checking calibration data")
        data = prepare_calibration(request.calib, source.inputs, source.layout, samples=request.calib_samples,
                                   seed=request.seed, holdout=request.holdout, holdout_samples=request.holdout_samples,
                                   on_sample=lambda total: tick("calibration", "validating calibration data", total))
        data.info.method = options.calib_method
        prepare_model_dir(model_dir)
        holdout = list(data.holdout)
        eval_set = (load_eval_set(str(request.eval_spec), list(source.inputs), source.layout, request.eval_samples)
                    if request.eval_spec else None)
        step("running the FP32 reference on held-out data" + (" and the eval set" if eval_set else ""))
        all_references = _references(request, source, holdout, eval_set, model_dir)
        references = all_references[:len(holdout)]
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
        evaluation = None
        if request.min_fidelity is not None and not request.eval_spec:
            evaluation, manifest.evaluation = fidelity_floor(request, holdout, references, data.info.holdout_source)
        elif request.eval_spec:  # without --eval, the previous eval info stays with the artifacts it scored
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
        slots = plan_slots(request.jobs, len(names)) if options.qat is None else [[]]  # QAT: one trained model
        if len(slots) > 1:
            step(f"exporting {len(names)} backends, {len(slots)} at a time on cores {slots}")
            rows = export_in_parallel(request, names, model_dir, references, evaluation, slots)
        else:
            rows = _export_sequentially(names, source, data.calib, model_dir, options, holdout, references,
                                        evaluation, step)
        for row in rows:
            tick("export", f"exported {row.backend}", len(names))
            manifest.artifacts = [a for a in manifest.artifacts if a.backend != row.backend] + [row]
            _write_manifest(manifest, model_dir)  # after every backend: a kill loses at most the one running
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


@contextlib.contextmanager
def noting_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets INTERRUPTED (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    INTERRUPTED.clear()

    def on_sigint(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Interrupted(EdgeqError):
    """Ctrl-C: what finished is kept (manifest written per backend); the message says how far it got."""

    exit_code = 130


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
    _restore_replaced(model_dir)
    clean_stale(model_dir)
    clean_stale_tmp()


def _restore_replaced(model_dir: Path) -> None:
    """A run killed between the two renames of ``_move_into_place`` left ``.X.old-pidN`` and no ``X``: put it back."""
    for old in model_dir.glob(".*.old-pid*"):
        pid = owner_pid(old.name)
        final = model_dir / old.name[1:].rsplit(".old-pid", 1)[0]
        if pid is not None and not pid_running(pid) and not os.path.lexists(final):
            old.rename(final)


def _write_manifest(manifest: Manifest, model_dir: Path) -> None:
    manifest.artifacts.sort(key=lambda a: _order().index(a.backend) if a.backend in _order() else 99)
    manifest.write(model_dir / MANIFEST_NAME)


def _references(request: ExportRequest, source: ModelSource, holdout: list[Feeds], eval_set: EvalSet | None,
                model_dir: Path) -> list[list[np.ndarray]]:
    """The FP32 source model's outputs on the held-out then the eval samples, computed in a child process."""
    from edgeq.verification import reference_weights, run_reference

    samples = SampleFiles(holdout, eval_set.samples if eval_set is not None else [])
    if not samples.count:
        return []
    weights = reference_weights(source, str(request.model), request.weights, samples.scratch())
    return run_reference(str(request.model), weights, request.input_shapes, samples,
                         backend_log(model_dir, "reference"), request.trust_model)


def _export_sequentially(names: list[str], source: ModelSource, calib: Any, model_dir: Path, options: ExportOptions,
                         holdout: list[Feeds], references: list[list[np.ndarray]], evaluation: EvalContext | None,
                         step: Callable[[str], None]) -> Iterator[Artifact]:
    for name in names:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        step(f"exporting {name}")
        yield export_one(name, source, calib, model_dir, options, holdout, references, evaluation)


def _order() -> list[str]:
    from edgeq.backends import REGISTRY

    return list(REGISTRY)


def _previous_manifest(model_dir: Path, names: list[str]) -> Manifest:
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


def export(model: Any, calib: Any, backends: list[str] | None = None, out: str | Path = "out", **kwargs: Any) -> Manifest:
    """Python API mirroring ``edgeq export``: ``edgeq.export("m.onnx", "calib/", backends=["onnx-qdq"], out="out")``."""
    option_names = {"calib_method", "tflite_io", "tflite_narrow_convs", "threads", "opset", "configs", "qat"}
    options = ExportOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in option_names})
    request = ExportRequest(model=str(model), calib=calib, backends=backends or ["all"], out=Path(out),
                            options=options, **kwargs)
    return run_export(request)


def _space_needed(source: ModelSource, final: Path) -> int:
    """Rough bytes one artifact needs: its previous copy's size, else the model's (FP32 artifacts are that big)."""
    if final.is_dir():
        previous = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        if previous:
            return previous
    path = Path(source.path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
    weights = getattr(source, "weights", None)
    if weights is not None and Path(weights).is_file():
        files.append(Path(weights))
    return sum(p.stat().st_size for p in files)
