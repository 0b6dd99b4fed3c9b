"""The benchmark report: load ``edgeq bench`` cells, derive comparison columns, flag anomalies in plain words.

Comparisons are always made inside one (model, device): speed-up is the p50 ratio against the FP32 artifact of
the same runtime run with the same threads; Δ metric is against the FP32 artifact of the same runtime (falling
back to any FP32 artifact on that device, named in ``delta_reference``). Emulated timings are marked and never
ranked or compared (speed-ups and timing anomalies are left out for emulated devices).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.results import CellResult
from edgeq.runtimes.precision import REFERENCE_PRECISION, precision_info

SLOWER_FACTOR = 1.05  # INT8 p50 more than 5 % above FP32 → "slower"
METRIC_DROP_POINTS = 1.0  # a drop of at least one accuracy point is worth a line
COSINE_LOW = 0.99
AGREEMENT_LOW = 0.95
NOISE_FACTOR = 3.0  # p99 ≥ 3 × p50 → noisy machine
THREADS_SLOWER_FACTOR = 1.10
LOW_INT8_GAIN = 2.5  # INT8 faster than FP32 but by less than this on x86 without VNNI → explain why

_X86_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")
_ARM_INT8 = ("asimddp", "i8mm")


@dataclass
class ReportRow:
    """One cell with its derived columns (raw numbers; formatting happens in the renderers)."""

    model: str
    device: str
    device_kind: str
    emulated: bool
    backend: str
    runtime: str
    precision: str
    threads: int
    status: str
    error: str | None
    cell_id: str
    size_mb: float | None
    load_ms: float | None
    first_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    throughput: float | None
    peak_rss_mb: float | None
    metric_name: str | None = None
    metric: float | None = None
    metric_delta: float | None = None  # in points (×100) for fractional metrics such as top1
    delta_reference: str | None = None
    delta_same_runtime: bool = True
    cosine_min: float | None = None
    top1_agreement: float | None = None
    speedup: float | None = None  # FP32 p50 / this p50, same runtime/device/threads; > 1 is faster
    speedup_reference: str | None = None
    executed_precision: str | None = None  # as the runtime reports it (f32, bf16, int8, int8+f32 …)
    precision_match: bool | None = None  # False: not what the artifact's name says
    model_loaded_mb: float | None = None  # RSS after load − RSS before the runtime import
    model_peak_mb: float | None = None  # peak RSS (load or inference, the larger) − RSS before the runtime import

    @property
    def fidelity_value(self) -> float | None:
        return self.cosine_min


@dataclass
class CellProfile:
    """The slowest layers of one profiled cell (``edgeq bench --profile``), or why the runtime gave none."""

    label: str
    total_ms: float | None
    layers: list[dict[str, object]]
    error: str | None = None


TOP_LAYERS = 10


def cell_profiles(cells: list[CellResult], top: int = TOP_LAYERS) -> list[CellProfile]:
    """Per profiled ok cell: its ``top`` layers by time (mean ms per run, as the runtime measured them)."""
    found = []
    for cell in cells:
        if cell.status != "ok" or not cell.profile:
            continue
        label = f"{cell.model}/{cell.backend} on {cell.device} ×{cell.threads}"
        layers = list(cell.profile.get("layers") or [])  # type: ignore[call-overload]
        total = cell.profile.get("total_ms")
        found.append(CellProfile(label, float(total) if isinstance(total, (int, float)) else None, layers[:top],
                                 str(cell.profile["error"]) if cell.profile.get("error") else None))
    return found


@dataclass
class Report:
    """Everything a renderer needs."""

    rows: list[ReportRow]
    anomalies: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unreadable result files
    source: str = ""
    profiles: list[CellProfile] = field(default_factory=list)  # cells benched with --profile

    def devices(self) -> list[str]:
        """Devices in display order: real devices first, then emulated ones, each alphabetical."""
        seen = {(r.emulated, r.device) for r in self.rows}
        return [d for _, d in sorted(seen)]

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "rows": [asdict(r) for r in self.rows], "anomalies": self.anomalies,
                "problems": self.problems, "profiles": [asdict(p) for p in self.profiles]}


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160]


def load_results(results_dir: Path, on_problem: Callable[[str], None] | None = None) -> list[CellResult]:
    """Cells of an ``edgeq bench`` results directory (``cells/*.json``; else ``results.json``).

    Unreadable or invalid files are skipped and reported through ``on_problem`` (one line each). A missing
    directory or one with no results at all is an EdgeqError.
    """
    results_dir = Path(results_dir)
    report_problem = on_problem or (lambda message: None)
    if not results_dir.exists():
        raise EdgeqError(f"results directory not found: {results_dir}")
    if results_dir.is_file():
        results_file, cells_dir = results_dir, None
    else:
        results_file, cells_dir = results_dir / "results.json", results_dir / "cells"
    cells: list[CellResult] = []
    cell_files = sorted(cells_dir.glob("*.json")) if cells_dir is not None and cells_dir.is_dir() else []
    for path in cell_files:
        try:
            cells.append(CellResult.model_validate_json(path.read_text()))
        except Exception as exc:  # noqa: BLE001 - a broken cell file is reported, the rest still load
            report_problem(f"skipped unreadable cell file {path.name}: {_one_line(exc)}")
    if not cell_files and results_file.is_file():
        try:
            data = json.loads(results_file.read_text())
            entries = data.get("cells", []) if isinstance(data, dict) else data
        except Exception as exc:  # noqa: BLE001
            raise EdgeqError(f"cannot read {results_file}: {_one_line(exc)}") from None
        for index, entry in enumerate(entries):
            try:
                cells.append(CellResult.model_validate(entry))
            except Exception as exc:  # noqa: BLE001
                report_problem(f"skipped invalid cell #{index} in {results_file.name}: {_one_line(exc)}")
    if not cells:
        raise EdgeqError(f"no benchmark results in {results_dir} (expected cells/*.json or results.json from "
                         f"`edgeq bench`)")
    return cells


# ---------------------------------------------------------------------------------------------------------------
# Derived columns
# ---------------------------------------------------------------------------------------------------------------
def primary_metric(cells: list[CellResult]) -> str | None:
    """The metric shown in the report: top1 when any cell has it, else the first metric name seen."""
    names = [name for c in cells for name in c.metrics]
    if not names:
        return None
    return "top1" if "top1" in names else sorted(names)[0]


def is_fraction_metric(name: str | None) -> bool:
    """Accuracy-like metrics stored as fractions (shown as %, deltas in points)."""
    return bool(name) and (name.startswith("top") or "acc" in name)  # type: ignore[union-attr]


def _p50(cell: CellResult) -> float | None:
    return cell.latency.p50_ms if cell.status == "ok" and cell.latency else None


def _fp32_reference(cell: CellResult, ok: list[CellResult], same_threads: bool) -> CellResult | None:
    """The FP32 cell of the same model, device and runtime (same threads when asked)."""
    found = [c for c in ok if c.model == cell.model and c.device == cell.device and c.runtime == cell.runtime
             and c.precision == REFERENCE_PRECISION and (not same_threads or c.threads == cell.threads)]
    if not found and not same_threads:
        found = [c for c in ok if c.model == cell.model and c.device == cell.device
                 and c.precision == REFERENCE_PRECISION]
        found.sort(key=lambda c: (c.backend != "onnx-fp32", c.backend))
    if not found:
        return None
    found.sort(key=lambda c: c.threads != cell.threads)
    return found[0]


def _fidelity(cell: CellResult) -> tuple[float | None, float | None]:
    if cell.status != "ok":
        return None, None
    if not cell.fidelity and getattr(cell, "fidelity_reference", None) == "self":
        return 1.0, 1.0  # the FP32 reference compared with itself
    from edgeq.metrics import worst_output

    worst = worst_output(cell.fidelity_outputs)  # multi-output models: the worst output, not output 0
    cos = worst["cosine_min"] if worst is not None else cell.fidelity.get("cosine_min")
    agreements = [o["top1_agreement"] for o in cell.fidelity_outputs if o.get("top1_agreement") is not None]
    agree = min(agreements) if agreements else cell.fidelity.get("top1_agreement")  # type: ignore[type-var]
    return cos, agree  # type: ignore[return-value]


def build_rows(cells: list[CellResult]) -> list[ReportRow]:
    """One row per cell with size MB, speed-up and Δ metric vs FP32, fidelity; grouped and ordered by device."""
    ok = [c for c in cells if c.status == "ok"]
    metric_name = primary_metric(cells)
    rows = []
    for cell in cells:
        lat = cell.latency if cell.status == "ok" else None
        cos, agree = _fidelity(cell)
        row = ReportRow(
            model=cell.model, device=cell.device, device_kind=cell.device_kind, emulated=cell.emulated,
            backend=cell.backend, runtime=cell.runtime, precision=cell.precision, threads=cell.threads,
            status=cell.status, error=cell.error if cell.status != "ok" else None, cell_id=cell.cell_id,
            size_mb=cell.size_bytes / 1e6 if cell.size_bytes else None,
            load_ms=cell.load_ms if cell.status == "ok" else None,
            first_ms=cell.first_ms if cell.status == "ok" else None,
            p50_ms=lat.p50_ms if lat else None, p90_ms=lat.p90_ms if lat else None,
            p99_ms=lat.p99_ms if lat else None, throughput=lat.throughput if lat else None,
            peak_rss_mb=cell.peak_rss_mb if cell.status == "ok" else None,
            cosine_min=cos, top1_agreement=agree,
            executed_precision=cell.executed_precision if cell.status == "ok" else None,
            precision_match=cell.precision_match if cell.status == "ok" else None,
            model_loaded_mb=_memory(cell, "model_loaded_mb"),
            model_peak_mb=_memory(cell, "model_peak_mb", "model_load_peak_mb"),
        )
        if cell.status == "ok":
            if metric_name is not None and metric_name in cell.metrics:
                row.metric_name, row.metric = metric_name, cell.metrics[metric_name]
                ref = _fp32_reference(cell, [c for c in ok if metric_name in c.metrics], same_threads=False)
                if ref is not None:
                    scale = 100.0 if is_fraction_metric(metric_name) else 1.0
                    row.metric_delta = (cell.metrics[metric_name] - ref.metrics[metric_name]) * scale
                    row.delta_reference, row.delta_same_runtime = ref.backend, ref.runtime == cell.runtime
            elif metric_name is not None:
                row.metric_name = metric_name
            ref = _fp32_reference(cell, [c for c in ok if _p50(c)], same_threads=True)
            mine = _p50(cell)
            if ref is not None and mine and not cell.emulated:
                row.speedup = _p50(ref) / mine  # type: ignore[operator]
                row.speedup_reference = ref.backend
        rows.append(row)
    rows.sort(key=_row_order)
    return rows


def _memory(cell: CellResult, *keys: str) -> float | None:
    """The largest of the cell's memory figures ``keys`` (MiB), None when it has none."""
    values = [cell.memory.get(key) for key in keys] if cell.status == "ok" else []
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return max(numbers) if numbers else None


def _row_order(row: ReportRow) -> tuple[object, ...]:
    # emulated devices are not ranked by latency: their rows keep a fixed (backend) order
    latency = row.p50_ms if (row.p50_ms is not None and not row.emulated) else float("inf")
    return (row.emulated, row.device, row.model, row.threads, row.status != "ok", latency, row.backend)


# ---------------------------------------------------------------------------------------------------------------
# Anomalies
# ---------------------------------------------------------------------------------------------------------------
def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def int8_support(system: dict[str, object]) -> tuple[bool | None, str]:
    """(has fast INT8 dot-product instructions, explanation) from the cell's recorded CPU flags."""
    flags: set[str] = set()
    known: set[str] = set()
    raw = system.get("int8_flags")
    if isinstance(raw, dict):
        known = {str(k) for k in raw}
        flags = {str(k) for k, v in raw.items() if v}
    for key in ("cpu_flags", "flags"):
        listed = system.get(key)
        if isinstance(listed, list):
            flags |= {str(f) for f in listed}
            known |= {str(f) for f in listed}
        elif isinstance(listed, str):
            flags |= set(listed.split())
            known |= set(listed.split())
    if not known:
        return None, "CPU flags unknown"
    if system.get("cpuinfo_matches_machine") is False:
        return None, "CPU flags describe another CPU (emulation)"
    machine = str(system.get("machine", "")).lower()
    arm = machine in ("aarch64", "arm64") or "asimd" in known or any(f in known for f in _ARM_INT8)
    if arm:
        if "asimddp" in flags:
            return True, "CPU has dotprod (asimddp)" + (" and i8mm" if "i8mm" in flags else "")
        return False, "CPU lacks dotprod (no asimddp)"
    present = [f for f in _X86_INT8 if f in flags]
    if present:
        return True, f"CPU has VNNI ({', '.join(present)})"
    return False, "CPU lacks VNNI (no avx512_vnni/avx_vnni)"


def find_anomalies(cells: list[CellResult], rows: list[ReportRow]) -> list[str]:
    """Plain-words findings: slow INT8, accuracy drops, low fidelity, noisy machines, thread scaling, failures."""
    by_id = {c.cell_id: c for c in cells}
    notes: list[str] = []
    real_rows = [r for r in rows if r.status == "ok" and not r.emulated]
    for row in real_rows:
        if row.precision == REFERENCE_PRECISION or row.speedup is None or row.speedup >= 1 / SLOWER_FACTOR:
            continue
        hint = precision_info(row.precision).slower_hint
        if hint is None:  # integer kernels: whether the CPU has fast INT8 instructions
            has_int8, why = int8_support(by_id[row.cell_id].system)
            hint = why if has_int8 is not True else f"{why}; check that the quantized ops run as INT8 kernels"
        notes.append(f"{precision_info(row.precision).label} slower than FP32 on {row.device} ({row.runtime} {row.backend}, "
                     f"{_plural(row.threads, 'thread')}): {1 / row.speedup:.2f}× the FP32 p50; {hint}")
    modest: dict[str, list[ReportRow]] = {}
    for row in real_rows:
        if row.precision == "int8" and row.speedup is not None and 1 / SLOWER_FACTOR <= row.speedup < LOW_INT8_GAIN:
            has_int8, why = int8_support(by_id[row.cell_id].system)
            if has_int8 is False and "VNNI" in why:
                modest.setdefault(row.device, []).append(row)
    for device, group in sorted(modest.items()):
        best = max(group, key=lambda r: r.speedup or 0.0)
        notes.append(f"INT8 is at most {best.speedup:.2f}× faster than FP32 on {device} ({best.backend}, "
                     f"{_plural(best.threads, 'thread')}): the CPU lacks VNNI, so 32 u8×s8 multiply-adds take three AVX2 "
                     f"instructions (VPMADDUBSW, VPMADDWD, VPADDD) instead of one VPDPBUSD, against 8 per FP32 FMA; "
                     f"expect well under the 3-4× of VNNI CPUs (docs/recipes.md)")
    for row in rows:
        if row.metric_delta is None or row.metric_name is None or row.precision == REFERENCE_PRECISION:
            continue
        if is_fraction_metric(row.metric_name) and row.metric_delta <= -METRIC_DROP_POINTS:
            label = row.metric_name.replace("top", "top-")
            versus = "" if row.delta_same_runtime else f", against {row.delta_reference}"
            notes.append(f"{label} drops {-row.metric_delta:.1f} points vs FP32 on {row.device} "
                         f"({row.backend}{versus})")
    seen_fidelity: set[tuple[str, str, str]] = set()
    for row in rows:
        key = (row.model, row.device, row.backend)
        if row.status != "ok" or key in seen_fidelity or row.precision == REFERENCE_PRECISION:
            continue
        problems = []
        if row.cosine_min is not None and row.cosine_min < COSINE_LOW:
            problems.append(f"cosine min {row.cosine_min:.4f}")
        if row.top1_agreement is not None and row.top1_agreement < AGREEMENT_LOW:
            problems.append(f"top-1 agreement {100 * row.top1_agreement:.1f}%")
        if problems:
            seen_fidelity.add(key)
            notes.append(f"low fidelity vs FP32 on {row.device} ({row.backend}): {', '.join(problems)}")
    for device in sorted({r.device for r in real_rows}):
        noisy = [r for r in real_rows if r.device == device and r.p50_ms and r.p99_ms
                 and r.p99_ms >= NOISE_FACTOR * r.p50_ms]
        if noisy:
            worst = max(noisy, key=lambda r: r.p99_ms / r.p50_ms)  # type: ignore[operator]
            total = len([r for r in real_rows if r.device == device])
            notes.append(f"p99 is {worst.p99_ms / worst.p50_ms:.1f}× p50 on {device} ({worst.backend}, "  # type: ignore[operator]
                         f"{_plural(worst.threads, 'thread')}; {len(noisy)} of {total} cells): noisy machine, "
                         f"compare medians only")
    groups: dict[tuple[str, str, str], list[ReportRow]] = {}
    for row in real_rows:
        if row.p50_ms:
            groups.setdefault((row.model, row.device, row.backend), []).append(row)
    for (_, device, backend), group in sorted(groups.items()):
        group.sort(key=lambda r: r.threads)
        for fewer, more in zip(group, group[1:]):
            if more.p50_ms > fewer.p50_ms * THREADS_SLOWER_FACTOR:  # type: ignore[operator]
                notes.append(f"{backend} on {device} is slower with {_plural(more.threads, 'thread')} than with "
                             f"{fewer.threads} ({more.p50_ms:.3g} vs {fewer.p50_ms:.3g} ms p50): threading overhead "
                             f"outweighs the work (small model or busy cores)")
    for row in rows:
        if row.status == "ok" and row.precision_match is False:
            note = str(by_id[row.cell_id].pinned_precision.get("note") or "")
            notes.append(f"{row.backend} on {row.device} ({_plural(row.threads, 'thread')}) executed "
                         f"{row.executed_precision}, not what its name says ({row.precision})"
                         + (f": {note}" if note else ""))
    for device in sorted({r.device for r in rows if r.emulated}):
        notes.append(f"{device} is emulated: its timings are not meaningful and are not ranked or compared; "
                     f"accuracy and fidelity are real")
    for row in rows:
        if row.status != "ok":
            notes.append(f"{row.backend} failed on {row.device} ({_plural(row.threads, 'thread')}): "
                         f"{row.error or 'no reason recorded'}")
    return notes


def build_report(results_dir: Path) -> Report:
    """Load, derive and flag: the one call the CLI and ``edgeq package`` use."""
    problems: list[str] = []
    cells = load_results(results_dir, problems.append)
    rows = build_rows(cells)
    return Report(rows=rows, anomalies=find_anomalies(cells, rows), problems=problems, source=str(results_dir),
                  profiles=cell_profiles(cells))


# ---------------------------------------------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------------------------------------------
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when lower x (latency) and higher y (accuracy) are better."""
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(xj <= xi and yj >= yi and (xj < xi or yj > yi)
                        for j, (xj, yj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front
