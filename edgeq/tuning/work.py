"""What one trial does, as plain functions an executor can run anywhere (in-process or as a Ray task).

``build(context, recipe)`` exports the recipe's artifact with ``edgeq.export.orchestration.run_export`` (one backend) into
``DIR/artifacts/<key>/`` — a normal export directory — and reads fidelity (the manifest's verification against
FP32 on held-out data) and the metric (the manifest's evaluation on EVALSET) from its manifest.
``measure(context, key, device)`` runs the artifact's cells on one device with ``edgeq.benchmark.run_bench``
into ``DIR/cells/<key>/<device>/``. Both are cached by recipe key: a finished build or cell is never redone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import failure_reason
from edgeq.tuning.space import FALLBACK_KEYS, Recipe
from edgeq.workdirs import file_lock

RANKING_SAMPLES = 16


@dataclass(frozen=True)
class TuneContext:
    """The fixed inputs of a search (picklable: shipped to Ray tasks). Paths are absolute."""

    out: Path
    model: str
    calib: str
    eval_spec: str
    weights: str | None = None
    input_shapes: tuple[str, ...] = ()
    metric: str | None = None
    eval_samples: int | None = None
    drop_type: str = "absolute"
    max_drop: float | None = None
    seed: int = 0
    train: str | None = None
    devices_file: str | None = None
    runs: int = 20
    min_seconds: float = 1.0
    warmup: int = 5
    cell_timeout_s: float = 300.0
    key_salt: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def artifact_dir(self, key: str) -> Path:
        return self.out / "artifacts" / key

    def cells_dir(self, key: str, device: str) -> Path:
        return self.out / "cells" / key / device


def context_fingerprint(context: TuneContext) -> str:
    """What makes artifacts comparable across runs: model (+ weights file content), data and budget settings."""
    import hashlib

    from edgeq.digest import sha256_file

    parts: dict[str, Any] = {k: getattr(context, k) for k in (
        "model", "calib", "eval_spec", "weights", "input_shapes", "metric", "eval_samples", "drop_type",
        "max_drop", "seed", "train")}
    for name in ("model", "weights"):
        path = Path(str(parts[name]).split(":")[0]) if parts[name] else None
        if path is not None and path.is_file():
            parts[f"{name}_sha256"] = sha256_file(path)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record_from_manifest(context: TuneContext, key: str, recipe: Recipe, cached: bool) -> dict[str, Any] | None:
    from edgeq.manifest import find_manifests

    root = context.artifact_dir(key)
    if not root.is_dir():
        return None
    try:
        found = find_manifests(root)
    except Exception:  # noqa: BLE001 - no manifest yet: not built
        return None
    manifest_dir, manifest = found[0]
    rows = [a for a in manifest.artifacts if a.backend == recipe.backend]
    if not rows:
        return None
    row = rows[0]
    record: dict[str, Any] = {"key": key, "recipe": recipe.model_dump(mode="json"), "status": row.status,
                              "error": row.error, "cached": cached, "manifest_dir": str(manifest_dir),
                              "backend": row.backend, "precision": row.precision, "runtime": row.runtime,
                              "model": manifest.model.name, "size_bytes": row.size_bytes,
                              "export_seconds": row.export_seconds}
    if row.verification is not None:
        record["fidelity"] = {"cosine_min": row.verification.cosine_min, "cosine_mean": row.verification.cosine_mean,
                              "top1_agreement": row.verification.top1_agreement,
                              "samples": row.verification.samples}
    if row.evaluation is not None and manifest.evaluation is not None:
        record["metric"] = {"name": row.evaluation.metric, "value": row.evaluation.value,
                            "drop": row.evaluation.drop, "reference": manifest.evaluation.reference,
                            "higher_is_better": manifest.evaluation.higher_is_better}
    if row.accuracy_control is not None:
        record["layers_to_float"] = row.accuracy_control.layers_to_float
    return record


def _write_failure(context: TuneContext, key: str, recipe: Recipe, error: str) -> dict[str, Any]:
    from edgeq.workdirs import atomic_write_text

    record = {"key": key, "recipe": recipe.model_dump(mode="json"), "status": "failed", "error": error,
              "cached": False, "backend": recipe.backend}
    atomic_write_text(context.artifact_dir(key) / "failed.json", json.dumps(record, indent=2))
    return record


def build(context: TuneContext, recipe: Recipe) -> dict[str, Any]:
    """Export (or reuse) the recipe's artifact; returns a JSON-able record (status, fidelity, metric, size)."""
    key = recipe.key(context.key_salt)
    with file_lock(context.out / "locks" / f"{key}.lock"):
        failed = context.artifact_dir(key) / "failed.json"
        if failed.is_file():
            return json.loads(failed.read_text()) | {"cached": True}
        done = _record_from_manifest(context, key, recipe, cached=True)
        if done is not None:
            return done
        started = time.time()
        _one_torch_thread(context.model)
        try:
            layers = _fallback_layers(context, recipe) if recipe.fallback else []
            _export(context, recipe, key, layers)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed recipe is a failed trial, the search goes on
            _reraise_interrupt()
            return _write_failure(context, key, recipe, failure_reason(exc))
        record = _record_from_manifest(context, key, recipe, cached=False)
        if record is None:
            return _write_failure(context, key, recipe, "export wrote no manifest row")
        if record["status"] != "ok":
            return _write_failure(context, key, recipe, str(record.get("error") or record["status"]))
        record["build_seconds"] = round(time.time() - started, 2)
        if layers:
            record["layers_to_float"] = layers
        return record


