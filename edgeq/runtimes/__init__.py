"""One package per runtime (``onnx``, ``openvino``, ``tflite``), each holding its backends and its adapter.

A runtime package registers its backends by naming their modules ``<package>_<variant>.py`` (``onnx_qdq.py``);
each such module defines one :class:`~edgeq.runtimes.base.Backend` subclass. Private helpers start with ``_`` and
the package's :class:`~edgeq.runtimes.adapter.RuntimeAdapter` lives in ``adapter.py``. Adding a backend is one module
in one runtime package; adding a runtime is one package. ``edgeq.backends`` builds the registry from here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from edgeq.runtimes.base import PRECISION_ORDER, Backend


def runtime_packages() -> list[str]:
    """The runtime sub-packages, alphabetically (the manifest's runtime order)."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg)


def backend_classes(package: str) -> list[type[Backend]]:
    """The backends a runtime package defines, in manifest order (by precision, then name)."""
    found: list[type[Backend]] = []
    pkg = importlib.import_module(f"{__name__}.{package}")
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith(f"{package}_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, Backend) and cls.__module__ == module.__name__ and "name" in vars(cls)]
    return sorted(found, key=lambda cls: (PRECISION_ORDER.index(cls.precision), cls.name))


def discover_backends() -> dict[str, str]:
    """``{cli name: "module:Class"}`` for every backend of every runtime package, in manifest order."""
    return {cls.name: f"{cls.__module__}:{cls.__qualname__}"
            for package in runtime_packages() for cls in backend_classes(package)}
