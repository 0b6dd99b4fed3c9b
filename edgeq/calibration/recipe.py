"""Calibration recipes: a YAML file naming a data source, its preprocessing, and optionally a held-out source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeq.calibration.preprocess import Preprocess
from edgeq.errors import CalibrationError, first_line


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["images", "arrays", "sklearn-digits"]
    path: str | None = None
    split: str | None = None

    def to_spec(self, base: Path) -> str:
        if self.kind == "sklearn-digits":
            return f"sklearn-digits:{self.split or 'calib'}"
        if not self.path:
            raise CalibrationError(f"recipe source of kind {self.kind!r} needs a 'path'")
        path = Path(self.path).expanduser()
        path = path if path.is_absolute() else base / path
        if self.kind == "images" and path.is_file():
            raise CalibrationError(f"recipe source of kind 'images' needs a folder, got the file {path}")
        if self.kind == "arrays" and path.suffix.lower() not in (".npy", ".npz"):
            raise CalibrationError(f"recipe source of kind 'arrays' needs a .npy or .npz file, got {path}")
        return str(path)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    source: SourceSpec
    holdout: SourceSpec | None = None
    preprocess: Preprocess = Preprocess()


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; every problem is one ``CalibrationError`` line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"cannot read recipe {path}: not UTF-8 text (offset {exc.start})") from None
    except OSError as exc:
        raise CalibrationError(f"cannot read recipe {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - PyYAML also raises ValueError/OverflowError on e.g. "\U99999999"
        raise CalibrationError(f"{path}: not valid YAML ({first_line(exc)})") from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "recipe"
        raise CalibrationError(f"{path}: {where}: {' '.join(str(first['msg']).split())[:200]}") from None
