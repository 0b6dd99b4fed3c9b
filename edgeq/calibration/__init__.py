"""Calibration and held-out data: open any supported source, take a seeded subset, validate it up front.

Sources: a folder of images (+ preprocessing), ``.npy`` / ``.npz`` arrays, a recipe ``.yaml``, or the bundled
``sklearn-digits:SPLIT``. Sample sets stream: they hold indices and read one sample at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.calibration.datasets import ArrayDataset, Dataset, DigitsDataset, ImageFolderDataset, fit_sample
from edgeq.calibration.preprocess import Preprocess
from edgeq.calibration.recipe import Recipe, load_recipe
from edgeq.errors import CalibrationError
from edgeq.manifest import CalibrationInfo
from edgeq.types import Feeds, TensorSpec

DIGITS_PREFIX = "sklearn-digits"


class Subset:
    """A re-iterable, streaming view of some samples of a dataset (holds indices; reads on iteration)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Feeds]:
        for index in self.indices:
            yield self.dataset[index]

    def labels(self) -> list[int | None]:
        return [self.dataset.label(i) for i in self.indices]


def open_dataset(spec: str | Path, inputs: list[TensorSpec], layout: str = "NCHW",
                 pre: Preprocess | None = None) -> Dataset:
    """Open a data source: image folder, ``.npy``, ``.npz``, recipe ``.yaml`` or ``sklearn-digits:SPLIT``.

    ``pre`` is the image preprocessing for folders (a recipe brings its own). Samples come back batch-1 and
    checked against ``inputs`` (shape, dtype, finite).
    """
    text = str(spec)
    if text == DIGITS_PREFIX or text.startswith(DIGITS_PREFIX + ":"):
        return DigitsDataset(text.partition(":")[2] or "calib", inputs, layout)
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate")
    path = Path(text).expanduser()
    if not path.exists():
        raise CalibrationError(f"calibration data not found: {path}")
    suffix = path.suffix.lower()
    if path.is_dir():
        dataset: Dataset = ImageFolderDataset(path, inputs, layout, pre or Preprocess())
    elif suffix in (".npy", ".npz"):
        dataset = ArrayDataset(path, inputs)
    elif suffix in (".yaml", ".yml"):
        recipe = load_recipe(path)
        return open_dataset(recipe.source.to_spec(path.parent), inputs, layout, recipe.preprocess)
    else:
        raise CalibrationError(f"cannot read calibration data {path}: unknown file type {suffix or '(none)'}; "
                               "give an image folder, .npy, .npz, recipe .yaml or sklearn-digits:SPLIT")
    if len(dataset) == 0:
        raise CalibrationError(f"calibration source {path} is empty (0 samples)")
    return dataset


@dataclass
class CalibrationData:
    """Seeded calibration samples, disjoint held-out samples, and what the manifest records about them."""

    calib: Subset
    holdout: Subset
    info: CalibrationInfo


def _recipe_parts(spec: str | Path) -> tuple[str | None, Preprocess | None]:
    """(holdout source named by the recipe, the recipe's preprocessing) when ``spec`` is a recipe file."""
    path = Path(str(spec)).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        recipe: Recipe = load_recipe(path)
        return (recipe.holdout.to_spec(path.parent) if recipe.holdout else None), recipe.preprocess
    return None, None


def sample_order(count: int, seed: int = 0) -> list[int]:
    """The seeded order in which edgeq takes (and feeds) the items of a calibration source of ``count`` items."""
    return [int(i) for i in np.random.default_rng(seed).permutation(count)]


def prepare_calibration(spec: str | Path, inputs: list[TensorSpec], layout: str = "NCHW", *, samples: int = 300,
                        seed: int = 0, holdout: str | Path | None = None, holdout_samples: int = 200,
                        on_sample: Callable[[int], None] | None = None) -> CalibrationData:
    """Seeded calibration subset + disjoint held-out set; every calibration sample is validated before returning.

    Held-out data comes from ``holdout`` (or the recipe's ``holdout:``) when given: the first ``holdout_samples``
    of a seeded permutation. Otherwise it is the next ``holdout_samples`` of the calibration source's permutation
    after the ``samples`` used for calibration; a source with ≤ ``samples`` items is split 80 % / 20 %.
    ``on_sample(total)`` is called once per calibration sample validated (for a progress bar).
    """
    if samples < 1:
        raise CalibrationError(f"--calib-samples must be at least 1 (got {samples})")
    if holdout_samples < 0:
        raise CalibrationError(f"held-out sample count must be ≥ 0 (got {holdout_samples})")
    dataset = open_dataset(spec, inputs, layout)
    recipe_holdout, recipe_pre = _recipe_parts(spec)
    holdout_spec = holdout if holdout is not None else recipe_holdout
    held_data = open_dataset(holdout_spec, inputs, layout, recipe_pre) if holdout_spec is not None else None
    if held_data is not None and held_data.description == dataset.description:
        held_data = None  # the same source: hold out the samples not used for calibration instead
    order = sample_order(len(dataset), seed)
    if held_data is not None:
        calib_idx = order[:samples]
        held = Subset(held_data, sample_order(len(held_data), seed)[:holdout_samples])
    else:
        take = samples if len(order) > samples else max(1, int(0.8 * len(order)))
        calib_idx = order[:take]
        held = Subset(dataset, order[take:take + holdout_samples])
    calib = Subset(dataset, calib_idx)
    for _ in calib:  # one streaming validation pass: shapes, dtypes, NaN/Inf fail before any export
        if on_sample is not None:
            on_sample(len(calib))
    info = CalibrationInfo(source=dataset.description, samples=len(calib), seed=seed,
                           preprocessing=dict(dataset.preprocessing),
                           holdout_source=held.dataset.description, holdout_samples=len(held))
    return CalibrationData(calib, held, info)


__all__ = ["CalibrationData", "Dataset", "Preprocess", "Subset", "fit_sample", "open_dataset", "prepare_calibration",
           "sample_order"]
