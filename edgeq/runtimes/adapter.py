"""The ``RuntimeAdapter`` protocol: what runtime-independent code (accuracy control, QAT, explain, reports, tuning)
asks of a runtime package. Each runtime package implements it once, in ``edgeq/runtimes/<runtime>/adapter.py`` as
``ADAPTER``; ``adapter_of(package)`` here and ``edgeq.backends.adapter_for(backend)`` find it.

Accuracy control (``edgeq.accuracy``) runs one loop for every runtime: the adapter names its method, ranks the
layers of the plain PTQ artifact (or lets its own tool rank them) and yields the rebuilds to try, each an
:class:`Attempt` (the options to rebuild with and which layers it moves to which tier).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from edgeq.runtimes.base import ExportedFiles
    from edgeq.types import ExportOptions, Feeds

MAX_ATTEMPTS = 8
"""Accuracy control: at most this many top-k steps of a ranking are tried."""
RANKING_SAMPLES = 16
"""Eval samples a sensitivity ranking runs on."""


@dataclass
class LayerGroup:
    """A quantized activation tensor and the layers to return to float so that it stays float."""

    tensor: str
    sqnr_db: float
    layers: list[str]


@dataclass
class Attempt:
    """One rebuild of accuracy control: the options to build with and what they move out of INT8."""

    options: ExportOptions
    record: dict[str, object]
    """What the manifest's ``accuracy_control.attempts`` shows for this rebuild (its ``drop`` is added)."""
    layers_to_float: list[str] = field(default_factory=list)
    layer_tiers: dict[str, str] = field(default_factory=dict)
    settle: Callable[[ExportedFiles, ExportedFiles], None] | None = None
    """Called with (plain, rebuilt) files when the moved layers are known only after the build (NNCF chooses)."""


@dataclass
class ControlRequest:
    """The accuracy budget and the runtime-independent scoring of outputs, for runtimes whose own tool controls
    accuracy (NNCF): ``score(indices, outputs)`` rates the outputs of the eval samples ``indices``, higher better."""

    samples: list[Feeds]
    max_drop: float
    drop_type: str
    score: Callable[[list[int], list[list[np.ndarray]]], float]


@dataclass
class ControlPlan:
    """How a backend's accuracy is controlled: ``method`` for the manifest, ``rank()`` the sensitivity ranking
    (empty when the runtime's tool ranks by itself), ``attempts(groups)`` the rebuilds to try, best first."""

    method: str
    rank: Callable[[], list[LayerGroup]]
    attempts: Callable[[list[LayerGroup]], Iterator[Attempt]]


@runtime_checkable
class RuntimeAdapter(Protocol):
    """One runtime's knowledge that feature code needs; backends themselves stay ``edgeq.runtimes.base.Backend``."""

    runtime: str
    """The ``Backend.runtime`` of the package's backends (``onnxruntime``, ``openvino``, ``tflite``)."""
    artifact_suffix: str
    """The suffix of the file the runtime opens (``.onnx``, ``.xml``, ``.tflite``)."""

    def precisions(self) -> list[str]:
        """The precisions the runtime's backends run (their ``Backend.precision``), in registry order."""
        ...

    def supports_qat(self, backend: str) -> bool:
        """``--qat`` lowers a trained graph for ``backend``."""
        ...

    def supports_accuracy_control(self, backend: str) -> bool:
        """``--max-drop`` / ``--min-fidelity`` can return layers of ``backend`` to float."""
        ...

    def export_qat(self, backend: str, source: Any, calib: Any, out_dir: Path, options: ExportOptions
                   ) -> ExportedFiles:
        """Quantization-aware training (``edgeq.qat``) lowered to ``backend``'s artifact in ``out_dir``."""
        ...

    def control_plan(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, options: ExportOptions,
                     request: ControlRequest, tiered: bool) -> ControlPlan:
        """Accuracy control of ``backend``'s plain PTQ artifact ``plain`` (``tiered``: ``--fallback tiered``)."""
        ...

    def rank_layers(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, feeds: list[Feeds],
                    options: ExportOptions) -> list[LayerGroup]:
        """The sensitivity ranking of ``plain`` on ``feeds``, worst group first (accuracy control, tuning)."""
        ...

    def explain(self, path: Path, feeds: list[Feeds] | None) -> Any:
        """``edgeq.explain.Explanation``: which heavy ops of the artifact at ``path`` really run in INT8."""
        ...

    def has_attention(self, graph: Any) -> bool:
        """Attention in the runtime's graph type (``edgeq.runtimes.attention``'s one rule over its evidence)."""
        ...


def adapter_of(package: str) -> RuntimeAdapter:
    """The adapter of runtime package ``edgeq.runtimes.<package>``."""
    return importlib.import_module(f"edgeq.runtimes.{package}.adapter").ADAPTER


def adapters() -> list[RuntimeAdapter]:
    """Every runtime package's adapter, in registry order."""
    from edgeq.runtimes import runtime_packages

    return [adapter_of(package) for package in runtime_packages()]


