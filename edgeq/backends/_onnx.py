"""Shared ONNX helpers for the onnx-* backends: saving (single file unless huge) and CPU feature checks."""

from __future__ import annotations

from pathlib import Path

EXTERNAL_DATA_THRESHOLD = 1_500_000_000
"""Protobuf caps a single file at 2 GB; below this size an artifact is one self-contained model.onnx."""


def strip_metadata(model) -> None:  # model: onnx.ModelProto
    """Drop what runtimes never read: per-node exporter metadata (stack traces), doc strings, value_info.

    The PyTorch dynamo exporter writes ~1.5 KB of metadata per node; on small models that is as large as the
    weights and would hide the real INT8/FP32 size ratio.
    """
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        del graph.value_info[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))
    model.doc_string = ""


def save_onnx(model, path: Path) -> Path:  # model: onnx.ModelProto
    """Save ``model`` to ``path`` without exporter metadata; weights go to ``model.onnx.data`` only when huge."""
    import onnx

    strip_metadata(model)
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
