"""``edgeq bench``: every exported artifact × device × thread count, one cell at a time per device.

Cells are independent and resumable: each finished cell is written atomically to ``RESULTS/cells/<cell_id>.json``
(the id hashes artifact sha256, device and settings), and a re-run skips cells that already have a file
(``--retry-failed`` re-runs failed ones, ``--force`` all). A failing cell (unreachable device, missing runtime,
crash, timeout) is recorded with a one-line reason and the others go on. Devices run in parallel (one thread each).

With ``--eval``, every cell runs the same eval inputs (one npz, written once) and its outputs come back to the
host, where ``metrics`` (top-1 when the eval set has labels) and ``fidelity`` (against the FP32 artifact of the
same runtime on the same device, else onnx-fp32 on that device) are computed.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.devices import ArtifactFiles, Device, RunSettings, load_devices, make_device
from edgeq.devices.config import DevicesFile, LocalDeviceConfig
from edgeq.errors import ConfigError, DeviceError, EdgeqError
from edgeq.manifest import Artifact, Manifest, find_manifests
from edgeq.results import CellResult, Latency, cell_id
from edgeq.targets.runner import precision_matches
from edgeq.workdirs import atomic_path, atomic_write_text

RESULTS_NAME = "results.json"
REFERENCE_PRECISION = "fp32"
REFERENCE_BACKEND = "onnx-fp32"


@dataclass
class BenchRequest:
    """Everything ``edgeq bench`` needs, as given on the command line."""

    artifacts_dir: Path
    out: Path
    devices_file: Path | None = None
    device_names: list[str] = field(default_factory=list)
    eval_spec: str | None = None
    eval_samples: int | None = None
    runs: int = 50
    min_seconds: float = 2.0
    warmup: int = 5
    seed: int = 0
    timeout_s: float = 600.0
    force: bool = False
    retry_failed: bool = False
    profile: bool = False


@dataclass
class Cell:
    """One (artifact, device, threads) benchmark cell."""

    id: str
    model: str
    artifact: Artifact
    files: ArtifactFiles
    device: Device
    threads: int
    cpus: list[int] | None
    settings: dict[str, object]
    eval_key: str | None = None

    @property
    def path_name(self) -> str:
        return f"{self.id}.json"


@dataclass
class EvalData:
    """One eval npz per (model, layout): stacked inputs, labels (or None), content fingerprint."""

    path: Path
    fingerprint: str
    labels: list[int] | None
    samples: int


@dataclass
class BenchSummary:
    results: list[CellResult]
    executed: list[str]
    skipped: list[str]
    out: Path


# ---------------------------------------------------------------------------------------------------------------
# Discovery and planning
# ---------------------------------------------------------------------------------------------------------------


def load_device_list(devices_file: Path | None, names: list[str]) -> list[Any]:
    """Device configs from devices.yaml; without a file (and none in the current directory) the local machine."""
    if devices_file is None:
        default = Path("devices.yaml")
        if not default.is_file():
            if names and names != ["host"]:
                raise ConfigError(f"no devices.yaml here; cannot find device {names[0]!r} (use --devices FILE)")
            return [LocalDeviceConfig(name="host", kind="local", threads=[1])]
        devices_file = default
    config: DevicesFile = load_devices(devices_file)
    return config.select(names)


def plan_cells(manifests: list[tuple[Path, Manifest]], devices: list[Device], settings: RunSettings,
               eval_data: dict[tuple[str, str], EvalData] | None) -> list[Cell]:
    """Artifacts with status ok × devices × the device's thread counts, FP32 references included."""
    cells: list[Cell] = []
    seen: set[str] = set()
    for manifest_dir, manifest in manifests:
        for artifact in manifest.artifacts:
            if artifact.status != "ok" or not artifact.path:
                continue
            files = ArtifactFiles.from_manifest(manifest_dir, artifact)
            missing = [rel for rel in files.files if not (files.root / rel).is_file()]
            if missing:
                raise EdgeqError(f"{manifest.model.name}/{artifact.backend}: file {missing[0]} listed in the "
                                 f"manifest is missing (re-run `edgeq export`)")
            eval_key = None
            if eval_data is not None:
                eval_key = eval_data[_eval_slot(manifest, artifact)].fingerprint
            for device in devices:
                for threads in device.config.threads:
                    cell_settings: dict[str, object] = {
                        "threads": threads, "cpus": device.config.cpus, **settings.as_dict(), "eval": eval_key}
                    cid = cell_id(files.sha256, device.name, cell_settings)
                    if cid in seen:
                        continue
                    seen.add(cid)
                    cells.append(Cell(id=cid, model=manifest.model.name, artifact=artifact, files=files,
                                      device=device, threads=threads, cpus=device.config.cpus,
                                      settings=cell_settings, eval_key=eval_key))
    return cells


