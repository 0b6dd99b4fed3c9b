"""edgeq report: loading cells, derived columns (speed-up, Δ metric, fidelity), findings, every output format."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from report_fixtures import A72_FLAGS, X86_FLAGS, cell, standard_cells, write_results

from edgeq.cli import main
from edgeq.errors import EdgeqError
from edgeq.report.bench_render import render
from edgeq.report.bench_report import (
    ReportRow,
    build_report,
    build_rows,
    find_anomalies,
    int8_support,
    load_results,
    pareto_front,
)


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results")


def _row(rows: list[ReportRow], device: str, backend: str, threads: int = 1) -> ReportRow:
    (found,) = [r for r in rows if r.device == device and r.backend == backend and r.threads == threads]
    return found


def test_derived_columns() -> None:
    rows = build_rows(standard_cells())
    qdq = _row(rows, "host", "onnx-qdq")
    assert qdq.speedup == pytest.approx(12.5 / 4.0)
    assert qdq.speedup_reference == "onnx-fp32"
    assert qdq.metric_name == "top1" and qdq.metric == pytest.approx(0.905)
    assert qdq.metric_delta == pytest.approx(-0.7)
    assert qdq.delta_same_runtime and qdq.delta_reference == "onnx-fp32"
    assert qdq.size_mb == pytest.approx(11.9)
    assert (qdq.cosine_min, qdq.top1_agreement) == (pytest.approx(0.9968), pytest.approx(0.985))
    # same threads only: the 2-thread INT8 is compared with the 2-thread FP32
    assert _row(rows, "host", "onnx-qdq", 2).speedup == pytest.approx(7.0 / 2.5)
    # same runtime: TFLite INT8 against TFLite FP32, not ONNX FP32
    tfl = _row(rows, "host", "tflite-int8")
    assert tfl.speedup == pytest.approx(20.6 / 5.8)
    assert tfl.metric_delta == pytest.approx(-3.2)
    # no OpenVINO FP32: no speed-up; Δ falls back to another runtime's FP32 and says so
    ov = _row(rows, "host", "openvino-int8")
    assert ov.speedup is None
    assert ov.metric_delta == pytest.approx(-0.3) and not ov.delta_same_runtime
    # FP32 reference: speed-up 1, fidelity of the reference with itself
    fp32 = _row(rows, "host", "onnx-fp32")
    assert fp32.speedup == pytest.approx(1.0) and fp32.metric_delta == pytest.approx(0.0)
    assert fp32.cosine_min == 1.0
    # slower INT8 on the board: speed-up below 1
    assert _row(rows, "pi4", "onnx-qdq").speedup == pytest.approx(40.0 / 52.0)
    # emulated device: timings shown, never compared
    emu = _row(rows, "qemu-arm64", "onnx-qdq")
    assert emu.emulated and emu.p50_ms == 1200.0 and emu.speedup is None
    assert emu.metric_delta == pytest.approx(-0.8)  # accuracy is real under emulation


def test_failed_cells_keep_their_reason() -> None:
    rows = build_rows(standard_cells())
    failed = _row(rows, "pi4", "tflite-int8")
    assert failed.status == "failed" and failed.error == "runner died with SIGSEGV (signal 11)"
    assert failed.p50_ms is None and failed.speedup is None and failed.metric is None


def test_rows_grouped_by_device_emulated_not_ranked() -> None:
    cells = standard_cells() + [cell("qemu-arm64", "onnx-qdq", 2, 300.0, top1=0.904, cos=0.997, agree=0.99,
                                     kind="qemu", emulated=True)]
    rows = build_rows(cells)
    devices = [r.device for r in rows]
    assert devices == sorted(devices, key=lambda d: (d == "qemu-arm64", d))  # real devices first, grouped
    host_1 = [r for r in rows if r.device == "host" and r.threads == 1 and r.status == "ok"]
    assert [r.p50_ms for r in host_1] == sorted(r.p50_ms for r in host_1)  # real devices: fastest first
    emu_1 = [r.backend for r in rows if r.device == "qemu-arm64" and r.threads == 1]
    assert emu_1 == ["onnx-fp32", "onnx-qdq"]  # fixed order, although INT8 is "faster" or slower


def test_anomalies_in_plain_words() -> None:
    cells = standard_cells()
    notes = find_anomalies(cells, build_rows(cells))
    text = "\n".join(notes)
    assert ("INT8 slower than FP32 on pi4 (onnxruntime onnx-qdq, 1 thread): 1.30× the FP32 p50; "
            "CPU lacks dotprod (no asimddp)") in notes
    assert "top-1 drops 3.2 points vs FP32 on host (tflite-int8)" in notes
    assert "low fidelity vs FP32 on host (tflite-int8): cosine min 0.9812" in notes
    assert re.search(r"p99 is 4\.0× p50 on host \(onnx-fp32, 2 threads; 1 of 7 cells\): noisy machine", text)
    assert "tflite-int8 failed on pi4 (1 thread): runner died with SIGSEGV (signal 11)" in notes
    assert "qemu-arm64 is emulated" in text
    # not flagged: small drops, the emulated device's slow INT8, devices without noise
    assert not any("drops" in n and "onnx-qdq" in n for n in notes)
    assert not any("slower than FP32 on qemu-arm64" in n for n in notes)
    assert not any("noisy" in n and "pi4" in n for n in notes)


def test_anomaly_hints_follow_cpu_flags() -> None:
    vnni = cell("box", "onnx-fp32", 1, 10.0), cell("box", "onnx-qdq", 1, 12.0)
    notes = find_anomalies(list(vnni), build_rows(list(vnni)))
    assert any("INT8 slower than FP32 on box" in n and "CPU has VNNI (avx512_vnni)" in n for n in notes)
    no_vnni = {**X86_FLAGS, "avx512_vnni": False}
    system = {"machine": "x86_64", "int8_flags": no_vnni}
    plain = [cell("box", "onnx-fp32", 1, 10.0, system=system), cell("box", "onnx-qdq", 1, 12.0, system=system)]
    assert any("CPU lacks VNNI" in n for n in find_anomalies(plain, build_rows(plain)))
    fast = [cell("box", "onnx-fp32", 1, 10.0), cell("box", "onnx-qdq", 1, 4.0)]
    assert find_anomalies(fast, build_rows(fast)) == []


def test_threads_slower_anomaly() -> None:
    cells = [cell("host", "onnx-qdq", 1, 0.05), cell("host", "onnx-qdq", 2, 0.08)]
    notes = find_anomalies(cells, build_rows(cells))
    assert any(n.startswith("onnx-qdq on host is slower with 2 threads than with 1") for n in notes)


def test_int8_support_from_flags() -> None:
    assert int8_support({"machine": "x86_64", "int8_flags": X86_FLAGS})[0] is True
    assert int8_support({"machine": "aarch64", "int8_flags": A72_FLAGS}) == (False, "CPU lacks dotprod (no asimddp)")
    assert int8_support({"machine": "aarch64", "int8_flags": {**A72_FLAGS, "asimddp": True}})[0] is True
    assert int8_support({"machine": "aarch64", "cpu_flags": ["asimd", "asimddp", "i8mm"]}) == (
        True, "CPU has dotprod (asimddp) and i8mm")
    assert int8_support({"machine": "aarch64", "int8_flags": X86_FLAGS, "cpuinfo_matches_machine": False})[0] is None
    assert int8_support({}) == (None, "CPU flags unknown")


def test_pareto_front() -> None:
    # (latency, accuracy): B dominates D; A is fastest; C is most accurate; E ties A on latency but is worse
    points = [(1.0, 80.0), (2.0, 85.0), (5.0, 90.0), (3.0, 84.0), (1.0, 70.0)]
    assert pareto_front(points) == [0, 1, 2]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # identical points do not dominate each other


def test_load_results_skips_and_flags_unreadable(results_dir: Path) -> None:
    (results_dir / "cells" / "broken.json").write_text("{not json")
    (results_dir / "cells" / "wrong.json").write_text(json.dumps({"status": "ok"}))
    problems: list[str] = []
    cells = load_results(results_dir, problems.append)
    assert len(cells) == len(standard_cells())
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any(p.startswith("skipped unreadable cell file broken.json") for p in problems)
    report = build_report(results_dir)
    assert len(report.problems) == 2
    assert "broken.json" in render(report, "md")


def test_load_results_falls_back_to_results_json(tmp_path: Path) -> None:
    only_summary = write_results(tmp_path / "r")
    for path in (only_summary / "cells").iterdir():
        path.unlink()
    (only_summary / "cells").rmdir()
    assert len(load_results(only_summary)) == len(standard_cells())
    assert len(load_results(only_summary / "results.json")) == len(standard_cells())
    with pytest.raises(EdgeqError, match="results directory not found"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeqError, match="no benchmark results in"):
        load_results(tmp_path / "empty")


def test_markdown_csv_json(results_dir: Path) -> None:
    report = build_report(results_dir)
    md = render(report, "md")
    assert "## host (local)" in md and "## qemu-arm64 (qemu) — emulated" in md
    assert md.index("## pi4") < md.index("## qemu-arm64")
    assert "| onnx-qdq | int8 | 1 | 11.900 |" in md
    assert "3.12×" in md and "-3.2 pt" in md and "-0.3 pt*" in md
    assert "FAILED: runner killed after 600 s (timeout)" in md
    assert "- top-1 drops 3.2 points vs FP32 on host (tflite-int8)" in md

    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert len(rows) == len(standard_cells())
    qdq = next(r for r in rows if r["device"] == "host" and r["backend"] == "onnx-qdq" and r["threads"] == "1")
    assert float(qdq["speedup"]) == pytest.approx(3.125) and float(qdq["metric_delta"]) == pytest.approx(-0.7)
    failed = next(r for r in rows if r["status"] == "failed" and r["device"] == "pi4")
    assert failed["error"] == "runner died with SIGSEGV (signal 11)" and failed["p50_ms"] == ""

    data = json.loads(render(report, "json"))
    assert {r["device"] for r in data["rows"]} == {"host", "pi4", "qemu-arm64"}
    assert any("CPU lacks dotprod" in n for n in data["anomalies"])
    emu = [r for r in data["rows"] if r["emulated"]]
    assert emu and all(r["speedup"] is None for r in emu)


def test_table_grouped_by_device(results_dir: Path) -> None:
    text = render(build_report(results_dir), "table")
    assert text.index("host (local)") < text.index("pi4 (ssh)") < text.index("qemu-arm64 (qemu) · EMULATED")
    assert "FAILED tflite-int8 ×1: runner died with SIGSEGV (signal 11)" in text
    assert "Findings" in text and "CPU lacks dotprod" in text


def test_html_is_self_contained_with_plots(results_dir: Path) -> None:
    page = render(build_report(results_dir), "html")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]+src=", page), "every script must be inline"
    outside_scripts = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S)
    assert "http" not in outside_scripts  # no stylesheet, image, font or iframe from the network
    assert "<script" in page and "plotly.js" in page.lower()
    assert len(page) > 1_000_000  # plotly.js is inlined once
    assert page.count("Plotly.newPlot(") == 3  # one scatter per device
    assert page.count('"name":"Pareto front"') == 2  # real devices only
    assert "EMULATED device: latency not meaningful" in page
    assert "FAILED: runner died with SIGSEGV (signal 11)" in page
    assert "top-1 drops 3.2 points" in page


def test_html_falls_back_to_fidelity_axis(tmp_path: Path) -> None:
    cells = [cell("host", "onnx-fp32", 1, 10.0), cell("host", "onnx-qdq", 1, 4.0, cos=0.998, agree=0.99)]
    page = render(build_report(write_results(tmp_path / "r", cells)), "html")
    assert "fidelity: cosine min vs FP32" in page


def test_cli_report_every_format(results_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(results_dir)]) == 0
    assert "FAILED openvino-int8 ×2: runner killed after 600 s (timeout)" in capsys.readouterr().out
    for fmt in ("md", "csv", "json", "html", "table"):
        out = tmp_path / f"report.{fmt}"
        assert main(["report", str(results_dir), "--format", fmt, "--out", str(out)]) == 0
        assert out.stat().st_size > 200, fmt
        assert not list(tmp_path.glob(".report*.tmp"))
    assert json.loads((tmp_path / "report.json").read_text())["rows"]
    assert main(["report", str(results_dir), "-f", "html"]) == 0
    assert (results_dir / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(results_dir), "--format", "xml"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown --format 'xml'; choose from: table, md, csv, json, html"
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: results directory not found")


def test_models_are_never_compared_with_each_other(tmp_path: Path) -> None:
    cells = [cell("host", "onnx-fp32", 1, 10.0, top1=0.9, model="a"), cell("host", "onnx-qdq", 1, 5.0, top1=0.8, model="a",
                                                                           cos=0.99, agree=0.9),
             cell("host", "onnx-fp32", 1, 100.0, top1=0.5, model="b"), cell("host", "onnx-qdq", 1, 20.0, top1=0.5,
                                                                            model="b", cos=0.999, agree=1.0)]
    rows = build_rows(cells)
    a, b = ([r for r in rows if r.model == m and r.backend == "onnx-qdq"][0] for m in ("a", "b"))
    assert (a.speedup, a.metric_delta) == (pytest.approx(2.0), pytest.approx(-10.0))
    assert (b.speedup, b.metric_delta) == (pytest.approx(5.0), pytest.approx(0.0))
    page = render(build_report(write_results(tmp_path / "r", cells)), "html")
    assert page.count("Plotly.newPlot(") == 2  # one scatter per (device, model); titles are JSON-escaped
    assert "host \\u00b7 a: p50" in page and "host \\u00b7 b: p50" in page
    assert "| model |" in render(build_report(tmp_path / "r"), "md")
