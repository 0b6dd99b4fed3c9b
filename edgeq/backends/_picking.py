"""Choosing among quantization candidates by measurement on the user's own calibration samples (never held-out ones).

Runtime-independent: a candidate is any artifact (or in-memory model) that can be run on a sample. It is scored by
how close its outputs stay to the FP32 model's on the first ``SCORE_SAMPLES`` calibration samples: the worst output's
fidelity (the floored cosine of the manifest, ``edgeq.metrics.floored_cosine_per_sample``) on the worst sample first,
then the mean over samples of each sample's worst output. Every output counts: a box head as much as a score head.
The first candidate listed wins ties, so list the default first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from edgeq.metrics import floored_cosine_per_sample, match_outputs
from edgeq.types import Feeds

SCORE_SAMPLES = 16
"""Calibration samples each candidate is scored on (the same count onnx-qdq's trials use)."""

Outputs = list[np.ndarray]
Score = tuple[float, float]
Key = TypeVar("Key")


def scoring_samples(calib: Iterable[Feeds], count: int = SCORE_SAMPLES) -> list[Feeds]:
    """The first ``count`` calibration samples (a streaming set is read once here)."""
    return list(itertools.islice(iter(calib), count))


def closeness(reference: Sequence[Outputs], candidate: Sequence[Outputs]) -> Score:
    """(worst, mean) over samples of the worst output's floored cosine, ``candidate`` vs ``reference`` (all outputs of
    sample i at index i; a runtime that reorders outputs is matched by size, ``edgeq.metrics.match_outputs``)."""
    if not reference:
        return 0.0, 0.0
    matched = [match_outputs(ref, got) for ref, got in zip(reference, candidate)]
    per_output = [floored_cosine_per_sample([r[k] for r in reference], [m[k] for m in matched])
                  for k in range(len(reference[0]))]
    worst_per_sample = np.min(np.stack(per_output), axis=0)
    return float(worst_per_sample.min()), float(worst_per_sample.mean())


def run_all(run: Callable[[Feeds], Outputs], samples: Sequence[Feeds]) -> list[Outputs]:
    """Every output of ``run`` on each sample, as float32 arrays."""
    return [[np.asarray(o, np.float32) for o in run(feeds)] for feeds in samples]


def best(scores: dict[Key, Score]) -> Key:
    """The key with the highest (worst, mean) score; the first inserted wins ties."""
    return max(scores, key=lambda key: scores[key])


def describe(scores: dict[Key, Score], label: Callable[[Key], str] = str) -> str:
    """"label 0.9934/0.9981, …" (worst/mean over calibration samples) for notes and the manifest."""
    return ", ".join(f"{label(key)} {worst:.4f}/{mean:.4f}" for key, (worst, mean) in scores.items())
