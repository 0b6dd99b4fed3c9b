"""Recipes: an ordered list of steps in YAML, validated by pydantic into one clear error line on mistakes.

```yaml
steps:
  - step: fuse
  - step: prune
    method: structured
    ratio: 0.5
  - step: finetune
    epochs: 10
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeq.compress.base import Step, StepConfig
from edgeq.errors import ConfigError


def step_registry() -> dict[str, type[Step]]:
    """Every step by name (imports are light: steps import torch only when they run)."""
    from edgeq.compress.distill import DistillStep
    from edgeq.compress.finetune import FinetuneStep
    from edgeq.compress.fuse import FuseStep
    from edgeq.compress.lowrank import LowRankStep
    from edgeq.compress.prune import PruneStep

    return {cls.name: cls for cls in (FuseStep, PruneStep, FinetuneStep, DistillStep, LowRankStep)}


class Recipe(BaseModel):
    """A validated recipe: its steps, a seed and the training thread count."""

    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    seed: int = 0
    threads: int = Field(2, ge=1, le=256)
    steps: list[StepConfig]

    def build(self) -> list[Step]:
        registry = step_registry()
        return [registry[cfg.step](cfg) for cfg in self.steps]  # type: ignore[attr-defined]


def _format_error(exc: ValidationError, where: str) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(p) for p in error["loc"])
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, (dict, list)) and value is not None else ""
    return f"{where}: {loc}: {error['msg']}{shown}" if loc else f"{where}: {error['msg']}"


def parse_recipe(data: Any, where: str = "recipe") -> Recipe:
    """A dict (from YAML) → :class:`Recipe`, or one :class:`ConfigError` line naming the bad step and field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'steps' list, got {type(data).__name__}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{where}: 'steps' must be a non-empty list of steps")
    registry = step_registry()
    configs: list[StepConfig] = []
    for index, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict) or "step" not in raw:
            raise ConfigError(f"{where}: step {index} must be a mapping with a 'step' key (one of {', '.join(registry)})")
        name = raw["step"]
        if name not in registry:
            raise ConfigError(f"{where}: step {index}: unknown step {name!r}; choose from {', '.join(registry)}")
        try:
            configs.append(registry[name].config_model.model_validate(raw))
        except ValidationError as exc:
            raise ConfigError(_format_error(exc, f"{where}: step {index} ({name})")) from None
    try:
        return Recipe.model_validate({**data, "steps": configs})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, where)) from None


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe YAML file."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_recipe(data, str(path))
