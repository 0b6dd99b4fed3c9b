"""Reading labelled arrays: the one ``.npz`` reader behind calibration/eval sets (``ArrayDataset``) and the
training data of ``edgeq compress`` / ``--qat`` (``compress.data.load_labelled``). numpy and errors only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import CalibrationError


def read_npz(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays for input ``names`` (by name; a lone array or ``x`` for one input) and ``y`` if present.

    Every problem (corrupt archive, no input arrays, a missing input, a scalar, unequal sample counts) is one
    ``CalibrationError`` line naming the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = [k for k in archive.files if k != "y"]
            if not keys:
                raise CalibrationError(f"{path}: the .npz holds no input arrays")
            if all(name in keys for name in names):
                arrays = {name: archive[name] for name in names}
            elif len(names) == 1 and len(keys) == 1:
                arrays = {names[0]: archive[keys[0]]}
            elif len(names) == 1 and "x" in keys:
                arrays = {names[0]: archive["x"]}
            else:
                missing = [name for name in names if name not in keys]
                raise CalibrationError(f"{path}: no array for input(s) {', '.join(missing)} "
                                       f"(the .npz has {', '.join(keys)})")
            y = archive["y"] if "y" in archive.files else None
    except CalibrationError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt files raise OSError, ValueError, EOFError, zipfile errors...
        raise CalibrationError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    sample_count(arrays, path)
    return arrays, y


def sample_count(arrays: dict[str, np.ndarray], path: Path) -> int:
    """The common first dimension of ``arrays`` (``CalibrationError`` for a scalar or unequal counts)."""
    if any(a.ndim == 0 for a in arrays.values()):
        raise CalibrationError(f"{path}: holds a scalar, not samples")
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise CalibrationError(f"{path}: arrays have different sample counts {lengths}")
    return next(iter(lengths.values()))


def split_labels(y: np.ndarray | None, count: int, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``y`` as (integer labels, float targets): one of them or neither; ``CalibrationError`` when ``y`` is not
    ``count`` integer labels or float targets."""
    if y is not None and np.issubdtype(y.dtype, np.floating) and y.ndim >= 1 and len(y) == count:
        return None, y  # float y: regression / embedding targets (edgeq export --eval)
    if y is not None and (y.ndim != 1 or len(y) != count or not np.issubdtype(y.dtype, np.integer)):
        raise CalibrationError(f"{path}: 'y' must be {count} integer labels (or float targets, one per "
                               f"sample), got {y.dtype} shape {list(y.shape)}")
    return y, None
