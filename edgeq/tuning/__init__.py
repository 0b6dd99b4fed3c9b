"""``edgeq tune``: a multi-objective search (Optuna) for the best artifact per device, measured on the devices.

Modules: ``space`` (typed search space from the backend registry), ``work`` (build / measure one recipe, cached),
``executors`` (local or Ray), ``study`` (the Optuna loop), ``results`` (pareto.json, table, HTML, best/).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.tuning.results import TuneResult


def tune(model: str, calib: str, eval_spec: str, out: str | Path = "tune", *, devices: str | Path | None = None,
         device: list[str] | str | None = None, ray: bool | str = False, **options: Any) -> TuneResult:
    """Python API mirroring ``edgeq tune`` (also ``edgeq.tune``): ``edgeq.tune("m.py:Net", "calib.yaml", "sklearn-digits:eval",
    out="tune", weights="w.safetensors", device="host", trials=20, max_drop=0.01)``.

    ``ray=True`` starts a local Ray runtime, ``ray="HOST:PORT"`` joins a cluster; other keyword arguments are the
    fields of ``edgeq.tuning.study.TuneRequest`` (``max_drop``, ``min_fidelity``, ``objectives``, ``trials``,
    ``timeout_s``, ``train``, ``backends``, ``space_file``, ``seed``, ``batch``, ``sampler`` …).
    """
    from edgeq.tuning.study import TuneRequest, run_tune

    names = [device] if isinstance(device, str) else list(device or [])
    request = TuneRequest(model=str(model), calib=str(calib), eval_spec=eval_spec, out=Path(out),
                          devices_file=Path(devices) if devices else None, device_names=names,
                          ray=bool(ray), ray_address=ray if isinstance(ray, str) else None, **options)
    return run_tune(request)


__all__ = ["tune"]
