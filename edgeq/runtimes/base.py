"""The backend protocol: one module per backend, each turning a ModelSource + calibration set into files.

A backend only *writes* an artifact. Loading and running artifacts (for verification and benchmarks) is the
job of the runtime adapters in ``edgeq/targets/runner.py`` (importable as ``edgeq.targets.runner``), chosen by the
artifact's file type, so the same code runs on the host and on a bare device.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from edgeq.backend_config import BackendConfig
from edgeq.errors import BackendUnavailable, CalibrationError, ConfigError

if TYPE_CHECKING:
    from edgeq.models.base import ModelSource
    from edgeq.types import ExportOptions, SampleSet

Runtime = Literal["onnxruntime", "openvino", "tflite"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "dynamic", "w8a16", "w4"]
"""w8a16: int8 weights, int16 activations; w4: INT4 weight-only (the rest INT8), activations float."""
PRECISION_ORDER: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8", "bf16", "w8a16", "w4")
"""Order of a runtime's backends in the registry (and so in the manifest)."""


@dataclass
class ExportedFiles:
    """What a backend wrote into its output directory."""

    main: Path
    """The file a runtime opens (model.onnx, model.xml, model.tflite); siblings it needs sit beside it."""
    recipe: dict[str, object] = field(default_factory=dict)
    """The settings actually used (quantization types, per-channel, calibration method …), for the manifest."""
    notes: list[str] = field(default_factory=list)
    """Human-readable remarks shown in the export table (e.g. why a setting was chosen)."""
    config: dict[str, object] = field(default_factory=dict)
    """The backend's typed options the artifact was built with (``Config.model_dump()``), for the manifest."""


class Backend:
    """Base class for every backend. Subclasses set the class attributes and implement ``export``."""

    name: ClassVar[str]
    runtime: ClassVar[Runtime]
    precision: ClassVar[Precision]
    requires: ClassVar[tuple[str, ...]] = ()
    """Importable module names this backend needs at export time."""
    pip_extra: ClassVar[str] = "all"
    needs_calibration: ClassVar[bool] = False
    Config: ClassVar[type[BackendConfig]] = BackendConfig
    """This backend's typed options (``-O NAME.KEY=VALUE``, ``--backend-config``); unknown keys are refused."""

    @classmethod
    def config_of(cls, options: ExportOptions) -> Any:
        """This backend's options in ``options`` (the defaults when none were given), as a ``cls.Config``."""
        given = options.configs.get(cls.name)
        if isinstance(given, cls.Config):
            return given
        from pydantic import ValidationError

        try:
            return cls.Config.model_validate(given.model_dump() if isinstance(given, BackendConfig) else given or {})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            raise ConfigError(f"{cls.name}.{where}: {error['msg']}") from None

    @classmethod
    def missing_packages(cls) -> list[str]:
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    @classmethod
    def check_available(cls) -> None:
        missing = cls.missing_packages()
        if missing:
            raise BackendUnavailable(
                f"backend {cls.name} needs {', '.join(missing)}: pip install 'edgeq[{cls.pip_extra}]'"
            )

    def require_calibration(self, calib: SampleSet | None) -> None:
        """One-line error when a calibrating backend is handed no samples."""
        if calib is None or len(calib) == 0:
            raise CalibrationError(f"{self.name} needs calibration samples (--calib)")

    def export(
        self, source: ModelSource, calib: SampleSet | None, out_dir: Path, options: ExportOptions
    ) -> ExportedFiles:
        """Write the artifact into ``out_dir`` (an empty temporary directory) and describe it."""
        raise NotImplementedError
