"""Where trial work runs. Two executors with one interface:

- ``LocalExecutor``: in this process, one job after another (builds and cells never overlap).
- ``RayExecutor`` (``--ray [ADDRESS]``, the ``edgeq[cluster]`` extra): builds are Ray tasks holding
  ``build_cpus`` CPUs; a device cell is a Ray task holding the device's custom resource ``edgeq_device_<name>``
  (capacity 1, so one cell per device runs at a time anywhere in the cluster) plus, for ``local`` devices, as
  many CPUs as its largest thread count (so no export competes with a timing on the same machine; an emulated
  ``qemu`` device holds one CPU, an ``ssh`` device none). A local Ray
  runtime (``--ray``) is started with ``num_cpus=2`` and one unit of each device resource; joining a cluster
  (``--ray ADDRESS``) checks that every device resource exists there. Artifacts travel by the shared ``--out``
  path (the same directory must be visible to every node).

``submit_build`` / ``submit_cell`` return handles; ``wait_any`` returns the finished ones; ``result`` reads one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError
from edgeq.tuning.space import Recipe
from edgeq.tuning.work import TuneContext, build, measure


def device_resource(name: str) -> str:
    return f"edgeq_device_{name}"


class LocalExecutor:
    """Runs each job at submit time, in this process (sequential, deterministic)."""

    name = "local"
    parallel = 1

    def _run(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))  # exceptions (KeyboardInterrupt) propagate to the caller
        return future

    def submit_build(self, context: TuneContext, recipe: Recipe) -> Future:
        return self._run(build, context, recipe)

    def submit_cell(self, context: TuneContext, key: str, manifest_dir: str, device: str,
                    out_dir: Path | None = None) -> Future:
        return self._run(measure, context, key, manifest_dir, device, out_dir)

    def wait_any(self, handles: list[Any]) -> tuple[list[Any], list[Any]]:
        return list(handles), []

    def result(self, handle: Future) -> dict[str, Any]:
        return handle.result()

    def close(self) -> None:
        return None


class RayExecutor:
    """Builds and cells as Ray tasks (see the module docstring for the resources they hold)."""

    name = "ray"

    def __init__(self, address: str | None, devices: list[Any], num_cpus: int = 2, build_cpus: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'edgeq[cluster]'") from None
        self.ray = ray
        env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        runtime_env = {"env_vars": env} if env else None
        resources = {device_resource(d.name): 1.0 for d in devices}
        if address is None:
            ray.init(num_cpus=num_cpus, resources=resources, include_dashboard=False, log_to_driver=False,
                     runtime_env=runtime_env, configure_logging=False)
            self.started = True
        else:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, configure_logging=False)
            self.started = False
            have = ray.cluster_resources()
            missing = [r for r in resources if r not in have]
            if missing:
                ray.shutdown()
                raise ConfigError(
                    f"Ray cluster {address} has no resource {missing[0]}: start the node that reaches that device "
                    f"with `ray start --address {address} --resources '{{\"{missing[0]}\": 1}}'`")
        total = ray.cluster_resources().get("CPU", 1.0)
        self.build_cpus = min(build_cpus, total)
        self.parallel = max(1, int(total // self.build_cpus))
        self.cell_cpus = {d.name: min(d.host_cpus(), total) for d in devices}
        self._build = ray.remote(build)
        self._measure = ray.remote(measure)

    def submit_build(self, context: TuneContext, recipe: Recipe) -> Any:
        return self._build.options(num_cpus=self.build_cpus, max_retries=0).remote(context, recipe)

    def submit_cell(self, context: TuneContext, key: str, manifest_dir: str, device: str,
                    out_dir: Path | None = None) -> Any:
        return self._measure.options(num_cpus=self.cell_cpus.get(device, 0.0), max_retries=0,
                                     resources={device_resource(device): 1.0}).remote(context, key, manifest_dir,
                                                                                      device, out_dir)

    def wait_any(self, handles: list[Any]) -> tuple[list[Any], list[Any]]:
        return self.ray.wait(list(handles), num_returns=1)

    def result(self, handle: Any) -> dict[str, Any]:
        return self.ray.get(handle)

    def close(self) -> None:
        self.ray.shutdown()


def make_executor(ray_address: str | None, use_ray: bool, devices: list[Any]) -> LocalExecutor | RayExecutor:
    """``--ray`` (address None: start a local runtime) → RayExecutor; otherwise the local one."""
    if not use_ray:
        return LocalExecutor()
    return RayExecutor(ray_address, devices)