def _eval_slot(manifest: Manifest, artifact: Artifact) -> tuple[str, str]:
    return manifest.model.name, artifact.layout or manifest.model.layout


# ---------------------------------------------------------------------------------------------------------------
# Eval data
# ---------------------------------------------------------------------------------------------------------------
def _fingerprint(arrays: dict[str, np.ndarray], labels: list[int] | None) -> str:
    digest = hashlib.sha256()
    for name, array in arrays.items():
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(labels).encode())
    return digest.hexdigest()


def prepare_eval(spec: str, manifests: list[tuple[Path, Manifest]], out: Path,
                 limit: int | None = None) -> dict[tuple[str, str], EvalData]:
    """Write one eval npz per (model, layout) into ``RESULTS/eval/`` (samples read by ``edgeq.evaluation``)."""
    from edgeq.evaluation import load_eval_set, stacked_inputs
    from edgeq.types import TensorSpec

    prepared: dict[tuple[str, str], EvalData] = {}
    for _dir, manifest in manifests:
        layouts = {a.layout or manifest.model.layout for a in manifest.artifacts if a.status == "ok"}
        for layout in sorted(layouts):
            inputs = [TensorSpec(t.name, tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in t.shape),
                                 t.dtype) for t in manifest.model.inputs]
            eval_set = load_eval_set(spec, inputs, layout, limit)
            count = len(eval_set)
            arrays = stacked_inputs(eval_set)
            labels = [int(v) for v in eval_set.labels] if eval_set.labels is not None else None
            fingerprint = _fingerprint(arrays, labels)
            path = out / "eval" / f"{fingerprint[:16]}.npz"
            if not path.is_file():
                with atomic_path(path, keep_suffix=True) as tmp:
                    np.savez(tmp, **arrays)
            prepared[(manifest.model.name, layout)] = EvalData(path, fingerprint, labels, count)
    return prepared


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _base_result(cell: Cell) -> dict[str, Any]:
    return {
        "cell_id": cell.id, "device": cell.device.name, "device_kind": cell.device.kind,
        "emulated": cell.device.emulated, "model": cell.model, "backend": cell.artifact.backend,
        "runtime": cell.artifact.runtime, "precision": cell.artifact.precision,
        "artifact_sha256": cell.files.sha256, "size_bytes": cell.artifact.size_bytes, "threads": cell.threads,
        "cpus": cell.cpus, "settings": cell.settings,
    }


def result_from_runner(cell: Cell, runner: dict[str, Any], started_at: str, duration_s: float) -> CellResult:
    """Map the runner's JSON (or a failure) onto the CellResult schema."""
    base = _base_result(cell) | {"started_at": started_at, "duration_s": round(duration_s, 3)}
    if not runner.get("ok"):
        return CellResult(status="failed", error=str(runner.get("error") or "failed"), **base)
    latency = None
    if runner.get("latency"):
        lat = dict(runner["latency"])
        lat.setdefault("throughput", lat.get("throughput_ips") or (1000.0 / lat["mean_ms"] if lat.get("mean_ms") else 0.0))
        latency = Latency(**lat)
    executed = dict(runner.get("executed") or {})
    executed_precision = executed.get("precision") if executed.get("precision") != "unknown" else None
    return CellResult(status="ok", load_ms=runner.get("load_ms"), first_ms=runner.get("first_ms"), latency=latency,
                      peak_rss_mb=runner.get("peak_rss_mb"), system=runner.get("system") or {},
                      runtime_version=runner.get("runtime_version"), eval_samples=runner.get("eval_samples", 0),
                      memory=runner.get("memory") or {}, executed=executed, executed_precision=executed_precision,
                      precision_match=precision_matches(cell.artifact.precision, executed_precision or ""),
                      pinned_precision=runner.get("pinned_precision") or {}, profile=runner.get("profile"),
                      output_names=[str(o.get("name")) for o in runner.get("outputs") or []],
                      **base)


def _read_cell(path: Path) -> CellResult | None:
    try:
        return CellResult.model_validate_json(path.read_text())
    except Exception:  # noqa: BLE001 - an unreadable cell file is simply re-run
        return None


