"""Datasets for calibration and evaluation. All are random-access and lazy: one sample is read at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.calibration.arrays import read_npz, sample_count, split_labels
from edgeq.calibration.preprocess import Preprocess, check_channels, image_to_array
from edgeq.errors import CalibrationError
from edgeq.types import Feeds, TensorSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def fit_sample(value: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """Check one sample against a model input (shape with or without batch dim, dtype kind, finite); batch-1 array."""
    value = np.asarray(value)
    if value.shape != tuple(spec.shape):
        if tuple(value.shape) == tuple(spec.shape[1:]):
            value = value[None]
        elif (moved := _other_layout(value, tuple(spec.shape))) is not None:
            value = moved  # NHWC images for an NCHW model, or the other way round: one transpose fits
        else:
            raise CalibrationError(f"{where}: input {spec.name!r} expects shape {list(spec.shape)} "
                                   f"(or {list(spec.shape[1:])} per sample), got {list(value.shape)}")
    want = np.dtype(spec.dtype)
    if value.dtype != want:
        same_kind = (value.dtype.kind == "f") == (want.kind == "f")
        if not same_kind or value.dtype.kind in "bOSUV" or want.kind == "b":
            hint = " (convert and scale it the way the model expects, e.g. x.astype('float32') / 255)" \
                if value.dtype.kind in "iu" and want.kind == "f" else ""
            raise CalibrationError(f"{where}: input {spec.name!r} expects dtype {want}, got {value.dtype}{hint}")
        value = value.astype(want)
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise CalibrationError(f"{where}: input {spec.name!r} contains NaN or Inf")
    return value


def _other_layout(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``value`` (one image, with or without its batch dim) moved NHWC → NCHW or NCHW → NHWC when exactly that fits
    ``shape`` (4-D inputs only; square channel-less cases that fit both ways are left to the caller's error)."""
    if len(shape) != 4 or value.ndim not in (3, 4):
        return None
    batched = value if value.ndim == 4 else value[None]
    fits = [perm for perm in ((0, 3, 1, 2), (0, 2, 3, 1)) if batched.transpose(perm).shape == shape]
    return np.ascontiguousarray(batched.transpose(fits[0])) if len(fits) == 1 else None


class Dataset:
    """Random-access samples keyed by model input name (batch 1, validated), with optional integer labels.

    Subclasses implement ``__len__`` and ``_read`` (one raw sample); ``__getitem__`` checks it against the inputs.
    """

    description: str = ""
    preprocessing: dict[str, object]
    inputs: list[TensorSpec]

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, index: int) -> Feeds:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Feeds:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range ({len(self)} samples)")
        index %= len(self)
        raw = self._read(index)
        where = f"{self.description} sample {index}"
        return {spec.name: fit_sample(raw[spec.name], spec, where) for spec in self.inputs}

    def label(self, index: int) -> int | None:
        return None

    def target(self, index: int) -> np.ndarray | None:
        """A float regression/embedding target for sample ``index`` (``.npz`` float ``y``), else None."""
        return None


class ArrayDataset(Dataset):
    """``.npy`` (one input, memory-mapped) or ``.npz`` (one array per input name, optional integer ``y`` labels)."""

    def __init__(self, path: Path, inputs: list[TensorSpec]):
        self.inputs = inputs
        self.description = f"arrays:{path}"
        self.preprocessing = {"source": "arrays as stored (no preprocessing)"}
        labels = None
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise CalibrationError(f"{path}: a .npy holds one array but the model has {len(inputs)} inputs "
                                       f"({', '.join(s.name for s in inputs)}); use an .npz with one array per input")
            try:
                arrays = {inputs[0].name: np.load(path, mmap_mode="r", allow_pickle=False)}
            except Exception as exc:  # noqa: BLE001 - corrupt files raise OSError, ValueError, EOFError...
                raise CalibrationError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
        else:
            arrays, labels = read_npz(path, [s.name for s in inputs])
        self._len = sample_count(arrays, path)
        labels, targets = split_labels(labels, self._len, path)
        self._arrays, self._labels, self._targets = arrays, labels, targets

    def __len__(self) -> int:
        return self._len

    def _read(self, index: int) -> Feeds:
        return {name: np.array(array[index]) for name, array in self._arrays.items()}

    def label(self, index: int) -> int | None:
        return None if self._labels is None else int(self._labels[index])

    def target(self, index: int) -> np.ndarray | None:
        return None if self._targets is None else np.asarray(self._targets[index])


def _image_files(root: Path) -> list[Path]:
    """Image files under ``root``, recursive and sorted; hidden files and folders are skipped."""
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).parts
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in relative) and path.is_file():
            files.append(path)
    return sorted(files)


class ImageFolderDataset(Dataset):
    """Image files (recursive, sorted); top-level sub-folders are classes. A file is opened only when its sample is read."""

    def __init__(self, root: Path, inputs: list[TensorSpec], layout: str, pre: Preprocess):
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = ", ".join(f"{s.name} {list(s.shape)}" for s in inputs)
            raise CalibrationError(f"an image folder needs a model with one 4-D image input (the model has {shapes})")
        self.root, self.inputs, self.pre = root, inputs, pre
        self.layout = pre.layout or layout
        check_channels(pre, inputs[0].shape, self.layout, str(root))
        self.files = _image_files(root)
        classes = sorted({p.relative_to(root).parts[0] for p in self.files if p.parent != root})
        self._class_index = {name: i for i, name in enumerate(classes)}
        self.classes = classes
        self.description = f"images:{root} ({len(self.files)} files)"
        shape = inputs[0].shape
        size = [shape[2], shape[3]] if self.layout == "NCHW" else [shape[1], shape[2]]
        self.preprocessing = pre.model_dump(exclude_none=True) | {"layout": self.layout, "size": size}

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, index: int) -> Feeds:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as image:
                array = image_to_array(image, self.pre, self.inputs[0].shape, self.layout, where=str(path))
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise CalibrationError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
        return {self.inputs[0].name: array}

    def label(self, index: int) -> int | None:
        parts = self.files[index].relative_to(self.root).parts
        return self._class_index[parts[0]] if len(parts) > 1 else None


class DigitsDataset(Dataset):
    """The bundled example's data (scikit-learn digits), split by ``edgeq.examples.digits``; tiny, held in memory."""

    def __init__(self, split: str, inputs: list[TensorSpec], layout: str):
        from edgeq.examples.digits import load_digits_split

        if len(inputs) != 1:
            raise CalibrationError(f"sklearn-digits feeds one input; the model has {len(inputs)}")
        try:
            self._x, self._y = load_digits_split(split)
        except ValueError as exc:
            raise CalibrationError(str(exc)) from None
        if layout == "NHWC":
            self._x = self._x.transpose(0, 2, 3, 1)
        self.inputs = inputs
        self.description = f"sklearn-digits:{split}"
        self.preprocessing = {"normalize": "(pixel/16 - 0.5) / 0.5", "layout": layout}

    def __len__(self) -> int:
        return len(self._x)

    def _read(self, index: int) -> Feeds:
        return {self.inputs[0].name: self._x[index]}

    def label(self, index: int) -> int | None:
        return int(self._y[index])
