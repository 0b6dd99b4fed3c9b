"""``edgeq tune``: the Optuna study — objectives, constraints, seeding, resuming, and the trial loop.

Trials are asked in rounds of ``batch`` (default 2) and told in order, so a fixed seed gives the same sequence of
recipes whatever the executor (the local one runs a round's jobs one after another, Ray runs them side by side).
The study lives in ``DIR/study.db`` (SQLite): after Ctrl-C, the same command continues — trials left running are
marked failed and asked again, and their recipes' finished builds and cells come from the cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError, EdgeqError
from edgeq.tuning.results import TuneResult, write_results
from edgeq.tuning.space import SearchSpace, build_space, default_params, suggest
from edgeq.tuning.work import TuneContext, context_fingerprint
from edgeq.workdirs import atomic_write_text

STUDY_NAME = "edgeq-tune"
OBJECTIVES = ("latency", "size", "memory")
PRUNE_SLACK = 0.02
REPEAT_FACTOR = 3
"""``--trials N`` counts distinct recipes; a sampler's repeat of a finished recipe is answered from the cache and
not counted, up to ``REPEAT_FACTOR × N`` trials in all."""


@dataclass
class TuneRequest:
    """Everything ``edgeq tune`` needs, as given on the command line."""

    model: str
    calib: str
    eval_spec: str
    out: Path
    devices_file: Path | None = None
    device_names: list[str] = field(default_factory=list)
    weights: str | None = None
    input_shapes: list[str] | None = None
    metric: str | None = None
    eval_samples: int | None = None
    max_drop: float | None = None
    min_fidelity: float | None = None
    drop_type: str = "absolute"
    objectives: list[str] = field(default_factory=lambda: ["latency"])
    trials: int = 20
    timeout_s: float | None = None
    train: str | None = None
    ray: bool = False
    ray_address: str | None = None
    backends: list[str] | None = None
    space_file: Path | None = None
    seed: int = 0
    batch: int = 2
    sampler: str = "tpe"
    runs: int = 20
    min_seconds: float = 1.0


@dataclass(frozen=True)
class Objective:
    """One value Optuna optimises: ``latency`` on a device, ``metric``, ``size`` or ``memory``."""

    kind: str
    device: str | None = None
    direction: str = "minimize"

    @property
    def name(self) -> str:
        return f"latency_ms@{self.device}" if self.kind == "latency" else {
            "size": "size_mb", "memory": "memory_mb"}.get(self.kind, self.kind)

    @property
    def quality(self) -> bool:
        return self.kind in ("metric", "fidelity")


def plan_objectives(wanted: list[str], devices: list[Any], higher_is_better: bool = True) -> list[Objective]:
    """User objectives in order (latency once per non-emulated device), then the metric and the fidelity.

    The fidelity (cosine min vs FP32 on held-out data, from the manifest's verification) ranks artifacts whose
    metric ties: on a few hundred eval samples the metric moves in coarse steps (every digits artifact scores
    98.67 %), and without it the front collapses to the single fastest point."""
    out: list[Objective] = []
    for kind in dict.fromkeys(wanted):
        if kind not in OBJECTIVES:
            raise ConfigError(f"--objective must be one of {', '.join(OBJECTIVES)} (got {kind!r})")
        if kind == "latency":
            out += [Objective("latency", d.name) for d in devices if not d.emulated]
        else:
            out.append(Objective(kind))
    out.append(Objective("metric", direction="maximize" if higher_is_better else "minimize"))
    out.append(Objective("fidelity", direction="maximize"))
    return out


def check_request(request: TuneRequest) -> None:
    """Inconsistent options fail in one line before any work."""
    if request.max_drop is not None and request.min_fidelity is not None:
        raise ConfigError("--max-drop and --min-fidelity cannot be combined: choose one budget")
    if request.max_drop is not None and request.max_drop < 0:
        raise ConfigError(f"--max-drop must be >= 0 (got {request.max_drop})")
    if request.min_fidelity is not None and not 0.0 < request.min_fidelity <= 1.0:
        raise ConfigError(f"--min-fidelity must be in (0, 1] (got {request.min_fidelity})")
    if request.trials < 1:
        raise ConfigError("--trials must be >= 1")
    if request.batch < 1:
        raise ConfigError("--batch must be >= 1")
    if request.sampler not in ("tpe", "nsga2"):
        raise ConfigError(f"--sampler must be tpe or nsga2 (got {request.sampler!r})")
    if request.drop_type not in ("absolute", "relative"):
        raise ConfigError(f"--drop-type must be absolute or relative (got {request.drop_type!r})")


def violation(request: TuneRequest, record: dict[str, Any]) -> float:
    """Constraint value (≤ 0: the budget is met): drop − max_drop, or min_fidelity − cosine_min vs FP32."""
    if request.max_drop is not None:
        return float(record.get("metric", {}).get("drop", float("inf"))) - request.max_drop
    if request.min_fidelity is not None:
        cosine = record.get("fidelity", {}).get("cosine_min")
        return request.min_fidelity - float(cosine) if cosine is not None else 1.0
    return 0.0


def hopeless(request: TuneRequest, record: dict[str, Any]) -> bool:
    """Pruned before timing: more than twice the budget off, plus a slack (``PRUNE_SLACK``)."""
    gap = violation(request, record)
    if request.max_drop is not None:
        return gap > request.max_drop + PRUNE_SLACK
    if request.min_fidelity is not None:
        return gap > (1.0 - request.min_fidelity) + PRUNE_SLACK
    return False


def _sampler(request: TuneRequest, startup: int) -> Any:
    """Seeded multi-objective TPE (default) or NSGA-II; both read the budget from ``trial.set_constraint``."""
    import warnings

    import optuna

    if request.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=request.seed, population_size=max(4, min(20, request.trials // 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group=True
        return optuna.samplers.TPESampler(seed=request.seed, multivariate=True, group=True,
                                          n_startup_trials=max(startup, 4))


class Events:
    """``DIR/events.jsonl``: one line per build / cell, executed or taken from the cache (what the tests read)."""

    def __init__(self, path: Path, on_event: Callable[[dict[str, Any]], None] | None) -> None:
        self.path, self.on_event = path, on_event

    def __call__(self, **event: Any) -> None:
        event = {"t": round(time.time(), 3), **event}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(event) + "\n")
        if self.on_event is not None:
            self.on_event(event)


def _open_study(request: TuneRequest, out: Path, objectives: list[Objective], startup: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    meta_path = out / "tune.json"
    meta = {"objectives": [o.name for o in objectives], "max_drop": request.max_drop,
            "min_fidelity": request.min_fidelity, "seed": request.seed, "sampler": request.sampler,
            "model": request.model}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        changed = [k for k in meta if old.get(k) != meta[k]]
        if changed:
            raise ConfigError(f"{out} holds a search with another {changed[0]} ({old.get(changed[0])!r}); "
                              f"use another --out to start a new one")
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=STUDY_NAME,
                               directions=[o.direction for o in objectives], load_if_exists=True,
                               sampler=_sampler(request, startup))


def _counted(trials: list[Any]) -> set[str]:
    """Keys of the distinct recipes finished so far (what ``--trials`` counts)."""
    from optuna.trial import TrialState

    return {str(t.user_attrs.get("key")) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "error" in t.user_attrs)}


def _resume(study: Any, space: SearchSpace) -> set[str]:
    """Trials left RUNNING by an interrupted run are marked failed and asked again; returns the finished keys."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    if not study.trials:
        for params in default_params(space):
            study.enqueue_trial(params, user_attrs={"seed_recipe": True})
    return _counted(study.get_trials(deepcopy=False))


def _objective_values(objectives: list[Objective], record: dict[str, Any], cells: dict[str, dict[str, Any]]
                      ) -> list[float]:
    values = []
    for objective in objectives:
        if objective.kind == "latency":
            values.append(float(cells[str(objective.device)]["p50_ms"]))
        elif objective.kind == "size":
            values.append(record["size_bytes"] / 1e6)
        elif objective.kind == "memory":
            rss = [c["peak_rss_mb"] for c in cells.values() if c.get("peak_rss_mb") is not None]
            values.append(max(rss) if rss else 0.0)
        elif objective.kind == "fidelity":
            values.append(float((record.get("fidelity") or {}).get("cosine_min") or 0.0))
        else:
            values.append(float(record["metric"]["value"]))
    return values


def _run_round(executor: Any, context: TuneContext, request: TuneRequest, trials: list[Any], recipes: list[Any],
               devices: list[Any], events: Events) -> dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
    """Build every distinct recipe of the round, then measure the promising ones on every device."""
    keys = {recipe.key(context.key_salt): recipe for recipe in recipes}
    handles: dict[Any, tuple[str, str, str | None]] = {}
    for key, recipe in keys.items():
        handles[executor.submit_build(context, recipe)] = ("build", key, None)
    builds: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in keys}
    while handles:
        done, _pending = executor.wait_any(list(handles))
        for handle in done:
            kind, key, device = handles.pop(handle)
            result = executor.result(handle)
            if kind == "build":
                builds[key] = result
                events(event="build-cached" if result.get("cached") else "build", key=key,
                       recipe=keys[key].label(), status=result["status"], error=result.get("error"))
                if result["status"] == "ok" and not hopeless(request, result):
                    for dev in devices:
                        handles[executor.submit_cell(context, key, result["manifest_dir"], dev.name)] = (
                            "cell", key, dev.name)
            else:
                assert device is not None
                cells[key][device] = result
                events(event="cell" if result.get("executed") else "cell-cached", key=key, device=device,
                       status=result["status"], started=result.get("started"), ended=result.get("ended"),
                       p50_ms=result.get("p50_ms"), error=result.get("error"))
    return {key: (builds[key], cells[key]) for key in keys}


