"""Loaders for every input format; ``load_model`` picks one from the MODEL argument."""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import ModelError
from edgeq.models.base import ModelSource
from edgeq.models.shapes import parse_input_shapes


def load_model(spec: str | Path, weights: str | Path | None = None, input_shapes: list[str] | None = None,
               trust_model: bool = False) -> ModelSource:
    """``model.onnx`` | ``file.py:Class`` (+ weights) | ``program.pt2`` | ``model.keras`` | SavedModel dir.

    Without ``trust_model`` nothing in a model file that can carry code is run (edgeq/models/safety.py); a
    ``file.py:Class`` is the user's own source and always runs."""
    shapes = parse_input_shapes(input_shapes)
    text = str(spec)
    weights_path = Path(weights) if weights else None
    if ".py:" in text:
        from edgeq.models.torch_model import TorchSource

        return TorchSource.from_spec(text, weights_path, shapes)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from edgeq.models.onnx_model import OnnxSource

        return OnnxSource(path, shapes)
    if suffix == ".pt2":
        from edgeq.models.torch_model import TorchSource

        return TorchSource.from_exported_program(path, trust_model)
    if suffix in (".keras", ".h5", ".hdf5") or (path.is_dir() and (path / "saved_model.pb").exists()):
        try:
            from edgeq.models.keras_model import KerasSource
        except ImportError:
            raise ModelError("TensorFlow/Keras input support is not installed: pip install 'edgeq[tf]'") from None
        return KerasSource.load(path, shapes, trust_model)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    raise ModelError(
        f"cannot tell the format of {path}: give an .onnx file, path/to/file.py:ClassName, a .pt2 program, "
        "a .keras/.h5/.hdf5 file or a SavedModel directory"
    )


__all__ = ["ModelSource", "load_model"]
