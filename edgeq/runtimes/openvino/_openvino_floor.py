"""openvino-int8's fidelity floor: which activation quantizers cost the output most, measured at the output.

The same idea as onnx-qdq's (``edgeq/runtimes/onnx/_qdq_floor.py``): in the NNCF-quantized model every activation
FakeQuantize but one is bypassed (its consumers read the float tensor; weights stay quantized), the model runs on
calibration samples it was not calibrated on, and the drop of the mean worst-output cosine from the weights-only model
is that quantizer's damage. The ops reading the most damaging quantizers' outputs then go into NNCF's ignored scope
(the top 1, 2, 4, 8 tried, each a real ``nncf.quantize`` scored as a saved IR), and a candidate is kept only when it
clearly gains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeq.runtimes._picking import Outputs, closeness, rank_alone, run_all
from edgeq.types import Feeds


def _is_constant(output: Any) -> bool:
    node = output.get_node()
    while node.get_type_name() in ("Convert", "Reshape", "Unsqueeze") and node.inputs():
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def activation_quantizers(model: Any) -> list[str]:
    """Friendly names of the FakeQuantize ops on activations (not on weights), in topological order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "FakeQuantize" and not _is_constant(op.input_value(0))]


def consumers(model: Any, quantizer: str) -> list[str]:
    """Friendly names of the ops reading ``quantizer``'s output (what NNCF's ignored scope names)."""
    op = next(o for o in model.get_ops() if o.get_friendly_name() == quantizer)
    return [target.get_node().get_friendly_name() for target in op.output(0).get_target_inputs()]


def bypassed(model: Any, quantizers: set[str]) -> Any:
    """A clone of ``model`` whose ``quantizers`` pass their input through (consumers read the float tensor)."""
    clone = model.clone()
    for op in clone.get_ordered_ops():
        if op.get_friendly_name() in quantizers and op.get_type_name() == "FakeQuantize":
            for target in list(op.output(0).get_target_inputs()):
                target.replace_source_output(op.input_value(0))
    return clone


def _outputs(model: Any, samples: Sequence[Feeds]) -> list[Outputs]:
    import openvino as ov

    from edgeq.targets.runner import openvino_config

    compiled = ov.Core().compile_model(model, "CPU", openvino_config(1, "f32"))
    return run_all(lambda feeds: compiled(feeds).to_tuple(), samples)


def rank_by_damage(quantized: Any, reference: list[Outputs], samples: Sequence[Feeds]
                   ) -> tuple[list[tuple[str, float]], int]:
    """(activation quantizers sorted by the damage each alone does, worst first; how many there are)."""
    names = activation_quantizers(quantized)
    everything = set(names)

    def mean_with_only(name: str | None) -> float:
        return closeness(reference, _outputs(bypassed(quantized, everything - {name}), samples))[1]

    return rank_alone(names, mean_with_only), len(names)
