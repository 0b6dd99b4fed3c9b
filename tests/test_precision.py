"""Executed precision is chosen, pinned and reported — on every CPU kind, tested by pinning the CPU (machine + flags)
and the runtime setting, never by relying on what the CPU running the tests happens to do by default.

OpenVINO's CPU plugin picks BF16 by default on AVX512-BF16/AMX CPUs and f16 on ARM; the runner pins
INFERENCE_PRECISION_HINT to what the artifact's name promises and refuses BF16 where the CPU has no BF16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import BackendUnavailable
from edgeq.targets.runner import (
    OV_PRECISION_RT_KEY,
    RunnerError,
    _op_precision,
    choose_precision,
    open_session,
    precision_matches,
    reduced_float_support,
    summarize_precision,
)

# /proc/cpuinfo flag sets of the CPU kinds edgeq meets (x86 from the two EPYC kinds seen here, plus AMX and ARM)
AVX2_ONLY = ("x86_64", {"sse4_2", "avx", "avx2", "fma"})
AVX512_VNNI = ("x86_64", {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"})
AVX512_BF16 = ("x86_64", {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"})
AMX_FP16 = ("x86_64", {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16",
                       "amx_fp16"})
CORTEX_A72 = ("aarch64", {"fp", "asimd", "crc32"})
ARMV82 = ("aarch64", {"fp", "asimd", "fphp", "asimdhp", "asimddp"})


@pytest.mark.parametrize(("cpu", "bf16", "f16"), [
    (AVX2_ONLY, False, False), (AVX512_VNNI, False, False), (AVX512_BF16, True, False), (AMX_FP16, True, True),
    (CORTEX_A72, False, False), (ARMV82, False, True)])
def test_reduced_float_support_per_cpu_kind(cpu, bf16: bool, f16: bool) -> None:
    assert reduced_float_support(*cpu) == {"bf16": bf16, "f16": f16}


@pytest.mark.parametrize("cpu", [AVX2_ONLY, AVX512_VNNI, AVX512_BF16, AMX_FP16, CORTEX_A72, ARMV82])
def test_fp32_and_int8_pin_f32_on_every_cpu(cpu) -> None:
    for name in ("fp32", "int8", "f32"):
        for runtime in ("openvino", "onnxruntime", "tflite"):
            assert choose_precision(name, runtime, *cpu) == ("f32", "")


def test_bf16_only_where_the_cpu_computes_it() -> None:
    assert choose_precision("bf16", "openvino", *AVX512_BF16) == ("bf16", "")
    assert choose_precision("bf16", "openvino", *AMX_FP16) == ("bf16", "")
    for cpu in (AVX2_ONLY, AVX512_VNNI, CORTEX_A72, ARMV82):
        with pytest.raises(RunnerError, match=r"^bf16 refused.*avx512_bf16/amx_bf16.*; use the fp32 row$") as err:
            choose_precision("bf16", "openvino", *cpu)
        assert "\n" not in str(err.value)
    with pytest.raises(RunnerError, match="onnxruntime has no BF16 mode"):
        choose_precision("bf16", "onnxruntime", *AVX512_BF16)


def test_f16_falls_back_to_f32_with_a_reason_where_the_cpu_has_no_fp16() -> None:
    assert choose_precision("fp16", "openvino", *AMX_FP16) == ("f16", "")
    assert choose_precision("fp16", "openvino", *ARMV82) == ("f16", "")
    for cpu in (AVX2_ONLY, AVX512_BF16, CORTEX_A72):  # AVX512-BF16 is not FP16: OpenVINO would pick bf16 instead
        precision, note = choose_precision("fp16", "openvino", *cpu)
        assert precision == "f32" and "no FP16 arithmetic" in note


def test_summaries_and_name_checks() -> None:
    assert summarize_precision({"f32": 4}) == "f32"
    assert summarize_precision({"bf16": 3, "f32": 1}) == "bf16+f32"
    assert summarize_precision({"u8": 4, "i8": 1}) == "int8"
    assert summarize_precision({"i8": 4, "f32": 1}) == "int8+f32"
    assert summarize_precision({"i8": 1, "f32": 3}) == "f32+int8"  # OpenVINO on ARM: convs stay f32
    assert summarize_precision({"i16": 5, "i8": 1}) == "int16+int8"  # LiteRT 16x8 kernels are their own tier
    assert _op_precision(["int16", "int8", "int32"]) == "i16" and _op_precision(["uint8", "float32"]) == "u8"
    assert precision_matches("int8", "int8+int16")  # --fallback tiered: int16 activations on sensitive layers
    assert summarize_precision({}) == "unknown"
    assert precision_matches("fp32", "f32") and precision_matches("bf16", "bf16")
    assert precision_matches("int8", "int8") and precision_matches("int8", "int8+f32")
    assert not precision_matches("fp32", "bf16") and not precision_matches("int8", "int8+bf16")
    assert not precision_matches("fp16", "f32") and not precision_matches("int8", "f32")
    assert not precision_matches("int8", "f32+int8")
    assert precision_matches("fp32", "unknown") is None and precision_matches("dynamic", "int8+f32") is None


# ---------------------------------------------------------------------------------------------------------------
# Real runtimes, pinned
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small float CNN as ONNX and as OpenVINO IRs recording f32 / bf16 / f16 (like edgeq's save_ir)."""
    import openvino as ov
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 8 * 8, 10)).eval()
    root = tmp_path_factory.mktemp("precision")
    onnx_path = root / "cnn.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(onnx_path), input_names=["x"], dynamo=False)
    paths = {"onnx": onnx_path}
    for precision in ("f32", "bf16", "f16"):
        ir = ov.convert_model(str(onnx_path))
        ir.set_rt_info(precision, OV_PRECISION_RT_KEY)
        paths[precision] = root / f"cnn_{precision}.xml"
        ov.save_model(ir, str(paths[precision]), compress_to_fp16=False)
    return paths


