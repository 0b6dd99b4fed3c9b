"""Shared fixtures: tiny models and calibration data made by the tests themselves (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from models import TINY_CNN, smooth_images, write_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tflite-int8 from ONNX: tests take onnx2fx → litert-torch unless they exercise the default chain themselves
# (tests/test_onnx_tflite_routes.py), so no test builds onnx2tf's 2.6 GB tool environment by accident and no result
# depends on whether a previous run left it cached.
os.environ.setdefault("EDGEQ_TFLITE_ROUTES", "litert-torch")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("models"), TINY_CNN, "tiny_cnn.py")


@pytest.fixture(scope="session")
def tiny_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 smooth random images (N, 3, 16, 16) as a single-input .npy."""
    path = tmp_path_factory.mktemp("calib") / "tiny.npy"
    np.save(path, smooth_images(64, (3, 16, 16), seed=0))
    return path


@pytest.fixture(scope="session")
def example_model() -> dict[str, str]:
    """The bundled digits example as CLI arguments."""
    return {
        "model": f"{REPO}/edgeq/examples/digits.py:DigitsCNN",
        "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors",
        "calib": f"{REPO}/calibration/digits.yaml",
    }
