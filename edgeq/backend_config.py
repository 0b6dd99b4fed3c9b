"""Typed backend options: each backend names a pydantic ``Config`` (unknown keys refused), set from the CLI with
``-O BACKEND.KEY=VALUE`` or ``--backend-config FILE.yaml`` (``edgeq.backends.options``) and recorded in the manifest
(``artifact.config``). The shared parts live here; each backend's own class sits in its module."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BackendConfig(BaseModel):
    """Options of one backend. The base class has none (the FP32 / FP16 backends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def updated(self, **changes: Any) -> BackendConfig:
        """A validated copy with ``changes`` applied (how accuracy control asks for a rebuild)."""
        return type(self).model_validate({**self.model_dump(), **changes})


class FallbackConfig(BackendConfig):
    """Backends whose sensitive layers accuracy control (``--max-drop``, ``--min-fidelity``) moves off INT8."""

    fallback: Literal["fp32", "tiered"] = Field(
        "fp32", description="Where accuracy control moves a sensitive layer: fp32, or tiered (int16 activations / "
                            "bf16 / fp16 where the runtime computes them, then fp32; docs/precision.md). --fallback")


class Int4Config(BackendConfig):
    """The INT4 weight-only tier (onnx-w4, openvino-w4, tflite-w4)."""

    group_size: int = Field(128, description="Weights per quantization group along the input dimension; -1 = one "
                                             "group per output channel. --w4-group-size")
    ratio: float = Field(1.0, description="Fraction of the weight parameters in INT4 (lowest INT4 "
                                                          "error first), the rest INT8. --w4-ratio")
    symmetric: bool = Field(True, description="INT4_SYM (no zero point); false = INT4_ASYM. --w4-asym")

    @field_validator("ratio")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"INT4 ratio must be in [0, 1], got {value}")
        return value

    @field_validator("group_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value != -1 and (value < 16 or value & (value - 1)):
            raise ValueError(f"INT4 group size must be a power of two ≥ 16 (or -1 per channel), got {value}")
        return value


class OpenvinoRouteConfig(BackendConfig):
    """OpenVINO backends: how a PyTorch source becomes an ``ov.Model``."""

    route: Literal["onnx", "torch"] | None = Field(
        None, description="PyTorch sources: onnx (via the cached FP32 ONNX) or torch (convert_model on the module); "
                          "default onnx, falling back to the other route when it fails")
