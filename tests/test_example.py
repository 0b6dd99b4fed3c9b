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


def test_model_shape_size_and_input_name() -> None:
    import inspect

    import torch

    from edgeq.examples.digits import DigitsCNN

    model = DigitsCNN()
    assert list(inspect.signature(model.forward).parameters) == ["x"]
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert 10_000 < sum(p.numel() for p in model.parameters()) < 100_000
    kinds = [type(m).__name__ for m in model.modules()]
    assert kinds.count("Conv2d") == kinds.count("BatchNorm2d") == 3  # Conv+BN+ReLU blocks for fusing/pruning
