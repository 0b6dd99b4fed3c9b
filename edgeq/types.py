"""Small value types shared by every stage: model → calibration → export → verify → bench → report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from edgeq.backend_config import BackendConfig

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


@dataclass(frozen=True)
class MetricControl:
    """Accuracy control handed to a backend that searches itself (openvino-int8: NNCF's
    ``quantize_with_accuracy_control``): the eval samples, the metric over a compiled model, and the budget."""

    items: list[tuple[int, Feeds]]
    """(index, sample) pairs of the eval set."""
    validate: Callable[[Any, Iterable[tuple[int, Feeds]]], tuple[float, None]]
    """NNCF's validation function: (compiled model, items) → (metric, None); higher is better."""
    max_drop: float
    drop_type: Literal["absolute", "relative"] = "absolute"


@dataclass
class ExportOptions:
    """Knobs every backend may read; each backend's own options are its typed config in ``configs``."""

    calib_method: str = "minmax"
    tflite_io: Literal["int8", "float"] = "int8"
    tflite_narrow_convs: Literal["int8", "float"] = "int8"
    """tflite-int8: "float" keeps heavy convolutions over < 8 input channels (image stems) in float, faster on x86
    XNNPACK but no longer full integer; "int8" (default) is full integer, what NPUs and Edge TPUs need."""
    threads: int = 1
    opset: int = 17
    configs: dict[str, BackendConfig] = field(default_factory=dict)
    """Per backend name, its typed options (``Backend.config_of`` reads them; absent = the backend's defaults)."""
    qat: QatSettings | None = None
    """``--qat``: fine-tune with fake quantization before the INT8 export (edgeq/qat.py); None = plain PTQ."""
    metric_control: MetricControl | None = None
    """Set by accuracy control (edgeq/accuracy.py) for a backend that runs the metric-driven search itself."""

    def with_config(self, backend: str, config: BackendConfig) -> ExportOptions:
        """A copy whose options for ``backend`` are ``config`` (the other backends' untouched)."""
        return replace(self, configs={**self.configs, backend: config})
