"""openvino-fp32: OpenVINO IR (model.xml + model.bin) with FP32 weights, static batch-1 shapes."""

from __future__ import annotations

from pathlib import Path

from edgeq.backend_config import OpenvinoRouteConfig
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.openvino._openvino import convert_source, save_ir, torch_route


class OpenvinoFp32(Backend):
    name = "openvino-fp32"
    runtime = "openvino"
    precision = "fp32"
    requires = ("openvino",)
    pip_extra = "openvino"
    compress_to_fp16 = False
    Config = OpenvinoRouteConfig

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        notes: list[str] = []
        model, route = convert_source(source, torch_route(options, self), notes)
        main = save_ir(model, out_dir, compress_to_fp16=self.compress_to_fp16, precision=self.precision)
        recipe = {"route": route, "weights": "fp16" if self.compress_to_fp16 else "fp32",
                  "compress_to_fp16": self.compress_to_fp16}
        return ExportedFiles(main=main, recipe=recipe, notes=[f"converted via the {route} route", *notes])
