"""Datasets for calibration and evaluation. All are random-access and lazy: one sample is read at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.calibration.preprocess import Preprocess, image_to_array
from edgeq.errors import CalibrationError
from edgeq.types import Feeds, TensorSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class Dataset:
    """Random-access samples keyed by model input name (batch 1), with optional integer labels."""

    description: str = ""
    preprocessing: dict[str, object] = {}

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Feeds:
        raise NotImplementedError

    def label(self, index: int) -> int | None:
        return None


def fit_sample(value: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """Check one sample against a model input (shape with or without batch dim, dtype kind, finite)."""
    value = np.asarray(value)
    if value.shape != tuple(spec.shape):
        if tuple(value.shape) == tuple(spec.shape[1:]):
            value = value[None]
        else:
            raise CalibrationError(f"{where}: shape {list(value.shape)} does not match input {spec.name!r} "
                                   f"{list(spec.shape)} (or {list(spec.shape[1:])} per sample)")
    want = np.dtype(spec.dtype)
    if value.dtype != want:
        same_kind = (value.dtype.kind == "f") == (want.kind == "f")
        if not same_kind or value.dtype.kind == "b":
            raise CalibrationError(f"{where}: dtype {value.dtype} does not match input {spec.name!r} ({want})")
        value = value.astype(want)
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise CalibrationError(f"{where}: contains NaN or Inf")
    return value


class ArrayDataset(Dataset):
    """``.npy`` (one input) or ``.npz`` (one array per input name, optional ``y`` labels); memory-mapped when possible."""

    def __init__(self, path: Path, inputs: list[TensorSpec]):
        self.inputs = inputs
        self.description = f"arrays:{path}"
        self.preprocessing = {}
        try:
            if path.suffix == ".npy":
                arrays = {inputs[0].name: np.load(path, mmap_mode="r")}
                labels = None
            else:
                archive = np.load(path)
                keys = [k for k in archive.files if k != "y"]
                if not keys:
                    raise CalibrationError(f"{path}: the .npz holds no input arrays")
                if len(inputs) == 1 and len(keys) == 1:
                    arrays = {inputs[0].name: archive[keys[0]]}
                elif len(inputs) == 1 and "x" in keys:
                    arrays = {inputs[0].name: archive["x"]}
                else:
                    missing = [s.name for s in inputs if s.name not in keys]
                    if missing:
                        raise CalibrationError(f"{path}: no array for input(s) {', '.join(missing)} (has {', '.join(keys)})")
                    arrays = {s.name: archive[s.name] for s in inputs}
                labels = archive["y"] if "y" in archive.files else None
        except CalibrationError:
            raise
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read {path}: {exc}") from None
        lengths = {len(a) if a.ndim else 0 for a in arrays.values()}
        if len(lengths) != 1:
            raise CalibrationError(f"{path}: arrays have different sample counts {sorted(lengths)}")
        self._arrays, self._labels, self._len = arrays, labels, lengths.pop()
        # a single sample given with its batch dim ((1, C, H, W) for input (1, C, H, W)) is one sample, not C
        if self._len and all(a.shape == tuple(s.shape) for s, a in zip(inputs, arrays.values())) and inputs[0].shape[0] == 1:
            self._arrays = {k: a[None] for k, a in arrays.items()}
            self._len = 1

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Feeds:
        return {name: np.array(array[index]) for name, array in self._arrays.items()}

    def label(self, index: int) -> int | None:
        return None if self._labels is None else int(self._labels[index])


class ImageFolderDataset(Dataset):
    """Image files (recursive, sorted); class sub-folders give labels. Files are opened only when a sample is read."""

    def __init__(self, root: Path, inputs: list[TensorSpec], layout: str, pre: Preprocess):
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise CalibrationError(f"image folders need a model with one 4-D image input (got {len(inputs)} inputs)")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        classes = sorted({p.parent.name for p in self.files if p.parent != root})
        self._class_index = {name: i for i, name in enumerate(classes)}
        self.spec, self.layout, self.pre = inputs[0], layout, pre
        self.description = f"images:{root} ({len(self.files)} files)"
        self.preprocessing = pre.model_dump(exclude_none=True) | {"layout": pre.layout or layout}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Feeds:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as image:
                array = image_to_array(image, self.pre, self.spec.shape, self.layout)
        except (UnidentifiedImageError, OSError) as exc:
            raise CalibrationError(f"cannot read image {path}: {type(exc).__name__}") from None
        return {self.spec.name: array}

    def label(self, index: int) -> int | None:
        parent = self.files[index].parent.name
        return self._class_index.get(parent)


class DigitsDataset(Dataset):
    """The bundled example's data (scikit-learn digits), split by ``edgeq.examples.digits``."""

    def __init__(self, split: str, inputs: list[TensorSpec], layout: str):
        from edgeq.examples.digits import load_digits_split

        try:
            self._x, self._y = load_digits_split(split)
        except ValueError as exc:
            raise CalibrationError(str(exc)) from None
        if layout == "NHWC":
            self._x = self._x.transpose(0, 2, 3, 1)
        self._name = inputs[0].name
        self.description = f"sklearn-digits:{split}"
        self.preprocessing = {"normalize": "(pixel/16 - 0.5) / 0.5", "layout": layout}

    def __len__(self) -> int:
        return len(self._x)

    def __getitem__(self, index: int) -> Feeds:
        return {self._name: self._x[index][None]}

    def label(self, index: int) -> int | None:
        return int(self._y[index])
