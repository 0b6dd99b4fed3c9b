"""``lowrank``: truncated-SVD factorisation of Linear and Conv layers, then (optionally) fine-tuning.

* Linear(in→out), W = U·S·Vᵀ → Linear(in→r, no bias) then Linear(r→out, bias), weights √S-balanced.
* Conv k×k (C_in→C_out, groups 1): W reshaped to C_out × (C_in·k·k), SVD → conv k×k (C_in→r, same stride,
  padding, dilation) then conv 1×1 (r→C_out, bias).

Rank per layer: the smallest r keeping ``energy`` of Σσ², or the r giving ``param_ratio`` of the layer's
weights. A layer is only replaced when the factorised form has fewer parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from edgeq.compress.base import Step, StepConfig, StepContext
from edgeq.compress.train import TrainConfig, train_model
from edgeq.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


class LowRankConfig(StepConfig):
    step: Literal["lowrank"] = "lowrank"
    layers: Literal["linear", "conv", "all"] = "all"
    energy: float | None = Field(None, gt=0, le=1, description="keep this fraction of the squared singular values")
    param_ratio: float | None = Field(None, gt=0, lt=1, description="factorised weights / original weights per layer")
    min_params: int = Field(1024, ge=0, description="leave layers with fewer weights alone")
    ignore: list[str] = Field(default_factory=list)
    finetune: TrainConfig | None = None

    @model_validator(mode="after")
    def _one_rank_rule(self) -> LowRankConfig:
        if (self.energy is None) == (self.param_ratio is None):
            raise ValueError("give exactly one of energy or param_ratio")
        return self


def choose_rank(singular_values: torch.Tensor, rows: int, cols: int, energy: float | None, param_ratio: float | None) -> int:
    """Rank from an energy threshold or a parameter budget (at least 1)."""
    import torch

    if energy is not None:
        power = singular_values.double() ** 2
        cumulative = torch.cumsum(power, 0) / power.sum()
        return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1
    assert param_ratio is not None
    return max(1, int(param_ratio * rows * cols / (rows + cols)))


def _factorise(module: nn.Module, config: LowRankConfig) -> tuple[nn.Module, dict[str, Any]] | None:
    import torch
    from torch import nn

    is_linear = isinstance(module, nn.Linear)
    is_conv = isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and module.groups == 1
    if not ((is_linear and config.layers in ("linear", "all")) or (is_conv and config.layers in ("conv", "all"))):
        return None
    weight = module.weight.detach()
    if weight.numel() < config.min_params:
        return None
    rows = weight.shape[0]
    matrix = weight.reshape(rows, -1).double()
    cols = matrix.shape[1]
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = min(choose_rank(s, rows, cols, config.energy, config.param_ratio), len(s))
    if rank * (rows + cols) >= rows * cols:
        return None
    root = s[:rank].sqrt()
    first_w = (root[:, None] * vh[:rank]).float()
    second_w = (u[:, :rank] * root[None, :]).float()
    bias = module.bias is not None
    if is_linear:
        first: nn.Module = nn.Linear(cols, rank, bias=False)
        second: nn.Module = nn.Linear(rank, rows, bias=bias)
        first.weight.data.copy_(first_w)
        second.weight.data.copy_(second_w)
    else:
        conv_cls = type(module)
        first = conv_cls(module.in_channels, rank, module.kernel_size, stride=module.stride, padding=module.padding,
                         dilation=module.dilation, bias=False, padding_mode=module.padding_mode)
        ones = (1,) * len(module.kernel_size)
        second = conv_cls(rank, rows, ones, bias=bias)
        first.weight.data.copy_(first_w.reshape(rank, *weight.shape[1:]))
        second.weight.data.copy_(second_w.reshape(rows, rank, *ones))
    if bias:
        second.bias.data.copy_(module.bias.detach())
    kept = float((s[:rank] ** 2).sum() / (s ** 2).sum())
    info = {"shape": f"{rows}x{cols}", "rank": rank, "params_before": rows * cols, "params_after": rank * (rows + cols),
            "energy_kept": round(kept, 4)}
    return nn.Sequential(first, second), info


class LowRankStep(Step):
    """Replace large Linear/Conv layers by two thinner ones from a truncated SVD; fine-tune if asked."""

    name = "lowrank"
    config_model = LowRankConfig

    def needs_train_data(self) -> bool:
        config: LowRankConfig = self.config  # type: ignore[assignment]
        return bool(config.finetune and config.finetune.epochs > 0)

    def run(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from edgeq.compress.fuse import _set_submodule

        config: LowRankConfig = self.config  # type: ignore[assignment]
        modules = dict(model.named_modules())
        unknown = [n for n in config.ignore if n not in modules]
        if unknown:
            raise ConfigError(f"lowrank.ignore names unknown modules: {', '.join(unknown)}")
        factorised: dict[str, Any] = {}
        for name, module in list(modules.items()):
            if not name or name in config.ignore:
                continue
            result = _factorise(module, config)
            if result is None:
                continue
            replacement, info = result
            _set_submodule(model, name, replacement)
            factorised[name] = info
        ctx.details["factorised"] = factorised
        ctx.log(f"lowrank: factorised {len(factorised)} layer(s): "
                + ", ".join(f"{n} rank {i['rank']}" for n, i in factorised.items()))
        if config.finetune is not None and config.finetune.epochs > 0:
            ctx.details["finetune"] = train_model(model, ctx, config.finetune, ctx.checkpoint_key("-lowrank"),
                                                  label="lowrank finetune")
        return model.eval()
