"""edgeq: calibrated, quantized, verified artifacts for edge devices.

Heavy frameworks (torch, tensorflow, openvino) are imported lazily, only by the code that needs them. Nothing in
edgeq imports this module: it is the top of the import graph (the version lives in ``edgeq._version``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeq import export
from edgeq._version import __version__

if TYPE_CHECKING:
    from edgeq.tuning.results import TuneResult


def tune(model: Any, calib: Any, eval_spec: str, out: str = "tune", **options: Any) -> TuneResult:
    """Search for the best artifact per device (``edgeq tune``); see ``edgeq.tuning.tune`` for the options."""
    from edgeq.tuning import tune as _tune

    return _tune(model, calib, eval_spec, out=out, **options)


__all__ = ["__version__", "export", "tune"]
