"""Small value types shared by every stage: model → calibration → export → verify → bench → report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgeq.qat import QatSettings

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
