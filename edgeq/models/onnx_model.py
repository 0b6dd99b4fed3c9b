"""ONNX input: load (with external data), fix dynamic dims, upgrade old opsets, run the FP32 reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import ModelError, first_line
from edgeq.models.base import ModelSource
from edgeq.models.shapes import guess_layout, shape_for
from edgeq.types import Feeds, TensorSpec

MIN_OPSET = 13
"""Per-channel QDQ (axis attribute on QuantizeLinear/DequantizeLinear) needs opset ≥ 13."""

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 3: "int8", 2: "uint8", 9: "bool"}


def load_onnx_checked(path: Path):  # -> onnx.ModelProto
    """Load an ONNX file (and its external data) or raise a one-line ModelError."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except onnx.checker.ValidationError as exc:  # external data missing, outside the model's folder, or a link
        raise ModelError(f"{path}: unsafe or missing external data ({first_line(exc, 200)})") from None
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {first_line(exc, 160)})") from None
    if not model.graph.node:
        raise ModelError(f"{path} is not a valid ONNX model (empty graph)")
    return model


class OnnxSource(ModelSource):
    framework = "onnx"

    def __init__(self, path: Path, input_shapes: dict[str, tuple[int, ...]]):
        import onnx

        model = load_onnx_checked(path)
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # noqa: BLE001 - checker raises many types; any means "invalid"
            raise ModelError(f"{path} fails the ONNX checker: {str(exc).splitlines()[0][:200]}") from None
        initializers = {init.name for init in model.graph.initializer}
        inputs: list[TensorSpec] = []
        for index, value in enumerate(i for i in model.graph.input if i.name not in initializers):
            ttype = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
            given = shape_for(value.name, index, input_shapes)
            if given is not None:
                if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
                    raise ModelError(f"--input-shape {value.name}={'x'.join(map(str, given))} does not fit the model's {dims}")
                shape = given
            else:
                if any(d is None for d in dims[1:]) or not dims:
                    shown = "x".join("?" if d is None else str(d) for d in dims)
                    raise ModelError(
                        f"input {value.name!r} has dynamic dims ({shown}): pass --input-shape {value.name}=1x..."
                    )
                shape = tuple([1 if dims[0] is None else dims[0], *dims[1:]])  # dynamic batch → 1
            inputs.append(TensorSpec(value.name, tuple(int(s) for s in shape), _ONNX_DTYPES.get(ttype.elem_type, "float32")))
        outputs = [o.name for o in model.graph.output]
        super().__init__(path, path.stem, inputs, outputs, guess_layout(inputs))
        self._opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def _to_onnx(self, out_dir: Path) -> Path:
        """A static-shape copy (batch 1) at opset ≥ 13, weights external when large."""
        import onnx
        from onnx import version_converter

        out_dir.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(self.path))
        by_name = {spec.name: spec for spec in self.inputs}
        for value in model.graph.input:
            if value.name in by_name:
                for dim, size in zip(value.type.tensor_type.shape.dim, by_name[value.name].shape):
                    dim.Clear()
                    dim.dim_value = size
        if self._opset < MIN_OPSET:
            try:
                model = version_converter.convert_version(model, MIN_OPSET)
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"cannot upgrade opset {self._opset} → {MIN_OPSET} (needed for per-channel INT8): {exc}") from None
        out = out_dir / "model.onnx"
        large = model.ByteSize() > 1_500_000_000
        onnx.save(model, str(out), save_as_external_data=large, location="model.onnx.data" if large else None)
        return out

    def reference(self, feeds: Feeds) -> list[np.ndarray]:
        return list(self._session().run(None, feeds))

    def torch_module(self) -> Any:
        """An exportable ``torch.nn.Module`` converted from the static-shape ONNX (onnx2fx; cached).

        Takes the inputs positionally in ``self.inputs`` order. Unsupported op types raise UnsupportedConversion.
        """
        if getattr(self, "_torch_module", None) is None:
            import onnx

            from edgeq.models.onnx_to_torch import onnx_to_torch

            self._torch_module = onnx_to_torch(onnx.load(str(self.onnx_path())), self.example_inputs(), self.name)
        return self._torch_module

    def _session(self):  # -> onnxruntime.InferenceSession
        if not hasattr(self, "_ort"):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._ort = ort.InferenceSession(str(self.onnx_path()), opts, providers=["CPUExecutionProvider"])
        return self._ort
