"""One benchmark cell's result (artifact × device × settings), written atomically as RESULTS/cells/<id>.json."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION = "1.0"


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
    peak_rss_mb: float | None = None
    system: dict[str, object] = {}
    metrics: dict[str, float] = Field({}, description="Task metrics on the eval set, e.g. top1.")
    fidelity: dict[str, float | None] = Field({}, description="Against the FP32 artifact of the same device.")
    started_at: str | None = None
    duration_s: float | None = None


def cell_id(artifact_sha256: str, device: str, settings: dict[str, object]) -> str:
    """Stable id of a cell: same artifact, device and settings → same id (so re-runs skip finished cells)."""
    key = json.dumps({"artifact": artifact_sha256, "device": device, "settings": settings}, sort_keys=True)
    return f"{device}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
