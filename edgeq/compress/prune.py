"""``prune``: unstructured magnitude pruning, or structured channel pruning that really removes channels.

* ``method: unstructured`` — ``torch.nn.utils.prune`` L1 magnitude (per layer or global), masks made permanent
  with ``prune.remove``. The tensors stay dense: the weight file shrinks only once compressed (zlib/gzip), and
  dense CPU kernels (ORT, OpenVINO, XNNPACK) run exactly as fast as before.
* ``method: structured`` — ``torch-pruning`` (``tp.pruner.BasePruner`` on its dependency graph), which prunes
  whole channel groups consistently across Conv/BN/Linear and residual additions/concatenations. Channel
  importance: group L1 or L2 weight norm, or mean |activation| of each output channel on training batches.
  The last Conv/Linear (its outputs are the model's outputs) is never pruned.

``iterations: N`` prunes towards ``ratio`` in N equal steps, fine-tuning (``finetune:``) after each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from edgeq.compress.base import Step, StepConfig, StepContext
from edgeq.compress.train import TrainConfig, train_model
from edgeq.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


class PruneConfig(StepConfig):
    step: Literal["prune"] = "prune"
    method: Literal["structured", "unstructured"] = "structured"
    ratio: float = Field(..., ge=0, lt=1, description="fraction of channels (structured) or weights (unstructured) to remove")
    criterion: Literal["l1", "l2", "activation"] = "l1"
    scope: Literal["per_layer", "global"] = "per_layer"
    iterations: int = Field(1, ge=1, le=100)
    finetune: TrainConfig | None = Field(None, description="fine-tune after each pruning iteration")
    ignore: list[str] = Field(default_factory=list, description="module names never pruned")
    activation_batches: int = Field(4, ge=1, le=1000, description="batches of 64 training samples for activation statistics")
    max_layer_ratio: float = Field(0.9, gt=0, le=1, description="cap per layer in global structured pruning")


def _prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def output_layers(model: nn.Module, example_inputs: tuple[Any, ...]) -> list[nn.Module]:
    """The Conv/Linear that runs last (its output dims are the model's outputs, so they must not shrink)."""
    import torch

    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for _n, m in _prunable_layers(model)]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return order[-1:]


