"""Self-contained on-device runner: load one artifact, feed it, time it, dump its outputs.

This single file is copied to edge boards (and run under QEMU user-mode emulation), so it imports only the
standard library, numpy and, lazily, the runtime the artifact needs: ``onnxruntime`` (.onnx), ``openvino``
(.xml + .bin) or LiteRT (.tflite; ``ai_edge_litert.interpreter``, falling back to
``tflite_runtime.interpreter``). It never imports edgeq and never starts subprocesses. Python >= 3.8.

CLI::

    python runner.py info [--import-runtimes]
    python runner.py run ARTIFACT [--threads N] [--cpus 0,1] [--runs N] [--min-seconds S] [--warmup N]
        [--inputs FEEDS.npz] [--eval EVAL.npz] [--outputs OUT.npz] [--seed S] [--no-timing] [--runtime R]
        [--precision auto|f32|f16|bf16] [--profile] [--profile-runs N]

``run`` prints exactly one JSON document on stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``);
whatever the runtimes print (also from C++ on fd 1) is diverted to stderr.

Precision is pinned, never the runtime's default: OpenVINO compiles with ``INFERENCE_PRECISION_HINT`` f32
unless the artifact (IR rt_info ``edgeq/inference_precision``) or ``--precision`` asks for f16 (used only where
the CPU computes FP16, else f32) or bf16 (refused on a CPU without AVX512-BF16/AMX-BF16); ONNX Runtime and LiteRT
run their float kernels (no BF16 fast-math, no XNNPACK FP16). The result states the precision that *executed*, as
the runtime reports it, the process memory (baseline, after load, peak during inference), and with
``--profile`` per-layer times.

Output order: ONNX Runtime session output order, OpenVINO model outputs order, TFLite
``get_output_details()`` order (the interpreter's order, which for converted Keras models is *not*
necessarily the Keras output order; match by name/shape on the host when it matters).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import socket
import sys
import time
import zipfile
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "IODetail",
    "RunnerError",
    "Session",
    "main",
    "measure",
    "open_session",
    "peak_rss_mb",
    "system_info",
]

RUNNER_VERSION = "1"

# runtime name -> (module to import, distributions that may provide it)
_RUNTIME_MODULES = {
    "onnxruntime": [("onnxruntime", ["onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"])],
    "openvino": [("openvino", ["openvino"])],
    "tflite": [
        ("ai_edge_litert.interpreter", ["ai-edge-litert", "ai-edge-litert-nightly"]),
        ("tflite_runtime.interpreter", ["tflite-runtime", "tflite-runtime-nightly"]),
    ],
}

_EXTENSION_RUNTIME = {".onnx": "onnxruntime", ".ort": "onnxruntime", ".xml": "openvino", ".tflite": "tflite"}

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}

_OV_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i16": "int16",
    "u16": "uint16",
    "i32": "int32",
    "u32": "uint32",
    "i64": "int64",
    "u64": "uint64",
    "boolean": "bool",
}

# /proc/cpuinfo flags that decide which INT8 (and reduced-float) kernels a runtime can use
_INT8_FLAGS_X86 = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8",
                   "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"]
_INT8_FLAGS_ARM = ["asimd", "asimddp", "i8mm", "sve", "sve2", "bf16", "fphp", "asimdhp"]
_X86_MACHINES = ("x86_64", "amd64", "i386", "i686")

# artifact precision (manifest names) -> compute precision the runner pins
_COMPUTE_PRECISION = {"fp32": "f32", "f32": "f32", "int8": "f32", "dynamic": "f32", "fp16": "f16", "f16": "f16",
                      "bf16": "bf16", "w8a16": "f32", "w4": "f32"}  # w8a16/w4: float parts in f32 (docs/precision.md)
# where an OpenVINO IR written by edgeq records the compute precision its name promises
OV_PRECISION_RT_KEY = ["edgeq", "inference_precision"]
_SHORT_TYPES = {"float": "f32", "float32": "f32", "fp32": "f32", "f32": "f32", "float16": "f16", "fp16": "f16",
                "f16": "f16", "bfloat16": "bf16", "bf16": "bf16", "int8": "i8", "i8": "i8", "uint8": "u8",
                "u8": "u8", "int16": "i16", "i16": "i16", "int32": "i32", "i32": "i32", "int64": "i64",
                "i64": "i64", "f64": "f64", "double": "f64", "float64": "f64"}
_INT_PRECISIONS = ("i8", "u8", "i16", "i4", "u4")
_FLOAT_PRECISIONS = ("f32", "bf16", "f16", "f64")
HEAVY_OPS = {
    "onnxruntime": {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "QGemm",
                    "ConvInteger", "MatMulInteger", "FusedConv", "FusedGemm", "FusedMatMul", "NchwcConv",
                    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "Attention", "MultiHeadAttention"},
    "openvino": {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
                 "FullyConnectedCompressed", "FullyConnectedQuantizedLegacy", "ScaledDotProductAttention"},
    "tflite": {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"},
}
# what each runtime's Python API says about its memory arena (none exposes the arena's size)
_ARENA = {
    "onnxruntime": "CPU memory arena on (ORT's default); ONNX Runtime's Python API does not report its size",
    "openvino": "the CPU plugin allocates its own memory; OpenVINO's Python API does not report its size",
    "tflite": "one tensor arena, planned at allocate_tensors(); LiteRT's Python API does not report its size",
}


class RunnerError(Exception):
    """A problem the user can fix (missing file, unknown extension, inputs that do not fit)."""


@dataclass
class IODetail:
    """One model input or output: name, shape (-1 for dynamic dims), numpy dtype name, quantization."""

    name: str
    shape: list
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        """True when the tensor is integer with a (scale, zero_point) to map it to float."""
        return self.scale is not None and self.scale > 0 and np.issubdtype(np.dtype(self.dtype), np.integer)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    def concrete_shape(self) -> list:
        """Shape with dynamic dims replaced by 1 (for generating data)."""
        return [d if isinstance(d, int) and d > 0 else 1 for d in self.shape]


def quantize(values: np.ndarray, detail: IODetail) -> np.ndarray:
    """Float -> integer with the tensor's own affine parameters: round(x / scale) + zero_point, saturated."""
    dtype = np.dtype(detail.dtype)
    info = np.iinfo(dtype)
    scaled = np.round(np.asarray(values, dtype=np.float64) / float(detail.scale)) + int(
        detail.zero_point or 0
    )
    return np.clip(scaled, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: IODetail) -> np.ndarray:
    """Integer -> float32: (q - zero_point) * scale; non-quantized tensors are just cast to float32."""
    arr = np.asarray(values)
    if detail.quantized:
        return (
            (arr.astype(np.float32) - np.float32(detail.zero_point or 0)) * np.float32(detail.scale)
        ).astype(np.float32)
    return arr.astype(np.float32)


