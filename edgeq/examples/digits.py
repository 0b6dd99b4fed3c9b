"""The bundled example: a small Conv+BN+ReLU CNN for scikit-learn's digits (8×8 grey images, 10 classes).

The data ships inside scikit-learn (no download). Splits are fixed by a seeded permutation (seed 0):
train 1197, calib 300, eval 300 — disjoint. Weights: ``digits_cnn.safetensors`` (made by ``train_digits.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("digits_cnn.safetensors")
SPLITS = {"train": (0, 1197), "calib": (1197, 1497), "eval": (1497, 1797)}


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Digits pixels 0..16 → roughly [-1, 1], float32, shape (N, 1, 8, 8)."""
    return ((pixels.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0) - 0.5) / 0.5


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N,1,8,8) normalized, y int64) for split ``train`` | ``calib`` | ``eval``."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}; choose from {', '.join(SPLITS)}")
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    start, stop = SPLITS[split]
    index = order[start:stop]
    return normalize(data.images[index]), data.target[index].astype(np.int64)


def _build():
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        """conv(1→32)+BN+ReLU → conv(32→64)+BN+ReLU → maxpool → conv(64→128)+BN+ReLU → global pool → linear(128→10)."""

        input_shape = (1, 1, 8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            )
            self.classifier = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    return DigitsCNN


def __getattr__(name: str):  # lazy, so load_digits_split works without torch
    if name == "DigitsCNN":
        cls = _build()
        globals()["DigitsCNN"] = cls
        return cls
    raise AttributeError(name)


def load_pretrained():
    """DigitsCNN with the committed weights, in eval mode."""
    from safetensors.torch import load_file

    model = __getattr__("DigitsCNN")()
    model.load_state_dict(load_file(str(WEIGHTS)))
    return model.eval()
