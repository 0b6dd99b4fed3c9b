"""manifest.json: the versioned record of one export. ``edgeq manifest-schema`` prints its JSON Schema.

Compatibility rule: later versions only *add* optional fields; readers ignore fields they do not know.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeq.errors import EdgeqError
from edgeq.workdirs import atomic_write_text

SCHEMA_VERSION = "1.2"
"""1.1: ``verification.outputs`` (fidelity of every model output); 1.2: ``artifacts[].config`` (the backend's typed
options). Older manifests read unchanged."""
MANIFEST_NAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


def check_relative_path(text: str) -> str:
    """A path a manifest may hold: relative, inside its folder (no '..', no drive, no NUL byte)."""
    clean = text.replace("\\", "/")
    parts = clean.split("/")
    if not text or "\0" in text or clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or ".." in parts:
        raise ValueError(f"unsafe path {text[:80]!r}: must be relative, inside the artifacts folder")
    return text


def resolve_inside(base: Path, relative: str | Path, what: str) -> Path:
    """``base / relative`` with symlinks resolved; an EdgeqError when it leaves ``base``."""
    resolved = (Path(base) / relative).resolve()
    if not resolved.is_relative_to(Path(base).resolve()):
        raise EdgeqError(f"{what}: {str(relative)[:80]!r} resolves outside {base} (to {resolved})")
    return resolved


class Quantization(_Model):
    """Affine quantization of an integer model input/output: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


class TensorInfo(_Model):
    name: str
    shape: list[int | str]
    dtype: str
    quantization: Quantization | None = None


class ModelInfo(_Model):
    name: str
    source: str = Field(description="Path of the user's model as given.")
    sha256: str
    framework: Literal["onnx", "torch", "keras", "tf"]
    layout: str = Field("NCHW", description="Input layout every artifact keeps (NCHW, NHWC or other).")
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []


class CalibrationInfo(_Model):
    source: str
    samples: int
    seed: int
    preprocessing: dict[str, object] = {}
    method: str = "minmax"
    holdout_source: str | None = None
    holdout_samples: int = 0


class OutputFidelity(_Model):
    """Fidelity of one model output against FP32 (docs/fidelity.md defines the worst-sample cosine)."""

    name: str
    shape: list[int | str] = Field([], description="One sample's output shape (batch 1).")
    cosine_min: float = Field(description="Worst sample's floored cosine vs FP32.")
    cosine_mean: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None = Field(None, description="Only for class-score outputs (2-D, one row per "
                                                           "sample); null for boxes, maps and other outputs.")


class Verification(_Model):
    """Fidelity of an artifact against the FP32 source model on held-out inputs (never calibration inputs).

    The top-level numbers describe output 0 (as in schema 1.0); ``outputs`` has every output (schema ≥ 1.1)."""

    samples: int
    cosine_min: float
    cosine_mean: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None = Field(None, description="Fraction of samples whose arg-max matches FP32.")
    runtime_version: str | None = None
    outputs: list[OutputFidelity] = Field([], description="Every output, in the source model's output order "
                                                          "(empty in manifests before schema 1.1).")

    def worst(self) -> OutputFidelity | None:
        """The output with the lowest worst-sample cosine (None for a 1.0 manifest without ``outputs``)."""
        if not self.outputs:
            return None
        return min(self.outputs, key=lambda o: (o.cosine_min, -o.max_abs_error))


class Evaluation(_Model):
    """A task metric of one artifact on the eval set, and how far it is from the FP32 source model."""

    metric: str
    value: float
    drop: float = Field(0.0, description="How much worse than FP32 (positive = worse), in --drop-type units.")
    drop_type: Literal["absolute", "relative"] = "absolute"
    cosine_mean: float | None = Field(None, description="Fidelity vs FP32 outputs on the eval set.")
    cosine_min: float | None = None
    top1_agreement: float | None = None


