"""Shared fixtures: tiny models and calibration data made by the tests themselves (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tflite-int8 from ONNX: tests take onnx2fx → litert-torch unless they exercise the default chain themselves
# (tests/test_onnx_tflite_routes.py), so no test builds onnx2tf's 2.6 GB tool environment by accident and no result
# depends on whether a previous run left it cached.
os.environ.setdefault("EDGEQ_TFLITE_ROUTES", "litert-torch")

REPO = Path(__file__).resolve().parents[1]

TINY_CNN = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv+BN+ReLU ×2, global pool, linear: a well-behaved classifier for quantization tests."""

    input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class NotAModule:
    pass
'''


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny_cnn.py"
    path.write_text(TINY_CNN)
    return path


@pytest.fixture(scope="session")
def tiny_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 smooth random images (N, 3, 16, 16) as a single-input .npy."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, 3, 4, 4)).astype(np.float32)
    images = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3) + 0.1 * rng.standard_normal((64, 3, 16, 16))
    path = tmp_path_factory.mktemp("calib") / "tiny.npy"
    np.save(path, images.astype(np.float32))
    return path


@pytest.fixture(scope="session")
def example_model() -> dict[str, str]:
    """The bundled digits example as CLI arguments."""
    return {
        "model": f"{REPO}/edgeq/examples/digits.py:DigitsCNN",
        "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors",
        "calib": f"{REPO}/calibration/digits.yaml",
    }
