"""bench/peers.py end to end on the smallest cell: it runs, prints the table and writes a complete JSON row.

Speed is not asserted here (bench/ is where ratios live); this keeps the suite itself from rotting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_peers_digits_onnx_qdq(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("litert_torch")  # preloaded by the script even when its backend is not asked for
    out = tmp_path / "peers.json"
    run = subprocess.run([sys.executable, str(REPO / "bench/peers.py"), "--models", "digits", "--backends", "onnx-qdq",
                          "--rounds", "2", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| digits | onnx-qdq |" in run.stdout  # the Markdown table
    (row,) = json.loads(out.read_text())
    assert row["model"] == "digits" and row["backend"] == "onnx-qdq" and "error" not in row
    assert row["quality_fp32"]["top1"] > 0.95  # the trained example, evaluated on its 300-image split
    for side in ("quality_edgeq", "quality_peer"):
        assert 0.9 < row[side]["top1"] <= 1.0 and 0.9 < row[side]["cos_mean"] <= 1.0
    assert row["recipe"]["activation_type"] == "QUInt8" or row["recipe"]["target"] == "arm64"
    assert 0.3 < row["lat_ratio_1t"] < 3 and 0.3 < row["lat_ratio_2t"] < 3  # both sides ran, timings are sane
    assert row["export_s"]["edgeq"] > 0 and row["export_s"]["peer"] > 0 and 0.5 < row["size_ratio"] < 2
