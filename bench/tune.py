"""The tuned artifact vs each default backend, per device, side by side in one run (latency, metric, size).

Run: ``.venv/bin/python bench/tune.py [--out DIR] [--trials 20] [--max-drop 0.01] [--rounds 30]``.
Runs ``edgeq tune`` on the bundled digits example (``--device host``) unless ``DIR/pareto.json`` exists, then, for
every device of the search, times ``best/<device>`` and the artifact of every default recipe (the study's seed
trials: what ``edgeq export`` builds) interleaved in one process (``edgeq.measure.interleaved_latency``: median
of per-round minima, paired ratio to the tuned artifact, one thread) — local devices only; for other devices the
search's own cells are quoted. Metric: top-1 on ``sklearn-digits:eval`` from each artifact's manifest. Closing
note: the search wall time and trial count, and the CPU's INT8 flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeq.manifest import find_manifests  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402
from edgeq.targets.runner import cpu_flags  # noqa: E402


def run_search(out: Path, trials: int, max_drop: float) -> None:
    cmd = [sys.executable, "-m", "edgeq.cli", "tune", "edgeq/examples/digits.py:DigitsCNN", "--weights",
           "edgeq/examples/digits_cnn.safetensors", "--calib", "calibration/digits.yaml", "--eval",
           "sklearn-digits:eval", "--devices", "devices.yaml", "--device", "host", "--trials", str(trials),
           "--max-drop", str(max_drop), "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    if code not in (0, 3):
        raise SystemExit(f"edgeq tune failed with exit code {code}")


def main_file(export_dir: Path) -> tuple[Path, int, float | None, str]:
    """(main artifact file, size bytes, metric value, backend) of a one-backend export directory."""
    manifest_dir, manifest = find_manifests(export_dir)[0]
    artifact = next(a for a in manifest.artifacts if a.status == "ok")
    value = artifact.evaluation.value if artifact.evaluation else None
    return manifest_dir / str(artifact.path), artifact.size_bytes, value, artifact.backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/edgeq-bench-tune"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if not (args.out / "pareto.json").is_file():
        run_search(args.out, args.trials, args.max_drop)
    pareto = json.loads((args.out / "pareto.json").read_text())
    trials = {t["number"]: t for t in pareto["trials"]}
    seeds = [t for t in pareto["trials"] if t["seed_recipe"] and t["state"] == "COMPLETE"]
    flags = sorted(f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                                                   "amx_int8"))
    for device, number in pareto["best"].items():
        best = trials[number]
        tuned_main, tuned_size, tuned_metric, tuned_backend = main_file(args.out / "best" / device)
        rows = [(f"tuned #{number} {tuned_backend}", tuned_main, tuned_size, tuned_metric, best)]
        for seed in seeds:
            main, size, metric, backend = main_file(Path(seed["manifest_dir"]).parent)
            rows.append((f"default {backend}", main, size, metric, seed))
        local = pareto.get("devices", {}).get(device, {}).get("kind") == "local"
        if local:
            how = f"interleaved in one process on this host, 1 thread, {args.rounds} rounds"
            timed = interleaved_latency({label: main for label, main, *_ in rows}, threads=1, rounds=args.rounds)
        else:  # a remote or emulated device: the search's own cells (fresh process per cell, best thread count)
            how = "the search's cells on the device"
            first = rows[0][4]["cells"][device]["p50_ms"]
            timed = {label: {"p50_ms": t["cells"][device]["p50_ms"],
                             "ratio_to_first": t["cells"][device]["p50_ms"] / first} for label, *_, t in rows}
        print(f"\n== device {device} (p50 ms: {how}; host CPU flags: {' '.join(flags)}) ==")
        metric = next((str(t["metric"]["name"]) for t in pareto["trials"] if t.get("metric")), "metric")
        print(f"{'artifact':<34} {'p50 ms':>8} {'÷tuned':>7} {metric[:7]:>7} {'size KB':>8} {'prec':>7} {'budget':>6}")
        for label, _main, size, value, trial in rows:
            t = timed.get(label, {})
            ratio = t.get("ratio_to_first")
            print(f"{label[:34]:<34} {t.get('p50_ms', float('nan')):>8.4f} "
                  f"{(ratio if ratio else float('nan')):>7.2f} "
                  f"{(100 * value if value is not None else float('nan')):>6.2f}% {size / 1e3:>8.1f} "
                  f"{str(trial.get('precision')):>7} {'met' if trial['constraint_met'] else 'NOT':>6}")
    complete = sum(t["state"] == "COMPLETE" for t in pareto["trials"])
    distinct = len({t["key"] for t in pareto["trials"]})
    print(f"\nsearch: {len(pareto['trials'])} trials ({complete} complete, {distinct} distinct recipes), wall time "
          f"{pareto.get('total_wall_s', pareto['wall_s'])} s over {len(pareto.get('runs', [1]))} run(s), "
          f"executor {pareto['executor']}, front {pareto['front']}")
    print((args.out / "front.txt").read_text())


if __name__ == "__main__":
    main()
