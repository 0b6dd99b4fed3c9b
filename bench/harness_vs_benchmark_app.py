"""p50 latency from ``edgeq bench`` (edgeq/targets/runner.py) vs OpenVINO's ``benchmark_app`` on the same IR, same threads.

Interleaved in one run: for each round, one runner cell and one benchmark_app run (sync API, 1 stream set explicitly (benchmark_app needs `-hint none` for that),
same thread count, same duration), alternating which goes first. Prints the median of per-round p50 ratios
(goal: within ±5%). Run: ``.venv/bin/python bench/harness_vs_benchmark_app.py [--rounds 5] [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgeq  # noqa: E402


def runner_p50(xml: Path, threads: int, seconds: float) -> float:
    out = subprocess.run([sys.executable, str(REPO / "edgeq" / "targets" / "runner.py"), "run", str(xml), "--threads", str(threads),
                          "--min-seconds", str(seconds), "--runs", "50"], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["latency"]["p50_ms"])


def benchmark_app_p50(xml: Path, threads: int, seconds: float) -> float:
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    out = subprocess.run([tool, "-m", str(xml), "-d", "CPU", "-api", "sync", "-hint", "none", "-nstreams", "1",
                          "-nthreads", str(threads), "-t", str(int(max(1, seconds)))],
                         capture_output=True, text=True, check=True)
    match = re.search(r"Median:\s+([\d.]+)\s+ms", out.stdout)
    if not match:
        raise RuntimeError("benchmark_app printed no median:\n" + out.stdout[-2000:])
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        calib = tmp / "calib.npy"
        np.save(calib, np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
        manifest = edgeq.export(f"{REPO}/bench/models.py:ResNet18", calib, backends=["openvino-fp32", "openvino-int8"],
                                out=tmp / "out", calib_samples=24, holdout_samples=4)
        print(f"{'artifact':<15}{'thr':>4}{'edgeq p50 ms':>14}{'benchmark_app p50 ms':>22}{'ratio (median)':>16}")
        for art in manifest.artifacts:
            if art.status != "ok":
                print(f"{art.backend}: {art.status} {art.error}")
                continue
            xml = tmp / "out" / manifest.model.name / art.path
            for threads in (1, 2):
                ours, theirs, ratios = [], [], []
                for r in range(args.rounds):  # alternate which tool goes first
                    if r % 2 == 0:
                        mine = runner_p50(xml, threads, args.seconds)
                        app = benchmark_app_p50(xml, threads, args.seconds)
                    else:
                        app = benchmark_app_p50(xml, threads, args.seconds)
                        mine = runner_p50(xml, threads, args.seconds)
                    ours.append(mine)
                    theirs.append(app)
                    ratios.append(mine / app)
                print(f"{art.backend:<15}{threads:>4}{np.median(ours):>14.3f}{np.median(theirs):>22.3f}{np.median(ratios):>16.3f}")


if __name__ == "__main__":
    main()
