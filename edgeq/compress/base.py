"""The step interface every compression step implements, and the context the runner hands each step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from torch import nn

    from edgeq.compress.data import LabelledData


class StepConfig(BaseModel):
    """Base of every step's config: unknown keys are errors, ``step`` names the step."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepContext:
    """What a step may use: data, the teacher (the model before the recipe), where to checkpoint, how to log."""

    example_inputs: tuple[Any, ...]
    teacher: nn.Module
    train: LabelledData | None
    eval: LabelledData | None
    out_dir: Path
    resume: bool = False
    seed: int = 0
    step_index: int = 0
    log: Callable[[str], None] = print
    details: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def checkpoint_key(self, suffix: str = "") -> str:
        """A stable name for one training loop of this step (file name under ``checkpoints/``)."""
        return f"step{self.step_index:02d}{suffix}"


class Step(ABC):
    """One compression step: ``run`` takes the current model and returns the compressed one (in eval mode)."""

    name: ClassVar[str]
    config_model: ClassVar[type[StepConfig]]

    def __init__(self, config: StepConfig):
        self.config = config

    def needs_train_data(self) -> bool:
        """True when this step trains (fine-tunes, distils, or gathers activation statistics)."""
        return False

    @abstractmethod
    def run(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        """Compress ``model``; record what the report should show in ``ctx.details``."""
