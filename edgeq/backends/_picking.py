"""Choosing among quantization candidates by measurement on the user's own calibration samples (never held-out ones).

Runtime-independent: a candidate is any artifact (or in-memory model) that can be run on a sample. It is scored by
how close its outputs stay to the FP32 model's: the worst output's fidelity (the floored cosine of the manifest,
``edgeq.metrics.floored_cosine_per_sample``) on the worst sample first, then the mean over samples of each sample's
worst output. Every output counts: a box head as much as a score head. The first candidate listed wins ties, so list
the default first.

Scored on the samples a candidate was calibrated on, a tighter range method always looks better than it is (NNCF's
histogram ranges fit 16 calibration samples of the PP-OCR orientation classifier to cosine 1.0000 and gave 0.959 on
held-out photos, against 0.994 for min/max): ``trial_split`` holds the last samples back from the trials' calibration
and scores on them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import TypeVar

import numpy as np

from edgeq.metrics import floored_cosine_per_sample, match_outputs
from edgeq.types import Feeds

SCORE_SAMPLES = 16
"""Calibration samples each candidate is scored on (the same count onnx-qdq's trials use)."""

Outputs = list[np.ndarray]
Score = tuple[float, float]
Key = TypeVar("Key")


TRIAL_SUBSET = 64
"""At most this many calibration samples calibrate each trial (the winner is then calibrated on all of them)."""
MIN_HELD_BACK = 4
"""Fewer calibration samples than 2 × this: no trials (nothing to score them on)."""


class Head:
    """The first ``count`` samples of a re-iterable sample set, itself re-iterable and sized (streams; holds none)."""

    def __init__(self, samples: Iterable[Feeds], count: int):
        self.samples, self.count = samples, count

    def __iter__(self) -> Iterator[Feeds]:
        return itertools.islice(iter(self.samples), self.count)

    def __len__(self) -> int:
        return self.count


def trial_split(calib: Sized, score_samples: int = SCORE_SAMPLES) -> tuple[Head, list[Feeds]] | None:
    """(the samples that calibrate each trial, the held-back samples that score them): the last
    min(``score_samples``, N/4) samples are held back, at most ``TRIAL_SUBSET`` of the others calibrate. None when
    there are too few samples."""
    total = len(calib)
    held = min(score_samples, total // 4)
    if held < MIN_HELD_BACK:
        return None
    return Head(calib, min(total - held, TRIAL_SUBSET)), list(itertools.islice(iter(calib), total - held, total))


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
