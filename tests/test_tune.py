"""edgeq tune: the search space from the registry, the Optuna loop, caching/resume after Ctrl-C, results, Ray.

The searches use the bundled digits example restricted to ONNX Runtime backends and short timings, so each trial
takes seconds; the Ray tests are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeq.errors import ConfigError
from edgeq.tuning.space import Recipe, build_space, default_params

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = [str(REPO / "edgeq/examples/digits.py") + ":DigitsCNN", "--weights",
           str(REPO / "edgeq/examples/digits_cnn.safetensors"), "--calib", str(REPO / "calibration/digits.yaml"),
           "--eval", "sklearn-digits:eval", "--eval-samples", "120"]
FAST = ["--runs", "3", "--min-seconds", "0.05"]


def _devices(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n" + "".join(f"  - {{name: {n}, kind: local, threads: [1]}}\n" for n in names))
    return path


def _tune_cmd(out: Path, devices: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeq.cli", "tune", *EXAMPLE, "--devices", str(devices), "--out", str(out),
            *FAST, *extra]


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# Search space
# ---------------------------------------------------------------------------------------------------------------
def test_space_comes_from_the_registry_and_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq import backends

    space = build_space(["onnx-fp32", "onnx-qdq", "openvino-int8"], budget=True)
    qdq = space.backends["onnx-qdq"]
    assert set(qdq.calib_methods) == {"minmax", "percentile", "entropy"}  # ORT's, read from the backend module
    assert qdq.calib_methods[0] == "minmax" and max(qdq.fallback) > 0
    assert space.backends["openvino-int8"].calib_methods == ["minmax", "percentile", "mse"]
    assert space.backends["openvino-int8"].accuracy_control == [False, True]  # budget given
    assert space.backends["onnx-fp32"].calib_methods == [] and space.backends["onnx-fp32"].fallback == [0]
    assert space.backends["onnx-qdq"].qat_epochs == [0]  # no --train: no QAT
    trained = build_space(["onnx-qdq", "onnx-fp32"], train=True, torch_source=True)
    assert trained.backends["onnx-qdq"].qat_epochs == [0, 1, 2] and trained.backends["onnx-fp32"].qat_epochs == [0]
    seeds = default_params(space)
    assert [s["backend"] for s in seeds] == ["onnx-fp32", "onnx-qdq", "openvino-int8"]
    assert seeds[1]["onnx-qdq.calib_method"] == "minmax" and seeds[1]["onnx-qdq.fallback"] == 0

    # a backend registered tomorrow joins the search without touching edgeq/tuning
    monkeypatch.setitem(backends.REGISTRY, "onnx-new", "edgeq.runtimes.onnx.onnx_qdq:OnnxQdq")
    assert "onnx-new" in build_space().backends


def test_space_file_restricts_and_rejects_unsupported_choices(tmp_path: Path) -> None:
    good = tmp_path / "space.yaml"
    good.write_text("backends:\n  onnx-qdq: {calib_methods: [percentile], fallback: [0, 2]}\n  onnx-fp32: {}\n")
    space = build_space(space_file=good)
    assert list(space.backends) == ["onnx-fp32", "onnx-qdq"]
    assert space.backends["onnx-qdq"].calib_methods == ["percentile"] and space.backends["onnx-qdq"].fallback == [0, 2]
    for body, expect in [("backends:\n  onnx-qdq: {calib_methods: [mse]}\n", "does not support calib_methods 'mse'"),
                         ("backends:\n  nope: {}\n", "'nope' is not in the search"),
                         ("backends:\n  onnx-qdq: {colour: red}\n", "colour"),
                         ("[1, 2]\n", "expected 'backends:'")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(body)
        with pytest.raises(ConfigError, match=expect):
            build_space(space_file=bad)


def test_recipe_key_is_stable_and_sensitive() -> None:
    a = Recipe(backend="onnx-qdq", calib_method="minmax", calib_samples=100)
    assert a.key("ctx") == Recipe(backend="onnx-qdq", calib_method="minmax", calib_samples=100).key("ctx")
    assert a.key("ctx") != a.model_copy(update={"fallback": 1}).key("ctx") != a.key("other-model")


def test_bad_options_fail_in_one_line(tmp_path: Path) -> None:
    devices = _devices(tmp_path, ["host"])
    for extra, expect in [(["--max-drop", "0.01", "--min-fidelity", "0.99"], "cannot be combined"),
                          (["--objective", "speed"], "--objective must be one of"),
                          (["--device", "nope"], "unknown device 'nope'")]:
        proc = _run(_tune_cmd(tmp_path / "o", devices, *extra), timeout=120)
        assert proc.returncode != 0
        assert expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# The search: results, best/, bench + package, Ctrl-C and resume
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_interrupted_search_resumes_without_rebuilding_or_remeasuring(tmp_path: Path) -> None:
    out, devices = tmp_path / "search", _devices(tmp_path, ["host"])
    cmd = _tune_cmd(out, devices, "--device", "host", "-b", "onnx-fp32", "-b", "onnx-qdq", "--trials", "5",
                    "--max-drop", "0.02", "--batch", "1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # Ctrl-C once two trials are measured
        if (out / "events.jsonl").is_file() and sum(e["event"] == "cell" for e in _events(out)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    printed, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, printed[-3000:]
    first = _events(out)
    measured = {e["key"] for e in first if e["event"] == "cell" and e["status"] == "ok"}
    built = {e["key"] for e in first if e["event"] == "build"}
    assert len(measured) >= 2

    done = _run(cmd)
    assert done.returncode == 0, done.stdout + done.stderr
    second = _events(out)[len(first):]
    assert not [e for e in second if e["event"] == "build" and e["key"] in built]  # never rebuilt
    assert not [e for e in second if e["event"] == "cell" and e["key"] in measured]  # never re-measured
    pareto = json.loads((out / "pareto.json").read_text())
    finished = [t for t in pareto["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 5

    # results: every trial listed with its recipe/objectives/constraint; the front; best/host as an export dir
    assert pareto["front"] and all(t["on_front"] == (t["number"] in pareto["front"]) for t in pareto["trials"])
    complete = [t for t in finished if t["state"] == "COMPLETE"]
    assert all(set(t["objectives"]) == {"latency_ms@host", "metric", "fidelity"} for t in complete)
    assert {t["recipe"]["backend"] for t in complete} == {"onnx-fp32", "onnx-qdq"}  # seeded with both defaults
    assert pareto["budget_met"] and pareto["best"]["host"] in [t["number"] for t in complete]
    best = out / "best" / "host"
    tune_info = json.loads((best / "tune.json").read_text())
    assert tune_info["constraint_met"] and tune_info["metric"]["drop"] <= 0.02
    assert (out / "report.html").read_text().count("Pareto front") >= 2
    for line in (out / "front.txt").read_text().splitlines():
        assert len(line) <= 80

    bench = _run([sys.executable, "-m", "edgeq.cli", "bench", str(best), "--devices", str(devices), "--out",
                  str(tmp_path / "bench"), "--runs", "3", "--min-seconds", "0.05"])
    assert bench.returncode == 0, bench.stdout + bench.stderr
    package = _run([sys.executable, "-m", "edgeq.cli", "package", str(best), "--results", str(tmp_path / "bench"),
                    "--out", str(tmp_path / "best.tar.gz")])
    assert package.returncode == 0, package.stdout + package.stderr
    verify = _run([sys.executable, "-m", "edgeq.cli", "package", "--verify", str(tmp_path / "best.tar.gz")])
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.slow
def test_budget_not_met_keeps_the_closest_and_exits_3(tmp_path: Path) -> None:
    """Through the Python API (edgeq.tune mirrors the CLI; the CLI exits with result.exit_code)."""
    import edgeq

    out = tmp_path / "search"
    result = edgeq.tune(EXAMPLE[0], EXAMPLE[4], "sklearn-digits:eval", out=str(out), weights=EXAMPLE[2],
                        eval_samples=120, devices=_devices(tmp_path, ["host"]), device="host", backends=["onnx-qdq"],
                        trials=2, min_fidelity=1.0, space_file=_one_recipe_space(tmp_path), runs=3, min_seconds=0.05)
    assert result.exit_code == 3 and not result.budget_met
    pareto = json.loads((out / "pareto.json").read_text())
    assert not pareto["budget_met"] and pareto["best"]["host"] is not None
    assert pareto["trials"][0]["constraint"] > 0  # 1.0 − cosine min of a real INT8 artifact
    info = json.loads((out / "best" / "host" / "tune.json").read_text())
    assert info["constraint_met"] is False and "closest" in info["note"]
    assert list((out / "best" / "host").rglob("manifest.json"))


def _one_recipe_space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("backends:\n  onnx-qdq: {calib_methods: [minmax], calib_samples: [100], fallback: [0]}\n")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_gives_the_same_front_as_local_and_one_cell_per_device(tmp_path: Path) -> None:
    """Same seed → same recipes and the same front (size and metric: deterministic objectives) on both executors;
    on Ray, two local devices each run one cell at a time while cells of different devices may overlap."""
    devices = _devices(tmp_path, ["dev-a", "dev-b"])
    common = ["--device", "dev-a", "--device", "dev-b", "-b", "onnx-fp32", "-b", "onnx-qdq", "--trials", "6",
              "--objective", "size", "--seed", "7", "--batch", "3"]
    local = _run(_tune_cmd(tmp_path / "local", devices, *common))
    assert local.returncode == 0, local.stdout + local.stderr
    ray = _run(_tune_cmd(tmp_path / "ray", devices, *common, "--ray"))
    assert ray.returncode == 0, ray.stdout + ray.stderr
    assert "executor ray" in ray.stdout
    results = [json.loads((tmp_path / name / "pareto.json").read_text()) for name in ("local", "ray")]
    assert [t["params"] for t in results[0]["trials"]] == [t["params"] for t in results[1]["trials"]]
    assert results[0]["front"] == results[1]["front"] and results[0]["front"]

    cells = [e for e in _events(tmp_path / "ray") if e["event"] == "cell"]
    assert {e["device"] for e in cells} == {"dev-a", "dev-b"}
    for device in ("dev-a", "dev-b"):
        spans = sorted((e["started"], e["ended"]) for e in cells if e["device"] == device)
        assert len(spans) >= 3
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