class AdapterBase:
    """Shared parts of the adapters: precisions from the registry, capability sets, no QAT / control by default."""

    runtime: str = ""
    artifact_suffix: str = ""
    package: str = ""
    qat_backends: frozenset[str] = frozenset()
    controlled_backends: frozenset[str] = frozenset()

    def precisions(self) -> list[str]:
        from edgeq.runtimes import backend_classes

        return list(dict.fromkeys(cls.precision for cls in backend_classes(self.package)))

    def supports_qat(self, backend: str) -> bool:
        return backend in self.qat_backends

    def supports_accuracy_control(self, backend: str) -> bool:
        return backend in self.controlled_backends

    def export_qat(self, backend: str, source: Any, calib: Any, out_dir: Path, options: ExportOptions
                   ) -> ExportedFiles:
        raise NotImplementedError(f"{backend} has no quantization-aware training route")

    def rank_layers(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, feeds: list[Feeds],
                    options: ExportOptions) -> list[LayerGroup]:
        raise NotImplementedError(f"{backend} has no sensitivity ranking")

    def ranked_plan(self, method: str, tiers: Sequence[str], move: Callable[[str, list[LayerGroup]], Attempt],
                    backend: str, source: Any, calib: Any, plain: ExportedFiles, options: ExportOptions,
                    request: ControlRequest) -> ControlPlan:
        """The plan of a runtime that ranks: ``rank_layers`` on the first ``RANKING_SAMPLES`` eval samples, then the
        top-k groups through ``tiers`` (``move`` builds each rebuild)."""
        return ControlPlan(
            method,
            lambda: self.rank_layers(backend, source, calib, plain, request.samples[:RANKING_SAMPLES], options),
            lambda groups: ranked_attempts(groups, tiers, move))


def config_of(backend: str, options: ExportOptions) -> Any:
    """``backend``'s typed config in ``options`` (its defaults when none was given), found in its runtime package."""
    from edgeq.runtimes import backend_classes, runtime_packages

    for package in runtime_packages():
        for cls in backend_classes(package):
            if cls.name == backend:
                return cls.config_of(options)
    return options.configs[backend]  # a backend registered from outside edgeq: its options were given


def with_option(options: ExportOptions, backend: str, **changes: object) -> ExportOptions:
    """A copy of ``options`` whose config for ``backend`` has ``changes`` (validated)."""
    return options.with_config(backend, config_of(backend, options).updated(**changes))


def channel_sqnr(pre: np.ndarray, post: np.ndarray) -> float:
    """Median over channels (axis 1, or the last axis of a 2-D tensor) of the SQNR in dB of ``post`` vs ``pre``."""
    pre, post = np.asarray(pre, dtype=np.float64), np.asarray(post, dtype=np.float64)
    if pre.ndim < 2:
        pre, post = pre.reshape(1, -1), post.reshape(1, -1)
    moved_pre = np.moveaxis(pre, 1, 0).reshape(pre.shape[1], -1)
    moved_post = np.moveaxis(post, 1, 0).reshape(post.shape[1], -1)
    signal = (moved_pre ** 2).sum(axis=1)
    noise = ((moved_pre - moved_post) ** 2).sum(axis=1)
    live = signal > 0
    if not live.any():
        return float("inf")
    sqnr = 10 * np.log10(signal[live] / np.maximum(noise[live], 1e-30))
    return float(np.median(sqnr))


def sqnr_ranking(pairs: list[tuple[str, list[np.ndarray], list[np.ndarray], list[str]]]) -> list[LayerGroup]:
    """Layer groups from ``(tensor, float values, quantized values, layers)`` per quantized activation (one value per
    sample): the mean over samples of ``channel_sqnr``, worst first; groups without layers are dropped."""
    groups = [LayerGroup(tensor, round(float(np.mean([channel_sqnr(a, b) for a, b in zip(pre, post)])), 2), layers)
              for tensor, pre, post, layers in pairs if layers]
    return sorted(groups, key=lambda g: g.sqnr_db)


def ranked_attempts(groups: list[LayerGroup], tiers: Sequence[str],
                    move: Callable[[str, list[LayerGroup]], Attempt]) -> Iterator[Attempt]:
    """Top-k groups (k = 1, 2, … up to ``MAX_ATTEMPTS``), each k trying every tier cheapest first; ``move(tier,
    top_k)`` is the runtime's rebuild for a tier."""
    for k in range(1, min(len(groups), MAX_ATTEMPTS) + 1):
        for tier in tiers:
            yield move(tier, groups[:k])


def float_attempt(options: ExportOptions, backend: str, key: str, tier: str, top: list[LayerGroup]) -> Attempt:
    """The rebuild that adds the layers of ``top`` to the list option ``key`` of ``backend``'s config (layers left in
    ``tier``)."""
    base = [str(n) for n in getattr(config_of(backend, options), key)]
    layers = list(dict.fromkeys(layer for g in top for layer in g.layers))
    return Attempt(with_option(options, backend, **{key: base + layers}), {"layers_to_float": layers}, layers,
                   dict.fromkeys(layers, tier))


def ranked_layers(groups: list[LayerGroup]) -> list[str]:
    """The manifest's one-line form of a ranking."""
    return [f"{g.tensor} ({g.sqnr_db:g} dB): {', '.join(g.layers)}" for g in groups]