class AccuracyControl(_Model):
    """``--max-drop``: plain PTQ first; if over budget, the most sensitive layers go back to float."""

    budget: float
    drop_type: Literal["absolute", "relative"] = "absolute"
    method: str = Field("", description="How layers were ranked and returned to float for this backend.")
    drop_before: float = Field(description="Drop of plain PTQ.")
    drop_after: float = Field(description="Drop of the artifact kept.")
    layers_to_float: list[str] = Field([], description="Layers returned to float (backend-specific names).")
    ranked_layers: list[str] = Field([], description="Quantized layers, most sensitive first (as ranked).")
    attempts: list[dict[str, object]] = Field([], description="Each candidate tried: layers in float, drop.")
    layer_tiers: dict[str, str] = Field({}, description="Each layer (or activation tensor) moved off INT8 and the "
                                        "tier it runs in: int16 activations, bf16 / fp16, fp32.")
    met: bool
    latency_ratio_vs_ptq: float | None = Field(None, description="p50 of the kept artifact / p50 of plain PTQ "
                                                                 "(median of paired ratios, interleaved, 1 thread, 10 rounds).")


class EvalInfo(_Model):
    """The eval set of ``edgeq export --eval`` and the FP32 source model's score (the reference row)."""

    source: str
    samples: int
    metric: str
    higher_is_better: bool
    ground_truth: str = Field(description="labels, targets or fp32 outputs")
    reference: float = Field(description="The FP32 source model's metric on the eval set.")
    note: str | None = None


class FileEntry(_Model):
    path: str = Field(description="Relative to the artifact directory.")
    size_bytes: int
    sha256: str

    _relative = field_validator("path")(check_relative_path)


class Artifact(_Model):
    backend: str
    runtime: str
    precision: str
    status: Literal["ok", "failed", "skipped"] = "ok"
    error: str | None = None
    path: str | None = Field(None, description="Main file, relative to the manifest's directory.")
    files: list[FileEntry] = []
    size_bytes: int = Field(0, description="All files of the artifact (e.g. model.onnx + model.onnx.data).")
    sha256: str | None = Field(None, description="Digest over the artifact's files (sorted by path).")
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    layout: str | None = None
    recipe: dict[str, object] = {}
    config: dict[str, object] | None = Field(None, description="The backend's typed options the artifact was built "
                                             "with (-O / --backend-config, after accuracy control's changes); null "
                                             "in manifests before schema 1.2 and for failed rows.")
    notes: list[str] = []
    export_seconds: float | None = None
    verification: Verification | None = None
    evaluation: Evaluation | None = None
    accuracy_control: AccuracyControl | None = None

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value)

    def check_inside(self, manifest_dir: Path) -> None:
        """Every file of this artifact, symlinks followed, stays inside ``manifest_dir`` (EdgeqError otherwise)."""
        if not self.path:
            return
        what = f"{manifest_dir / MANIFEST_NAME}: artifact {self.backend}"
        resolve_inside(manifest_dir, self.path, what)
        for entry in self.files:
            resolve_inside(manifest_dir, Path(self.path).parent / entry.path, what)


class Manifest(_Model):
    schema_version: str = SCHEMA_VERSION
    model: ModelInfo
    calibration: CalibrationInfo | None = None
    evaluation: EvalInfo | None = None
    artifacts: list[Artifact] = []
    tools: dict[str, str] = {}
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def artifact(self, backend: str) -> Artifact:
        for art in self.artifacts:
            if art.backend == backend:
                return art
        raise KeyError(backend)

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.model_validate_json(Path(path).read_text())


def manifest_json_schema() -> str:
    return json.dumps(Manifest.model_json_schema(), indent=2)


def find_manifests(root: Path) -> list[tuple[Path, Manifest]]:
    """Every manifest.json at or below ``root`` (an ``edgeq export`` output directory)."""
    root = Path(root)
    if not root.exists():
        raise EdgeqError(f"artifacts directory not found: {root}")
    paths = [root] if root.is_file() else sorted(root.rglob(MANIFEST_NAME))
    found = []
    for path in paths:
        if any(part.startswith(".") for part in path.relative_to(root if root.is_dir() else root.parent).parts[:-1]):
            continue  # half-built export directories
        try:
            manifest = Manifest.read(path)
        except Exception as exc:  # noqa: BLE001 - one line for a corrupt manifest
            raise EdgeqError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
        for artifact in manifest.artifacts:
            artifact.check_inside(path.parent)
        found.append((path.parent, manifest))
    if not found:
        raise EdgeqError(f"no {MANIFEST_NAME} under {root} (run `edgeq export` first)")
    return found
