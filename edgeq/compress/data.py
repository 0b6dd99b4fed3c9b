"""Training / evaluation data for ``edgeq compress``: an ``.npz`` with ``x`` and ``y``, or ``sklearn-digits:SPLIT``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import CalibrationError
from edgeq.types import TensorSpec

DIGITS_PREFIX = "sklearn-digits:"


@dataclass(frozen=True)
class LabelledData:
    """Inputs ``x`` (float32, batch first) and integer class labels ``y``; ``source`` names where they came from."""

    x: np.ndarray
    y: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.y)


def load_labelled(spec: str) -> LabelledData:
    """``path.npz`` (arrays ``x`` and integer ``y``) or ``sklearn-digits:train|calib|eval`` → :class:`LabelledData`,
    read by the calibration datasets (the one reader of labelled arrays)."""
    from edgeq.calibration.datasets import ArrayDataset, Dataset, DigitsDataset

    inputs = [TensorSpec("x", ())]
    dataset: Dataset
    if spec.startswith(DIGITS_PREFIX):
        from edgeq.examples.digits import SPLITS

        split = spec[len(DIGITS_PREFIX):]
        if split not in SPLITS:
            raise CalibrationError(f"unknown digits split {split!r} in {spec!r}; choose from {', '.join(SPLITS)}")
        dataset, source = DigitsDataset(split, inputs, "NCHW"), spec
    else:
        path = Path(spec)
        if path.suffix.lower() != ".npz":
            raise CalibrationError(f"labelled data must be an .npz file with arrays x and y, or sklearn-digits:SPLIT; got {spec!r}")
        if not path.is_file():
            raise CalibrationError(f"data file not found: {path}")
        dataset, source = ArrayDataset(path, inputs), str(path)
    if len(dataset) == 0:
        raise CalibrationError(f"{source}: holds no samples")
    labels = dataset.labels()
    if labels is None:
        if dataset.target(0) is not None:
            raise CalibrationError(f"{source}: y must hold integer class labels, not float targets")
        raise CalibrationError(f"{source} has no labels: it needs arrays x and y (integer class labels)")
    return LabelledData(np.ascontiguousarray(dataset.stacked()["x"], dtype=np.float32), labels, source)
