"""One benchmark cell's result (artifact × device × settings), written atomically as RESULTS/cells/<id>.json."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION = "1.1"  # 1.1 adds executed precision, memory, profile


class Latency(BaseModel):
    model_config = ConfigDict(extra="allow")
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stddev_ms: float
    min_ms: float
    max_ms: float
    runs: int
    throughput: float = Field(description="Inferences per second (1000 / mean_ms).")


class CellResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    schema_version: str = RESULT_SCHEMA_VERSION
    cell_id: str
    status: Literal["ok", "failed"]
    error: str | None = Field(None, description="One line, for failed cells.")
    device: str
    device_kind: str
    emulated: bool = Field(False, description="Timings from emulation are never ranked against real ones.")
    model: str
    backend: str
    runtime: str
    precision: str
    artifact_sha256: str
    size_bytes: int = 0
    threads: int
    cpus: list[int] | None = None
    settings: dict[str, object] = {}
    load_ms: float | None = None
    first_ms: float | None = None
    latency: Latency | None = None
    peak_rss_mb: float | None = Field(None, description="Peak RSS of the runner process (VmHWM) in MiB.")
    memory: dict[str, object] = Field({}, description="RSS before the runtime import (baseline_mb), after load "
                                      "(loaded_mb), peak during inference (peak_mb) and the model's share "
                                      "(model_loaded_mb, model_peak_mb = minus baseline), MiB.")
    executed_precision: str | None = Field(None, description="What the runtime executed, as it reports it: "
                                           "f32, bf16, f16, int8, int8+f32 …")
    precision_match: bool | None = Field(None, description="False when the executed precision is not the one "
                                         "the artifact's name promises.")
    executed: dict[str, object] = Field({}, description="Per-precision op counts and where they were read.")
    pinned_precision: dict[str, object] = Field({}, description="The precision setting passed to the runtime.")
    profile: dict[str, object] | None = Field(None, description="--profile: per-layer mean ms + precision.")
    system: dict[str, object] = {}
    metrics: dict[str, float] = Field({}, description="Task metrics on the eval set, e.g. top1.")
    fidelity: dict[str, float | None] = Field({}, description="Against the FP32 artifact of the same device.")
    fidelity_outputs: list[dict[str, object]] = Field(
        [], description="Every output's fidelity (name, shape, cosine_min, …, top1_agreement or null); "
                        "``fidelity`` is output 0's. Reports show the worst output.")
    output_names: list[str] = Field([], description="The artifact's outputs, in the runtime's order.")
    started_at: str | None = None
    duration_s: float | None = None


def cell_id(artifact_sha256: str, device: str, settings: dict[str, object]) -> str:
    """Stable id of a cell: same artifact, device and settings → same id (so re-runs skip finished cells)."""
    key = json.dumps({"artifact": artifact_sha256, "device": device, "settings": settings}, sort_keys=True)
    return f"{device}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
