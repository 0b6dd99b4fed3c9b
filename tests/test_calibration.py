"""Calibration sources: images (lazy), .npy, .npz (multi-input), recipes, digits; seeded disjoint subsets; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.calibration import open_dataset, prepare_calibration
from edgeq.errors import CalibrationError
from edgeq.types import TensorSpec

IMAGE = [TensorSpec("images", (1, 3, 16, 16))]
REPO = Path(__file__).resolve().parents[1]


def _digit_images(folder: Path, count: int = 12) -> Path:
    """Real pixels (matplotlib, whose sample photo we could use, is not installed here): scikit-learn digits
    upscaled to 24×20 PNGs, in two class folders, one of them nested one level deeper."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        cls = folder / f"class_{digits.target[i] % 2}" / ("deep" if i % 3 == 0 else "")
        cls.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((24, 20)).convert("RGB").save(cls / f"{i:03d}.png")
    return folder


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_image_folder_preprocess_and_labels(tmp_path: Path) -> None:
    folder = _digit_images(tmp_path / "imgs")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.png").write_bytes(b"ignored")
    data = open_dataset(folder, IMAGE)
    assert len(data) == 12 and data.description.endswith("(12 files)")
    sample = data[0]["images"]
    assert sample.shape == (1, 3, 16, 16) and sample.dtype == np.float32
    assert sample.min() >= 0.0 and sample.max() <= 1.0 and sample.max() > 0.5  # default scale 1/255, real pixels
    assert [data.label(i) for i in range(len(data))] == [0] * 6 + [1] * 6  # top-level sub-folder = class, nested too
    nhwc = open_dataset(folder, [TensorSpec("images", (1, 16, 16, 3))], layout="NHWC")
    np.testing.assert_allclose(nhwc[0]["images"], sample.transpose(0, 2, 3, 1))
    gray = open_dataset(folder, [TensorSpec("images", (1, 1, 16, 16))])[0]["images"]
    assert gray.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(gray[0, 0], sample[0].mean(0), atol=2 / 255)  # R=G=B source


def test_image_folder_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    folder = _digit_images(tmp_path / "imgs")
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    data = prepare_calibration(folder, IMAGE, samples=4, holdout_samples=2)
    assert len(opened) == 4  # construction opened nothing; the validation pass read exactly the 4 calibration files
    assert sorted(opened) == sorted(str(data.calib.dataset.files[i]) for i in data.calib.indices)
    list(data.holdout)
    list(data.calib)  # re-iterable: reads again, one file at a time
    assert len(opened) == 10