def _resolve_ignored(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ConfigError(f"prune.ignore names unknown modules {', '.join(unknown)}; modules: "
                          f"{', '.join(n for n, _ in _prunable_layers(model))}")
    return [modules[n] for n in names]


def activation_statistics(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> dict[nn.Module, torch.Tensor]:
    """Mean |output| per output channel of every Conv/Linear over ``x``."""
    import torch

    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        reduce_dims = [d for d in range(output.dim()) if d != 1]
        value = output.detach().abs().mean(dim=reduce_dims) if output.dim() > 1 else output.detach().abs()
        sums[module] = sums.get(module, 0) + value * output.shape[0]
        counts[module] = counts.get(module, 0) + output.shape[0]

    handles = [m.register_forward_hook(hook) for _n, m in _prunable_layers(model)]
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return {m: sums[m] / counts[m] for m in sums}


def _activation_importance_class():
    import torch
    import torch_pruning as tp

    class ActivationImportance(tp.importance.GroupMagnitudeImportance):
        """Channel importance = mean |activation| of the channel, averaged over the coupled layers of a group."""

        def __init__(self) -> None:
            super().__init__(p=1, group_reduction="mean", normalizer="mean")
            self.stats: dict[Any, torch.Tensor] = {}

        @torch.no_grad()
        def __call__(self, group: Any) -> torch.Tensor | None:
            out_fns = (tp.pruner.function.prune_conv_out_channels, tp.pruner.function.prune_linear_out_channels)
            imps, idxs_list = [], []
            for i, (dep, idxs) in enumerate(group):
                if dep.pruning_fn in out_fns and dep.layer in self.stats:
                    imps.append(self.stats[dep.layer][idxs])
                    idxs_list.append(group[i].root_idxs)
            if not imps:
                return super().__call__(group)  # fall back to weight magnitude
            return self._normalize(self._reduce(imps, idxs_list), self.normalizer)

    return ActivationImportance


class PruneStep(Step):
    """Magnitude (unstructured) or channel (structured) pruning, optionally iterative with fine-tuning."""

    name = "prune"
    config_model = PruneConfig

    def needs_train_data(self) -> bool:
        config: PruneConfig = self.config  # type: ignore[assignment]
        return config.criterion == "activation" or bool(config.finetune and config.finetune.epochs > 0)

    def run(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        config: PruneConfig = self.config  # type: ignore[assignment]
        ignored = _resolve_ignored(model, config.ignore)
        if config.method == "unstructured":
            return self._unstructured(model, ctx, config, ignored)
        return self._structured(model, ctx, config, ignored)

    def _finetune(self, model: nn.Module, ctx: StepContext, config: PruneConfig, iteration: int) -> None:
        if config.finetune is not None and config.finetune.epochs > 0:
            summary = train_model(model, ctx, config.finetune, ctx.checkpoint_key(f"-prune-it{iteration}"),
                                  label=f"prune finetune {iteration + 1}/{config.iterations}")
            ctx.details.setdefault("finetune", []).append(summary)

    def _unstructured(self, model: nn.Module, ctx: StepContext, config: PruneConfig, ignored: list[nn.Module]) -> nn.Module:
        from torch.nn.utils import prune

        targets = [(m, "weight") for _n, m in _prunable_layers(model) if m not in ignored]
        if not targets:
            raise ConfigError("prune: the model has no Conv/Linear layers to prune")
        # each iteration removes the same fraction of what is left: (1 - a)^N = 1 - ratio
        amount = 1 - (1 - config.ratio) ** (1 / config.iterations)
        for iteration in range(config.iterations):
            if config.scope == "global":
                prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
            else:
                for module, attr in targets:
                    prune.l1_unstructured(module, attr, amount=amount)
            self._finetune(model, ctx, config, iteration)
        for module, attr in targets:
            prune.remove(module, attr)
        total = sum(m.weight.numel() for m, _ in targets)
        zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
        ctx.details.update({"method": "unstructured", "scope": config.scope, "weight_sparsity": zeros / total})
        ctx.log(f"prune: {zeros / total:.1%} of Conv/Linear weights are zero (dense tensors: smaller only when compressed)")
        return model.eval()

    def _structured(self, model: nn.Module, ctx: StepContext, config: PruneConfig, ignored: list[nn.Module]) -> nn.Module:
        from importlib.metadata import version

        import torch
        import torch_pruning as tp

        ignored = ignored + [m for m in output_layers(model, ctx.example_inputs) if m not in ignored]
        before = {n: _out_width(m) for n, m in _prunable_layers(model)}
        if config.criterion == "activation":
            if ctx.train is None:
                raise ConfigError("prune criterion 'activation' needs a training set (--train)")
            importance = _activation_importance_class()()
            calib = torch.from_numpy(ctx.train.x[: 64 * config.activation_batches])
        else:
            importance = tp.importance.GroupMagnitudeImportance(p=1 if config.criterion == "l1" else 2)
        model.eval()
        try:
            pruner = tp.pruner.BasePruner(
                model, ctx.example_inputs[0] if len(ctx.example_inputs) == 1 else ctx.example_inputs,
                importance=importance, pruning_ratio=config.ratio, global_pruning=config.scope == "global",
                max_pruning_ratio=config.max_layer_ratio, iterative_steps=config.iterations, ignored_layers=ignored,
            )
        except Exception as exc:  # noqa: BLE001 - the dependency tracer fails in many ways on exotic models
            raise ConfigError(f"structured pruning cannot analyse this model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]}); try method: unstructured") from None
        for iteration in range(config.iterations):
            if config.criterion == "activation":
                importance.stats = activation_statistics(model, calib)
            model.eval()
            pruner.step()
            self._finetune(model, ctx, config, iteration)
        after = {n: _out_width(m) for n, m in _prunable_layers(model)}
        ctx.details.update({
            "method": "structured", "criterion": config.criterion, "scope": config.scope, "library": f"torch-pruning {version('torch-pruning')}",
            "channels": {n: f"{before[n]}→{after[n]}" for n in before if n in after},
            "kept_output_layers": [n for n, m in model.named_modules() if any(m is i for i in ignored)],
        })
        kept = sum(after.values()) / max(sum(before.values()), 1)
        ctx.log(f"prune: structured ({config.criterion}, {config.scope}); {kept:.0%} of output channels kept")
        return model.eval()


def _out_width(module: nn.Module) -> int:
    return int(getattr(module, "out_channels", getattr(module, "out_features", 0)))
