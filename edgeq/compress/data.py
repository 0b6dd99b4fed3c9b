"""Training / evaluation data for ``edgeq compress``: an ``.npz`` with ``x`` and ``y``, or ``sklearn-digits:SPLIT``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """``path.npz`` (arrays ``x`` and ``y``) or ``sklearn-digits:train|calib|eval`` → :class:`LabelledData`."""
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
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise CalibrationError(f"{path} has arrays {', '.join(archive.files) or 'none'}; it needs x and y")
            x, y = archive["x"], archive["y"]
    except CalibrationError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt archives raise many types
        raise CalibrationError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if len(x) != len(y) or len(y) == 0:
        raise CalibrationError(f"{path}: x has {len(x)} rows and y has {len(y)}; they must match and be non-empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise CalibrationError(f"{path}: y must hold integer class labels, not {y.dtype}")
    return LabelledData(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), str(path))
