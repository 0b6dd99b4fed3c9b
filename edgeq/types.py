"""Small value types shared by every stage: model → calibration → export → verify → bench → report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

Feeds = dict[str, np.ndarray]
"""One model invocation's inputs, by input name. Calibration and evaluation samples have batch size 1."""

Layout = Literal["NCHW", "NHWC", "other"]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, concrete shape (batch 1), numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


class SampleSet(Protocol):
    """A re-iterable, streaming set of samples (calibration or held-out). Each item is one batch-1 ``Feeds``."""

    def __iter__(self) -> Iterator[Feeds]: ...

    def __len__(self) -> int: ...


EpochHook = Callable[[str, int, int, float], None]
"""``on_epoch(route, epoch, epochs, mean_loss)``, called after each finished QAT epoch."""


@dataclass(frozen=True)
class QatSettings:
    """What ``--qat --epochs N --train DATA [--lr X]`` asks for."""

    train: str
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    on_epoch: EpochHook | None = field(default=None, compare=False, repr=False)

    def recipe(self, route: str, summary: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``recipe["qat"]`` of a QAT artifact."""
        return {"epochs": self.epochs, "lr": self.lr, "route": route, "train": self.train,
                "batch_size": summary.get("batch_size", self.batch_size), "optimizer": "adam",
                "final_loss": summary.get("final_loss")}


@dataclass
class ExportOptions:
    """Knobs every backend may read. Backends ignore what does not apply to them."""

    calib_method: str = "minmax"
    tflite_io: Literal["int8", "float"] = "int8"
    tflite_narrow_convs: Literal["int8", "float"] = "int8"
    """tflite-int8: "float" keeps heavy convolutions over < 8 input channels (image stems) in float, faster on x86
    XNNPACK but no longer full integer; "int8" (default) is full integer, what NPUs and Edge TPUs need."""
    threads: int = 1
    opset: int = 17
    extra: dict[str, object] = field(default_factory=dict)
    qat: QatSettings | None = None
    """``--qat``: fine-tune with fake quantization before the INT8 export (edgeq/qat.py); None = plain PTQ."""
    weights4: Int4Weights = field(default_factory=lambda: Int4Weights())
    """The INT4 weight-only tier (onnx-w4, openvino-w4, tflite-w4): group size, INT4 fraction, symmetry."""


@dataclass(frozen=True)
class Int4Weights:
    """Settings of the INT4 weight-only backends (``--w4-group-size``, ``--w4-ratio``, ``--w4-asym``)."""

    group_size: int = 128
    """Weights per quantization group (block) along the input dimension; -1 = one group per output channel."""
    ratio: float = 1.0
    """Fraction of the weight-bearing layers' parameters in INT4 (lowest INT4 error first); the rest INT8."""
    symmetric: bool = True
    """INT4_SYM (no zero point) or INT4_ASYM."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"INT4 ratio must be in [0, 1], got {self.ratio}")
        if self.group_size != -1 and (self.group_size < 16 or self.group_size & (self.group_size - 1)):
            raise ValueError(f"INT4 group size must be a power of two ≥ 16 (or -1 per channel), got {self.group_size}")