def _to_input_dtype(value: np.ndarray, detail: IODetail) -> np.ndarray:
    """Make a feed runtime-ready: quantize float feeds for quantized inputs, else cast; C-contiguous."""
    arr = np.asarray(value)
    if detail.quantized and np.issubdtype(arr.dtype, np.floating):
        arr = quantize(arr, detail)
    elif arr.dtype != np.dtype(detail.dtype):
        arr = arr.astype(detail.dtype)
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------------------
# Precision: chosen and pinned (never the runtime's default), then read back from the runtime
# ---------------------------------------------------------------------------------------------------
def reduced_float_support(machine: str, flags) -> dict:
    """Which reduced float precisions this CPU computes natively: {"bf16": bool, "f16": bool}.

    x86: bf16 needs avx512_bf16 or amx_bf16, f16 needs avx512_fp16 or amx_fp16 (OpenVINO's CPU plugin rule);
    ARM: f16 needs ARMv8.2 half-precision arithmetic (fphp + asimdhp); OpenVINO's CPU plugin has no BF16 on ARM.
    """
    flags = set(flags or ())
    machine = (machine or "").lower()
    if machine in _X86_MACHINES:
        return {"bf16": bool(flags & {"avx512_bf16", "amx_bf16"}), "f16": bool(flags & {"avx512_fp16", "amx_fp16"})}
    if machine.startswith(("aarch64", "arm")):
        return {"bf16": False, "f16": {"fphp", "asimdhp"} <= flags}
    return {"bf16": False, "f16": False}


def compute_precision(name: str) -> str:
    """The compute precision an artifact's name promises: fp32/int8 -> f32 (float parts), fp16 -> f16, bf16."""
    return _COMPUTE_PRECISION.get(str(name).lower(), "f32")


def cpu_flags() -> set:
    """This CPU's /proc/cpuinfo flags (empty when unknown, or when they describe another CPU, as under QEMU)."""
    cpu = _read_cpuinfo()
    if _arch_matches(cpu["arch"], platform.machine()) is False:
        return set()
    return set(cpu["flags"])


def choose_precision(requested: str, runtime: str, machine: str | None = None, flags=None) -> tuple:
    """(compute precision to pin, note) for ``requested`` (f32/f16/bf16 or a manifest name such as int8).

    f16 falls back to f32 where the CPU has no FP16 arithmetic (OpenVINO would otherwise silently pick BF16 or
    emulate); bf16 is refused in one line where the CPU has no BF16, and for runtimes without a BF16 mode.
    """
    wanted = _COMPUTE_PRECISION.get(str(requested).lower())
    if wanted is None:
        raise RunnerError(f"unknown precision {requested!r} (expected f32, f16 or bf16)")
    machine = platform.machine() if machine is None else machine
    flags = cpu_flags() if flags is None else set(flags)
    support = reduced_float_support(machine, flags)
    if wanted == "bf16":
        if runtime != "openvino":
            raise RunnerError(f"bf16 is an OpenVINO row; {runtime} has no BF16 mode on CPU")
        if not support["bf16"] and machine.lower() in _X86_MACHINES:
            raise RunnerError(f"bf16 refused: this {machine} CPU has no avx512_bf16/amx_bf16 "
                              "(BF16 would be emulated or silently run as f32); use the fp32 row")
        if not support["bf16"]:
            raise RunnerError(f"bf16 refused on {machine or 'this machine'}: OpenVINO's CPU plugin computes BF16 "
                              "only on x86 CPUs with avx512_bf16/amx_bf16; use the fp32 row")
        return "bf16", ""
    if wanted == "f16" and not support["f16"]:
        return "f32", (f"no FP16 arithmetic on this {machine} CPU (needs avx512_fp16/amx_fp16, or fphp+asimdhp "
                       "on ARM): computing in f32")
    if wanted == "f16" and runtime != "openvino":
        return "f32", f"{runtime} has no FP16 compute switch here: float kernels in f32 (weights may be fp16)"
    return wanted, ""


def short_type(name: object) -> str:
    """Runtime type names (ORT 'float', numpy 'int8', OpenVINO 'bf16', 'I8' in exec types) -> f32/bf16/i8/..."""
    text = str(name).lower()
    return _SHORT_TYPES.get(text, text)


def summarize_precision(counts: dict) -> str:
    """One label from per-op precision counts, the most frequent first: "f32", "bf16+f32", "int8", "int8+f32"
    (mostly INT8, some float ops), "f32+int8" (mostly float: the INT8 promise is not kept) …"""
    parts = [(sum(n for p, n in counts.items() if p in _INT_PRECISIONS and p != "i16"), "int8"),
             (counts.get("i16", 0), "int16")]  # 16x8 ops (int16 activations, int8 weights) are their own tier
    parts += [(n, p) for p, n in counts.items() if p in _FLOAT_PRECISIONS]
    parts = sorted((part for part in parts if part[0] > 0), key=lambda part: -part[0])  # stable: int8 wins ties
    return "+".join(label for _n, label in parts) or "unknown"


def precision_matches(artifact_precision: str, executed: str) -> bool | None:
    """Does the executed label keep the promise of the artifact's name? None when there is no simple promise."""
    name = str(artifact_precision).lower()
    if not executed or executed == "unknown" or name in ("dynamic", "w8a16", "w4"):
        return None  # no simple promise: the manifest recipe's "executes" says what these tiers compute
    if name == "int8":
        return executed.startswith("int8") and all(p in ("int8", "int16", "f32") for p in executed.split("+"))
    return executed == _COMPUTE_PRECISION.get(name, name)


