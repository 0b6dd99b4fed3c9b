"""MODEL_CARD.md for a package: inputs, preprocessing/calibration, artifacts with size and fidelity, and the
metrics measured per device (when benchmark results are packaged too)."""

from __future__ import annotations

from datetime import datetime, timezone

from edgeq.manifest import Manifest, TensorInfo
from edgeq.report.bench_columns import _delta, _metric, _num, _speedup, metric_header
from edgeq.report.bench_report import Report
from edgeq.report.export_table import export_rows


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _tensor_rows(tensors: list[TensorInfo]) -> list[str]:
    if not tensors:
        return ["_not recorded_"]
    lines = ["| name | shape | dtype | quantization |", "|---|---|---|---|"]
    for t in tensors:
        quant = f"scale {t.quantization.scale:.6g}, zero point {t.quantization.zero_point}" if t.quantization else ""
        lines.append(f"| {_md(t.name)} | {'×'.join(str(d) for d in t.shape)} | {t.dtype} | {quant} |")
    return lines


def _calibration(manifest: Manifest) -> list[str]:
    cal = manifest.calibration
    if cal is None:
        return ["_No calibration record in the manifest._"]
    lines = [f"- calibration data: `{cal.source}` — {cal.samples} samples, seed {cal.seed}, method {cal.method}"]
    if cal.holdout_samples:
        lines.append(f"- fidelity checked on {cal.holdout_samples} held-out samples"
                     + (f" from `{cal.holdout_source}`" if cal.holdout_source else " (not used for calibration)"))
    if cal.preprocessing:
        lines.append("- preprocessing applied to every input before the model (do the same at inference):")
        lines += [f"  - {key}: `{value}`" for key, value in cal.preprocessing.items()]
    else:
        lines.append("- preprocessing: none recorded — the model receives the input arrays as given")
    return lines


def _artifacts(manifest: Manifest) -> list[str]:
    lines = ["| backend | runtime | precision | file | size MB | × FP32 size | cosine min | top-1 agreement | sha256 |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    problems = []
    for art, row in zip(manifest.artifacts, export_rows(manifest)):
        if art.status != "ok":
            problems.append(f"- {art.backend}: {art.status} — {art.error or 'no reason recorded'}")
            continue
        lines.append(f"| {art.backend} | {art.runtime} | {art.precision} | `{art.path or ''}` | {row['size_mb']} | "
                     f"{row['size_ratio']} | {row['cosine_worst']} | {row['top1_agreement']} | "
                     f"`{(art.sha256 or '')[:16]}` |")
    if problems:
        lines += ["", "Not produced:"] + problems
    return lines


def _device_metrics(model: str, report: Report) -> list[str]:
    rows = [r for r in report.rows if r.model == model]
    if not rows:
        return ["_No benchmark results for this model._"]
    lines = [f"| device | backend | threads | p50 ms | {metric_header(report)} | Δ vs FP32 | cosine min | "
             "speed-up vs FP32 | status |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        status = "ok" if r.status == "ok" else f"failed: {r.error or ''}"
        device = r.device + (" (emulated: timing not meaningful)" if r.emulated else "")
        cos = f"{r.cosine_min:.4f}" if r.cosine_min is not None else ""
        lines.append(f"| {_md(device)} | {r.backend} | {r.threads} | {_num(r.p50_ms, 3)} | {_metric(r)} | "
                     f"{_delta(r)} | {cos} | {_speedup(r)} | {_md(status)} |")
    return lines


def model_card(manifests: list[Manifest], report: Report | None = None) -> str:
    """The Markdown model card of a package (one section per exported model)."""
    from edgeq._version import __version__

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Model card: {', '.join(m.model.name for m in manifests)}", "",
             f"Packaged by edgeq {__version__} on {created}. Check the files with `sha256sum -c SHA256SUMS` "
             "(inside the unpacked directory) or `edgeq package --verify PACKAGE.tar.gz`.", ""]
    for manifest in manifests:
        info = manifest.model
        lines += [f"## {info.name}", "",
                  f"- source: `{info.source}` ({info.framework}), sha256 `{info.sha256[:16]}…`",
                  f"- input layout: {info.layout}; exported {manifest.created_at}"]
        if manifest.tools:
            lines.append("- tools: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.tools.items())))
        lines.append("")
        lines += ["### Inputs", ""] + _tensor_rows(info.inputs) + [""]
        lines += ["### Outputs", ""] + _tensor_rows(info.outputs) + [""]
        lines += ["### Preprocessing and calibration", ""] + _calibration(manifest) + [""]
        lines += ["### Artifacts (fidelity vs the FP32 source model)", ""] + _artifacts(manifest) + [""]
        if report is not None:
            lines += ["### Measured on devices", ""] + _device_metrics(info.name, report) + [""]
    if report is not None and report.anomalies:
        lines += ["## Findings", ""] + [f"- {_md(n)}" for n in report.anomalies] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
