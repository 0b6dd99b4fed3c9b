"""The model-source interface: what every input format (ONNX, PyTorch, Keras/TF) offers to the backends."""

from __future__ import annotations

import hashlib
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeq.digest import sha256_file
from edgeq.errors import UnsupportedConversion
from edgeq.types import Feeds, Layout, TensorSpec


class ModelSource(ABC):
    """A loaded user model. Backends ask it for the representation they consume.

    ``inputs`` have concrete batch-1 shapes (dynamic dims fixed from ``--input-shape``). ``layout`` is the
    layout of the first image-like input as the *source* framework expects it; every artifact keeps it.
    """

    framework: ClassVar[str]

    def __init__(self, path: Path, name: str, inputs: list[TensorSpec], output_names: list[str], layout: Layout):
        self.path = path
        self.name = name
        self.inputs = inputs
        self.output_names = output_names
        self.layout = layout
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._onnx_path: Path | None = None

    @property
    def workdir(self) -> Path:
        """A private scratch directory that lives as long as this source (intermediate conversions)."""
        if self._workdir is None:
            from edgeq.workdirs import TMP_PREFIX, owned

            self._workdir = tempfile.TemporaryDirectory(prefix=owned(f"{TMP_PREFIX}{self.name}-"))
        return Path(self._workdir.name)

    def sha256(self) -> str:
        return sha256_file(self.path) if self.path.is_file() else hashlib.sha256(str(self.path).encode()).hexdigest()

    def onnx_path(self) -> Path:
        """The FP32 ONNX form (converted once, cached). Sibling ``.data`` files may accompany it."""
        if self._onnx_path is None:
            self._onnx_path = self._to_onnx(self.workdir / "fp32")
        return self._onnx_path

    @abstractmethod
    def _to_onnx(self, out_dir: Path) -> Path:
        """Convert to FP32 ONNX inside ``out_dir`` (created here) and return the .onnx path."""

    def torch_module(self) -> Any:
        """The eager ``torch.nn.Module`` (PyTorch sources only)."""
        raise UnsupportedConversion(f"{self.framework} model {self.name} has no PyTorch form")

    def example_inputs(self, feeds: Feeds | None = None) -> tuple[Any, ...]:
        """Torch tensors for each input in ``inputs`` order, from ``feeds`` or zeros of the fixed shapes."""
        import torch

        if feeds is None:
            return tuple(torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype)) for spec in self.inputs)
        return tuple(torch.from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in self.inputs)

    def keras_model(self) -> Any:
        """The Keras / TF model (TensorFlow sources only)."""
        raise UnsupportedConversion(f"{self.framework} model {self.name} has no TensorFlow form")

    @abstractmethod
    def reference(self, feeds: Feeds) -> list[np.ndarray]:
        """Run the original FP32 model in its own framework; the ground truth for fidelity."""

    def mixed_range_outputs(self, calib: Any, count: int = 8) -> dict[str, float]:
        """Outputs whose slices are too far apart in magnitude to share one int8 scale (``metrics.mixed_range_outputs``,
        e.g. YOLO's box pixels beside class scores), judged on this model's FP32 outputs for the first ``count``
        calibration samples: output name -> peak ratio. The INT8 backends write these outputs with a float op.
        Judged once per calibration set: every INT8 backend and every accuracy-control rebuild asks again."""
        from itertools import islice

        from edgeq.metrics import mixed_range_outputs

        judged = self.__dict__.get("_mixed_range")
        if judged is not None and judged[0] is calib and judged[1] == count:
            return dict(judged[2])
        outputs = [self.reference(feeds) for feeds in islice(iter(calib), count)]
        mixed = {name: ratio for name, ratio in zip(self.output_names, mixed_range_outputs(outputs)) if ratio}
        self._mixed_range = (calib, count, mixed)
        return dict(mixed)

    def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
