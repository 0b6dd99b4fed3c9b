"""The onnx2tf route for TFLite artifacts from ONNX sources (``edgeq/tools/onnx2tf_convert.py`` in onnx2tf's own
pinned environment, run as a subprocess; docs/onnx-to-tflite.md).

onnx2tf turns the graph channel-last inside; edgeq keeps the artifact's inputs and outputs in the ONNX layout (a
transpose at each boundary, found by value for outputs), so the manifest's layout stays the source's, and the
runner, verification, evaluation and benchmarks feed it exactly like the other backends.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgeq.errors import UnsupportedConversion

ROUTE = "onnx2tf"
TIMEOUT_SECONDS = 1800


def _calibration_arrays(source, calib, directory: Path) -> Path:
    """The calibration samples as ``input<i>.npy`` files (one stacked array per model input, in input order), written
    one sample at a time so that large image sets never sit in memory twice; the tool memory-maps them."""
    directory.mkdir(parents=True, exist_ok=True)
    count = len(calib)
    arrays = [np.lib.format.open_memmap(directory / f"input{i}.npy", mode="w+", dtype=np.dtype(spec.dtype),
                                        shape=(count, *spec.shape)) for i, spec in enumerate(source.inputs)]
    for row, feeds in enumerate(calib):
        for array, spec in zip(arrays, source.inputs):
            array[row] = np.asarray(feeds[spec.name]).reshape(spec.shape)
    for array in arrays:
        array.flush()
    return directory


def run_tool(source, calib, out: Path, mode: str, io: str = "int8", float_nodes: list[str] | None = None,
             rank: bool = False, float_outputs: bool = False) -> dict:
    """Run onnx2tf_convert.py in the onnx2tf tool environment; its JSON report, or UnsupportedConversion with the
    tool's one-line reason. ``rank``: the per-op quantization error instead of a model."""
    from edgeq.tools import CONVERT_SCRIPTS, ensure
    from edgeq.ui import console

    # first use builds the environment (minutes): say so on the terminal (the backend's stderr goes to its log)
    python = ensure(ROUTE, progress=lambda text: console.print(f"[dim]onnx2tf tool environment:[/dim] {text}"))
    with tempfile.TemporaryDirectory(prefix="edgeq-onnx2tf-") as tmp:
        command = [str(python), str(CONVERT_SCRIPTS[ROUTE]), "--onnx", str(source.onnx_path()), "--out", str(out),
                   "--calib", str(_calibration_arrays(source, calib, Path(tmp) / "calib")), "--mode", mode,
                   "--io", io, "--float-nodes", json.dumps(float_nodes or [])] + (["--rank"] if rank else []) \
            + (["--float-outputs"] if float_outputs else [])
        try:  # the tool's chatter and tracebacks go to our stderr (the backend's log file during an export)
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise UnsupportedConversion(f"onnx2tf did not finish within {TIMEOUT_SECONDS} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise UnsupportedConversion(f"onnx2tf crashed (exit code {done.returncode}, no report)")
    report = json.loads(lines[-1])
    if not report.get("ok"):
        raise UnsupportedConversion(f"onnx2tf: {report.get('error', 'failed')}")
    return report


def convert(source, calib, out: Path, mode: str, io: str = "int8", float_nodes: list[str] | None = None,
            float_outputs: bool = False) -> dict:
    """Write ``out`` (``mode`` fp32 or int8) and return the recipe entries of the route. ``float_outputs``: the ops
    writing the outputs stay float and the model I/O is float (mixed-range outputs, ``mixed_range_outputs``)."""
    report = run_tool(source, calib, out, mode, io, float_nodes, float_outputs=float_outputs)
    if report.get("float_outputs"):
        io = "float"
    recipe: dict[str, object] = {
        "route": f"onnx2tf {report['onnx2tf']} → tf.lite.TFLiteConverter (TensorFlow {report['tensorflow']}, "
                 "isolated tool environment)",
        "layout": source.layout, "io_layout": "as the ONNX model (transposes at the boundary)",
        "output_transposes": report["output_perms"]}
    if mode == "int8":
        recipe |= {"per_channel": True, "symmetric": "weights", "io": io, "calibration": "minmax (TFLiteConverter)"}
    search = report.get("recipe_search")
    if search:  # edgeq/tools/tflite_recipe.py: full integer, or the worst-ranked ops float, by calibration fidelity
        chosen = list(search.get("chosen_float_tensors") or [])
        recipe |= {"picked_by": f"{search['metric']} (target {search['target']}): "
                                f"{search['chosen_worst_cosine']:.4f} with {len(chosen)} float tensor(s), "
                                f"{len(search['tried'])} candidate(s) tried",
                   "recipe_search": search}
        if chosen:
            recipe |= {"float_tensors": chosen, "float_tensor_count": len(chosen)}
    if float_nodes:
        recipe |= {"float_tensors": float_nodes, "float_tensor_count": len(float_nodes)}
    if report.get("float_outputs"):
        recipe["float_outputs"] = report["float_outputs"]
    return recipe