def test_openvino_fp32_runs_f32_on_any_cpu_and_matches_onnx(small_cnn) -> None:
    """Pinned f32 (whatever this CPU's default is): executed precision f32, outputs = ORT FP32 within 1e-5."""
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    reference = open_session(str(small_cnn["onnx"])).run(feeds)[0]
    for cpu in (AVX2_ONLY, AVX512_BF16):  # the capability check sees either CPU kind
        session = open_session(str(small_cnn["f32"]), cpu=cpu)
        assert session.precision == "f32" and session.precision_settings()["INFERENCE_PRECISION_HINT"] == "f32"
        assert session.precision_settings()["compiled_INFERENCE_PRECISION_HINT"] == "f32"  # the plugin took it
        got = session.run(feeds)[0]
        assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()
        executed = session.executed_precision(session.prepare(feeds))
        assert executed["precision"] == "f32" and executed["heavy_only"] and executed["counts"] == {"f32": 3}


def test_openvino_bf16_ir_is_refused_without_bf16_and_pinned_bf16_with_it(small_cnn) -> None:
    with pytest.raises(RunnerError, match=r"^bf16 refused: this x86_64 CPU has no avx512_bf16/amx_bf16"):
        open_session(str(small_cnn["bf16"]), cpu=AVX2_ONLY)
    session = open_session(str(small_cnn["bf16"]), cpu=AVX512_BF16)
    assert session.precision_requested == "bf16" and session.precision == "bf16"
    assert session.precision_settings()["INFERENCE_PRECISION_HINT"] == "bf16"
    # the runner's --precision overrides the IR: the same artifact pinned to f32 executes f32 on any CPU
    pinned = open_session(str(small_cnn["bf16"]), precision="f32", cpu=AVX512_BF16)
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    assert pinned.executed_precision(pinned.prepare(feeds))["precision"] == "f32"


def test_openvino_f16_ir_computes_f32_where_the_cpu_has_no_fp16(small_cnn) -> None:
    session = open_session(str(small_cnn["f16"]), cpu=AVX512_BF16)
    assert session.precision == "f32" and "no FP16 arithmetic" in session.precision_note
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    assert session.executed_precision(session.prepare(feeds))["precision"] == "f32"


def test_onnxruntime_reports_what_its_optimized_graph_runs(small_cnn, tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.items, None)

    quantized = tmp_path / "cnn_qdq.onnx"
    quantize_static(str(small_cnn["onnx"]), str(quantized), Reader(), quant_format=QuantFormat.QDQ)
    feeds = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    for path, expected in ((small_cnn["onnx"], "f32"), (quantized, "int8")):
        session = open_session(str(path))
        executed = session.executed_precision(session.prepare(feeds))
        assert executed["precision"] == expected and executed["heavy_only"], executed
        assert "mlas.enable_gemm_fastmath_arm64_bfloat16" in session.precision_settings()


def test_openvino_bf16_backend_is_opt_in_and_refused_on_cpus_without_bf16() -> None:
    from edgeq.backends import OPT_IN, get_backend, resolve

    assert "openvino-bf16" in OPT_IN and "openvino-bf16" not in resolve(["all"])
    assert resolve(["openvino-bf16"]) == ["openvino-bf16"]
    backend = get_backend("openvino-bf16")
    assert backend.precision == "bf16" and backend.runtime == "openvino"
    backend.check_available(cpu=AVX512_BF16)
    with pytest.raises(BackendUnavailable, match=r"^backend openvino-bf16: bf16 refused: this x86_64 CPU has no "
                                                 r"avx512_bf16/amx_bf16"):
        backend.check_available(cpu=AVX512_VNNI)


def test_report_shows_executed_precision_and_flags_a_mismatch(tmp_path: Path) -> None:
    from report_fixtures import cell, write_results

    from edgeq.report.bench_render import render_table
    from edgeq.report.bench_report import build_report

    honest = cell("host", "openvino-fp32", 1, 10.0, model="m")
    honest.executed_precision, honest.precision_match = "f32", True
    silent_bf16 = cell("host", "onnx-fp32", 1, 6.0, model="m")
    silent_bf16.executed_precision, silent_bf16.precision_match = "bf16", False
    report = build_report(write_results(tmp_path, [honest, silent_bf16]))
    rows = {r.backend: r for r in report.rows}
    assert rows["openvino-fp32"].executed_precision == "f32" and rows["onnx-fp32"].precision_match is False
    text = render_table(report, width=250, color=False)
    assert "bf16 ≠" in text and " ran " in text
    assert any("onnx-fp32 on host (1 thread) executed bf16, not what its name says (fp32)" in n
               for n in report.anomalies)
    assert not any("openvino-fp32" in n and "not what its name says" in n for n in report.anomalies)
