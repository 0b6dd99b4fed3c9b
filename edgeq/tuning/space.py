"""The typed search space of ``edgeq tune``, built from the backend registry and each backend's capabilities.

Every backend in ``edgeq.backends.REGISTRY`` whose packages are installed joins the space automatically, with the
knobs it supports:

- calibration method: the backend module's ``SUPPORTED_METHODS`` / ``CALIBRATION_METHODS`` (or a ``calib_methods``
  class attribute); calibration-free backends (fp32/fp16) have none;
- calibration sample count (backends that calibrate);
- per-layer fallback: the top-k groups of the sensitivity ranking of ``edgeq.accuracy`` returned to float
  (``onnx-qdq``: ORT ``nodes_to_exclude``; ``tflite-int8``: PT2E modules left unannotated); ``openvino-int8``
  instead offers NNCF's accuracy control when a ``--max-drop`` budget is given;
- typed backend options (``OPTION_CHOICES``), e.g. tflite-int8 model I/O;
- with ``--train`` (PyTorch sources): QAT epochs for the INT8 backends that support QAT.

A YAML space file (``--space``) restricts it: ``backends: {onnx-qdq: {calib_methods: [minmax, percentile],
fallback: [0, 1, 2]}}`` — only the listed backends, each field a subset of what the backend supports.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeq.errors import ConfigError

FALLBACK_KEYS = {"onnx-qdq": "nodes_to_exclude", "tflite-int8": "exclude_modules"}
"""Backends whose sensitivity ranking (edgeq.accuracy) feeds a per-layer float fallback, and their config field."""
OPTION_CHOICES: dict[str, dict[str, list[Any]]] = {
    "tflite-int8": {"tflite_io": ["int8", "float"], "tflite_narrow_convs": ["int8", "float"]},
    "openvino-int8": {"preset": ["performance", "mixed"]},
}
"""Options searched by default (first value = the backend's default recipe): the shared ``ExportOptions`` fields
(``tflite_io``, ``tflite_narrow_convs``) or fields of the backend's typed config (``Backend.Config``)."""
DEFAULT_CALIB_SAMPLES = (100, 300)
DEFAULT_FALLBACK = (0, 1, 2, 4)
DEFAULT_QAT_EPOCHS = (0, 1, 2)
Choice = str | int | float | bool


class BackendSpace(BaseModel):
    """What may vary for one backend (first value of each list = the default recipe's value)."""

    model_config = ConfigDict(extra="forbid")
    calib_methods: list[str] = Field(default_factory=list, description="Calibration methods (empty: no calibration).")
    calib_samples: list[int] = Field(default_factory=list, description="Calibration sample counts.")
    fallback: list[int] = Field(default_factory=lambda: [0], description="Top-k sensitive layer groups in float.")
    accuracy_control: list[bool] = Field(default_factory=lambda: [False], description="NNCF accuracy control.")
    options: dict[str, list[Choice]] = Field(default_factory=dict, description="Typed backend options.")
    qat_epochs: list[int] = Field(default_factory=lambda: [0], description="QAT epochs (0 = plain PTQ).")


class SearchSpace(BaseModel):
    """The whole space: one entry per backend."""

    model_config = ConfigDict(extra="forbid")
    backends: dict[str, BackendSpace] = Field(min_length=1)


class Recipe(BaseModel):
    """One point of the space: everything that decides the artifact. Irrelevant knobs are normalised away."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str
    calib_method: str | None = None
    calib_samples: int | None = None
    fallback: int = 0
    accuracy_control: bool = False
    options: dict[str, Choice] = Field(default_factory=dict)
    qat_epochs: int = 0

    def key(self, context: str) -> str:
        """Stable 16-hex id of this recipe for one model/data context: same id → same artifact (cache key)."""
        text = json.dumps({"context": context, "recipe": self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human form: ``onnx-qdq percentile/100 fb2``."""
        parts = [self.backend]
        if self.calib_method:
            parts.append(f"{self.calib_method}/{self.calib_samples}")
        if self.fallback:
            parts.append(f"fb{self.fallback}")
        if self.accuracy_control:
            parts.append("ac")
        if self.qat_epochs:
            parts.append(f"qat{self.qat_epochs}")
        parts += [f"{k.split('_')[-1]}={v}" for k, v in sorted(self.options.items())
                  if v != OPTION_CHOICES.get(self.backend, {}).get(k, [v])[0]]
        return " ".join(parts)


def calib_methods_of(name: str, cls: type) -> list[str]:
    """The calibration methods a backend accepts, read from the backend itself (minmax when it says nothing)."""
    if not getattr(cls, "needs_calibration", False):
        return []
    declared = getattr(cls, "calib_methods", None)
    if declared is None:
        module = importlib.import_module(cls.__module__)
        declared = getattr(module, "SUPPORTED_METHODS", None)
        table = getattr(module, "CALIBRATION_METHODS", None)
        if declared is None and isinstance(table, dict):
            declared = [m for m, v in table.items() if v is not None]
    methods = [str(m) for m in (declared or ["minmax"])]
    return sorted(methods, key=lambda m: m != "minmax")  # minmax first: the default recipe


def capabilities(name: str, *, budget: bool, train: bool, torch_source: bool) -> BackendSpace:
    """Everything one backend supports, as a BackendSpace."""
    from edgeq.backends import adapter_for, get_backend

    cls = get_backend(name)
    methods = calib_methods_of(name, cls)
    space = BackendSpace(calib_methods=methods, calib_samples=list(DEFAULT_CALIB_SAMPLES) if methods else [],
                         options={k: list(v) for k, v in OPTION_CHOICES.get(name, {}).items()})
    if name in FALLBACK_KEYS:
        space.fallback = list(DEFAULT_FALLBACK)
    if name == "openvino-int8" and budget:
        space.accuracy_control = [False, True]
    if train and torch_source and adapter_for(name).supports_qat(name):
        space.qat_epochs = list(DEFAULT_QAT_EPOCHS)
    return space


def available_backends() -> list[str]:
    """Registry backends whose packages are installed (a new backend joins the search when it is registered)."""
    from edgeq.backends import REGISTRY, get_backend
    from edgeq.errors import BackendUnavailable

    found = []
    for name in REGISTRY:
        try:
            get_backend(name).check_available()
        except (BackendUnavailable, ImportError):
            continue
        found.append(name)
    return found


def _restrict(name: str, full: BackendSpace, wanted: BackendSpace, given: set[str]) -> BackendSpace:
    """``wanted`` (from the space file) must be a subset of ``full``; unspecified fields keep ``full``."""
    merged = full.model_copy(deep=True)
    for field in given:
        values = getattr(wanted, field)
        allowed = getattr(full, field)
        if field == "options":
            for option, choices in values.items():
                if option not in allowed:
                    raise ConfigError(f"space file: backend {name} has no searchable option {option!r} "
                                      f"(it has: {', '.join(allowed) or 'none'})")
                bad = [c for c in choices if c not in allowed[option]]
                if bad or not choices:
                    raise ConfigError(f"space file: {name} option {option} allows {allowed[option]} (got {choices})")
            merged.options = {**merged.options, **values}
            continue
        if field != "calib_samples":  # any positive sample count is fine
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"space file: backend {name} does not support {field} {bad[0]!r} "
                                  f"(supported: {allowed})")
        elif any(v < 1 for v in values) or (values and not full.calib_methods):
            raise ConfigError(f"space file: {name}: calib_samples must be ≥ 1 and only for calibrating backends")
        if not values and allowed:
            raise ConfigError(f"space file: {name}: {field} must not be empty")
        setattr(merged, field, list(values))
    return merged