def _executed_summary(layers: list, runtime: str, source: str) -> dict:
    """Per-op precisions -> {"precision", "counts" (heavy ops), "ops", "source"}."""
    heavy = [layer for layer in layers if layer["type"] in HEAVY_OPS.get(runtime, ())]
    counted = heavy or [layer for layer in layers if layer.get("precision") not in (None, "", "unknown")]
    counts: dict = {}
    for layer in counted:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return {"precision": summarize_precision(counts), "counts": counts, "ops": len(counted),
            "heavy_only": bool(heavy), "source": source}


def _op_precision(types: list) -> str:
    """An op's compute precision from its input types: any int16 input -> i16 (a 16x8 op: int16 activations, int8
    weights); else any int8/uint8 input -> that; else the float type."""
    shorts = [short_type(t) for t in types if t]
    for wanted in ("i16",) + tuple(p for p in _INT_PRECISIONS if p != "i16") + ("f16", "bf16", "f32"):
        if wanted in shorts:
            return wanted
    return shorts[0] if shorts else "unknown"


class Session:
    """A loaded artifact with one runtime; subclasses implement the four calls for their runtime."""

    runtime = ""

    def __init__(self, path: str, threads: int, precision: str = "auto", cpu=None) -> None:
        self.path = path
        self.threads = threads
        self.runtime_version = ""
        self.inputs: list[IODetail] = []
        self.outputs: list[IODetail] = []
        self.first_ms: float | None = None
        self.precision_requested = precision
        self.precision = "f32"  # the compute precision pinned in the runtime's settings
        self.precision_note = ""
        self._cpu = cpu or (None, None)  # (machine, flags) pinned by tests; None: this CPU

    def _pin_precision(self, requested: str) -> None:
        self.precision_requested = requested
        machine, flags = self._cpu
        self.precision, self.precision_note = choose_precision(requested, self.runtime, machine, flags)

    # -- runtime-specific -------------------------------------------------------------------------
    def prepare(self, feeds: dict) -> object:
        """Float (or already typed) feeds -> a runtime-ready object for :meth:`run_prepared`."""
        raise NotImplementedError

    def run_prepared(self, prepared: object) -> None:
        """Only the inference call (this is what the timed loop times)."""
        raise NotImplementedError

    def _raw_outputs(self) -> list:
        raise NotImplementedError

    def executed_precision(self, prepared: object) -> dict:
        """What the runtime says it executes: {"precision": "f32"|"int8+f32"|…, "counts", "ops", "source"}."""
        raise NotImplementedError

    def profile_layers(self, prepared: object, runs: int) -> list:
        """Per layer/op: {"name", "type", "precision", "exec", "ms"} (mean over ``runs``), as the runtime times it."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def outputs_float(self) -> list:
        """Outputs of the last run, dequantized (or cast) to float32, in the documented output order."""
        return [dequantize(raw, detail) for raw, detail in _pairs(self._raw_outputs(), self.outputs)]

    def run(self, feeds: dict) -> list:
        """prepare + run_prepared + outputs_float."""
        self.run_prepared(self.prepare(feeds))
        return self.outputs_float()

    def ordered_feeds(self, feeds: dict) -> list:
        """Feeds as a list in input order: by name, or by position when names differ and counts match."""
        if not isinstance(feeds, dict):
            feeds = {detail.name: value for detail, value in _pairs(self.inputs, list(feeds))}
        names = [detail.name for detail in self.inputs]
        if all(name in feeds for name in names):
            return [feeds[name] for name in names]
        if len(feeds) == len(names):
            return list(feeds.values())
        raise RunnerError(f"inputs do not match the model: got {sorted(feeds)}, model wants {names}")

    def describe(self) -> dict:
        """Runtime, version, inputs and outputs as JSON-ready data."""
        return {
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "inputs": [d.to_dict() for d in self.inputs],
            "outputs": [d.to_dict() for d in self.outputs],
            "pinned_precision": {"requested": self.precision_requested, "pinned": self.precision,
                          "note": self.precision_note, "settings": self.precision_settings()},
        }

    def precision_settings(self) -> dict:
        """The runtime settings that pin the precision, as passed to the runtime."""
        return {}


def _pairs(first: list, second: list) -> list:
    """zip() that insists on equal lengths (Python 3.8 has no zip(strict=True))."""
    if len(first) != len(second):
        raise RunnerError(f"expected {len(first)} items, got {len(second)}")
    return [(first[i], second[i]) for i in range(len(first))]


# ---------------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------------
class OrtSession(Session):
    """ONNX Runtime, CPUExecutionProvider, sequential, all graph optimizations."""

    runtime = "onnxruntime"
    # ORT's only CPU reduced-precision switch: BF16 fast-math GEMMs on arm64 (off by default; pinned off)
    _CONFIG = {"mlas.enable_gemm_fastmath_arm64_bfloat16": "0"}

    def __init__(self, path: str, threads: int, precision: str = "auto", cpu=None) -> None:
        super().__init__(path, threads, precision, cpu)
        self._pin_precision("f32" if precision == "auto" else precision)
        import onnxruntime as ort

        self._session = self._new_session()
        self.runtime_version = ort.__version__
        self.inputs = [self._detail(arg) for arg in self._session.get_inputs()]
        self.outputs = [self._detail(arg) for arg in self._session.get_outputs()]
        self._output_names = [arg.name for arg in self._session.get_outputs()]
        self._last: list = []

    def _new_session(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        for key, value in self._CONFIG.items():
            options.add_session_config_entry(key, value)
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])

    def precision_settings(self) -> dict:
        return dict(self._CONFIG, providers="CPUExecutionProvider")

    def profile_layers(self, prepared: object, runs: int) -> list:
        """A second session with ORT profiling on (the timed one stays unprofiled); per-node kernel times."""
        import tempfile

        directory = tempfile.mkdtemp(prefix="edgeq-ort-profile-")
        try:
            session = self._new_session(os.path.join(directory, "profile"))
            for _ in range(max(1, int(runs))):
                session.run(self._output_names, prepared)
            with open(session.end_profiling(), encoding="utf-8") as handle:
                events = json.load(handle)
        finally:
            for name in os.listdir(directory):
                os.remove(os.path.join(directory, name))
            os.rmdir(directory)
        layers: dict = {}
        for event in events:
            name = str(event.get("name", ""))
            if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
                continue
            args = event.get("args") or {}
            types = [next(iter(item)) for item in args.get("input_type_shape") or [] if item]
            layer = layers.setdefault(name[: -len("_kernel_time")], {
                "name": name[: -len("_kernel_time")], "type": str(args.get("op_name", "")),
                "precision": _op_precision(types), "exec": str(args.get("provider", "")), "us": 0.0})
            layer["us"] += float(event.get("dur", 0))
        return _mean_ms(list(layers.values()), runs)

    def executed_precision(self, prepared: object) -> dict:
        return _executed_summary(self.profile_layers(prepared, 1), self.runtime,
                                 "ONNX Runtime profiling: op types and input types of the optimized graph")

    @staticmethod
    def _detail(arg) -> IODetail:
        shape = [d if isinstance(d, int) else -1 for d in (arg.shape or [])]
        return IODetail(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, "float32"))

    def prepare(self, feeds: dict) -> object:
        values = self.ordered_feeds(feeds)
        return {d.name: _to_input_dtype(v, d) for d, v in _pairs(self.inputs, values)}

    def run_prepared(self, prepared: object) -> None:
        self._last = self._session.run(self._output_names, prepared)

    def _raw_outputs(self) -> list:
        return [np.asarray(x) for x in self._last]


# ---------------------------------------------------------------------------------------------------
# OpenVINO
# ---------------------------------------------------------------------------------------------------
def _import_openvino():
    """(Core, Tensor, version) for new (``openvino``) and old (``openvino.runtime``) layouts."""
    try:
        import openvino as ov

        core_cls, tensor_cls = ov.Core, ov.Tensor
    except (ImportError, AttributeError):
        from openvino.runtime import Core as core_cls
        from openvino.runtime import Tensor as tensor_cls
    return core_cls, tensor_cls, _distribution_version(["openvino"]) or _ov_get_version()


def ov_recorded_precision(model) -> str:
    """The compute precision an edgeq IR records (rt_info edgeq/inference_precision); f32 for any other IR."""
    try:
        if model.has_rt_info(OV_PRECISION_RT_KEY):
            return ov_text(model.get_rt_info(OV_PRECISION_RT_KEY))
    except (AttributeError, RuntimeError, TypeError):  # OpenVINO before 2023 has no has_rt_info(path)
        pass
    return "f32"


def openvino_config(threads: int, precision: str = "f32") -> dict:
    """The CPU plugin config edgeq compiles with: threads, latency, one stream and an explicit precision hint."""
    return {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_PRECISION_HINT": precision}


def ov_text(value: object) -> str:
    """An OpenVINO rt_info value (OVAny) as text (``str(OVAny)`` is just '<OVAny class>')."""
    for attempt in (lambda: value.astype(str), lambda: value.value, lambda: value):  # type: ignore[attr-defined]
        try:
            text = attempt()
        except Exception:  # noqa: BLE001 - layouts differ between OpenVINO versions
            continue
        if isinstance(text, str):
            return text
    return str(value)


def openvino_runtime_layers(compiled) -> list:
    """Layers of a compiled model as the CPU plugin runs them: {"name", "type", "precision", "kernel"}.

    The precision is read from the kernel's name (primitiveType "brgconv_avx512_bf16", "brgemm_avx512_I8",
    "gemm_mlas_f32"); runtimePrecision alone is not enough: it says f16 for an FP16-weights layer that an x86 CPU
    decompresses and computes with an f32 kernel."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        keys = list(info.keys())
        layer_type = ov_text(info["layerType"]) if "layerType" in keys else op.get_type_name()
        if layer_type in ("Input", "Output", "Const", "Parameter", "Result", "Constant"):
            continue
        kernel = ov_text(info["primitiveType"]) if "primitiveType" in keys else ""
        precision = _kernel_precision(kernel)
        if not precision:
            precision = short_type(ov_text(info["runtimePrecision"])) if "runtimePrecision" in keys else "unknown"
        layers.append({"name": op.get_friendly_name(), "type": layer_type, "precision": precision, "kernel": kernel})
    return layers


