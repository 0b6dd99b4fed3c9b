"""edgeq: calibrated, quantized, verified artifacts for edge devices.

Heavy frameworks (torch, tensorflow, openvino) are imported lazily, only by the code that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgeq.manifest import Manifest
    from edgeq.tuning.study import TuneResult


def export(model: Any, calib: Any, backends: list[str] | None = None, out: str = "out", **options: Any) -> Manifest:
    """Export ``model`` with calibration data ``calib`` to ``backends`` under ``out``; see ``edgeq export --help``."""
    from edgeq.pipeline import export as _export

    return _export(model, calib, backends=backends, out=out, **options)


def tune(model: Any, calib: Any, eval_spec: str, out: str = "tune", **options: Any) -> TuneResult:
    """Search for the best artifact per device (``edgeq tune``); see ``edgeq.tuning.tune`` for the options."""
    from edgeq.tuning import tune as _tune

    return _tune(model, calib, eval_spec, out=out, **options)


__all__ = ["__version__", "export", "tune"]