def _tell(study: Any, trial: Any, request: TuneRequest, objectives: list[Objective], record: dict[str, Any],
          cells: dict[str, dict[str, Any]], devices: list[Any]) -> str:
    from optuna.trial import TrialState

    summary = {k: record.get(k) for k in ("backend", "precision", "size_bytes", "metric", "fidelity",
                                          "manifest_dir", "error", "layers_to_float")}
    trial.set_user_attr("key", record["key"])
    trial.set_user_attr("build", summary)
    trial.set_user_attr("cells", {d: {k: c.get(k) for k in ("status", "p50_ms", "best_threads", "peak_rss_mb",
                                                             "threads", "emulated", "error", "precision")}
                                  for d, c in cells.items()})
    gap = violation(request, record) if record["status"] == "ok" else 1.0
    trial.set_user_attr("constraint", [gap])
    if request.max_drop is not None or request.min_fidelity is not None:
        trial.set_constraint("budget", gap)
    if record["status"] != "ok":
        trial.set_user_attr("error", f"build failed: {record.get('error')}")
        study.tell(trial, state=TrialState.FAIL)
        return "failed"
    if hopeless(request, record):
        trial.set_user_attr("pruned", "budget far out of reach before timing")
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned"
    broken = [d.name for d in devices if cells.get(d.name, {}).get("status") != "ok"]
    if broken:
        trial.set_user_attr("error", f"cell failed on {broken[0]}: {cells.get(broken[0], {}).get('error')}")
        study.tell(trial, state=TrialState.FAIL)
        return "failed"
    study.tell(trial, _objective_values(objectives, record, cells))
    return "complete"