class _Runner:
    """Runs the planned cells: one worker thread per device, cells of one device strictly one after another."""

    def __init__(self, request: BenchRequest, cells: list[Cell], eval_data: dict[tuple[str, str], EvalData] | None,
                 on_cell: Callable[[Cell, CellResult | None], None]) -> None:
        self.request, self.cells, self.eval_data, self.on_cell = request, cells, eval_data, on_cell
        self.cells_dir = request.out / "cells"
        self.outputs_dir = request.out / "outputs"
        self.stop = threading.Event()
        self.executed: list[str] = []
        self.lock = threading.Lock()

    def pending(self) -> tuple[list[Cell], list[Cell]]:
        todo, skipped = [], []
        for cell in self.cells:
            existing = None if self.request.force else _read_cell(self.cells_dir / cell.path_name)
            if existing is not None and not (existing.status == "failed" and self.request.retry_failed) and (
                    existing.status == "failed" or cell.eval_key is None
                    or (self.outputs_dir / f"{cell.id}.npz").is_file()):
                skipped.append(cell)
            else:
                todo.append(cell)
        return todo, skipped

    def run_device(self, device: Device, cells: list[Cell]) -> None:
        try:
            try:
                device.prepare()
                prepare_error = None
            except DeviceError as exc:
                prepare_error = str(exc)
            for cell in cells:
                if self.stop.is_set():
                    return
                started, t0 = _now(), time.perf_counter()
                if prepare_error is not None:
                    runner: dict[str, Any] = {"ok": False, "error": f"device unavailable: {prepare_error}"}
                else:
                    runner = self.run_one(device, cell)
                if self.stop.is_set():
                    return  # interrupted: the killed runner's failure is not a result
                result = result_from_runner(cell, runner, started, time.perf_counter() - t0)
                atomic_write_text(self.cells_dir / cell.path_name, result.model_dump_json(indent=2))
                with self.lock:
                    self.executed.append(cell.id)
                self.on_cell(cell, result)
        finally:
            device.close()

    def run_one(self, device: Device, cell: Cell) -> dict[str, Any]:
        eval_npz = None
        outputs = None
        if self.eval_data is not None:
            data = next(d for d in self.eval_data.values() if d.fingerprint == cell.eval_key)
            eval_npz = data.path.resolve()
            self.outputs_dir.mkdir(parents=True, exist_ok=True)
            outputs = self.outputs_dir / f".{cell.id}.partial.npz"
        settings = RunSettings(runs=self.request.runs, min_seconds=self.request.min_seconds,
                               warmup=self.request.warmup, seed=self.request.seed, profile=self.request.profile)
        try:
            runner = device.run_cell(cell.files, cell.threads, cell.cpus, settings, eval_npz,
                                     self.request.timeout_s, outputs_path=outputs)
        except DeviceError as exc:
            runner = {"ok": False, "error": str(exc)}
        if runner.get("ok") and runner.get("outputs_path"):
            final = self.outputs_dir / f"{cell.id}.npz"
            shutil.move(str(runner["outputs_path"]), final)
            runner["outputs_path"] = str(final)
        return runner

    def run(self, todo: list[Cell]) -> None:
        by_device: dict[str, list[Cell]] = {}
        devices: dict[str, Device] = {}
        for cell in todo:
            by_device.setdefault(cell.device.name, []).append(cell)
            devices[cell.device.name] = cell.device
        if not by_device:
            return
        from edgeq.devices.transport import kill_running

        pool = ThreadPoolExecutor(max_workers=len(by_device), thread_name_prefix="edgeq-bench")
        futures = [pool.submit(self.run_device, devices[name], cells) for name, cells in by_device.items()]
        try:
            pending = set(futures)
            while pending:  # short waits keep the main thread responsive to Ctrl-C
                _done, pending = wait(pending, timeout=0.2)
            for future in futures:
                future.result()
        except BaseException:
            self.stop.set()
            kill_running()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------------------------
# Quality: metrics and fidelity on the host
# ---------------------------------------------------------------------------------------------------------------
def _outputs(path: Path) -> list[np.ndarray]:
    """Every output of a cell's eval run, stacked over samples (``out_0, out_1, …`` in the runtime's order)."""
    with np.load(path, allow_pickle=False) as data:
        keys = sorted((k for k in data.files if k.startswith("out_")), key=lambda k: int(k[4:])) or data.files[:1]
        return [np.asarray(data[k]) for k in keys]


def _first_output(path: Path) -> list[np.ndarray]:
    return list(_outputs(path)[0])


def output_fidelity(reference: CellResult, reference_path: Path, cell: CellResult,
                    cell_path: Path) -> list[dict[str, object]]:
    """Every output of ``cell`` vs the same output of ``reference`` (matched by name, else position and size;
    edgeq.verification.match_outputs), named as in the reference; the output order of the reference."""
    from edgeq.metrics import fidelity_per_output
    from edgeq.verification import match_outputs

    ref_outputs, outputs = _outputs(reference_path), _outputs(cell_path)
    names = list(getattr(reference, "output_names", None) or []) or [f"out_{j}" for j in range(len(ref_outputs))]
    cell_names = list(getattr(cell, "output_names", None) or []) or [f"out_{j}" for j in range(len(outputs))]
    described = [{"name": n, "shape": list(o.shape[1:])} for n, o in zip(cell_names, outputs)]
    order = match_outputs(names, [list(o.shape[1:]) for o in ref_outputs], described)
    count = len(ref_outputs[0])
    return fidelity_per_output(names, [[o[k] for o in ref_outputs] for k in range(count)],
                               [[outputs[i][k] for i in order] for k in range(count)])