def _kernel_precision(kernel: str) -> str:
    """"brgconv_avx512_bf16" -> "bf16", "jit_avx512_I8" -> "i8"; "" when the name ends in no precision."""
    precision = short_type(kernel.rsplit("_", 1)[-1]) if "_" in kernel else ""
    return precision if precision in _INT_PRECISIONS + _FLOAT_PRECISIONS else ""


def _ov_type_name(value: object) -> str:
    getter = getattr(value, "get_type_name", None)
    return short_type(getter() if getter else value)


def _mean_ms(layers: list, runs: int) -> list:
    """Accumulated microseconds -> mean milliseconds per run; slowest first."""
    for layer in layers:
        layer["ms"] = layer.pop("us") / 1000.0 / max(1, int(runs))
    return sorted(layers, key=lambda layer: layer["ms"], reverse=True)


def _ov_get_version() -> str:
    try:
        import openvino as ov

        return str(ov.get_version())
    except (ImportError, AttributeError):
        from openvino.runtime import get_version

        return str(get_version())


class OpenVinoSession(Session):
    """OpenVINO on CPU, latency hint, one stream, a compiled model and a single infer request."""

    runtime = "openvino"

    def __init__(self, path: str, threads: int, precision: str = "auto", cpu=None) -> None:
        super().__init__(path, threads, precision, cpu)
        core_cls, self._tensor_cls, self.runtime_version = _import_openvino()
        self._core = core = core_cls()
        model = core.read_model(path)
        if precision == "auto":
            precision = ov_recorded_precision(model)
        self._pin_precision(precision)
        self._config = openvino_config(threads, self.precision)
        self._compiled = core.compile_model(model, "CPU", self._config)
        del model
        self._request = self._compiled.create_infer_request()
        self.inputs = [self._detail(port, f"input_{i}") for i, port in enumerate(self._compiled.inputs)]
        self.outputs = [self._detail(port, f"output_{i}") for i, port in enumerate(self._compiled.outputs)]
        self._loaded: object = None

    @staticmethod
    def _detail(port, fallback_name: str) -> IODetail:
        try:
            name = port.get_any_name()
        except RuntimeError:
            name = fallback_name
        shape = []
        for dim in port.get_partial_shape():
            shape.append(int(dim.get_length()) if dim.is_static else -1)
        dtype = _OV_TYPES.get(port.get_element_type().get_type_name(), "float32")
        return IODetail(name=name, shape=shape, dtype=dtype)

    def prepare(self, feeds: dict) -> object:
        values = self.ordered_feeds(feeds)
        return [self._tensor_cls(_to_input_dtype(v, d)) for d, v in _pairs(self.inputs, values)]

    def run_prepared(self, prepared: object) -> None:
        if prepared is not self._loaded:
            for index, tensor in enumerate(prepared):
                self._request.set_input_tensor(index, tensor)
            self._loaded = prepared
        self._request.infer()

    def _raw_outputs(self) -> list:
        return [
            np.array(self._request.get_output_tensor(i).data, copy=True) for i in range(len(self.outputs))
        ]

    def precision_settings(self) -> dict:
        settings = {"INFERENCE_PRECISION_HINT": self._config["INFERENCE_PRECISION_HINT"]}
        try:  # read back what the plugin took
            taken = _ov_type_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception:  # noqa: BLE001 - older plugins
            taken = "unknown"
        settings["compiled_INFERENCE_PRECISION_HINT"] = taken
        return settings

    def executed_precision(self, prepared: object) -> dict:
        return _executed_summary(openvino_runtime_layers(self._compiled), self.runtime,
                                 "OpenVINO compiled model (get_runtime_model): each layer's kernel "
                                 "(primitiveType, e.g. brgconv_avx512_bf16), else its runtimePrecision")

    def profile_layers(self, prepared: object, runs: int) -> list:
        """A second compiled model with PERF_COUNT on (the timed one stays unprofiled); per-node real time."""
        compiled = self._core.compile_model(self.path, "CPU", dict(self._config, PERF_COUNT="YES"))
        precisions = {layer["name"]: layer["precision"] for layer in openvino_runtime_layers(compiled)}
        request = compiled.create_infer_request()
        for index, tensor in enumerate(prepared):
            request.set_input_tensor(index, tensor)
        layers: dict = {}
        for _ in range(max(1, int(runs))):
            request.infer()
            for info in request.get_profiling_info():
                if "EXECUTED" not in str(info.status) or info.node_type in ("Parameter", "Result", "Constant"):
                    continue
                exec_type = str(info.exec_type)
                layer = layers.setdefault(info.node_name, {
                    "name": info.node_name, "type": str(info.node_type),
                    "precision": _kernel_precision(exec_type) or precisions.get(info.node_name, "unknown"),
                    "exec": exec_type, "us": 0.0})
                layer["us"] += info.real_time.total_seconds() * 1e6
        return _mean_ms(list(layers.values()), runs)


