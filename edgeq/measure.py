"""Side-by-side latency comparison: several artifacts timed interleaved in one process, ratios of medians.

Single absolute times on a shared machine are noise; alternating the artifacts round by round cancels drift
(thermal, other processes), so the *ratio* is what a benchmark should quote. Used by the ``bench/`` scripts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def interleaved_latency(artifacts: Mapping[str, Path], threads: int, rounds: int = 30, runs_per_round: int = 3,
                        warmup: int = 3, feeds: dict[str, np.ndarray] | None = None, seed: int = 0,
                        settle_s: float = 0.05) -> dict[str, dict[str, float]]:
    """Median latency (ms) per artifact and its paired ratio to the first one, all measured in one session.

    Each round runs every artifact ``runs_per_round`` times back to back; the per-round minimum is kept (robust to
    preemption). Returns ``{label: {"p50_ms", "ratio_to_first"}}`` where the ratio is the median of per-round ratios.

    Before each artifact's turn the process sleeps ``settle_s``: a runtime's worker threads keep spinning for a while
    after a run, and with several thread pools in one process they steal the cores of the next session. Measured on
    BERT-mini with three ONNX Runtime sessions at 2 threads (p50 ms, FP32 / S8S8 / U8S8): alone 6.7 / 7.5 / 4.8;
    interleaved with no pause 11.8 / 9.1 / 15.7 (the order of the artifacts inverted); 20 ms pause 9.6 / 9.1 / 5.8;
    50 ms and longer 7.1 / 7.8 / 4.9. One untimed run follows the pause: without it, LiteRT's INT8 BERT-mini at 2
    threads measured 6.9 ms instead of 5.6 ms in some rounds (its threads still waking up).
    """
    from edgeq.targets.runner import open_session, random_feeds

    sessions = {label: open_session(str(path), threads=threads) for label, path in artifacts.items()}
    first_label = next(iter(sessions))
    base_feeds = feeds if feeds is not None else random_feeds(sessions[first_label], seed=seed)
    prepared = {label: s.prepare(base_feeds) for label, s in sessions.items()}
    for label, session in sessions.items():
        for _ in range(warmup):
            session.run_prepared(prepared[label])
    per_round: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(rounds):
        for label, session in sessions.items():
            time.sleep(settle_s)
            session.run_prepared(prepared[label])  # untimed: wakes this runtime's worker threads after the pause
            best = float("inf")
            for _ in range(runs_per_round):
                start = time.perf_counter_ns()
                session.run_prepared(prepared[label])
                best = min(best, (time.perf_counter_ns() - start) / 1e6)
            per_round[label].append(best)
    first = np.asarray(per_round[first_label])
    return {label: {"p50_ms": float(np.median(times)), "ratio_to_first": float(np.median(np.asarray(times) / first))}
            for label, times in per_round.items()}
