"""Shared ONNX helpers for the onnx-* backends: saving (single file unless huge) and CPU feature checks."""

from __future__ import annotations

from pathlib import Path

EXTERNAL_DATA_THRESHOLD = 1_500_000_000
"""Protobuf caps a single file at 2 GB; below this size an artifact is one self-contained model.onnx."""


def save_onnx(model, path: Path) -> Path:  # model: onnx.ModelProto
    """Save ``model`` to ``path``; weights go to ``model.onnx.data`` beside it only when the model is huge."""
    import onnx

    large = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    onnx.save(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
              location=f"{path.name}.data" if large else None)
    return path


def load_full(path: Path):  # -> onnx.ModelProto
    """Load a model together with any external data files next to it."""
    import onnx

    return onnx.load(str(path), load_external_data=True)


def cpu_flags() -> set[str]:
    """CPU feature flags of this machine (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()