# ---------------------------------------------------------------------------------------------------
# LiteRT / TFLite
# ---------------------------------------------------------------------------------------------------
def _import_tflite_interpreter():
    """(Interpreter class, runtime version): ai_edge_litert first, then tflite_runtime."""
    try:
        from ai_edge_litert import interpreter as module

        return module.Interpreter, "ai-edge-litert " + (
            _distribution_version(["ai-edge-litert", "ai-edge-litert-nightly"]) or "?"
        )
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as module

        return module.Interpreter, "tflite-runtime " + (
            _distribution_version(["tflite-runtime", "tflite-runtime-nightly"]) or "?"
        )
    except ImportError as exc:
        raise RunnerError("no TFLite runtime: install ai-edge-litert (or tflite-runtime)") from exc


class TfliteSession(Session):
    """LiteRT Interpreter (XNNPACK by default) with int8/uint8/int16 I/O (de)quantization."""

    runtime = "tflite"

    def __init__(self, path: str, threads: int, precision: str = "auto", cpu=None) -> None:
        super().__init__(path, threads, precision, cpu)
        self._pin_precision("f32" if precision == "auto" else precision)
        interpreter_cls, self.runtime_version = _import_tflite_interpreter()
        resolver = getattr(sys.modules[interpreter_cls.__module__], "OpResolverType", None)
        try:  # AUTO = builtin kernels + the default XNNPACK delegate (FP32; its FP16 mode has no Python switch)
            self._interpreter = interpreter_cls(model_path=path, num_threads=threads,
                                                experimental_op_resolver_type=resolver.AUTO)
            self._resolver = "AUTO (builtin kernels + default XNNPACK delegate, FP16 inference off)"
        except (TypeError, AttributeError):
            self._interpreter = interpreter_cls(model_path=path, num_threads=threads)
            self._resolver = "default"
        self._interpreter.allocate_tensors()
        self._refresh_details()
        self._loaded: object = None

    def _refresh_details(self) -> None:
        self._input_details = self._interpreter.get_input_details()
        self._output_details = self._interpreter.get_output_details()
        self.inputs = [self._detail(d) for d in self._input_details]
        self.outputs = [self._detail(d) for d in self._output_details]

    @staticmethod
    def _detail(raw: dict) -> IODetail:
        signature = raw.get("shape_signature")
        dims = signature if signature is not None and len(signature) else raw["shape"]
        scale, zero_point = raw.get("quantization", (0.0, 0))
        dtype = np.dtype(raw["dtype"]).name
        quantized = bool(scale) and np.issubdtype(np.dtype(dtype), np.integer)
        return IODetail(
            name=raw["name"],
            shape=[int(d) for d in dims],
            dtype=dtype,
            scale=float(scale) if quantized else None,
            zero_point=int(zero_point) if quantized else None,
        )

    def prepare(self, feeds: dict) -> object:
        values = self.ordered_feeds(feeds)
        prepared = []
        resized = False
        for i, (detail, value) in enumerate(_pairs(self.inputs, values)):
            raw, arr = self._input_details[i], _to_input_dtype(value, detail)
            if list(arr.shape) != [int(x) for x in raw["shape"]]:
                self._interpreter.resize_tensor_input(raw["index"], list(arr.shape))
                resized = True
            prepared.append((raw["index"], arr))
        if resized:
            self._interpreter.allocate_tensors()
            self._input_details = self._interpreter.get_input_details()
            self._output_details = self._interpreter.get_output_details()
            self._loaded = None
        return prepared

    def run_prepared(self, prepared: object) -> None:
        # set_tensor copies into the interpreter's buffer; done once per prepared object, so the timed
        # loop is invoke() alone.
        if prepared is not self._loaded:
            for index, arr in prepared:
                self._interpreter.set_tensor(index, arr)
            self._loaded = prepared
        self._interpreter.invoke()

    def run(self, feeds: dict) -> list:
        # always copy fresh inputs: the arena may reuse input buffers between invocations
        self._loaded = None
        return super().run(feeds)

    def _raw_outputs(self) -> list:
        return [self._interpreter.get_tensor(d["index"]) for d in self._output_details]

    def precision_settings(self) -> dict:
        return {"op_resolver": self._resolver, "num_threads": self.threads}

    def executed_precision(self, prepared: object) -> dict:
        ops_details = getattr(self._interpreter, "_get_ops_details", None)
        if ops_details is None:
            return {"precision": "unknown", "counts": {}, "ops": 0, "source": "this interpreter lists no ops"}
        types = {t["index"]: np.dtype(t["dtype"]).name for t in self._interpreter.get_tensor_details()}
        layers, delegated = [], 0
        for op in ops_details():
            if op["op_name"] == "DELEGATE":
                delegated += 1
                continue
            layers.append({"name": str(op["index"]), "type": op["op_name"],
                           "precision": _op_precision([types.get(i) for i in op["inputs"] if i >= 0])})
        summary = _executed_summary(layers, self.runtime, "LiteRT: tensor types of each op's inputs")
        summary["xnnpack_partitions"] = delegated
        return summary

    def profile_layers(self, prepared: object, runs: int) -> list:
        raise RunnerError("LiteRT's Python Interpreter (ai-edge-litert, tflite-runtime) exposes no op profiler; "
                          "per-op times need the benchmark_model binary (--enable_op_profiling=true)")