def _reference_for(cell: CellResult, ok_cells: list[CellResult]) -> CellResult | None:
    def candidates(pred: Callable[[CellResult], bool]) -> list[CellResult]:
        return [c for c in ok_cells if c.device == cell.device and c.model == cell.model
                and c.settings.get("eval") == cell.settings.get("eval") and pred(c)]

    for pred in (lambda c: c.runtime == cell.runtime and c.precision == REFERENCE_PRECISION,
                 lambda c: c.backend == REFERENCE_BACKEND):
        found = candidates(pred)
        if found:
            same_threads = [c for c in found if c.threads == cell.threads]
            return (same_threads or found)[0]
    return None


def add_quality(results: list[CellResult], outputs_dir: Path, labels_by_eval: dict[str, list[int] | None]) -> bool:
    """Fill ``metrics`` and ``fidelity`` of every ok cell that has eval outputs; True if anything changed."""
    from edgeq.metrics import top_k_accuracy

    ok = [r for r in results if r.status == "ok" and (outputs_dir / f"{r.cell_id}.npz").is_file()]
    changed = False
    for result in ok:
        outputs = _first_output(outputs_dir / f"{result.cell_id}.npz")
        metrics: dict[str, float] = {}
        labels = labels_by_eval.get(str(result.settings.get("eval")))
        if labels is not None and len(labels) == len(outputs):
            metrics["top1"] = top_k_accuracy(outputs, labels, k=1)
        quality: dict[str, float | None] = {}
        reference = _reference_for(result, ok)
        extra: dict[str, object] = {}
        if reference is not None and reference.cell_id != result.cell_id:
            try:
                per_output = output_fidelity(reference, outputs_dir / f"{reference.cell_id}.npz", result,
                                             outputs_dir / f"{result.cell_id}.npz")
                quality = {k: v for k, v in per_output[0].items() if k not in ("name", "shape")}  # type: ignore[misc]
                extra["fidelity_outputs"] = per_output
            except (ValueError, EdgeqError) as exc:
                extra["fidelity_error"] = str(exc)
            extra["fidelity_reference"] = f"{reference.backend} (threads {reference.threads})"
        elif reference is not None:
            extra["fidelity_reference"] = "self"
        if result.metrics != metrics or result.fidelity != quality or any(
                getattr(result, k, None) != v for k, v in extra.items()):
            result.metrics, result.fidelity = metrics, quality
            for key, value in extra.items():
                setattr(result, key, value)
            changed = True
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------
def run_bench(request: BenchRequest, on_plan: Callable[[int, int], None] | None = None,
              on_cell: Callable[[Cell, CellResult | None], None] | None = None) -> BenchSummary:
    """Plan, run (resuming), score and write ``RESULTS/cells/*.json`` + ``RESULTS/results.json``."""
    for name, value in (("--runs", request.runs), ("--warmup", request.warmup)):
        if value < 0:
            raise EdgeqError(f"{name} must be >= 0")
    if request.timeout_s <= 0:
        raise EdgeqError("--timeout must be > 0 seconds")
    manifests = find_manifests(request.artifacts_dir)
    configs = load_device_list(request.devices_file, request.device_names)
    devices = [make_device(c) for c in configs]
    out = Path(request.out)
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeqError(f"results directory {out} is not writable ({exc.strerror or exc})") from None
    eval_data = prepare_eval(request.eval_spec, manifests, out, request.eval_samples) if request.eval_spec else None
    settings = RunSettings(runs=request.runs, min_seconds=request.min_seconds, warmup=request.warmup,
                           seed=request.seed, profile=request.profile)
    cells = plan_cells(manifests, devices, settings, eval_data)
    runner = _Runner(request, cells, eval_data, on_cell or (lambda cell, result: None))
    todo, skipped = runner.pending()
    if on_plan is not None:
        on_plan(len(todo), len(skipped))
    runner.run(todo)

    results = [r for r in (_read_cell(out / "cells" / c.path_name) for c in cells) if r is not None]
    labels = {d.fingerprint: d.labels for d in (eval_data or {}).values()}
    if eval_data is not None and add_quality(results, out / "outputs", labels):
        for result in results:
            atomic_write_text(out / "cells" / f"{result.cell_id}.json", result.model_dump_json(indent=2))
    import json

    atomic_write_text(out / RESULTS_NAME, json.dumps(
        {"schema_version": results[0].schema_version if results else "1.0", "created_at": _now(),
         "cells": [r.model_dump(mode="json") for r in results]}, indent=2))
    return BenchSummary(results=results, executed=list(runner.executed), skipped=[c.id for c in skipped], out=out)