def run_tune(request: TuneRequest, on_event: Callable[[dict[str, Any]], None] | None = None,
             on_step: Callable[[str], None] | None = None) -> TuneResult:
    """The whole search: plan, seed or resume the study, run rounds of trials, write the results."""
    from edgeq.benchmark import load_device_list
    from edgeq.devices import make_device
    from edgeq.export.context import noting_interrupts
    from edgeq.export.orchestration import check_writable
    from edgeq.tuning.executors import make_executor

    step = on_step or (lambda _m: None)
    started = time.perf_counter()
    check_request(request)
    out = Path(request.out).resolve()
    check_writable(out)
    devices_file = Path(request.devices_file).resolve() if request.devices_file else None
    configs = load_device_list(devices_file, request.device_names)
    devices = [make_device(c) for c in configs]
    step("loading model and the FP32 reference on the eval set")
    higher_is_better, torch_source = _probe(request)
    if request.train is not None and not torch_source:
        raise ConfigError("--train (QAT epochs in the search) needs a PyTorch model (path/to/file.py:Class)")
    space = build_space(request.backends, request.space_file, budget=request.max_drop is not None,
                        train=request.train is not None, torch_source=torch_source)
    objectives = plan_objectives(request.objectives, devices, higher_is_better)
    context = TuneContext(
        out=out, model=_absolute(request.model), calib=_absolute(str(request.calib)),
        eval_spec=_absolute(request.eval_spec),
        weights=str(Path(request.weights).resolve()) if request.weights else None,
        input_shapes=tuple(request.input_shapes or ()), metric=request.metric, eval_samples=request.eval_samples,
        drop_type=request.drop_type, max_drop=request.max_drop, seed=request.seed,
        train=_absolute(request.train) if request.train else None, devices_file=str(devices_file) if devices_file else None, runs=request.runs,
        min_seconds=request.min_seconds)
    context = TuneContext(**{**context.__dict__, "key_salt": context_fingerprint(context)})
    study = _open_study(request, out, objectives, startup=len(space.backends))
    seen = _resume(study, space)
    events = Events(out / "events.jsonl", on_event)
    executor = make_executor(request.ray_address, request.ray, configs)
    step(f"searching {len(space.backends)} backends: {max(0, request.trials - len(seen))} trial(s) to go "
         f"({len(seen)} done), executor {executor.name}")
    asked, max_asks = 0, REPEAT_FACTOR * request.trials
    with noting_interrupts():  # Ctrl-C stops the search even where a converter swallows KeyboardInterrupt
        try:
            while len(seen) < request.trials and asked < max_asks:
                if request.timeout_s is not None and time.perf_counter() - started > request.timeout_s:
                    step(f"--timeout {request.timeout_s:g} s reached")
                    break
                count = min(request.batch, request.trials - len(seen))
                trials = [study.ask() for _ in range(count)]
                asked += count
                recipes = [suggest(t, space) for t in trials]
                outcomes = _run_round(executor, context, request, trials, recipes, devices, events)
                for trial, recipe in zip(trials, recipes):
                    record, cells = outcomes[recipe.key(context.key_salt)]
                    key = recipe.key(context.key_salt)
                    state = _tell(study, trial, request, objectives, record, cells, devices)
                    repeat = key in seen
                    seen.add(key)
                    step(f"trial {trial.number}: {recipe.label()} → {state}"
                         + (" (a repeat: answered from the cache, not counted)" if repeat else ""))
            step("timing the fastest candidates per device side by side")

            def confirm(device: str, rows: list[dict[str, Any]]) -> dict[str, float]:
                return confirm_side_by_side(executor, context, device, rows, events)

            return write_results(request, out, study, objectives, devices, started, executor.name, confirm)
        finally:
            executor.close()