def _one_torch_thread(model: str) -> None:
    """Builds use one core each (Ray gives a build task one CPU): PyTorch's own pool would oversubscribe the
    machine and made the FP32 reference ~7× slower on a loaded 2-core host (11 → 1.5 ms per digits sample)."""
    import sys

    if "torch" in sys.modules or ".py:" in model or model.endswith(".pt2"):
        import torch

        torch.set_num_threads(1)


def _export(context: TuneContext, recipe: Recipe, key: str, layers: list[str]) -> None:
    from edgeq.backends import get_backend
    from edgeq.export.context import ExportRequest
    from edgeq.export.orchestration import run_export
    from edgeq.types import ExportOptions

    options: dict[str, Any] = dict(recipe.options)
    typed = {k: options.pop(k) for k in ("tflite_io", "tflite_narrow_convs") if k in options}
    if layers:
        options[FALLBACK_KEYS[recipe.backend]] = layers
    config = get_backend(recipe.backend).Config.model_validate(options)  # the rest: the backend's typed options
    qat = None
    if recipe.qat_epochs:
        from edgeq.qat import settings_from_cli

        qat = settings_from_cli(True, context.train, recipe.qat_epochs, 1e-4, context.seed)
    request = ExportRequest(
        model=context.model, calib=context.calib, backends=[recipe.backend], out=context.artifact_dir(key),
        weights=context.weights, input_shapes=list(context.input_shapes) or None,
        calib_samples=recipe.calib_samples or 300, seed=context.seed, eval_spec=context.eval_spec,
        eval_samples=context.eval_samples, metric=context.metric, drop_type=context.drop_type,
        max_drop=context.max_drop if recipe.accuracy_control else None, jobs=1,
        options=ExportOptions(calib_method=recipe.calib_method or "minmax", configs={recipe.backend: config}, qat=qat,
                              **typed))
    run_export(request)


