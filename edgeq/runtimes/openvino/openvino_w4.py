"""openvino-w4: INT4 weight-only OpenVINO IR by NNCF ``compress_weights`` (the rest INT8).

Recipe: the FP32 ``ov.Model`` (same conversion as openvino-fp32) → ``nncf.compress_weights(mode=INT4_SYM | INT4_ASYM,
group_size=--w4-group-size, ratio=--w4-ratio, all_layers=True)``: NNCF picks the ratio's INT4 layers by its data-free
sensitivity (weight quantization error); the others, and any layer whose input dimension the group size does not
divide (``GroupSizeFallbackMode.ADJUST`` first tries a smaller power-of-two group), go to the INT8_ASYM backup.
NNCF puts MatMul / fully connected layers and embeddings in INT4; convolution weights only get the INT8 backup (on
the digits CNN: the classifier INT4, every convolution INT8 — checked in the IR's constants).

Executed precision: the CPU plugin keeps the INT4/INT8 weights compressed in memory and decompresses them inside
its FullyConnected kernels; the arithmetic runs at the plugin's inference precision (BF16 by default on
AVX512-BF16 / AMX CPUs, FP32 on AVX2, FP16 on ARM) — activations are never quantized. OpenVINO's ARM CPU plugin
has no INT4 weight decompression path for every layer (the issue's note); the cell then says what failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.backend_config import Int4Config, OpenvinoRouteConfig
from edgeq.errors import BackendError
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.openvino._openvino import convert_source, quiet_nncf, save_ir, torch_route

WEIGHT_TYPES = {"u4": "int4", "i4": "int4", "u8": "int8", "i8": "int8"}


def compressed_weights(model: Any) -> dict[str, int]:
    """Elements of the IR's low-bit weight constants by kind ({"int4": n, "int8": m})."""
    counts: dict[str, int] = {}
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        kind = WEIGHT_TYPES.get(op.get_output_element_type(0).get_type_name())
        if kind is not None:
            size = 1
            for dim in op.get_output_shape(0):
                size *= int(dim)
            counts[kind] = counts.get(kind, 0) + size
    return counts


class OpenvinoW4Config(Int4Config, OpenvinoRouteConfig):
    """openvino-w4 options: the INT4 settings and the PyTorch conversion route."""


class OpenvinoW4(Backend):
    name = "openvino-w4"
    runtime = "openvino"
    precision = "w4"
    requires = ("openvino", "nncf")
    pip_extra = "openvino"
    Config = OpenvinoW4Config

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        settings: OpenvinoW4Config = self.config_of(options)
        notes: list[str] = []
        model, route = convert_source(source, torch_route(options, self), notes)
        mode = nncf.CompressWeightsMode.INT4_SYM if settings.symmetric else nncf.CompressWeightsMode.INT4_ASYM
        warnings: list[str] = []
        try:
            with quiet_nncf(warnings):
                compressed = nncf.compress_weights(
                    model, mode=mode, group_size=settings.group_size, ratio=settings.ratio, all_layers=True,
                    advanced_parameters=AdvancedCompressionParameters(
                        group_size_fallback_mode=GroupSizeFallbackMode.ADJUST))
        except Exception as exc:  # noqa: BLE001 - NNCF's refusals are long; keep the first line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"{self.name}: nncf.compress_weights refused {source.name}: {first[:200]}") from None
        counts = compressed_weights(compressed)
        if not counts:
            raise BackendError(f"{self.name}: NNCF compressed no weights of {source.name} (no weight-bearing "
                               "MatMul / convolution / embedding layers)")
        main = save_ir(compressed, out_dir, compress_to_fp16=False)
        total = sum(counts.values())
        recipe = {"route": route, "tool": f"nncf {nncf.__version__} compress_weights", "mode": str(mode.value),
                  "group_size": settings.group_size, "ratio": settings.ratio, "all_layers": True,
                  "backup_mode": "int8_asym", "group_size_fallback": "adjust",
                  "weight_elements": counts, "int4_param_fraction": round(counts.get("int4", 0) / total, 4),
                  "executes": "weights decompressed in the CPU plugin's kernels; compute at the plugin's inference "
                              "precision (bf16 on AVX512-BF16/AMX CPUs unless pinned, fp32 on AVX2, fp16 on ARM)",
                  "convolutions": "int8 weights (NNCF's backup precision)"}
        notes.insert(0, f"INT4 weight-only ({mode.value}, group {settings.group_size}, ratio {settings.ratio:g}): "
                        f"{counts.get('int4', 0)} INT4 / {counts.get('int8', 0)} INT8 weights; via {route} route")
        notes += [f"nncf: {w}" for w in warnings[:3]]
        return ExportedFiles(main=main, recipe=recipe, notes=notes)
