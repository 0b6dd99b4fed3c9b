"""Image preprocessing for calibration/evaluation: resize, center-crop, scale, mean/std, color order, layout."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from edgeq.errors import CalibrationError


class Preprocess(BaseModel):
    """How an image file becomes a model input. Sizes default to the model input's H×W."""

    model_config = ConfigDict(extra="forbid")
    resize: int | list[int] | None = None
    """Shorter side (int) or exact [H, W]; default: exact model H×W (after center_crop if given)."""
    center_crop: int | list[int] | None = None
    scale: float = 1.0 / 255.0
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    color: Literal["RGB", "BGR", "gray"] | None = None

    @field_validator("resize", "center_crop")
    @classmethod
    def _positive_size(cls, value: int | list[int] | None) -> int | list[int] | None:
        sizes = [value] if isinstance(value, int) else value or []
        if isinstance(value, list) and len(value) != 2:
            raise ValueError("give one size or [height, width]")
        if any(v <= 0 for v in sizes):
            raise ValueError("sizes must be positive")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(v == 0 for v in value):
            raise ValueError("std values must be non-zero")
        return value


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_channels(pre: Preprocess, shape: tuple[int, ...], layout: str, where: str) -> None:
    """mean/std must have one value or one per channel of the colour mode (before any pixel is read)."""
    channels = 1 if (pre.color or ("gray" if _channels(shape, pre.layout or layout) == 1 else "RGB")) == "gray" else 3
    for field in ("mean", "std"):
        values = getattr(pre, field)
        if values is not None and len(values) not in (1, channels):
            raise CalibrationError(f"{where}: preprocess {field} has {len(values)} values; "
                                   f"the image has {channels} channel(s)")


def _channels(shape: tuple[int, ...], layout: str) -> int:
    return shape[1] if layout == "NCHW" else shape[-1]


def image_to_array(image, pre: Preprocess, shape: tuple[int, ...], layout: str, where: str = "image") -> np.ndarray:
    """A PIL image → float32 array of ``shape`` (batch 1) following ``pre`` and the model's layout."""
    from PIL import Image

    layout = pre.layout or layout
    channels = _channels(shape, layout)
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    color = pre.color or ("gray" if channels == 1 else "RGB")
    image = image.convert("L" if color == "gray" else "RGB")
    if pre.resize is not None:
        if isinstance(pre.resize, int):
            ratio = pre.resize / min(image.size)
            image = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))), Image.BILINEAR)
        else:
            rh, rw = _pair(pre.resize)
            image = image.resize((rw, rh), Image.BILINEAR)
    if pre.center_crop is not None:
        ch, cw = _pair(pre.center_crop)
        if ch > image.height or cw > image.width:
            raise CalibrationError(f"{where}: center_crop {ch}x{cw} is larger than the image "
                                   f"({image.height}x{image.width} after resize)")
        left, top = (image.width - cw) // 2, (image.height - ch) // 2
        image = image.crop((left, top, left + cw, top + ch))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) * pre.scale
    if array.ndim == 2:
        array = array[:, :, None]
    if color == "BGR":
        array = array[:, :, ::-1]
    if pre.mean is not None:
        array = array - np.asarray(pre.mean, np.float32)
    if pre.std is not None:
        array = array / np.asarray(pre.std, np.float32)
    if layout == "NCHW":
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array[None])
