"""The training loop shared by fine-tuning, distillation and the fine-tune phases of prune/low-rank steps.

Each epoch ends with a checkpoint ``DIR/checkpoints/<key>.pt`` (model + optimizer + epoch, weights-only torch
format); with ``--resume`` a loop whose checkpoint exists continues after the last finished epoch, and a
finished loop is not run again. Shuffling is seeded per (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from edgeq.compress.base import StepConfig
from edgeq.errors import ConfigError
from edgeq.workdirs import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeq.compress.base import StepContext

LossFn = Callable[["nn.Module", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


class TrainConfig(StepConfig):
    """Optimiser settings. SGD with momentum 0.9 and a small learning rate by default (gentle fine-tuning)."""

    epochs: int = Field(5, ge=0, le=10_000)
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    schedule: Literal["constant", "cosine"] = "cosine"
    max_batches: int | None = Field(None, ge=1, description="stop each epoch after this many batches (quick runs)")


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    import math

    if cfg.schedule == "constant" or cfg.epochs <= 1:
        return cfg.lr
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))


def _save_checkpoint(path: os.PathLike[str], state: dict[str, Any]) -> None:
    import torch

    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain supervised loss."""
    import torch

    return torch.nn.functional.cross_entropy(model(x), y)


def train_model(model: nn.Module, ctx: StepContext, cfg: TrainConfig, key: str, loss_fn: LossFn | None = None,
                label: str = "train") -> dict[str, Any]:
    """Train ``model`` in place on ``ctx.train``; return a summary (epochs run, resumed from, last loss)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeq.ui import console

    if cfg.epochs == 0:
        return {"epochs": 0}
    if ctx.train is None:
        raise ConfigError(f"step {ctx.step_index} trains but no training set was given (--train)")
    loss_fn = loss_fn or cross_entropy_loss
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.checkpoint_dir / f"{key}.pt"
    optimizer = _make_optimizer(model, cfg)
    start_epoch = 0
    last_loss = float("nan")
    summary: dict[str, Any] = {"epochs": cfg.epochs, "checkpoint": str(path)}
    if ctx.resume and path.is_file():
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError(f"checkpoint {path} does not fit this recipe's model ({type(exc).__name__}); "
                              "remove DIR/checkpoints or run without --resume") from None
        start_epoch = int(state["epoch"])
        last_loss = float(state.get("loss", float("nan")))
        summary["resumed_from_epoch"] = start_epoch
        ctx.log(f"{label}: resumed from {path.name} after epoch {start_epoch}/{cfg.epochs}")
    xs = torch.from_numpy(ctx.train.x)
    ys = torch.from_numpy(ctx.train.y)
    batches_per_epoch = -(-len(xs) // cfg.batch_size)
    if cfg.max_batches:
        batches_per_epoch = min(batches_per_epoch, cfg.max_batches)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), console=console, transient=True,
                  disable=not ctx.show_progress) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, epoch)
            task = progress.add_task(f"{label} epoch {epoch + 1}/{cfg.epochs}", total=batches_per_epoch, loss=0.0)
            model.train()
            generator = torch.Generator().manual_seed(ctx.seed * 100_003 + epoch)
            order = torch.randperm(len(xs), generator=generator).split(cfg.batch_size)
            running, seen = 0.0, 0
            for index in order[:batches_per_epoch]:
                loss = loss_fn(model, xs[index], ys[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach())
                seen += 1
                progress.update(task, advance=1, loss=running / seen)
            progress.remove_task(task)
            last_loss = running / max(seen, 1)
            _save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "epoch": epoch + 1, "loss": last_loss})
    model.eval()
    summary["last_loss"] = last_loss
    return summary
