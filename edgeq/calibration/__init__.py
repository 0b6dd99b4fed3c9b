"""Calibration and held-out data: open any supported source, take a seeded subset, validate it up front.

Sources: a folder of images (+ preprocessing), ``.npy`` / ``.npz`` arrays, a recipe ``.yaml``, or the bundled
``sklearn-digits:SPLIT``. Sample sets stream: they hold indices and read one sample at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.calibration.datasets import ArrayDataset, Dataset, DigitsDataset, ImageFolderDataset, fit_sample
from edgeq.calibration.preprocess import Preprocess
from edgeq.calibration.recipe import Recipe, load_recipe
from edgeq.errors import CalibrationError
from edgeq.manifest import CalibrationInfo
from edgeq.types import Feeds, TensorSpec


class Subset:
    """A re-iterable, streaming view of some samples of a dataset, each validated against the model inputs."""

    def __init__(self, dataset: Dataset, indices: list[int], inputs: list[TensorSpec]):
        self.dataset, self.indices, self.inputs = dataset, indices, inputs

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Feeds]:
        for index in self.indices:
            yield self.sample(index)

    def sample(self, index: int) -> Feeds:
        raw = self.dataset[index]
        where = f"{self.dataset.description} sample {index}"
        return {spec.name: fit_sample(raw[spec.name], spec, where) for spec in self.inputs}

    def labels(self) -> list[int | None]:
        return [self.dataset.label(i) for i in self.indices]


def open_dataset(spec: str | Path, inputs: list[TensorSpec], layout: str = "NCHW", pre: Preprocess | None = None) -> Dataset:
    """Open a data source given on the command line (or in a recipe)."""
    text = str(spec)
    if text.startswith("sklearn-digits"):
        return DigitsDataset(text.partition(":")[2] or "calib", inputs, layout)
    path = Path(text).expanduser()
    if not path.exists():
        raise CalibrationError(f"calibration data not found: {path}")
    if path.is_dir():
        dataset: Dataset = ImageFolderDataset(path, inputs, layout, pre or Preprocess())
    elif path.suffix in (".npy", ".npz"):
        dataset = ArrayDataset(path, inputs)
    elif path.suffix in (".yaml", ".yml"):
        recipe = load_recipe(path)
        return open_dataset(recipe.source.to_spec(path.parent), inputs, layout, recipe.preprocess)
    else:
        raise CalibrationError(f"cannot read calibration data {path}: give an image folder, .npy, .npz or recipe .yaml")
    if len(dataset) == 0:
        raise CalibrationError(f"calibration source {path} is empty")
    return dataset


@dataclass
class CalibrationData:
    calib: Subset
    holdout: Subset
    info: CalibrationInfo


def _recipe_holdout(spec: str | Path) -> tuple[str | None, Preprocess | None]:
    path = Path(str(spec))
    if path.suffix in (".yaml", ".yml") and path.is_file():
        recipe: Recipe = load_recipe(path)
        if recipe.holdout is not None:
            return recipe.holdout.to_spec(path.parent), recipe.preprocess
    return None, None


def prepare_calibration(spec: str | Path, inputs: list[TensorSpec], layout: str = "NCHW", *, samples: int = 300,
                        seed: int = 0, holdout: str | Path | None = None, holdout_samples: int = 200) -> CalibrationData:
    """Seeded calibration subset + disjoint held-out set; every calibration sample is validated before returning."""
    dataset = open_dataset(spec, inputs, layout)
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(dataset))]
    recipe_holdout, recipe_pre = _recipe_holdout(spec)
    holdout = holdout or recipe_holdout
    if holdout is not None:
        held_data = open_dataset(holdout, inputs, layout, recipe_pre)
        held_order = [int(i) for i in np.random.default_rng(seed).permutation(len(held_data))][:holdout_samples]
        calib_idx = order[:samples]
        held = Subset(held_data, held_order, inputs)
    else:
        take = samples if len(order) > samples else max(1, int(0.8 * len(order)))
        calib_idx = order[:take]
        held = Subset(dataset, order[take:take + holdout_samples], inputs)
    calib = Subset(dataset, calib_idx, inputs)
    for _ in calib:  # one streaming validation pass: shapes, dtypes, NaN/Inf fail before any export
        pass
    info = CalibrationInfo(source=dataset.description, samples=len(calib), seed=seed,
                           preprocessing=dict(dataset.preprocessing),
                           holdout_source=held.dataset.description, holdout_samples=len(held))
    return CalibrationData(calib, held, info)


__all__ = ["CalibrationData", "Dataset", "Preprocess", "Subset", "open_dataset", "prepare_calibration"]