def test_recipe_preprocess_and_relative_path(tmp_path: Path) -> None:
    _digit_images(tmp_path / "imgs")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("source: {kind: images, path: imgs}\npreprocess: {resize: 20, center_crop: 16, "
                      "mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], color: BGR}\n")
    data = open_dataset(recipe, IMAGE)
    sample = data[0]["images"]
    assert sample.shape == (1, 3, 16, 16) and sample.min() == pytest.approx(-2.0)  # (0 - 0.5) / 0.25
    assert data.preprocessing["center_crop"] == 16 and data.preprocessing["size"] == [16, 16]
    exact = tmp_path / "exact.yaml"
    exact.write_text("source: {kind: images, path: imgs}\npreprocess: {resize: [16, 16]}\n")
    assert open_dataset(exact, IMAGE)[0]["images"].shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("source: {kind: pictures}\n", "source.kind"),
        ("source: {kind: images}\n", "needs a 'path'"),
        ("source: {kind: images, path: imgs}\nextra: 1\n", "extra"),
        ("source: {kind: arrays, path: imgs}\n", "needs a .npy or .npz"),
        ("source: {kind: images, path: imgs}\npreprocess: {mean: [0.5, 0.5]}\n", "mean has 2 values"),
        ("source: {kind: images, path: imgs}\npreprocess: {resize: 10, center_crop: 16}\n", "larger than the image"),
        ("source: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_recipes(tmp_path: Path, text: str, expect: str) -> None:
    _digit_images(tmp_path / "imgs", count=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(CalibrationError, match=expect):
        prepare_calibration(recipe, IMAGE, samples=2)


def test_npy_streams_and_seeded_disjoint_split(tmp_path: Path) -> None:
    path = _npy(tmp_path / "x.npy", np.arange(50 * 3 * 16 * 16, dtype=np.float64).reshape(50, 3, 16, 16))
    data = open_dataset(path, IMAGE)
    assert isinstance(data._arrays["images"], np.memmap)  # memory-mapped, not loaded
    assert data[4]["images"].shape == (1, 3, 16, 16) and data[4]["images"].dtype == np.float32  # float64 cast
    first = prepare_calibration(path, IMAGE, samples=20, seed=3, holdout_samples=10)
    again = prepare_calibration(path, IMAGE, samples=20, seed=3, holdout_samples=10)
    other = prepare_calibration(path, IMAGE, samples=20, seed=4, holdout_samples=10)
    assert first.calib.indices == again.calib.indices != other.calib.indices
    assert first.calib.indices == [int(i) for i in np.random.default_rng(3).permutation(50)[:20]]
    assert not set(first.calib.indices) & set(first.holdout.indices)
    assert (len(first.calib), len(first.holdout)) == (20, 10)
    assert (first.info.samples, first.info.holdout_samples, first.info.seed) == (20, 10, 3)
    ticks: list[int] = []
    prepare_calibration(path, IMAGE, samples=20, on_sample=ticks.append)
    assert ticks == [20] * 20  # one progress tick per validated calibration sample
    assert len(list(first.calib)) == len(list(first.calib)) == 20  # re-iterable
    small = prepare_calibration(path, IMAGE, samples=100)
    assert (len(small.calib), len(small.holdout)) == (40, 10)  # 80/20 when the source is not larger than asked
    assert not set(small.calib.indices) & set(small.holdout.indices)
    with_batch_dim = _npy(tmp_path / "b.npy", np.zeros((5, 1, 3, 16, 16), np.float32))
    assert len(open_dataset(with_batch_dim, IMAGE)) == 5


def test_npz_multi_input_single_array_and_labels(tmp_path: Path) -> None:
    inputs = [TensorSpec("ids", (1, 8), "int64"), TensorSpec("mask", (1, 8), "int64")]
    path = tmp_path / "tok.npz"
    np.savez(path, mask=np.zeros((6, 8), np.int64), ids=np.arange(48).reshape(6, 8), y=np.arange(6))
    data = open_dataset(path, inputs)
    assert set(data[2]) == {"ids", "mask"} and data[2]["ids"].shape == (1, 8) and data.label(2) == 2
    np.testing.assert_array_equal(data[2]["ids"][0], np.arange(16, 24))
    calib = prepare_calibration(path, inputs, samples=4).calib
    assert [s["ids"].shape for s in calib] == [(1, 8)] * 4
    single = tmp_path / "one.npz"
    np.savez(single, whatever=np.ones((3, 3, 16, 16), np.float32))
    assert len(open_dataset(single, IMAGE)) == 3  # one array → the one input, whatever its key
    named = tmp_path / "named.npz"
    np.savez(named, x=np.zeros((3, 3, 16, 16), np.float32), images=np.ones((3, 3, 16, 16), np.float32))
    assert open_dataset(named, IMAGE)[0]["images"].max() == 1.0  # the input's own name wins over 'x'


def test_digits_builtin_recipe_and_holdout_sources(tmp_path: Path) -> None:
    spec = [TensorSpec("x", (1, 1, 8, 8))]
    data = prepare_calibration(REPO / "calibration" / "digits.yaml", spec, samples=300, holdout_samples=300)
    assert (len(data.calib), len(data.holdout)) == (300, 300)
    assert data.info.source == "sklearn-digits:calib" and data.info.holdout_source == "sklearn-digits:eval"
    assert all(label is not None for label in data.holdout.labels())
    calib_bytes = {s["x"].tobytes() for s in data.calib}
    assert not calib_bytes & {s["x"].tobytes() for s in data.holdout}
    direct = prepare_calibration("sklearn-digits:calib", spec, samples=50, holdout="sklearn-digits:eval",
                                 holdout_samples=20)
    assert (len(direct.calib), len(direct.holdout), direct.info.holdout_source) == (50, 20, "sklearn-digits:eval")
    same = prepare_calibration("sklearn-digits:calib", spec, samples=50, holdout="sklearn-digits:calib")
    assert not set(same.calib.indices) & set(same.holdout.indices)  # same source named twice: still disjoint
    nhwc = open_dataset("sklearn-digits:eval", [TensorSpec("x", (1, 8, 8, 1))], layout="NHWC")
    assert nhwc[0]["x"].shape == (1, 8, 8, 1)
    with pytest.raises(CalibrationError, match="unknown digits split"):
        open_dataset("sklearn-digits:test", spec)


def _first_calib_index(count: int, seed: int = 0) -> int:
    return int(np.random.default_rng(seed).permutation(count)[0])


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda p: _npy(p / "a.npy", np.zeros((4, 3, 8, 8), np.float32)),
         r"input 'images' expects shape \[1, 3, 16, 16\] \(or \[3, 16, 16\] per sample\), got \[3, 8, 8\]"),
        (lambda p: _npy(p / "a.npy", np.zeros((4, 3, 16, 16), np.int32)), "expects dtype float32, got int32"),
        (lambda p: _npy(p / "a.npy", np.zeros((0, 3, 16, 16), np.float32)), "empty"),
        (lambda p: p / "missing.npy", "not found"),
        (lambda p: p.joinpath("a.npy").write_bytes(b"garbage") and p / "a.npy", "cannot read"),
        (lambda p: p.joinpath("a.txt").write_text("x") and p / "a.txt", "unknown file type .txt"),
        (lambda p: p, "empty"),
        (lambda p: p.joinpath("broken.png").write_bytes(b"not a png") and p, "cannot read image .*broken.png"),
    ],
)
def test_bad_sources(tmp_path: Path, make, expect: str) -> None:
    target = make(tmp_path)
    with pytest.raises(CalibrationError, match=expect):
        prepare_calibration(target, IMAGE, samples=4)


