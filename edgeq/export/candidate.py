"""One backend's artifact: build it in a private folder, verify it against FP32, install it atomically.

Each backend writes into a private temporary directory that is renamed into place only when complete, so a
failure (or Ctrl-C) never leaves a half-written artifact. Converter output, the verification child's output and
failure tracebacks go to ``OUT/<model>/logs/<backend>.log``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.backends import get_backend
from edgeq.digest import combined_sha256, sha256_file
from edgeq.export.context import EvalContext, ExportContext
from edgeq.manifest import Artifact, Evaluation, FileEntry, OutputFidelity, TensorInfo, Verification
from edgeq.ui import native_output_to
from edgeq.workdirs import owned, owner_pid, pid_running, remove

logger = logging.getLogger(__name__)

LOG_DIR = "logs"
"""OUT/<model>/logs/<backend>.log: what each backend's converters printed (kept off the terminal)."""


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


def verification_of(outputs: list[list[np.ndarray]], context: ExportContext,
                    runtime_version: str | None) -> Verification:
    """Every output's fidelity vs FP32 (``outputs`` in the source's output order); top level = output 0."""
    from edgeq.metrics import fidelity_per_output

    per_output = fidelity_per_output(context.output_names, context.references, outputs)
    first = {k: v for k, v in per_output[0].items() if k not in ("name", "shape")}
    entries = [OutputFidelity(**{k: v for k, v in o.items() if k != "samples"}) for o in per_output]
    return Verification(runtime_version=runtime_version, outputs=entries, **first)


def verify_artifact(main: Path, context: ExportContext,
                    log: Path) -> tuple[dict[str, Any], Verification | None, Evaluation | None]:
    """Run the artifact on the held-out and eval samples in one runner child process (edgeq/verification.py) and
    compare with FP32: (runner JSON with the I/O details, verification, evaluation)."""
    from edgeq.verification import match_outputs, run_artifact

    described, outputs = run_artifact(main, context.samples, log)
    verification = evaluated = None
    order = [0]  # without held-out references, the eval set is scored on the artifact's first output
    holdout = len(context.samples.holdout)
    if context.references:
        shapes = [list(np.shape(o)) for o in context.references[0]]
        order = match_outputs(context.output_names, shapes, described.get("outputs", []))
        held = [[sample[i] for i in order] for sample in outputs[:holdout]]
        verification = verification_of(held, context, described.get("runtime_version"))
    evaluation: EvalContext | None = context.evaluation
    if evaluation is not None:  # --min-fidelity scores every output (EvalContext.all_references)
        runs = [[sample[i] for i in order] for sample in outputs[holdout:]]
        evaluated = evaluation.evaluate([run[0] for run in runs], runs)
    return described, verification, evaluated


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


def build_candidate(name: str, context: ExportContext) -> Candidate:
    """Export into a private build directory, verify against FP32 and evaluate (in a child process); raises on
    failure (dir removed)."""
    backend_cls = get_backend(name)
    build = Path(tempfile.mkdtemp(dir=context.model_dir, prefix=owned(f".{name}-build-")))
    started = time.perf_counter()
    log = backend_log(context.model_dir, name)
    try:
        with native_output_to(log):
            files = backend_cls().export(context.source, context.calib, build, context.options)
            files.config = backend_cls.config_of(context.options).model_dump(mode="json")
            seconds = round(time.perf_counter() - started, 2)
        described, verification, evaluated = verify_artifact(files.main, context, log)
        inputs, outputs = _tensor_infos(described["inputs"]), _tensor_infos(described["outputs"])
        return Candidate(build, files, verification, inputs, outputs, evaluated, seconds)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def install(candidate: Candidate, row: Artifact, context: ExportContext) -> None:
    """Move the candidate to ``OUT/<model>/<backend>`` (atomically) and describe it in ``row``."""
    name = row.backend
    row.verification, row.evaluation = candidate.verification, candidate.evaluation
    row.inputs, row.outputs = candidate.inputs, candidate.outputs
    main_rel = candidate.files.main.relative_to(candidate.build)
    final = context.model_dir / name
    move_into_place(candidate.build, final)
    row.files = file_entries(final)
    row.size_bytes = sum(f.size_bytes for f in row.files)
    row.sha256 = combined_sha256(row.files)
    row.path = f"{name}/{main_rel}"
    row.layout = context.source.layout
    row.recipe, row.notes = candidate.files.recipe, candidate.files.notes
    row.config = candidate.files.config


def move_into_place(built: Path, final: Path) -> None:
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


def restore_replaced(model_dir: Path) -> None:
    """A run killed between the two renames of ``move_into_place`` left ``.X.old-pidN`` and no ``X``: put it back."""
    for old in model_dir.glob(".*.old-pid*"):
        pid = owner_pid(old.name)
        final = model_dir / old.name[1:].rsplit(".old-pid", 1)[0]
        if pid is not None and not pid_running(pid) and not os.path.lexists(final):
            old.rename(final)


def space_needed(context: ExportContext, name: str) -> int:
    """Rough bytes one artifact needs: its previous copy's size, else the model's (FP32 artifacts are that big)."""
    final = context.model_dir / name
    if final.is_dir():
        previous = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        if previous:
            return previous
    path = Path(context.source.path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
    weights = getattr(context.source, "weights", None)
    if weights is not None and Path(weights).is_file():
        files.append(Path(weights))
    return sum(p.stat().st_size for p in files)
