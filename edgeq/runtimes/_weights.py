"""Weight-only INT4 helpers shared by onnx-w4 and tflite-w4: which layers go to INT4 for a given ratio.

NNCF's ``compress_weights(ratio=…)`` ranks layers by a sensitivity metric; without data its default is the weight
quantization error. The same data-free rule here, for the runtimes whose tools have no ratio: each layer's relative
round-to-nearest INT4 error ``‖W − Q4(W)‖ / ‖W‖`` (groups of ``group_size`` along the input dimension), the layers
with the smallest error go to INT4 until ``ratio`` of the parameters are INT4; the rest stay INT8.
"""

from __future__ import annotations

import numpy as np


def int4_error(matrix: np.ndarray, group_size: int, symmetric: bool = True) -> float:
    """Relative RTN INT4 error of a weight matrix (out, in) quantized in groups of ``group_size`` inputs
    (-1: one group per output channel)."""
    weights = np.asarray(matrix, dtype=np.float64).reshape(matrix.shape[0], -1)
    cols = weights.shape[1]
    size = cols if group_size == -1 else group_size
    pad = (-cols) % size
    grouped = np.pad(weights, ((0, 0), (0, pad))).reshape(weights.shape[0], -1, size)
    if symmetric:
        scale = np.abs(grouped).max(axis=2, keepdims=True) / 7.0
        scale[scale == 0] = 1.0
        restored = np.clip(np.round(grouped / scale), -8, 7) * scale
    else:
        low, high = grouped.min(axis=2, keepdims=True), grouped.max(axis=2, keepdims=True)
        scale = (high - low) / 15.0
        scale[scale == 0] = 1.0
        zero = np.round(-low / scale)
        restored = (np.clip(np.round(grouped / scale) + zero, 0, 15) - zero) * scale
    error = np.linalg.norm(grouped - restored)
    return float(error / (np.linalg.norm(grouped) + 1e-12))


def choose_int4(matrices: dict[str, np.ndarray], ratio: float, group_size: int,
                symmetric: bool = True) -> tuple[list[str], dict[str, float]]:
    """(names of the layers to put in INT4, each layer's relative INT4 error): lowest error first until
    ``ratio`` of all parameters are covered (a layer is taken while the INT4 share stays ≤ ratio, at least one
    layer when ratio > 0)."""
    errors = {name: round(int4_error(m, group_size, symmetric), 5) for name, m in matrices.items()}
    total = sum(int(m.size) for m in matrices.values()) or 1
    chosen: list[str] = []
    covered = 0
    for name in sorted(matrices, key=lambda n: errors[n]):
        size = int(matrices[name].size)
        if ratio >= 1.0 or (covered + size) / total <= ratio + 1e-9 or (not chosen and ratio > 0):
            chosen.append(name)
            covered += size
    return chosen, errors
