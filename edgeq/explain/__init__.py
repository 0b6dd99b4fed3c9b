"""``edgeq explain``: which heavy ops really run in INT8, per-layer quantization error, and a plain verdict.

Each runtime's adapter (``RuntimeAdapter.explain``, code in ``edgeq/runtimes/<runtime>/_explain.py``) inspects what
the runtime *executes* (ORT's optimized graph, OpenVINO's runtime model, the TFLite interpreter's tensors), not what
the file suggests; this module holds what they share and picks the adapter by the artifact's file type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.types import Feeds

INT8_FEATURES = {
    "x86": ["avx2", "avx512_vnni", "avx_vnni", "amx_int8"],
    "arm": ["asimddp", "i8mm", "sve"],
}


@dataclass
class HeavyOp:
    """A compute-heavy op (conv / matmul / fully connected) and the precision it executes in."""

    name: str
    op_type: str
    precision: str  # "int8" | "fp32" | "fp16" | "bf16"
    reason: str = ""


@dataclass
class Explanation:
    artifact: str
    runtime: str
    heavy_ops: list[HeavyOp]
    layer_sqnr_db: dict[str, float] = field(default_factory=dict)
    cpu_features: dict[str, bool] = field(default_factory=dict)
    verdict: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def cpu_int8_features() -> dict[str, bool]:
    from edgeq.targets.runner import cpu_flags

    flags = cpu_flags()
    family = "arm" if {"asimd", "fp"} & flags and "sse2" not in flags else "x86"
    return {name: name in flags for name in INT8_FEATURES[family]}


def verdict_for(heavy: list[HeavyOp], features: dict[str, bool], quantized_artifact: bool) -> str:
    """One plain sentence (or two) a user can act on."""
    if not heavy:
        return "no conv/matmul ops found: nothing to quantize that would matter for speed"
    floats = [op for op in heavy if op.precision != "int8"]
    total = len(heavy)
    if not quantized_artifact:
        return f"float artifact: all {total} heavy ops run in {heavy[0].precision.upper()}"
    parts = []
    if not floats:
        parts.append(f"all {total} heavy ops run in INT8")
    else:
        reasons = sorted({op.reason for op in floats if op.reason})
        kinds = sorted({op.op_type for op in floats})
        parts.append(f"{len(floats)} of {total} heavy ops run in float ({', '.join(kinds)}): "
                     f"{'; '.join(reasons) or 'not quantized'}")
    if features and not any(v for k, v in features.items() if k in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")):
        parts.append("this CPU has no VNNI/dot-product INT8 instructions, so INT8 gains come from memory traffic "
                     "more than arithmetic")
    return "; ".join(parts)


def explain(path: Path, feeds: list[Feeds] | None = None) -> Explanation:
    """Explain one artifact file (model.onnx / model.xml / model.tflite)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeqError(f"artifact not found: {path}")
    from edgeq.runtimes.adapter import adapters

    known = adapters()
    for adapter in known:
        if path.suffix.lower() == adapter.artifact_suffix:
            return adapter.explain(path, feeds)
    names = [f"model{adapter.artifact_suffix}" for adapter in known]
    raise EdgeqError(f"cannot explain {path.name}: give a {', '.join(names[:-1])} or {names[-1]}")
