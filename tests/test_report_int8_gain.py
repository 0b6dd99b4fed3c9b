"""The report explains a modest INT8 speed-up on x86 without VNNI (and stays quiet with VNNI)."""

from __future__ import annotations

from report_fixtures import X86_FLAGS, cell

from edgeq.report.bench_report import build_rows, find_anomalies


def test_modest_int8_gain_without_vnni_is_explained_once_per_device() -> None:
    system = {"machine": "x86_64", "int8_flags": {**X86_FLAGS, "avx512_vnni": False, "avx_vnni": False}}
    cells = [cell("epyc", "onnx-fp32", 2, 12.0, system=system), cell("epyc", "onnx-qdq", 2, 6.0, system=system),
             cell("epyc", "openvino-fp32", 2, 10.0, system=system),
             cell("epyc", "openvino-int8", 2, 5.5, system=system)]
    notes = [n for n in find_anomalies(cells, build_rows(cells)) if "VPMADDUBSW" in n]
    assert len(notes) == 1 and notes[0].startswith("INT8 is at most 2.00× faster than FP32 on epyc (onnx-qdq"), notes
    with_vnni = [cell("box", "onnx-fp32", 2, 12.0), cell("box", "onnx-qdq", 2, 6.0)]
    assert not any("VPMADDUBSW" in n for n in find_anomalies(with_vnni, build_rows(with_vnni)))
    fast = [cell("epyc", "onnx-fp32", 2, 12.0, system=system), cell("epyc", "onnx-qdq", 2, 4.0, system=system)]
    assert not any("VPMADDUBSW" in n for n in find_anomalies(fast, build_rows(fast)))
