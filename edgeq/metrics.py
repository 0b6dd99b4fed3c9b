"""Measurement rules for quality: fidelity against FP32 and task metrics. Pure numpy, no framework imports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def _flat(batch: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-sample outputs (each batch 1) into (N, features) float64."""
    return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in batch])


def cosine_per_sample(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> np.ndarray:
    """Cosine similarity per sample between two lists of same-shaped outputs."""
    ref, cand = _flat(reference), _flat(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    num = (ref * cand).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    both_zero = den == 0
    return np.where(both_zero, np.where(np.abs(ref - cand).max(axis=1) == 0, 1.0, 0.0), num / np.where(both_zero, 1, den))


FLOOR_FRACTION = 0.1
"""The floor of the worst-sample cosine, as a fraction of the RMS norm of the FP32 output over the samples
(docs/fidelity.md): errors on a sample are judged relative to max(its own FP32 norm, this floor)."""


def match_outputs(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``candidate`` outputs in ``reference``'s order: the next one of the same size each time (a runtime may reorder
    or reshape outputs, e.g. TFLite), reshaped like the reference."""
    pool = list(range(len(candidate)))
    ordered = []
    for ref in reference:
        pick = next((i for i in pool if np.size(candidate[i]) == np.size(ref)), None)
        if pick is None:
            raise ValueError(f"no output of {np.size(ref)} values to compare with (sizes "
                             f"{[int(np.size(c)) for c in candidate]})")
        pool.remove(pick)
        ordered.append(np.reshape(np.asarray(candidate[pick]), np.shape(ref)))
    return ordered


def worst_fidelity_per_output(reference: Sequence[Sequence[np.ndarray]],
                              candidate: Sequence[Sequence[np.ndarray]]) -> list[float]:
    """Worst-sample fidelity (the floored cosine of the manifest, ``floored_cosine_per_sample``) of each output:
    ``reference[i]`` / ``candidate[i]`` are all outputs of sample i."""
    matched = [match_outputs(ref, got) for ref, got in zip(reference, candidate)]
    return [float(floored_cosine_per_sample([r[k] for r in reference], [m[k] for m in matched]).min())
            for k in range(len(reference[0]))]


def floored_cosine_per_sample(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
                              floor_fraction: float = FLOOR_FRACTION) -> np.ndarray:
    """Cosine per sample of ``[r, δ]`` vs ``[c, δ]``: both vectors get one extra component δ, the floor.

    δ = ``floor_fraction`` × the RMS over samples of the FP32 outputs' norms. Where ``|r|`` ≫ δ this is the plain
    cosine (it moves by < δ²/|r|²); where the FP32 output is near zero (|r| ≪ δ) it is ≈ 1 while the candidate
    stays near zero too, and falls towards δ/|c| when the candidate puts real signal there — instead of the noise
    that the plain cosine of two near-zero vectors is. With all FP32 outputs exactly zero, δ = 0 (plain rule).
    """
    ref, cand = _flat(reference), _flat(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    floor = float(floor_fraction * np.sqrt(np.mean((ref ** 2).sum(axis=1))))
    if floor == 0.0:
        return cosine_per_sample(reference, candidate)
    num = (ref * cand).sum(axis=1) + floor ** 2
    den = np.sqrt(((ref ** 2).sum(axis=1) + floor ** 2) * ((cand ** 2).sum(axis=1) + floor ** 2))
    return np.clip(num / den, -1.0, 1.0)


MIXED_RANGE_RATIO = 64.0
"""Slices of one output whose peak magnitudes differ by more than this cannot share one int8 scale: the smaller ones
would keep fewer than 256 / 64 = 4 levels (YOLO's box pixels beside class probabilities keep none)."""


def mixed_range_outputs(samples: Sequence[Sequence[np.ndarray]], ratio: float = MIXED_RANGE_RATIO) -> list[float]:
    """Per output, how many times larger its largest slice's peak is than its smallest non-zero one, when that exceeds
    ``ratio`` (else 0.0): ``samples[i][k]`` is sample i's output k (batch 1).

    Only tables are judged: outputs ``[1, a, b]`` whose shorter axis (2–1024 entries, ≤ a quarter of the longer) holds
    the fields, e.g. the 4 + C rows of a YOLOv8 ``[1, 4 + C, anchors]`` output (box coordinates in pixels concatenated
    with sigmoid class scores) or YOLOv5's ``[1, anchors, 5 + C]``. One per-tensor int8 scale on such an output zeroes
    the small fields while the whole-output cosine stays ≈ 1, so the quantizers keep these outputs float. Class scores
    and embeddings (rank 2) and dense maps (rank 4, whose rows differ for lack of text, not of units) are never mixed.
    """
    ratios = []
    for k in range(len(samples[0]) if samples else 0):
        batch = np.stack([np.abs(np.asarray(s[k], dtype=np.float64)) for s in samples])  # (N, 1, d1, d2, ...)
        dims = batch.shape[2:]
        if len(dims) != 2 or not 2 <= min(dims) <= 1024 or 4 * min(dims) > max(dims):
            ratios.append(0.0)
            continue
        axis = 2 + int(np.argmin(dims))
        peaks = np.moveaxis(batch, axis, 0).reshape(batch.shape[axis], -1).max(axis=1)
        peaks = peaks[peaks > 0]
        spread = float(peaks.max() / peaks.min()) if peaks.size >= 2 else 0.0
        ratios.append(spread if spread > ratio else 0.0)
    return ratios


def mixed_range_note(mixed: dict[str, float]) -> str:
    """Why the outputs ``mixed`` (name -> peak ratio, ``mixed_range_outputs``) stay float, for the manifest notes."""
    return ", ".join(f"{name} holds slices {ratio:.0f}x apart in magnitude (one int8 scale would zero the small ones)"
                     for name, ratio in mixed.items())


def is_class_scores(sample_output: np.ndarray) -> bool:
    """A class-score vector: one sample's output is 2-D, one row (the batch of 1), ≥ 2 columns."""
    shape = np.shape(sample_output)
    return len(shape) == 2 and shape[0] == 1 and shape[1] >= 2


def fidelity(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], classifier: bool | None = None) -> dict[str, float | None]:
    """Worst-sample and mean cosine (floored, see ``floored_cosine_per_sample``), abs error (max/mean) and, for a
    class-score output, top-1 agreement.

    ``reference``/``candidate``: one array per sample, for one output. ``classifier`` defaults to
    ``is_class_scores`` of the FP32 output (2-D, one row per sample): never on boxes, maps or embeddings of another
    rank.
    """
    if len(reference) == 0:
        raise ValueError("no samples to compare")
    cos = floored_cosine_per_sample(reference, candidate)
    ref, cand = _flat(reference), _flat(candidate)
    err = np.abs(ref - cand)
    if classifier is None:
        classifier = is_class_scores(np.asarray(reference[0]))
    agreement = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()) if classifier else None
    return {
        "samples": len(reference),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "top1_agreement": agreement,
    }


def fidelity_per_output(names: Sequence[str], reference: Sequence[Sequence[np.ndarray]],
                        candidate: Sequence[Sequence[np.ndarray]]) -> list[dict[str, object]]:
    """``fidelity`` of every output: ``reference[k][j]`` is sample k's output j (same order in both);
    each entry adds the output's ``name`` and per-sample ``shape``."""
    stats = []
    for j, name in enumerate(names):
        refs, cands = [np.asarray(r[j]) for r in reference], [np.asarray(c[j]) for c in candidate]
        entry: dict[str, object] = {"name": name, "shape": list(refs[0].shape)}
        entry.update(fidelity(refs, cands))
        stats.append(entry)
    return stats


def worst_output(outputs: Sequence[dict[str, object]]) -> dict[str, object] | None:
    """The output with the lowest worst-sample cosine (ties: the larger max abs error)."""
    if not outputs:
        return None
    return min(outputs, key=lambda o: (float(o["cosine_min"]), -float(o["max_abs_error"])))  # type: ignore[arg-type]


def top_k_accuracy(outputs: Sequence[np.ndarray], labels: Sequence[int], k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest scores."""
    scores = _flat(outputs)
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([int(label) in row for label, row in zip(labels, top)]))


# ---------------------------------------------------------------------------------------------------------------
# Task metrics for ``--eval`` / ``--metric``: a name, a direction, what ground truth it needs, and the function.
# ---------------------------------------------------------------------------------------------------------------
METRIC_NAMES = ("top1", "top5", "cosine", "fidelity", "mse", "mae")


@dataclass(frozen=True)
class Metric:
    """A task metric over one eval set. ``needs``: "labels" (integer classes), "targets" (float arrays, or the
    FP32 outputs when the eval set has none — cosine only) or "any" (custom functions get what there is)."""

    name: str
    higher_is_better: bool
    needs: str
    compute: Callable[[np.ndarray, np.ndarray | None], float]

    def __reduce__(self) -> tuple[Callable[[str], Metric], tuple[str]]:
        """Pickled by name (export worker processes resolve it again, custom ``module:function`` included)."""
        return resolve_metric, (self.name,)


def _scores(outputs: np.ndarray) -> np.ndarray:
    return np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)


def _top_k(k: int) -> Callable[[np.ndarray, np.ndarray | None], float]:
    def compute(outputs: np.ndarray, labels: np.ndarray | None) -> float:
        return top_k_accuracy(list(outputs), [int(v) for v in np.asarray(labels)], k=k)
    return compute


def _cosine(outputs: np.ndarray, targets: np.ndarray | None) -> float:
    return float(cosine_per_sample(list(_scores(targets)), list(_scores(outputs))).mean())


def _worst_cosine(outputs: np.ndarray, targets: np.ndarray | None) -> float:
    return float(floored_cosine_per_sample(list(_scores(targets)), list(_scores(outputs))).min())


def _mse(outputs: np.ndarray, targets: np.ndarray | None) -> float:
    return float(np.mean((_scores(outputs) - _scores(targets)) ** 2))


def _mae(outputs: np.ndarray, targets: np.ndarray | None) -> float:
    return float(np.mean(np.abs(_scores(outputs) - _scores(targets))))


BUILTIN_METRICS = {
    "top1": Metric("top1", True, "labels", _top_k(1)),
    "top5": Metric("top5", True, "labels", _top_k(5)),
    "cosine": Metric("cosine", True, "targets", _cosine),
    "fidelity": Metric("fidelity", True, "targets", _worst_cosine),  # worst-sample cosine (every output: EvalContext)
    "mse": Metric("mse", False, "targets", _mse),
    "mae": Metric("mae", False, "targets", _mae),
}


def resolve_metric(spec: str) -> Metric:
    """A built-in metric name, or ``module:function`` / ``path/file.py:function`` returning a float.

    A custom ``function(outputs, targets)`` gets the stacked first outputs (N, ...) and the integer labels or float
    targets (or None); higher is better unless the function has ``lower_is_better = True``.
    """
    from edgeq.errors import EdgeqError

    if spec in BUILTIN_METRICS:
        return BUILTIN_METRICS[spec]
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name.isidentifier():
        raise EdgeqError(f"unknown metric {spec!r}: choose {', '.join(METRIC_NAMES)} or module:function")
    func = _load_function(module_name, func_name, spec)
    return Metric(spec, not bool(getattr(func, "lower_is_better", False)), "any", _checked(func, spec))


def _load_function(module_name: str, func_name: str, spec: str) -> Callable[..., object]:
    import importlib
    import importlib.util
    from pathlib import Path

    from edgeq.errors import EdgeqError

    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser()
            loader_spec = importlib.util.spec_from_file_location(f"edgeq_metric_{path.stem}", path)
            if loader_spec is None or loader_spec.loader is None or not path.is_file():
                raise EdgeqError(f"metric {spec!r}: file {path} not found")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except EdgeqError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure of user code is one line
        raise EdgeqError(f"metric {spec!r}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise EdgeqError(f"metric {spec!r}: {module_name} has no function {func_name}")
    return func


def _checked(func: Callable[..., object], spec: str) -> Callable[[np.ndarray, np.ndarray | None], float]:
    def compute(outputs: np.ndarray, targets: np.ndarray | None) -> float:
        from edgeq.errors import EdgeqError

        try:
            value = float(func(outputs, targets))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - user code: one line
            raise EdgeqError(f"metric {spec} failed: {type(exc).__name__}: {exc}") from None
        if not np.isfinite(value):
            raise EdgeqError(f"metric {spec} returned {value}, not a finite number")
        return value
    return compute


def metric_drop(reference: float, value: float, higher_is_better: bool, drop_type: str = "absolute") -> float:
    """How much worse ``value`` is than ``reference`` (positive = worse): absolute, or relative to |reference|."""
    worse = (reference - value) if higher_is_better else (value - reference)
    if drop_type == "absolute":
        return float(worse)
    if reference == 0:
        return 0.0 if worse == 0 else float("inf") if worse > 0 else float("-inf")
    return float(worse / abs(reference))
