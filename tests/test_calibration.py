"""Calibration sources: images (lazy), .npy, .npz (multi-input), recipes, digits; seeded disjoint subsets; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.calibration import open_dataset, prepare_calibration
from edgeq.errors import CalibrationError
from edgeq.types import TensorSpec

IMAGE = [TensorSpec("images", (1, 3, 16, 16))]


def _digit_images(folder: Path, count: int = 12) -> Path:
    """Real pixels: scikit-learn digits upscaled to 24×24 PNGs, in two class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        cls = folder / f"class_{digits.target[i] % 2}"
        cls.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((24, 24)).convert("RGB").save(cls / f"{i:03d}.png")
    return folder


def test_image_folder_preprocess_and_labels(tmp_path: Path) -> None:
    folder = _digit_images(tmp_path / "imgs")
    data = open_dataset(folder, IMAGE)
    assert len(data) == 12
    sample = data[0]["images"]
    assert sample.shape == (1, 3, 16, 16) and sample.dtype == np.float32
    assert sample.min() >= 0.0 and sample.max() <= 1.0  # default scale 1/255
    assert {data.label(i) for i in range(len(data))} == {0, 1}
    nhwc = open_dataset(folder, [TensorSpec("images", (1, 16, 16, 3))], layout="NHWC")
    np.testing.assert_allclose(nhwc[0]["images"], sample.transpose(0, 2, 3, 1))


def test_image_folder_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    folder = _digit_images(tmp_path / "imgs")
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    data = prepare_calibration(folder, IMAGE, samples=4, holdout_samples=2)
    assert len(opened) == 4  # only the validation pass over the 4 calibration samples read files
    list(data.holdout)
    assert len(opened) == 6


def test_recipe_with_mean_std_and_relative_path(tmp_path: Path) -> None:
    _digit_images(tmp_path / "imgs")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("source: {kind: images, path: imgs}\npreprocess: {resize: 20, center_crop: 16, mean: [0.5, 0.5, 0.5], "
                      "std: [0.25, 0.25, 0.25], color: BGR}\n")
    sample = open_dataset(recipe, IMAGE)[0]["images"]
    assert sample.shape == (1, 3, 16, 16) and sample.min() < 0  # mean subtracted
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {kind: pictures}\n")
    with pytest.raises(CalibrationError, match="source.kind"):
        open_dataset(bad, IMAGE)


def test_npy_and_seeded_disjoint_split(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.arange(50 * 3 * 16 * 16, dtype=np.float32).reshape(50, 3, 16, 16))
    first = prepare_calibration(path, IMAGE, samples=20, seed=3, holdout_samples=10)
    again = prepare_calibration(path, IMAGE, samples=20, seed=3, holdout_samples=10)
    other = prepare_calibration(path, IMAGE, samples=20, seed=4, holdout_samples=10)
    assert first.calib.indices == again.calib.indices != other.calib.indices
    assert not set(first.calib.indices) & set(first.holdout.indices)
    assert (len(first.calib), len(first.holdout)) == (20, 10)
    small = prepare_calibration(path, IMAGE, samples=100)
    assert (len(small.calib), len(small.holdout)) == (40, 10)  # 80/20 when the source is smaller than asked


def test_npz_multi_input_and_labels(tmp_path: Path) -> None:
    inputs = [TensorSpec("ids", (1, 8), "int64"), TensorSpec("mask", (1, 8), "int64")]
    path = tmp_path / "tok.npz"
    np.savez(path, ids=np.ones((6, 8), np.int64), mask=np.zeros((6, 8), np.int64), y=np.arange(6))
    data = open_dataset(path, inputs)
    assert set(data[2]) == {"ids", "mask"} and data[2]["ids"].shape == (8,) and data.label(2) == 2
    calib = prepare_calibration(path, inputs, samples=4).calib
    assert next(iter(calib))["ids"].shape == (1, 8)
    np.savez(tmp_path / "partial.npz", ids=np.ones((6, 8), np.int64))
    with pytest.raises(CalibrationError, match="no array for input"):
        open_dataset(tmp_path / "partial.npz", inputs)


def test_digits_builtin_and_recipe_holdout() -> None:
    repo = Path(__file__).resolve().parents[1]
    spec = [TensorSpec("x", (1, 1, 8, 8))]
    data = prepare_calibration(repo / "calibration" / "digits.yaml", spec, samples=300, holdout_samples=300)
    assert (len(data.calib), len(data.holdout)) == (300, 300)
    assert data.info.source == "sklearn-digits:calib" and data.info.holdout_source == "sklearn-digits:eval"
    assert all(label is not None for label in data.holdout.labels())


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (lambda p: np.save(p / "a.npy", np.zeros((4, 3, 8, 8), np.float32)), "shape"),
        (lambda p: np.save(p / "a.npy", np.zeros((4, 3, 16, 16), np.int32)), "dtype"),
        (lambda p: np.save(p / "a.npy", np.full((4, 3, 16, 16), np.inf, np.float32)), "NaN or Inf"),
        (lambda p: (p / "a.npy").write_bytes(b"garbage"), "cannot read"),
        (lambda p: (p / "a.txt").write_text("x"), "cannot read calibration data"),
    ],
)
def test_bad_sources(tmp_path: Path, content, expect: str) -> None:
    content(tmp_path)
    target = next(tmp_path.iterdir())
    with pytest.raises(CalibrationError, match=expect):
        prepare_calibration(target, IMAGE, samples=4)


def test_empty_and_missing_and_unreadable_image(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="empty"):
        open_dataset(tmp_path, IMAGE)
    with pytest.raises(CalibrationError, match="not found"):
        open_dataset(tmp_path / "nope", IMAGE)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationError, match="broken.png"):
        prepare_calibration(tmp_path, IMAGE, samples=1)
