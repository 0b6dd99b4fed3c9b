"""Backends defined outside edgeq, one module each, that register themselves with ``edgeq.backends.register_backend``
when imported — what a user's own backend looks like. ``registered()`` imports them and undoes the registration
afterwards, so only the tests that ask for them see them (tests/test_contracts.py, tests/test_extra_backend.py)."""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def registered() -> Iterator[dict[str, str]]:
    """Import (or re-import) every module of this package; yields ``{name: "module:Class"}`` of the backends they
    registered. On exit the registry, the opt-in set and ``$EDGEQ_BACKEND_MODULES`` are as they were."""
    from edgeq import backends

    saved = dict(backends.REGISTRY), backends.OPT_IN, os.environ.get(backends.PLUGINS_ENV)
    try:
        for info in pkgutil.iter_modules(__path__):
            name = f"{__name__}.{info.name}"
            if name in sys.modules:  # registered before and undone since: register again
                importlib.reload(sys.modules[name])
            else:
                importlib.import_module(name)
        yield {name: target for name, target in backends.REGISTRY.items() if name not in saved[0]}
    finally:
        backends.REGISTRY.clear()
        backends.REGISTRY.update(saved[0])
        backends.OPT_IN = saved[1]
        if saved[2] is None:
            os.environ.pop(backends.PLUGINS_ENV, None)
        else:
            os.environ[backends.PLUGINS_ENV] = saved[2]
