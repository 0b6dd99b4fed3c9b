"""Adding a backend is one module: tests/plugins/onnx_int8_dynamic.py defines a Backend subclass and calls
``edgeq.backends.register_backend``. With nothing else changed, it exports (also in spawned parallel workers), gets
its manifest row and verification, runs in ``edgeq bench`` with its executed precision and shows in ``edgeq report``;
tests/test_contracts.py runs the backend contracts on it too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import plugins
import pytest

from edgeq import backends
from edgeq.cli import main
from edgeq.errors import BackendError
from edgeq.manifest import Manifest
from edgeq.results import CellResult

NAME = "onnx-int8-dynamic"
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_backend_from_one_module_gets_export_manifest_bench_and_report(tiny_model_file: Path, tiny_calib: Path,
                                                                        tmp_path: Path) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    with plugins.registered() as extra:
        assert extra == {NAME: "plugins.onnx_int8_dynamic:OnnxInt8Dynamic"}
        assert NAME in backends.OPT_IN and NAME not in backends.resolve(["all"])  # registered opt-in
        # --jobs 2: each backend in its own spawned worker, which finds the plugin through $EDGEQ_BACKEND_MODULES
        assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                     "--holdout-samples", "8", "-b", NAME, "-b", "onnx-fp32", "--jobs", "2", "--out", str(out)]) == 0
        manifest = Manifest.read(out / "tinycnn" / "manifest.json")
        assert [a.backend for a in manifest.artifacts] == ["onnx-fp32", NAME]  # registry order
        row = manifest.artifact(NAME)
        assert (row.status, row.runtime, row.precision) == ("ok", "onnxruntime", "dynamic"), row.error
        assert row.recipe["weights"] == "int8" and row.verification is not None
        assert row.verification.cosine_min > 0.95
        fp32 = manifest.artifact("onnx-fp32")
        assert row.size_bytes < 0.75 * fp32.size_bytes  # INT8 weights (0.58× here: a 22 KB model's graph weighs)

        devices = tmp_path / "devices.yaml"
        devices.write_text("devices:\n  - name: host\n    kind: local\n    threads: [1]\n")
        assert main(["bench", str(out), "--devices", str(devices), "--out", str(results), "--eval",
                     str(tiny_calib), "--eval-samples", "8", "--runs", "3", "--min-seconds", "0", "--warmup", "1"]) == 0
    assert NAME not in backends.REGISTRY and NAME not in backends.OPT_IN  # undone: no other test sees it

    cells = {c.backend: c for c in (CellResult.model_validate_json(p.read_text())
                                    for p in (results / "cells").glob("*.json"))}
    assert sorted(cells) == ["onnx-fp32", NAME]
    cell = cells[NAME]
    assert cell.status == "ok" and cell.precision == "dynamic", cell.error
    assert cell.executed_precision and cell.executed_precision.startswith("int8"), cell.executed  # ConvInteger/…
    assert cell.precision_match is None  # "dynamic" promises no single precision (docs/precision.md)
    assert cell.fidelity["cosine_min"] is not None and cell.fidelity["cosine_min"] > 0.95  # vs onnx-fp32 here

    assert main(["report", str(results), "--format", "md", "--out", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert NAME in report and "onnx-fp32" in report


def test_register_backend_refuses_taken_names() -> None:
    class Clash(backends.Backend):
        name = "onnx-fp32"
        runtime = "onnxruntime"
        precision = "fp32"

    with pytest.raises(BackendError, match="backend name 'onnx-fp32' is taken"):
        backends.register_backend(Clash)
    Clash.name = "all"
    with pytest.raises(BackendError, match="is taken"):
        backends.register_backend(Clash)
    assert backends.REGISTRY["onnx-fp32"].endswith(":OnnxFp32")


def test_backend_module_from_the_environment(tmp_path: Path) -> None:
    """``EDGEQ_BACKEND_MODULES`` brings a backend module to the CLI; one that cannot be imported is one line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    listed = subprocess.run([sys.executable, "-c", "from edgeq.cli import main; raise SystemExit(main(['backends']))"],
                            env={**env, backends.PLUGINS_ENV: "plugins.onnx_int8_dynamic", "COLUMNS": "200"},
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert NAME in listed.stdout
    broken = subprocess.run([sys.executable, "-c", "from edgeq.cli import main; raise SystemExit(main(['backends']))"],
                            env={**env, backends.PLUGINS_ENV: "no_such_backend_module"},
                            capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0
    assert broken.stderr.strip().splitlines() == [
        "error: EDGEQ_BACKEND_MODULES: cannot import backend module 'no_such_backend_module': "
        "No module named 'no_such_backend_module'"]
