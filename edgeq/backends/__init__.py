"""Backend registry: the backends every runtime package (``edgeq.runtimes``) registers, by CLI name."""

from __future__ import annotations

import importlib
import os

from edgeq.errors import BackendError
from edgeq.runtimes import discover_backends
from edgeq.runtimes.adapter import RuntimeAdapter, adapter_of, adapters
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.precision import precision_info

REGISTRY: dict[str, str] = discover_backends()
"""``{cli name: "module:Class"}``, in manifest order: runtime packages alphabetically, then by precision. Each
runtime package registers its backends by their module names (``edgeq/runtimes/<runtime>/<runtime>_*.py``)."""


def _precision(target: str) -> str:
    module_name, class_name = target.split(":")
    return str(getattr(importlib.import_module(module_name), class_name).precision)


TIERS: tuple[str, ...] = tuple(name for name, target in REGISTRY.items() if precision_info(_precision(target)).tier)
"""Precision tiers beyond INT8 (docs/precision.md): accuracy or size tiers, none faster than INT8 on the CPUs
measured (W8A16 runs 2-21x FP32 without int16 kernels). Exported when named, or all at once as ``-b tiers``."""

# Rows exported only when named, never part of 'all' (whose ten rows run in the precision their names say on any
# CPU and are the speed candidates): openvino-bf16 needs AVX512-BF16 or AMX-BF16; the tiers above.
OPT_IN: frozenset[str] = frozenset(
    [name for name, target in REGISTRY.items() if precision_info(_precision(target)).opt_in] + list(TIERS))
GROUPS: dict[str, tuple[str, ...]] = {"tiers": TIERS}


REFUSED: dict[str, str] = {
    "openvino-w8a16": "openvino-w8a16 is not provided: OpenVINO's CPU plugin has no int16 kernels — it drops a "
                      "65536-level FakeQuantize and runs the layer in f32 (checked on its runtime model) — and NNCF's "
                      "quantize() offers INT8/FP8 only; use openvino-int8 with --max-drop (float layers run bf16 "
                      "where the CPU computes it) or onnx-w8a16 / tflite-w8a16",
}
"""Names a user may reasonably ask for that no runtime here can honour, with the one-line reason."""


def backend_names() -> list[str]:
    return list(REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """The backend class for a CLI name; a one-line error listing valid names otherwise."""
    if name in REFUSED:
        raise BackendError(REFUSED[name])
    try:
        target = REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose from: {', '.join(REGISTRY)} or 'all' / 'tiers'") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


PLUGINS_ENV = "EDGEQ_BACKEND_MODULES"
"""Comma-separated modules imported with this registry, each registering its backends with ``register_backend``:
how a backend outside edgeq reaches the CLI (``EDGEQ_BACKEND_MODULES=my_pkg.my_backend edgeq export …``) and the
spawned export workers (``register_backend`` adds its module here, and child processes inherit the environment)."""


def register_backend(cls: type[Backend], *, opt_in: bool = False) -> type[Backend]:
    """Add a backend class under ``cls.name`` (usable as a class decorator); ``opt_in`` keeps it out of ``all``.

    The manifest, verification, bench, report and the contract tests (tests/test_contracts.py) then take it like a
    built-in one. Registering the same class again is a no-op; another class under a taken name is an error."""
    global OPT_IN
    target = f"{cls.__module__}:{cls.__qualname__}"
    if REGISTRY.get(cls.name, target) != target or cls.name in REFUSED or cls.name in GROUPS or cls.name == "all":
        raise BackendError(f"backend name {cls.name!r} is taken ({REGISTRY.get(cls.name, 'reserved')})")
    REGISTRY[cls.name] = target
    if opt_in:
        OPT_IN = OPT_IN | {cls.name}
    modules = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m]
    if cls.__module__ != "__main__" and cls.__module__ not in modules:
        os.environ[PLUGINS_ENV] = ",".join([*modules, cls.__module__])
    return cls


def _import_plugins() -> None:
    """Import the modules named in ``$EDGEQ_BACKEND_MODULES`` (one line when one cannot be imported)."""
    for module in (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",")):
        if module:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise BackendError(f"{PLUGINS_ENV}: cannot import backend module {module!r}: {exc}") from None


def adapter_for(name: str) -> RuntimeAdapter:
    """The ``RuntimeAdapter`` of backend ``name``: its runtime package's, or for a backend registered from outside
    edgeq (``register_backend``) the adapter of the runtime it declares."""
    cls = get_backend(name)  # the one-line error for unknown or refused names
    if cls.__module__.startswith("edgeq.runtimes."):
        return adapter_of(cls.__module__.split(".")[2])
    for adapter in adapters():
        if adapter.runtime == cls.runtime:
            return adapter
    raise BackendError(f"backend {name}: no runtime package runs {cls.runtime!r}")


def resolve(names: list[str]) -> list[str]:
    """Expand 'all' and 'tiers', drop duplicates, keep order, and reject unknown names."""
    out: list[str] = []
    for name in names or ["all"]:
        expanded = [n for n in REGISTRY if n not in OPT_IN] if name == "all" else list(GROUPS.get(name, [name]))
        for item in expanded:
            if item not in REGISTRY:
                get_backend(item)  # raises the one-line "unknown backend" error
            if item not in out:
                out.append(item)
    return out


__all__ = ["Backend", "ExportedFiles", "GROUPS", "OPT_IN", "PLUGINS_ENV", "REGISTRY", "TIERS", "adapter_for",
           "backend_names", "get_backend", "register_backend", "resolve"]

_import_plugins()