CONFIRM_ROUNDS = 3


def confirm_side_by_side(executor: Any, context: TuneContext, device: str, rows: list[dict[str, Any]],
                         events: Events) -> dict[str, float]:
    """Median p50 per candidate over ``CONFIRM_ROUNDS`` rounds of fresh cells (A B C, A B C, …) on ``device``,
    through the bench harness into ``DIR/confirm/<run>/<device>/<round>/``. Never cached: the point is that the
    candidates are timed now, side by side, not at different moments of the search."""
    import statistics

    run = time.strftime("%Y%m%dT%H%M%S")
    samples: dict[str, list[float]] = {str(r["key"]): [] for r in rows}
    for round_index in range(CONFIRM_ROUNDS):
        for row in rows:
            key = str(row["key"])
            out_dir = context.out / "confirm" / run / device / str(round_index) / key
            result = executor.result(executor.submit_cell(context, key, row["manifest_dir"], device, out_dir))
            events(event="confirm" if result.get("executed") else "confirm-cached", key=key, device=device,
                   status=result["status"], started=result.get("started"), ended=result.get("ended"),
                   p50_ms=result.get("p50_ms"))
            if result.get("p50_ms") is not None:
                samples[key].append(float(result["p50_ms"]))
    return {key: statistics.median(values) for key, values in samples.items() if values}


def _absolute(spec: str) -> str:
    """A data/model spec with its local path made absolute (Ray workers may run elsewhere); other forms as given."""
    path, sep, rest = spec.rpartition(":") if ".py:" in spec else (spec, "", "")
    candidate = Path(path)
    if candidate.exists() and not candidate.is_absolute():
        return str(candidate.resolve()) + sep + rest
    return spec


def _probe(request: TuneRequest) -> tuple[bool, bool]:
    """(metric higher is better, PyTorch source) — loads the model once, so bad input fails before the search."""
    from edgeq.evaluation import choose_metric, load_eval_set
    from edgeq.models import load_model

    source = load_model(request.model, request.weights, request.input_shapes)
    try:
        eval_set = load_eval_set(request.eval_spec, list(source.inputs), source.layout,
                                 min(request.eval_samples or 8, 8))
        references = [source.reference(feeds)[0] for feeds in eval_set.samples]
        metric = choose_metric(request.metric, eval_set, references)
        return metric.higher_is_better, source.framework == "torch"
    except EdgeqError:
        raise
    finally:
        source.close()
