"""The bundled example: committed weights load and are accurate; the splits are fixed and disjoint."""

from __future__ import annotations

import numpy as np

from edgeq.examples.digits import SPLITS, load_digits_split, load_pretrained


def test_splits_fixed_and_disjoint() -> None:
    sizes = {name: len(load_digits_split(name)[0]) for name in SPLITS}
    assert sizes == {"train": 1197, "calib": 300, "eval": 300}
    x1, _ = load_digits_split("eval")
    x2, _ = load_digits_split("eval")
    np.testing.assert_array_equal(x1, x2)
    calib = {x.tobytes() for x in load_digits_split("calib")[0]}
    assert not calib & {x.tobytes() for x in x1}


def test_committed_weights_accuracy() -> None:
    import torch

    x, y = load_digits_split("eval")
    with torch.no_grad():
        predictions = load_pretrained()(torch.from_numpy(x)).argmax(1).numpy()
    assert (predictions == y).mean() >= 0.97
