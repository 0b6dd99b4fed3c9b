"""Parsing ``--input-shape name=1x3x224x224`` and guessing an input's layout."""

from __future__ import annotations

from edgeq.errors import ModelError
from edgeq.types import Layout, TensorSpec


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x=1x3x32x32", "1x3x8x8"]`` → ``{"x": (1,3,32,32), "": (1,3,8,8)}`` ("" = the only/first input)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, _, dims = item.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
        except ValueError:
            raise ModelError(f"bad --input-shape {item!r}: expected name=1x3x224x224") from None
        if not shape or any(d <= 0 for d in shape):
            raise ModelError(f"bad --input-shape {item!r}: dimensions must be positive integers")
        shapes[name.strip()] = shape
    return shapes


def shape_for(name: str, index: int, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The user-given shape for an input, by name, or unnamed for the first input."""
    if name in shapes:
        return shapes[name]
    if index == 0 and "" in shapes:
        return shapes[""]
    return None


def guess_layout(inputs: list[TensorSpec]) -> Layout:
    """NCHW / NHWC for a 4-D image-like first input (channels 1, 3 or 4), else 'other'."""
    if not inputs or len(inputs[0].shape) != 4:
        return "other"
    shape = inputs[0].shape
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "NCHW"
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return "NHWC"
    return "NCHW" if shape[1] <= shape[3] else "NHWC"
