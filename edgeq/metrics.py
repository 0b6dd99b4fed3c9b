"""Measurement rules for quality: fidelity against FP32 and task metrics. Pure numpy, no framework imports."""

from __future__ import annotations

from collections.abc import Sequence

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


def fidelity(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], classifier: bool | None = None) -> dict[str, float | None]:
    """Cosine (min/mean), abs error (max/mean) and, for classifier-like outputs, top-1 agreement.

    ``reference``/``candidate``: one array per sample (the model's first output). ``classifier`` defaults to
    "output is a vector of ≥ 2 scores per sample".
    """
    if len(reference) == 0:
        raise ValueError("no samples to compare")
    cos = cosine_per_sample(reference, candidate)
    ref, cand = _flat(reference), _flat(candidate)
    err = np.abs(ref - cand)
    if classifier is None:
        classifier = ref.shape[1] >= 2 and np.asarray(reference[0]).squeeze().ndim == 1
    agreement = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()) if classifier else None
    return {
        "samples": len(reference),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "top1_agreement": agreement,
    }


def top_k_accuracy(outputs: Sequence[np.ndarray], labels: Sequence[int], k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest scores."""
    scores = _flat(outputs)
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([int(label) in row for label, row in zip(labels, top)]))