_SESSION_CLASSES = {"onnxruntime": OrtSession, "openvino": OpenVinoSession, "tflite": TfliteSession}


def open_session(
    path: str, threads: int = 1, cpus: list | None = None, runtime: str | None = None,
    precision: str = "auto", cpu: tuple | None = None,
) -> Session:
    """Load an artifact with the runtime its extension implies (or ``runtime``), pinned to ``cpus``.

    ``precision`` "auto" is the artifact's own (OpenVINO IR rt_info, else f32); ``cpu`` = (machine, flags)
    overrides platform.machine() and /proc/cpuinfo for the reduced-precision capability check (tests pin it)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RunnerError(f"artifact not found: {path}")
    if runtime is None:
        extension = os.path.splitext(path)[1].lower()
        if extension not in _EXTENSION_RUNTIME:
            raise RunnerError(
                "unknown artifact extension {!r} (expected one of {})".format(
                    extension, ", ".join(sorted(_EXTENSION_RUNTIME))
                )
            )
        runtime = _EXTENSION_RUNTIME[extension]
    if runtime not in _SESSION_CLASSES:
        raise RunnerError(
            "unknown runtime {!r} (expected one of {})".format(runtime, ", ".join(sorted(_SESSION_CLASSES)))
        )
    if int(threads) < 1:
        raise RunnerError(f"threads must be >= 1, got {threads}")
    if cpus:
        if not hasattr(os, "sched_setaffinity"):
            raise RunnerError("CPU pinning (os.sched_setaffinity) is not available on this platform")
        os.sched_setaffinity(0, [int(c) for c in cpus])
    return _SESSION_CLASSES[runtime](path, int(threads), precision, cpu)


# ---------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------
def time_first_inference(session: Session, prepared: object) -> float:
    """Time one run_prepared (the first after load, when called first); stored as session.first_ms."""
    start = time.perf_counter_ns()
    session.run_prepared(prepared)
    elapsed_ms = (time.perf_counter_ns() - start) / 1e6
    if session.first_ms is None:
        session.first_ms = elapsed_ms
    return elapsed_ms


def measure(
    session: Session,
    prepared: object,
    *,
    min_runs: int = 50,
    min_seconds: float = 2.0,
    warmup: int = 5,
    max_runs: int = 100000,
) -> dict:
    """First inference (if none yet), warm-up, then timed runs until both min_runs and min_seconds are met."""
    if min_runs < 1 or max_runs < 1:
        raise RunnerError("min_runs and max_runs must be >= 1")
    if session.first_ms is None:
        time_first_inference(session, prepared)
    run = session.run_prepared
    for _ in range(max(0, int(warmup))):
        run(prepared)
    clock = time.perf_counter_ns
    min_ns = int(float(min_seconds) * 1e9)
    durations = []
    started = clock()
    while True:
        t0 = clock()
        run(prepared)
        t1 = clock()
        durations.append(t1 - t0)
        count = len(durations)
        if count >= max_runs or (count >= min_runs and t1 - started >= min_ns):
            break
    total_s = (clock() - started) / 1e9
    ms = np.asarray(durations, dtype=np.float64) / 1e6
    p50, p90, p99 = (float(x) for x in np.percentile(ms, [50, 90, 99]))
    mean = float(ms.mean())
    return {
        "first_ms": session.first_ms,
        "warmup": int(warmup),
        "runs": int(ms.size),
        "duration_s": total_s,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean,
        "stddev_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "throughput_ips": 1000.0 / mean if mean > 0 else None,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return peak / (1024.0 * 1024.0)
    return peak / 1024.0


def _proc_status_mb() -> dict:
    """VmRSS / VmHWM of this process from /proc/self/status in MiB (empty off Linux).

    Unlike ``ru_maxrss`` (which survives exec, so a child started by a big parent reports the parent's peak),
    VmHWM belongs to this process image and can be reset (see :func:`reset_peak_rss`)."""
    values = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        return {}
    return values


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Process RSS before the runtime is imported, after the model is loaded and at its peak during inference."""

    def __init__(self) -> None:
        status = _proc_status_mb()
        self.source = "/proc/self/status" if status else "ru_maxrss"
        self.baseline_mb = status.get("VmRSS") if status else peak_rss_mb()
        self.runtimes_already_imported = sorted(
            name for name, modules in _RUNTIME_MODULES.items() if any(m[0] in sys.modules for m in modules))
        self.loaded_mb = None
        self.load_peak_mb = None
        self.peak_mb = None
        self.peak_scope = "process"

    def loaded(self) -> None:
        status = _proc_status_mb()
        self.loaded_mb = status.get("VmRSS") if status else peak_rss_mb()
        self.load_peak_mb = status.get("VmHWM") if status else None
        if status and reset_peak_rss():
            self.peak_scope = "inference"

    def peak(self) -> None:
        status = _proc_status_mb()
        self.peak_mb = status.get("VmHWM") if status else peak_rss_mb()

    def to_dict(self, runtime: str) -> dict:
        def share(value):
            return None if value is None or self.baseline_mb is None else max(0.0, value - self.baseline_mb)

        return {"baseline_mb": self.baseline_mb, "loaded_mb": self.loaded_mb, "peak_mb": self.peak_mb,
                "load_peak_mb": self.load_peak_mb, "model_loaded_mb": share(self.loaded_mb),
                "model_peak_mb": share(self.peak_mb), "model_load_peak_mb": share(self.load_peak_mb),
                "peak_scope": self.peak_scope, "source": self.source, "arena": _ARENA.get(runtime, ""),
                "runtimes_imported_before_baseline": self.runtimes_already_imported}


# ---------------------------------------------------------------------------------------------------
# System information
# ---------------------------------------------------------------------------------------------------
def _distribution_version(names: list) -> str | None:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    for name in names:
        try:
            return metadata.version(name)
        except Exception:  # PackageNotFoundError, broken metadata
            continue
    return None


def _read_cpuinfo() -> dict:
    """Model name and flags from /proc/cpuinfo (first processor block), or empty values off Linux."""
    model, flags, extra = "", [], {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        text = ""
    in_first_block = True
    for line in text.splitlines():
        if not line.strip():
            in_first_block = False
            continue
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        lowered = key.lower()
        # x86 "model name", Raspberry Pi "Model", older ARM "Hardware", MIPS "cpu model" (x86 "model" is a number)
        if key in ("model name", "Model", "Hardware", "cpu model") and not model and value:
            model = value
        elif lowered in ("flags", "features") and in_first_block and not flags:
            flags = value.split()
        elif lowered in ("cpu implementer", "cpu part", "cpu architecture") and in_first_block:
            extra.setdefault(lowered.replace(" ", "_"), value)
    if not model and extra:
        model = "ARM implementer {} part {}".format(
            extra.get("cpu_implementer", "?"), extra.get("cpu_part", "?")
        )
    if "vendor_id" in text or "flags\t" in text:
        arch = "x86"
    elif extra or "Features" in text:
        arch = "arm"
    else:
        arch = ""
    return {"model": model or platform.processor() or "", "flags": flags, "arm_ids": extra, "arch": arch}


def _runtime_status(import_runtimes: bool) -> dict:
    """Per runtime: installed? version; imported (and import error) only when asked or already loaded."""
    status = {}
    for runtime, candidates in _RUNTIME_MODULES.items():
        entry = {"available": False, "module": None, "version": None}
        for module_name, distributions in candidates:
            try:
                found = importlib.util.find_spec(module_name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                continue
            entry.update(available=True, module=module_name, version=_distribution_version(distributions))
            if import_runtimes or module_name in sys.modules:
                try:
                    module = importlib.import_module(module_name)
                    entry["imported"] = True
                    entry["version"] = entry["version"] or getattr(module, "__version__", None)
                except Exception as exc:  # a broken wheel must not break `info`
                    entry["imported"] = False
                    entry["import_error"] = _one_line(exc)
            break
        status[runtime] = entry
    return status


def _arch_matches(cpuinfo_arch: str, machine: str) -> bool | None:
    machine = machine.lower()
    if not cpuinfo_arch:
        return None
    if cpuinfo_arch == "x86":
        return machine in ("x86_64", "amd64", "i386", "i686")
    return machine.startswith(("aarch64", "arm"))


def system_info(import_runtimes: bool = False) -> dict:
    """Machine, Python, CPU (INT8-relevant flags) and which runtimes are installed.

    Runtimes are found without importing them (a runtime that segfaults at import, as some do under QEMU,
    cannot be caught in-process); pass ``import_runtimes=True`` to import each and report failures.
    """
    cpu = _read_cpuinfo()
    flags = set(cpu["flags"])
    wanted = (
        _INT8_FLAGS_ARM
        if platform.machine().lower() in ("aarch64", "arm64") or "asimd" in flags
        else _INT8_FLAGS_X86
    )
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_cpus = os.cpu_count()
    return {
        "runner_version": RUNNER_VERSION,
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "system": platform.system(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "cpu_model": cpu["model"],
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "int8_flags": {flag: flag in flags for flag in wanted},
        # QEMU user-mode shows the host's /proc/cpuinfo: a mismatch means the flags describe another CPU
        "cpuinfo_arch": cpu["arch"],
        "cpuinfo_matches_machine": _arch_matches(cpu["arch"], platform.machine()),
        "arm_ids": cpu["arm_ids"],
        "runtimes": _runtime_status(import_runtimes),
    }


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------
def random_feeds(session: Session, seed: int = 0) -> dict:
    """Deterministic feeds: float ~ N(0,1) (also for quantized inputs, quantized later by prepare);
    uint8/int8 over their full range; other integers in {0, 1} (valid ids/masks for any vocabulary);
    bool random. Dynamic dims become 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for detail in session.inputs:
        shape = detail.concrete_shape()
        dtype = np.dtype(detail.dtype)
        if detail.quantized or np.issubdtype(dtype, np.floating):
            feeds[detail.name] = rng.standard_normal(shape).astype(np.float32)
        elif dtype == np.bool_:
            feeds[detail.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            info = np.iinfo(dtype)
            feeds[detail.name] = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        else:
            feeds[detail.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def load_npz(path: str) -> dict:
    """Arrays of an .npz file, in file order, with a one-line error for missing/corrupt files."""
    if not os.path.isfile(path):
        raise RunnerError(f"npz file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunnerError(f"cannot read npz {path}: {_one_line(exc)}") from exc


def _sample_getter(array: np.ndarray, detail: IODetail):
    """How to take sample i of a stacked eval array: (N, *shape[1:]) -> a[i:i+1]; (N, *shape) -> a[i]."""
    rank = len(detail.shape)
    if array.ndim == rank + 1:
        return lambda i: array[i]
    if array.ndim == rank and rank >= 1:
        return lambda i: array[i : i + 1]
    raise RunnerError(
        f"eval array for input {detail.name!r} has shape {list(array.shape)}; expected (N, *{detail.shape[1:]}) or (N, *{detail.shape})"
    )


def run_eval(session: Session, eval_arrays: dict) -> dict:
    """Run every stacked sample; returns {"out_0": (N, ...), ...} float32 outputs."""
    values = session.ordered_feeds(eval_arrays)
    counts = {int(v.shape[0]) if np.ndim(v) else 0 for v in values}
    if len(counts) != 1 or 0 in counts:
        raise RunnerError(f"eval arrays must share one non-zero sample count, got {sorted(counts)}")
    count = counts.pop()
    getters = [_sample_getter(np.asarray(v), d) for d, v in _pairs(session.inputs, values)]
    collected: list = [[] for _ in session.outputs]
    for i in range(count):
        feeds = {d.name: get(i) for d, get in _pairs(session.inputs, getters)}
        for j, out in enumerate(session.run(feeds)):
            collected[j].append(out)
    return {f"out_{j}": np.stack(outs) for j, outs in enumerate(collected)}


def save_npz_atomic(path: str, arrays: dict) -> None:
    """np.savez to a temp file in the same directory, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp.npz")
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runner.py", description="edgeq on-device runner (one JSON document on stdout)")
    sub = parser.add_subparsers(dest="command")
    info = sub.add_parser("info", help="print system information as JSON")
    info.add_argument(
        "--import-runtimes", action="store_true", help="import each runtime and report failures"
    )
    run = sub.add_parser("run", help="load, time and/or evaluate one artifact")
    run.add_argument("artifact")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--cpus", default=None, help="comma-separated CPU ids to pin the process to")
    run.add_argument("--runtime", default=None, choices=sorted(_SESSION_CLASSES))
    run.add_argument("--runs", type=int, default=50, help="minimum timed runs")
    run.add_argument("--min-seconds", type=float, default=2.0)
    run.add_argument("--warmup", type=int, default=5)
    run.add_argument("--max-runs", type=int, default=100000)
    run.add_argument("--inputs", default=None, help="npz with one array per input (names or arr_0...)")
    run.add_argument("--eval", dest="eval_path", default=None, help="npz of stacked samples per input")
    run.add_argument("--outputs", default=None, help="where to write the eval outputs (npz: out_0, ...)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-timing", action="store_true")
    run.add_argument("--precision", default="auto", choices=["auto", "f32", "f16", "bf16"],
                     help="compute precision to pin (auto: the artifact's own, else f32)")
    run.add_argument("--profile", action="store_true", help="add per-layer times (runtime profiler)")
    run.add_argument("--profile-runs", type=int, default=10)
    return parser


def _parse_cpus(text: str | None) -> list | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise RunnerError(f"--cpus must be comma-separated integers, got {text!r}") from exc


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > 2000:
        message = message[:2000] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _command_run(args: argparse.Namespace) -> dict:
    if args.outputs and not args.eval_path:
        raise RunnerError("--outputs needs --eval")
    if args.eval_path and not args.outputs:
        raise RunnerError("--eval needs --outputs")
    inputs_file = load_npz(args.inputs) if args.inputs else None
    eval_arrays = load_npz(args.eval_path) if args.eval_path else None

    memory = MemoryProbe()
    start = time.perf_counter_ns()
    session = open_session(
        args.artifact, threads=args.threads, cpus=_parse_cpus(args.cpus), runtime=args.runtime,
        precision=args.precision,
    )
    load_ms = (time.perf_counter_ns() - start) / 1e6
    memory.loaded()

    feeds = inputs_file if inputs_file is not None else random_feeds(session, args.seed)
    prepared = session.prepare(feeds)
    first_ms = time_first_inference(session, prepared)
    latency = None
    if not args.no_timing:
        latency = measure(
            session,
            prepared,
            min_runs=args.runs,
            min_seconds=args.min_seconds,
            warmup=args.warmup,
            max_runs=args.max_runs,
        )
    memory.peak()  # the inference peak, before eval outputs pile up
    eval_samples = 0
    if eval_arrays is not None:
        outputs = run_eval(session, eval_arrays)
        eval_samples = int(next(iter(outputs.values())).shape[0]) if outputs else 0
        save_npz_atomic(args.outputs, outputs)
    result = {
        "ok": True,
        "artifact": os.path.abspath(args.artifact),
        "threads": args.threads,
        "cpus": _parse_cpus(args.cpus),
        "load_ms": load_ms,
        "first_ms": first_ms,
        "latency": latency,
        "eval_samples": eval_samples,
        "peak_rss_mb": _proc_status_mb().get("VmHWM") or peak_rss_mb(),
        "memory": memory.to_dict(session.runtime),
        "system": system_info(),
    }
    result.update(session.describe())
    # read after timing and memory: ORT's reading needs a second (profiling) session
    try:
        result["executed"] = session.executed_precision(prepared)
    except Exception as exc:  # noqa: BLE001 - a reading that fails must not lose the timing
        result["executed"] = {"precision": "unknown", "error": _one_line(exc)}
    if args.profile:
        try:
            layers = session.profile_layers(prepared, args.profile_runs)
            result["profile"] = {"runs": args.profile_runs, "layers": layers[:200], "layer_count": len(layers),
                                 "total_ms": sum(layer["ms"] for layer in layers)}
        except Exception as exc:  # noqa: BLE001
            result["profile"] = {"error": _one_line(exc)}
    return result


@contextlib.contextmanager
def stdout_to_stderr():
    """Inside, anything printed by runtimes (Python or C++, fd 1 and sys.stdout) goes to stderr, so the original
    stdout carries only the JSON answer written after it."""
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stdout = real_stdout
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)


def main(argv: list | None = None) -> int:
    """CLI entry point; prints exactly one JSON document on the original stdout."""
    code = 0
    with stdout_to_stderr():
        try:
            args = _build_parser().parse_args(argv)
            if args.command == "info":
                result = system_info(import_runtimes=args.import_runtimes)
            elif args.command == "run":
                result = _command_run(args)
            else:
                raise _ArgumentError("a command is required: info | run")
        except SystemExit as exc:  # --help
            result, code = None, int(exc.code or 0)
        except Exception as exc:
            result, code = {"ok": False, "error": _one_line(exc)}, 1
    if result is not None:
        sys.stdout.write(json.dumps(result, default=_json_default) + "\n")
        sys.stdout.flush()
    return code


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value)!r}")


if __name__ == "__main__":
    sys.exit(main())
