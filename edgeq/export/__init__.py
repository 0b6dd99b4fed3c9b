"""``edgeq export``: the export stage as a package, layered so that no module imports one above it.

``context`` (ExportRequest, EvalContext, ExportContext, the Ctrl-C flag) → ``candidate`` (build, verify, install
one artifact) → ``control`` (the accuracy budget and ``edgeq.accuracy``'s control loop) → ``executors`` (one
export job, ``export_one``, and where jobs run: sequential or pinned-parallel behind one ``Executor``) →
``orchestration`` (``run_export``: loading, QAT, calibration, references, manifest merge, scheduling).

The package is also the Python API: ``edgeq.export(model, calib, backends=[...], out="out", **options)`` calls
``edgeq.export.orchestration.export`` (a module that can be called, so that importing ``edgeq.export.<module>``
never hides the function behind the package of the same name).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.manifest import Manifest


def export(model: Any, calib: Any, backends: list[str] | None = None, out: str | Path = "out",
           **options: Any) -> Manifest:
    """Export ``model`` with calibration data ``calib`` to ``backends`` under ``out``; see ``edgeq export --help``."""
    from edgeq.export.orchestration import export as _export

    return _export(model, calib, backends=backends, out=out, **options)


class _CallablePackage(types.ModuleType):
    """``edgeq.export(...)`` is ``edgeq.export.export(...)``."""

    def __call__(self, model: Any, calib: Any, backends: list[str] | None = None, out: str | Path = "out",
                 **options: Any) -> Manifest:
        return export(model, calib, backends=backends, out=out, **options)


sys.modules[__name__].__class__ = _CallablePackage
