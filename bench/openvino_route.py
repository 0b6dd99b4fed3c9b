"""Which route should PyTorch sources take into OpenVINO: ``convert_model(torch module)`` or via ONNX?

Builds the ResNet-18-shaped CNN of ``bench/models.py`` (224², seeded random init), exports ``openvino-int8``
both ways (NNCF, same calibration samples), then times both IRs with the OpenVINO CPU plugin at 1 and 2
threads, interleaved: each round runs every IR ``--runs`` times (order alternating per round), and the
table reports the median over all rounds. Usage::

    .venv/bin/python bench/openvino_route.py [--rounds 7] [--runs 100] [--calib 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def export_both(calib_count: int, work: Path) -> tuple[dict[str, Path], dict[str, float], object]:
    from edgeq.models import load_model
    from edgeq.runtimes.openvino.openvino_int8 import OpenvinoInt8, OpenvinoInt8Config
    from edgeq.types import ExportOptions

    source = load_model(f"{REPO}/bench/models.py:ResNet18")
    rng = np.random.default_rng(0)
    shape = source.inputs[0].shape
    calib = [{source.inputs[0].name: rng.standard_normal(shape).astype(np.float32)} for _ in range(calib_count)]
    paths, seconds = {}, {}
    for route in ("torch", "onnx"):
        out = work / route
        out.mkdir()
        started = time.perf_counter()
        options = ExportOptions(configs={"openvino-int8": OpenvinoInt8Config(route=route)})
        files = OpenvinoInt8().export(source, calib, out, options)
        seconds[route] = time.perf_counter() - started
        paths[route] = files.main
    return paths, seconds, calib[0]


def time_interleaved(paths: dict[str, Path], feeds: dict, threads: int, rounds: int,
                     runs: int) -> tuple[dict[str, float], list[float]]:
    """Median ms per route over all rounds, and the onnx/torch ratio of medians in each round."""
    import openvino as ov

    core = ov.Core()
    from edgeq.targets.runner import openvino_config

    config = openvino_config(threads, "f32")  # pinned: the CPU plugin's default is bf16 on AVX512-BF16/AMX CPUs
    requests = {route: core.compile_model(str(path), "CPU", config).create_infer_request()
                for route, path in paths.items()}
    inputs = {name: ov.Tensor(np.ascontiguousarray(value)) for name, value in feeds.items()}
    samples: dict[str, list[float]] = {route: [] for route in requests}
    for request in requests.values():  # warm-up
        for _ in range(10):
            request.infer(inputs)
    order = list(requests)
    round_ratios = []
    for round_index in range(rounds):
        this_round: dict[str, list[float]] = {route: [] for route in requests}
        for route in order if round_index % 2 == 0 else order[::-1]:
            request = requests[route]
            for _ in range(runs):
                started = time.perf_counter()
                request.infer(inputs)
                this_round[route].append((time.perf_counter() - started) * 1000)
            samples[route] += this_round[route]
        round_ratios.append(statistics.median(this_round["onnx"]) / statistics.median(this_round["torch"]))
    return {route: statistics.median(values) for route, values in samples.items()}, round_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--calib", type=int, default=32)
    args = parser.parse_args()
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="ov-route-") as tmp:
        paths, seconds, feeds = export_both(args.calib, Path(tmp))
        core = ov.Core()
        ops = {route: len(core.read_model(str(p)).get_ops()) for route, p in paths.items()}
        sizes = {route: p.with_suffix(".bin").stat().st_size for route, p in paths.items()}
        timed = {t: time_interleaved(paths, feeds, t, args.rounds, args.runs) for t in (1, 2)}
    results = {t: medians for t, (medians, _) in timed.items()}
    print(f"ResNet-18 shape, 224x224, openvino-int8 (NNCF {args.calib} samples), OpenVINO {ov.__version__}")
    print(f"median of {args.rounds} interleaved rounds x {args.runs} runs\n")
    print(f"{'route':<8} {'1 thread ms':>12} {'2 threads ms':>13} {'export s':>9} {'IR ops':>7} {'bin MB':>7}")
    for route in paths:
        print(f"{route:<8} {results[1][route]:>12.2f} {results[2][route]:>13.2f} {seconds[route]:>9.1f} "
              f"{ops[route]:>7} {sizes[route] / 1e6:>7.2f}")
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    for t in (1, 2):
        ratios = timed[t][1]
        print(f"onnx/torch ratio of medians at {t} thread(s): {results[t]['onnx'] / results[t]['torch']:.3f} "
              f"(per round: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
