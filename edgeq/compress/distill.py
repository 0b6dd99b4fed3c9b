"""``distill``: knowledge distillation from the teacher (the model before the recipe) into the current model.

loss = α·CE(student, labels) + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)).
``student: path/to/file.py:Class`` (+ ``student_weights``) trains that model instead of the current one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgeq.compress.base import Step, StepContext
from edgeq.compress.train import TrainConfig, train_model

if TYPE_CHECKING:
    import torch
    from torch import nn


class DistillConfig(TrainConfig):
    step: Literal["distill"] = "distill"
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the hard-label cross-entropy")
    student: str | None = Field(None, description="path/to/file.py:Class to train instead of the current model")
    student_weights: Path | None = None


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """α·CE(labels) + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T)), KL averaged over the batch."""
    import torch.nn.functional as F

    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * hard + (1 - alpha) * temperature ** 2 * soft


class DistillStep(Step):
    """Train the student against the frozen teacher's softened outputs and the labels."""

    name = "distill"
    config_model = DistillConfig

    def needs_train_data(self) -> bool:
        return self.config.epochs > 0  # type: ignore[attr-defined]

    def run(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        import torch

        config: DistillConfig = self.config  # type: ignore[assignment]
        student = model
        if config.student:
            from edgeq.models.torch_model import TorchSource

            student = TorchSource.from_spec(config.student, config.student_weights, {}).torch_module()
            ctx.details["student"] = config.student
        teacher = ctx.teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)

        def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                teacher_logits = teacher(x)
            return distillation_loss(net(x), teacher_logits, y, config.temperature, config.alpha)

        summary = train_model(student, ctx, config, ctx.checkpoint_key("-distill"), loss_fn=loss_fn, label="distill")
        ctx.details.update({**summary, "temperature": config.temperature, "alpha": config.alpha})
        return student.eval()