def test_nan_sample_named_and_found_before_returning(tmp_path: Path) -> None:
    array = np.zeros((10, 3, 16, 16), np.float32)
    bad = _first_calib_index(10)
    array[bad, 1, 2, 3] = np.nan
    path = _npy(tmp_path / "a.npy", array)
    with pytest.raises(CalibrationError, match=rf"sample {bad}: input 'images' contains NaN or Inf"):
        prepare_calibration(path, IMAGE, samples=4)
    array[bad] = 0
    array[bad, 0, 0, 0] = np.inf
    _npy(path, array)
    with pytest.raises(CalibrationError, match=rf"sample {bad}: .*NaN or Inf"):
        open_dataset(path, IMAGE)[bad]


def test_wrong_dtype_kinds_and_input_counts(tmp_path: Path) -> None:
    ids = [TensorSpec("ids", (1, 8), "int64")]
    floats = _npy(tmp_path / "f.npy", np.zeros((4, 8), np.float32))
    with pytest.raises(CalibrationError, match="input 'ids' expects dtype int64, got float32"):
        prepare_calibration(floats, ids, samples=2)
    assert prepare_calibration(_npy(tmp_path / "i.npy", np.zeros((4, 8), np.int32)), ids, samples=2).info.samples == 2
    two = [TensorSpec("ids", (1, 8), "int64"), TensorSpec("mask", (1, 8), "int64")]
    with pytest.raises(CalibrationError, match=r"\.npy holds one array but the model has 2 inputs"):
        open_dataset(floats, two)
    np.savez(tmp_path / "partial.npz", ids=np.ones((6, 8), np.int64))
    with pytest.raises(CalibrationError, match="no array for input.*mask"):
        open_dataset(tmp_path / "partial.npz", two)
    np.savez(tmp_path / "y.npz", ids=np.ones((6, 8), np.int64), mask=np.ones((6, 8), np.int64), y=np.ones(5))
    with pytest.raises(CalibrationError, match="'y' must be 6 integer labels"):
        open_dataset(tmp_path / "y.npz", two)
    with pytest.raises(CalibrationError, match="at least 1"):
        prepare_calibration(floats, ids, samples=0)