def _fallback_layers(context: TuneContext, recipe: Recipe) -> list[str]:
    """Layers of the top-``fallback`` groups of the sensitivity ranking, ranked on the recipe's plain PTQ artifact
    (built first, cached) by its runtime adapter (``RuntimeAdapter.rank_layers``, what accuracy control ranks
    with). The ranking is cached next to that artifact."""
    from edgeq.backends import ExportedFiles, adapter_for
    from edgeq.calibration import prepare_calibration
    from edgeq.evaluation import load_eval_set
    from edgeq.manifest import Manifest
    from edgeq.models import load_model
    from edgeq.types import ExportOptions
    from edgeq.workdirs import atomic_write_text

    base = recipe.model_copy(update={"fallback": 0})
    plain = build(context, base)
    if plain["status"] != "ok":
        raise RuntimeError(f"plain PTQ of {base.label()} failed: {plain.get('error')}")
    ranking_file = context.artifact_dir(base.key(context.key_salt)) / "ranking.json"
    if ranking_file.is_file():
        groups = json.loads(ranking_file.read_text())
    else:
        source = load_model(context.model, context.weights, list(context.input_shapes) or None)
        try:
            feeds = load_eval_set(context.eval_spec, list(source.inputs), source.layout,
                                  RANKING_SAMPLES).samples
            manifest = Manifest.read(Path(plain["manifest_dir"]) / "manifest.json")
            artifact = manifest.artifact(recipe.backend)
            files = ExportedFiles(main=Path(plain["manifest_dir"]) / str(artifact.path), recipe=dict(artifact.recipe))
            data = prepare_calibration(context.calib, source.inputs, source.layout,
                                       samples=recipe.calib_samples or 300, seed=context.seed)
            narrow = "float" if recipe.options.get("tflite_narrow_convs") == "float" else "int8"
            ranked = adapter_for(recipe.backend).rank_layers(recipe.backend, source, data.calib, files, feeds,
                                                             ExportOptions(tflite_narrow_convs=narrow))
        finally:
            source.close()
        groups = [g.layers for g in ranked]
        atomic_write_text(ranking_file, json.dumps(groups))
    if not groups:
        raise RuntimeError(f"{recipe.backend}: the sensitivity ranking found no quantized layers to return to float")
    return list(dict.fromkeys(layer for group in groups[:recipe.fallback] for layer in group))


def _reraise_interrupt() -> None:
    """Ctrl-C that a converter (dynamo, TF) turned into its own error is still Ctrl-C, not a failed trial."""
    from edgeq.export.context import INTERRUPTED

    if INTERRUPTED.is_set():
        raise KeyboardInterrupt from None


def measure(context: TuneContext, key: str, manifest_dir: str, device: str,
            out_dir: Path | None = None) -> dict[str, Any]:
    """Run (or reuse) the artifact's cells on one device through the bench harness; p50 per thread count.
    Results go to ``DIR/cells/<key>/<device>/`` (or ``out_dir``)."""
    from edgeq.benchmark import BenchRequest, run_bench

    started = time.time()
    request = BenchRequest(artifacts_dir=Path(manifest_dir), out=out_dir or context.cells_dir(key, device),
                           devices_file=Path(context.devices_file) if context.devices_file else None,
                           device_names=[device], runs=context.runs, min_seconds=context.min_seconds,
                           warmup=context.warmup, seed=context.seed, timeout_s=context.cell_timeout_s)
    try:
        summary = run_bench(request)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - the device's failure is this trial's failure
        _reraise_interrupt()
        return {"device": device, "status": "failed", "error": failure_reason(exc), "started": started,
                "ended": time.time(), "executed": 0}
    cells = [r for r in summary.results if r.device == device]
    ok = [c for c in cells if c.status == "ok" and c.latency is not None]
    record: dict[str, Any] = {"device": device, "started": started, "ended": time.time(),
                              "executed": len(summary.executed), "emulated": any(c.emulated for c in cells),
                              "threads": {str(c.threads): {"p50_ms": c.latency.p50_ms, "p90_ms": c.latency.p90_ms,
                                                           "peak_rss_mb": c.peak_rss_mb} for c in ok if c.latency},
                              "cell_ids": [c.cell_id for c in cells], "system": ok[0].system if ok else {}}
    if not ok:
        errors = [c.error for c in cells if c.error]
        return record | {"status": "failed", "error": errors[0] if errors else "no cell ran"}
    fastest = min(ok, key=lambda c: c.latency.p50_ms if c.latency else float("inf"))
    assert fastest.latency is not None
    rss = [c.peak_rss_mb for c in ok if c.peak_rss_mb is not None]
    return record | {"status": "ok", "p50_ms": fastest.latency.p50_ms, "best_threads": fastest.threads,
                     "peak_rss_mb": max(rss) if rss else None,
                     "precision": fastest.model_extra.get("executed_precision") if fastest.model_extra else None}
