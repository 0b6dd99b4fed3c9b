"""Training / evaluation data for ``edgeq compress``: an ``.npz`` with ``x`` and ``y``, or ``sklearn-digits:SPLIT``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.calibration.arrays import read_npz, split_labels
from edgeq.errors import CalibrationError

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
    """``path.npz`` (arrays ``x`` and integer ``y``) or ``sklearn-digits:train|calib|eval`` → :class:`LabelledData`.
    The ``.npz`` is read by the calibration's array reader (``edgeq.calibration.arrays``)."""
    if spec.startswith(DIGITS_PREFIX):
        from edgeq.examples.digits import SPLITS, load_digits_split

        split = spec[len(DIGITS_PREFIX):]
        if split not in SPLITS:
            raise CalibrationError(f"unknown digits split {split!r} in {spec!r}; choose from {', '.join(SPLITS)}")
        x, y = load_digits_split(split)
        return LabelledData(x, y, spec)
    path = Path(spec)
    if path.suffix.lower() != ".npz":
        raise CalibrationError(f"labelled data must be an .npz file with arrays x and y, or sklearn-digits:SPLIT; got {spec!r}")
    if not path.is_file():
        raise CalibrationError(f"data file not found: {path}")
    arrays, y = read_npz(path, ["x"])
    x = arrays["x"]
    if y is None:
        raise CalibrationError(f"{path} has no labels: it needs arrays x and y (integer class labels)")
    labels, targets = split_labels(y, len(x), path)
    if labels is None:
        raise CalibrationError(f"{path}: y must hold integer class labels, not float targets")
    if len(x) == 0:
        raise CalibrationError(f"{path}: holds no samples")
    return LabelledData(np.ascontiguousarray(x, dtype=np.float32), labels.astype(np.int64), str(path))
