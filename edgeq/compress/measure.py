"""What the report shows per step: parameters, MACs (counted with forward hooks), weight-file size, top-1."""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from edgeq.compress.data import LabelledData


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, non-zero parameters)."""
    total = nonzero = 0
    for param in model.parameters():
        total += param.numel()
        nonzero += int((param.detach() != 0).sum())
    return total, nonzero


def count_macs(model: nn.Module, example_inputs: tuple[Any, ...]) -> int:
    """Multiply-accumulates of every Conv/Linear for one forward pass (dense: zeros still count)."""
    import torch
    from torch import nn

    total = 0

    def conv_hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(module.kernel_size)  # type: ignore[arg-type]
        total += output.numel() * (module.in_channels // module.groups) * kernel  # type: ignore[operator]

    def linear_hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features  # type: ignore[operator]

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(safetensors size, zlib-compressed size) of the state dict: sparsity shows only in the second."""
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    return len(blob), len(zlib.compress(blob, 6))


def top1(model: nn.Module, data: LabelledData, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``data``."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            logits = model(torch.from_numpy(data.x[start:start + batch_size]))
            correct += int((logits.argmax(1) == torch.from_numpy(data.y[start:start + batch_size])).sum())
    return correct / len(data)


def measure(model: nn.Module, example_inputs: tuple[Any, ...], data: LabelledData | None) -> dict[str, Any]:
    """One report row's numbers."""
    params, nonzero = count_params(model)
    size, packed = weight_bytes(model)
    row: dict[str, Any] = {"params": params, "nonzero_params": nonzero, "macs": count_macs(model, example_inputs),
                           "weights_bytes": size, "weights_zlib_bytes": packed}
    row["top1"] = top1(model, data) if data is not None else None
    return row
