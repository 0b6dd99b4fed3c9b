"""Choosing among quantization candidates by measurement on the user's own calibration samples (never held-out ones).

Runtime-independent: a candidate is any artifact (or in-memory model) that can be run on a sample. It is scored by
how close its outputs stay to the FP32 model's: the worst output's fidelity (the floored cosine of the manifest,
``edgeq.metrics.floored_cosine_per_sample``) on the worst sample first, then the mean over samples of each sample's
worst output. Every output counts: a box head as much as a score head. The first candidate listed is the default: another replaces it only
when clearly better (``CLEAR_WIN``).

Scored on the samples a candidate was calibrated on, a tighter range method always looks better than it is (NNCF's
histogram ranges fit 16 calibration samples of the PP-OCR orientation classifier to cosine 1.0000 and gave 0.959 on
held-out photos, against 0.994 for min/max): ``trial_split`` holds the last samples back from the trials' calibration
and scores on them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, TypeVar

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


CLEAR_WIN = 0.25
"""An alternative replaces the first (default) candidate only if it cuts the default's error (1 − cosine) by at least
this fraction, both on the worst sample and on the mean: a few held-back samples rank close candidates by noise
(PP-OCRv6 text recognition: histogram ranges 0.9711 vs 0.9660 on 4 held-back samples, then 0.898 vs 0.917 on the
held-out ones)."""


def best(scores: dict[Key, Score], clear_win: float = CLEAR_WIN) -> Key:
    """The first key (the default), unless others cut its error by ``clear_win`` on both the worst sample and the
    mean; then the highest (worst, mean) of those."""
    keys = list(scores)
    default_worst, default_mean = scores[keys[0]]

    def clearly_better(key: Key) -> bool:
        worst, mean = scores[key]
        return scores[key] > scores[keys[0]] and (1.0 - worst) <= (1.0 - clear_win) * (1.0 - default_worst) and \
            (1.0 - mean) <= (1.0 - clear_win) * (1.0 - default_mean)

    winners = [key for key in keys[1:] if clearly_better(key)]
    return max(winners, key=lambda key: scores[key]) if winners else keys[0]


def describe(scores: dict[Key, Score], label: Callable[[Key], str] = str) -> str:
    """"label 0.9934/0.9981, …" (worst/mean over calibration samples) for notes and the manifest."""
    return ", ".join(f"{label(key)} {worst:.4f}/{mean:.4f}" for key, (worst, mean) in scores.items())


def spread(items: list[str], stride: int = 4) -> list[str]:
    """``items`` reordered every ``stride``-th first: a ranking cut short by its time budget has seen the whole graph
    at a coarser step instead of only its first layers."""
    return [items[i] for i in sorted(range(len(items)), key=lambda i: (i % stride, i))]


RANK_SECONDS = 240.0
"""Wall-clock budget of a fidelity-floor ranking; what it did not reach in time is not a candidate (noted)."""
RANK_SAMPLES = 4
"""Held-back samples a fidelity-floor ranking runs on (one inference each per quantizer); candidates are scored on
all of them."""
MIN_FLOOR_SAMPLES = 8
"""Held-back samples a fidelity floor needs (N >= 32 calibration samples): it ranks on ``RANK_SAMPLES`` of them and
picks among up to four candidates on all of them. With 4 (16 calibration samples) the picks followed noise:
openvino-int8 on PP-OCRv6-tiny recognition went 0.966 -> 0.983 on the 4 held-back samples and 0.917 -> 0.895 held
out (docs/zoo.md)."""
FLOOR_STEPS = (1, 2, 4, 8)
"""How many of the top-ranked quantizers each fidelity-floor candidate changes."""
FLOOR_MIN_GAIN = 0.002
"""A fidelity-floor candidate replaces the plain model only when its worst-sample cosine is this much higher."""


def floor_applies(held_back: Sized | None) -> bool:
    """Whether a fidelity floor may choose on these held-back samples (``MIN_FLOOR_SAMPLES``)."""
    return held_back is not None and len(held_back) >= MIN_FLOOR_SAMPLES


def floor_counts(available: int) -> list[int]:
    """The candidate sizes of a fidelity floor when ``available`` quantizers did damage: 1, 2, 4, 8, capped."""
    return sorted({min(step, available) for step in FLOOR_STEPS} - {0})


def rank_alone(names: list[str], mean_with_only: Callable[[str | None], float],
               budget_s: float = RANK_SECONDS) -> list[tuple[str, float]]:
    """Quantizers sorted by the damage each does alone, worst first: ``mean_with_only(name)`` is the mean cosine with
    only that activation quantizer kept (weights stay quantized), ``mean_with_only(None)`` with none; damage is the
    drop between them. Several layers that each wreck the output alone (PP-OCRv5 recognition's stem convs, 0.63-0.67
    each) show no gain when removed one at a time, hence one kept at a time. Visited ``spread`` over the graph, until
    ``budget_s``."""
    base = mean_with_only(None)
    started, damage = time.perf_counter(), []
    for name in spread(names):
        if time.perf_counter() - started > budget_s:
            break
        damage.append((name, base - mean_with_only(name)))
    return sorted(damage, key=lambda item: -item[1])


class ChildScorer:
    """Scores artifacts against the source model's FP32 outputs (``source.reference``) on fixed samples; each artifact
    runs in a runner child process (``edgeq.verification.run_artifact``), so a runtime that aborts on one candidate
    costs that candidate, not the export."""

    def __init__(self, source: Any, samples: Iterable[Feeds]):
        self.samples = list(samples)
        self._source = source
        self._reference: list[Outputs] | None = None

    def reference(self) -> list[Outputs]:
        if self._reference is None:
            self._reference = run_all(self._source.reference, self.samples)
        return self._reference

    def __call__(self, main: Path) -> Score:
        import tempfile

        from edgeq.verification import SampleFiles, run_artifact

        with tempfile.TemporaryDirectory(prefix=".score-", dir=main.parent.parent) as tmp:
            _, outputs = run_artifact(main, SampleFiles(holdout=self.samples), Path(tmp) / "runner.log")
        return closeness(self.reference(), [[np.asarray(o, np.float32) for o in sample] for sample in outputs])


def floor_candidates(available: int, build: Callable[[int], tuple[Sequence[float], Any]], floor: float,
                     label: str) -> tuple[dict[int, tuple[Sequence[float], Any]], str]:
    """The fidelity floor's candidates: ``build(count)`` makes and scores the one that changes the top ``count`` of
    ``available`` ranked quantizers (``floor_counts``), returning (scores with the worst-sample cosine first, what
    it changed). Stops at the first that reaches ``floor`` or fails; returns (by count, "" or the failure)."""
    from edgeq.errors import failure_reason

    tried: dict[int, tuple[Sequence[float], Any]] = {}
    for count in floor_counts(available):
        try:
            tried[count] = build(count)
        except Exception as exc:  # noqa: BLE001 - e.g. a graph the runtime cannot load: keep what was built
            return tried, f"; {count} {label} failed: {failure_reason(exc, 120)}"
        if tried[count][0][0] >= floor:
            break
    return tried, ""


def ranked_note(ranked: int, total: int, what: str) -> str:
    """"12 of 40 activations ranked (time budget)" for a floor's note."""
    return f"{ranked} of {total} {what} ranked" + ("" if ranked == total else " (time budget)")
