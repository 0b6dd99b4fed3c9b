"""Task metrics (top-1/top-5/cosine/MSE/MAE/custom), drops, and eval sets with labels or float targets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import CalibrationError, EdgeqError
from edgeq.evaluation import choose_metric, ground_truth, load_eval_set, score
from edgeq.metrics import metric_drop, resolve_metric
from edgeq.types import TensorSpec

SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
LABELS = np.array([1, 1, 2, 2])


def test_builtin_metrics_values() -> None:
    assert score(resolve_metric("top1"), list(SCORES), LABELS) == pytest.approx(0.5)
    # top-2 would be 0.75; top-5 on 3 classes holds every label
    assert score(resolve_metric("top5"), list(SCORES), LABELS) == pytest.approx(1.0)
    targets = np.array([[1.0, 0.0], [0.0, 2.0]])
    outputs = [np.array([1.0, 0.0]), np.array([1.0, 1.0])]
    assert score(resolve_metric("cosine"), outputs, targets) == pytest.approx((1 + 2 ** -0.5) / 2)
    assert score(resolve_metric("mse"), outputs, targets) == pytest.approx((0 + 0 + 1 + 1) / 4)
    assert score(resolve_metric("mae"), outputs, targets) == pytest.approx((0 + 0 + 1 + 1) / 4)
    with pytest.raises(EdgeqError, match="do not match targets"):
        score(resolve_metric("mse"), outputs, np.zeros((2, 3)))


def test_drop_direction_and_type() -> None:
    assert metric_drop(0.9, 0.85, higher_is_better=True) == pytest.approx(0.05)
    assert metric_drop(0.9, 0.85, higher_is_better=True, drop_type="relative") == pytest.approx(0.05 / 0.9)
    assert metric_drop(0.10, 0.12, higher_is_better=False) == pytest.approx(0.02)  # mse grew: worse
    assert metric_drop(0.10, 0.08, higher_is_better=False) < 0  # better than FP32
    assert metric_drop(0.0, 0.0, True, "relative") == 0.0


def test_custom_metric_from_file_and_module(tmp_path: Path) -> None:
    path = tmp_path / "my_metrics.py"
    path.write_text("import numpy as np\n"
                    "def error_rate(outputs, labels):\n"
                    "    return float((outputs.argmax(1) != labels).mean())\n"
                    "error_rate.lower_is_better = True\n"
                    "def broken(outputs, labels):\n"
                    "    raise ValueError('nope')\n")
    metric = resolve_metric(f"{path}:error_rate")
    assert metric.higher_is_better is False
    assert score(metric, list(SCORES), LABELS) == pytest.approx(0.5)
    with pytest.raises(EdgeqError, match="failed: ValueError: nope"):
        score(resolve_metric(f"{path}:broken"), list(SCORES), LABELS)
    assert resolve_metric("edgeq.metrics:metric_drop").higher_is_better is True  # importable module path
    again = pickle.loads(pickle.dumps(metric))  # export worker processes (--jobs) receive metrics pickled
    assert again.higher_is_better is False and score(again, list(SCORES), LABELS) == pytest.approx(0.5)
    assert score(pickle.loads(pickle.dumps(resolve_metric("top1"))), list(SCORES), LABELS) == pytest.approx(0.5)
    with pytest.raises(EdgeqError, match="has no function missing"):
        resolve_metric(f"{path}:missing")
    with pytest.raises(EdgeqError, match="cannot import no_such_module_xyz"):
        resolve_metric("no_such_module_xyz:f")


def test_unknown_metric_is_one_line() -> None:
    with pytest.raises(EdgeqError, match=r"unknown metric 'top3': choose top1, top5, cosine, fidelity, mse, mae or module:function"):
        resolve_metric("top3")


def test_eval_sets_labels_targets_and_defaults(tmp_path: Path) -> None:
    spec = [TensorSpec("x", (1, 4))]
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.savez(tmp_path / "labels.npz", x=x, y=np.arange(6) % 3)
    np.savez(tmp_path / "targets.npz", x=x, y=x[:, :2] * 0.5)
    np.savez(tmp_path / "bare.npz", x=x)
    labelled = load_eval_set(str(tmp_path / "labels.npz"), spec, limit=4)
    assert len(labelled) == 4 and labelled.labels.tolist() == [0, 1, 2, 0] and labelled.targets is None
    targets = load_eval_set(str(tmp_path / "targets.npz"), spec)
    assert targets.labels is None and targets.targets.shape == (6, 2)
    bare = load_eval_set(str(tmp_path / "bare.npz"), spec)
    logits = [np.zeros((1, 3)) for _ in range(6)]
    assert choose_metric(None, labelled, logits).name == "top1"
    assert choose_metric(None, targets, logits).name == "mse"
    assert choose_metric(None, bare, logits).name == "cosine"
    assert ground_truth(resolve_metric("cosine"), bare, logits)[1] == "fp32 outputs"
    with pytest.raises(CalibrationError, match="metric top1 needs integer labels"):
        ground_truth(resolve_metric("top1"), bare, logits)
    with pytest.raises(CalibrationError, match="metric mae needs float targets"):
        ground_truth(resolve_metric("mae"), labelled, logits)


def test_image_folder_classes_are_labels(tmp_path: Path) -> None:
    from PIL import Image

    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), value + i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    eval_set = load_eval_set(str(tmp_path), [TensorSpec("image", (1, 3, 8, 8))])
    assert eval_set.labels.tolist() == [0, 0, 1, 1]


def test_digits_eval_split_has_labels() -> None:
    eval_set = load_eval_set("sklearn-digits:eval", [TensorSpec("x", (1, 1, 8, 8))], limit=10)
    assert len(eval_set) == 10 and eval_set.labels is not None and eval_set.labels.max() <= 9
