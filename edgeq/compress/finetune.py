"""``finetune``: supervised training on the training set (SGD, momentum 0.9, small lr by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from edgeq.compress.base import Step, StepContext
from edgeq.compress.train import TrainConfig, train_model

if TYPE_CHECKING:
    from torch import nn


class FinetuneConfig(TrainConfig):
    step: Literal["finetune"] = "finetune"


class FinetuneStep(Step):
    """Cross-entropy fine-tuning with per-epoch checkpoints (``--resume`` continues)."""

    name = "finetune"
    config_model = FinetuneConfig

    def needs_train_data(self) -> bool:
        return self.config.epochs > 0  # type: ignore[attr-defined]

    def run(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        ctx.details.update(train_model(model, ctx, self.config, ctx.checkpoint_key("-finetune"), label="finetune"))  # type: ignore[arg-type]
        return model.eval()
