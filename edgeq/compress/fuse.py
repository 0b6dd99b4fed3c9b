"""``fuse``: fold each BatchNorm into the Conv/Linear that feeds it, then check the outputs did not change.

How the pairs are found: torch.fx symbolic tracing when the model traces (any Conv→BN / Linear→BN edge in the
real dataflow, wherever the modules sit in user code, provided the conv output feeds only that BN); when tracing
fails (data-dependent Python control flow), a fallback walks ``named_modules`` and fuses adjacent children of
``nn.Sequential`` containers only. The report says which route ran. ReLU stays a separate module: ONNX Runtime,
OpenVINO and LiteRT fuse Conv+ReLU themselves, so folding BN is what changes the exported graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgeq.compress.base import Step, StepConfig, StepContext
from edgeq.errors import ModelError

if TYPE_CHECKING:
    from torch import nn


class FuseConfig(StepConfig):
    step: Literal["fuse"] = "fuse"
    tolerance: float = Field(1e-3, gt=0, description="largest max-abs output difference accepted after folding")


def _fuse_pair(producer: nn.Module, bn: nn.Module) -> nn.Module | None:
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats or bn.running_mean is None:
        return None
    if isinstance(producer, nn.modules.conv._ConvNd) and not producer.transposed and producer.out_channels == bn.num_features:
        return fuse_conv_bn_eval(producer, bn)
    if isinstance(producer, nn.Linear) and producer.out_features == bn.num_features:
        return fuse_linear_bn_eval(producer, bn)
    return None


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fuse_with_fx(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Trace ``model`` and fold every Conv/Linear→BN edge; raises whatever tracing raises."""
    import torch

    graph_module = torch.fx.symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    fused: list[str] = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not node.args:
            continue
        producer_node = node.args[0]
        if not isinstance(producer_node, torch.fx.Node) or producer_node.op != "call_module":
            continue
        if len(producer_node.users) != 1:
            continue
        merged = _fuse_pair(modules[producer_node.target], modules[node.target])
        if merged is None:
            continue
        _set_submodule(graph_module, producer_node.target, merged)
        modules[producer_node.target] = merged
        node.replace_all_uses_with(producer_node)
        graph_module.graph.erase_node(node)
        fused.append(f"{producer_node.target}+{node.target}")
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module, fused


def fuse_sequential(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Fold BN into the Conv/Linear right before it inside ``nn.Sequential`` containers (no tracing needed)."""
    from torch import nn

    fused: list[str] = []
    for name, container in list(model.named_modules()):
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.named_children())
        for (first_name, first), (second_name, second) in zip(children, children[1:]):
            merged = _fuse_pair(first, second)
            if merged is None:
                continue
            setattr(container, first_name, merged)
            setattr(container, second_name, nn.Identity())
            prefix = f"{name}." if name else ""
            fused.append(f"{prefix}{first_name}+{prefix}{second_name}")
    return model, fused


class FuseStep(Step):
    """Fold BatchNorm into the preceding Conv/Linear; report pairs, route and max abs output error."""

    name = "fuse"
    config_model = FuseConfig

    def run(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        import copy

        import torch

        config: FuseConfig = self.config  # type: ignore[assignment]
        model.eval()
        probe = _probe_inputs(ctx)
        with torch.no_grad():
            before = model(*probe)
        original = copy.deepcopy(model)
        try:
            fused_model, pairs = fuse_with_fx(copy.deepcopy(model))
            route = "torch.fx"
        except Exception as exc:  # noqa: BLE001 - tracing fails in many ways on user code
            ctx.log(f"fuse: torch.fx cannot trace the model ({type(exc).__name__}); fusing inside nn.Sequential only")
            fused_model, pairs = fuse_sequential(copy.deepcopy(original))
            route = "named_modules (nn.Sequential neighbours)"
        fused_model.eval()
        with torch.no_grad():
            after = fused_model(*probe)
        error = float((before - after).abs().max())
        ctx.details.update({"route": route, "fused": pairs, "max_abs_error": error})
        ctx.log(f"fuse: {len(pairs)} BN layers folded via {route}; max abs output error {error:.2e}")
        if error > config.tolerance:
            raise ModelError(f"fuse changed the outputs by {error:.3g} (> tolerance {config.tolerance:g}); "
                             "is a BatchNorm shared or in training mode?")
        return fused_model


def _probe_inputs(ctx: StepContext) -> tuple:
    """Real samples when available (up to 256), else the example inputs: fusion is checked on them."""
    import torch

    data = ctx.eval or ctx.train
    if data is not None and len(ctx.example_inputs) == 1:
        return (torch.from_numpy(data.x[:256]),)
    return ctx.example_inputs
