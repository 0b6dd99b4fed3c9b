"""tflite-int8's fidelity floor on the litert-torch routes (PyTorch sources, ONNX sources through onnx2fx).

PT2E's converted reference graph carries every activation's quantize → dequantize pair as torch ops, so the damage
one activation's int8 quantization does alone is measured in torch, without converting: the graph runs with every
other pair bypassed (the dequantize node returns the float value it was given), on held-back calibration samples,
against the source model's FP32 outputs (``edgeq.runtimes._picking.rank_alone``). The modules around the worst
pairs are then left unannotated (float) by the quantizer (``exclude_modules``, the same switch ``--max-drop`` uses),
the worst 1, 2, 4, 8 tried as real LiteRT conversions scored in a runner child, and a candidate is kept only when it
clearly gains.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.runtimes._picking import Outputs, closeness, rank_alone
from edgeq.types import Feeds


def quantized_pairs(graph: Any) -> list[tuple[Any, Any]]:
    """(the quantized value, its dequantize node) for every activation quantized in a converted PT2E graph."""
    import torch

    pairs = []
    for node in graph.graph.nodes:
        if node.op == "call_function" and "quantize_per_tensor" in str(node.target) \
                and "dequantize" not in str(node.target) and isinstance(node.args[0], torch.fx.Node) \
                and node.args[0].op != "get_attr":
            pairs += [(node.args[0], user) for user in node.users if "dequantize" in str(user.target)]
    return pairs


def layer_id(node: Any) -> str:
    """The node's module path (``features.3``), or ``node:<name>`` for an op of the top-level module."""
    stack = node.meta.get("nn_module_stack") or {}
    path = str(list(stack.values())[-1][0]) if stack else ""
    return path or f"node:{node.name}"


def pair_layers(pair: tuple[Any, Any]) -> list[str]:
    """What to leave unannotated so that the pair's activation stays float: the producer's and the readers' layers."""
    pre, dequantize = pair
    return list(dict.fromkeys(layer_id(n) for n in [pre, *dequantize.users] if n.op == "call_function"))


def rank_by_damage(source: Any, graph: Any, samples: list[Feeds], reference: list[Outputs]
                   ) -> tuple[list[tuple[list[str], float]], int]:
    """(the layers of each quantized activation, sorted by the damage it does alone, worst first; how many)."""
    import torch

    pairs = quantized_pairs(graph)
    names = [f"{pre.name}->{dq.name}" for pre, dq in pairs]
    by_name = dict(zip(names, pairs))

    class Bypassing(torch.fx.Interpreter):
        def __init__(self, module: Any, bypass: dict[Any, Any]):
            super().__init__(module, garbage_collect_values=False)  # a bypassed value is read after its last user
            self.bypass = bypass

        def run_node(self, n: Any) -> Any:
            if n in self.bypass:
                return self.env[self.bypass[n]]
            return super().run_node(n)

    def mean_with_only(kept: str | None) -> float:
        bypass = {dq: pre for name, (pre, dq) in by_name.items() if name != kept}
        outputs = []
        with torch.no_grad():
            for feeds in samples:
                result = Bypassing(graph, bypass).run(*source.example_inputs(feeds))
                flat = result if isinstance(result, (list, tuple)) else [result]
                outputs.append([np.asarray(t.detach().float().numpy(), np.float32) for t in flat])
        return closeness(reference, outputs)[1]

    ranking = rank_alone(names, mean_with_only)
    return [(pair_layers(by_name[name]), damage) for name, damage in ranking], len(names)