def build_space(backends: list[str] | None = None, space_file: str | Path | None = None, *, budget: bool = False,
                train: bool = False, torch_source: bool = False) -> SearchSpace:
    """The search space: installed registry backends (or ``--backend``), restricted by the YAML ``space_file``."""
    from edgeq.backends import resolve

    installed = available_backends()
    names = installed if not backends or backends == ["all"] else resolve(backends)
    missing = [n for n in names if n not in installed]
    if missing:
        raise ConfigError(f"backend {missing[0]} is not installed (see `edgeq backends`)")
    wanted: dict[str, tuple[BackendSpace, set[str]]] = {}
    if space_file is not None:
        wanted = _read_space_file(Path(space_file))
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ConfigError(f"space file: backend {unknown[0]!r} is not in the search "
                              f"(searchable: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    spaces = {}
    for name in names:
        full = capabilities(name, budget=budget, train=train, torch_source=torch_source)
        spaces[name] = _restrict(name, full, *wanted[name]) if name in wanted else full
    return SearchSpace(backends=spaces)


def _read_space_file(path: Path) -> dict[str, tuple[BackendSpace, set[str]]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"space file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict) or not data["backends"]:
        raise ConfigError(f"{path}: expected 'backends:' mapping backend names to their choices")
    found = {}
    for name, body in data["backends"].items():
        try:
            parsed = BackendSpace.model_validate(body or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"{path}: backend {name}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        found[str(name)] = (parsed, set((body or {}).keys()))
    return found


def suggest(trial: Any, space: SearchSpace) -> Recipe:
    """Ask an Optuna trial for one recipe. Parameters are namespaced by backend (``onnx-qdq.calib_method``)."""
    name = trial.suggest_categorical("backend", list(space.backends))
    bs = space.backends[name]
    values: dict[str, Any] = {"backend": name}
    if bs.calib_methods:
        values["calib_method"] = trial.suggest_categorical(f"{name}.calib_method", bs.calib_methods)
        values["calib_samples"] = trial.suggest_categorical(f"{name}.calib_samples", bs.calib_samples)
    for field in ("fallback", "accuracy_control", "qat_epochs"):
        choices = getattr(bs, field)
        values[field] = trial.suggest_categorical(f"{name}.{field}", choices) if len(choices) > 1 else choices[0]
    values["options"] = {k: trial.suggest_categorical(f"{name}.{k}", v) for k, v in sorted(bs.options.items())}
    return normalise(Recipe(**values))


def normalise(recipe: Recipe) -> Recipe:
    """Drop knobs that cannot change the artifact, so equal artifacts share one cache key."""
    update: dict[str, Any] = {}
    if recipe.qat_epochs:  # QAT trains every quantized layer: no float fallback, no accuracy control
        update |= {"fallback": 0, "accuracy_control": False}
    return recipe.model_copy(update=update) if update else recipe


def default_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Optuna params of each backend's default recipe (what ``edgeq export`` builds), to seed the study."""
    seeds = []
    for name, bs in space.backends.items():
        params: dict[str, Any] = {"backend": name}
        if bs.calib_methods:
            params[f"{name}.calib_method"] = "minmax" if "minmax" in bs.calib_methods else bs.calib_methods[0]
            params[f"{name}.calib_samples"] = max(bs.calib_samples)
        for field, default in (("fallback", 0), ("accuracy_control", False), ("qat_epochs", 0)):
            choices = getattr(bs, field)
            if len(choices) > 1:
                params[f"{name}.{field}"] = default if default in choices else choices[0]
        for option, choices in bs.options.items():
            params[f"{name}.{option}"] = choices[0]
        seeds.append(params)
    return seeds
