"""Where export jobs run: one ``Executor`` interface, two executors, and the job itself (``export_one``).

- ``SequentialExecutor``: in this process, one backend after another, on the run's ``ExportContext``.
- ``PinnedParallelExecutor``: independent backends at the same time without oversubscribing the CPU. Each job slot
  is one worker process pinned (``sched_setaffinity``) to its own disjoint set of cores, with the thread pools of
  torch/OpenMP sized to that set, so the jobs together never use more cores than the machine (or the process's own
  affinity mask) has. A worker rebuilds the ``ExportContext`` from the request (loading the model and the seeded
  calibration split is deterministic), exports one backend at a time with the same ``export_one`` as the
  sequential path, and sends back the manifest row. One backend's failure, even a crashed worker, never stops the
  others.

A distributed executor (a Ray task per backend, like ``edgeq.tuning.executors.RayExecutor``) implements the same
``Executor.run`` by shipping a picklable ``RemoteJob`` to ``export_remote``, which is what the pinned workers run.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgeq.backends import get_backend
from edgeq.errors import BackendUnavailable, EdgeqError, failure_reason
from edgeq.export.candidate import (
    Candidate,
    backend_log,
    build_candidate,
    failure_marker,
    install,
    log_failure,
    space_needed,
)
from edgeq.export.context import (
    INTERRUPTED,
    EvalContext,
    ExportContext,
    ExportRequest,
    load_calibration,
    load_source,
)
from edgeq.export.control import budget_note, control, has_budget
from edgeq.manifest import Artifact
from edgeq.types import ExportOptions
from edgeq.workdirs import DiskFull, disk_full_error, is_disk_full

logger = logging.getLogger(__name__)

DEFAULT_THREADS_PER_JOB = 2
"""Cores per export job when ``--jobs auto``: calibration (ORT, NNCF) runs models and gains from two threads."""


def export_one(name: str, context: ExportContext) -> Artifact:
    """Export, verify, evaluate (and with a --max-drop budget, accuracy-control) and install one backend's
    artifact; failures become a failed Artifact, never an exception."""
    backend_cls = get_backend(name)
    row = Artifact(backend=name, runtime=backend_cls.runtime, precision=backend_cls.precision)
    try:
        backend_cls.check_available()
    except BackendUnavailable as exc:
        row.status, row.error = "skipped", str(exc)
        return row
    started = time.perf_counter()
    candidate: Candidate | None = None
    try:
        candidate = build_candidate(name, context)
        if has_budget(context):
            candidate, row.accuracy_control = control(name, context, candidate)
        row.export_seconds = round(time.perf_counter() - started, 2)  # accuracy control included
        install(candidate, row, context)
        row.notes = budget_note(row.accuracy_control) + row.notes
    except KeyboardInterrupt:
        if candidate is not None:
            candidate.discard()
        raise
    except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the others go on
        if candidate is not None:
            candidate.discard()
        if INTERRUPTED.is_set():  # a converter caught Ctrl-C's KeyboardInterrupt and raised its own error
            raise KeyboardInterrupt from None
        if is_disk_full(exc):  # not this backend's fault: stop, say where and how much
            raise disk_full_error(context.model_dir / name, space_needed(context, name)) from None
        row.status = "failed"
        row.error = f"{failure_reason(exc)} (details: {log_failure(context.model_dir, name, exc)})"
        row.export_seconds = round(time.perf_counter() - started, 2)
    return row


class Executor(Protocol):
    """Runs one export job per backend; yields each backend's manifest row as it finishes (any order)."""

    name: str

    def run(self, names: list[str], context: ExportContext) -> Iterator[Artifact]: ...


class SequentialExecutor:
    """In this process, one backend after another (Ctrl-C stops between and inside backends)."""

    name = "sequential"

    def __init__(self, on_started: Callable[[str], None] | None = None) -> None:
        self.on_started = on_started

    def run(self, names: list[str], context: ExportContext) -> Iterator[Artifact]:
        for name in names:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            if self.on_started is not None:
                self.on_started(name)
            yield export_one(name, context)


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_slots(jobs: int | str, backends: int, cores: list[int] | None = None) -> list[list[int]]:
    """Disjoint core sets, one per job slot: ``jobs`` slots (``"auto"``: one per DEFAULT_THREADS_PER_JOB cores),
    never more slots than backends or cores; the cores are shared out as evenly as possible."""
    cores = cores if cores is not None else available_cores()
    wanted = max(1, len(cores) // DEFAULT_THREADS_PER_JOB) if jobs == "auto" else int(jobs)
    if wanted < 1:
        raise ValueError(f"--jobs must be at least 1 or 'auto' (got {jobs})")
    count = max(1, min(wanted, backends, len(cores)))
    return [cores[i::count] for i in range(count)]


@dataclass
class RemoteJob:
    """One backend's export job as another process or machine receives it (picklable): the request it reloads
    the model and calibration from, plus what the parent computed once (FP32 references, evaluation)."""

    request: ExportRequest
    backend: str
    model_dir: Path
    references: list[list[Any]]
    evaluation: EvalContext | None


def export_remote(job: RemoteJob) -> Artifact:
    """A worker's side of a job: rebuild the ``ExportContext`` from the request and ``export_one``."""
    from edgeq.ui import native_output_to

    try:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    except ImportError:
        pass
    request = job.request
    with native_output_to(backend_log(job.model_dir, job.backend)):  # import-time chatter too
        source = load_source(request)
        try:
            data = load_calibration(request, source)
            context = ExportContext(source, data.calib, job.model_dir, request.options or ExportOptions(),
                                    list(data.holdout), job.references, job.evaluation)
            return export_one(job.backend, context)
        finally:
            source.close()


def _pin_worker(cores: list[int]) -> None:
    """Process initializer: run on ``cores`` only, with every thread pool sized to them. Ctrl-C is the parent's
    to handle (it stops the workers); a worker dies with its parent, so a killed run leaves no exporting orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(len(cores))
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class PinnedParallelExecutor:
    """``len(slots)`` backends at once, each in a worker process pinned to one slot's cores (module docstring)."""

    name = "pinned-parallel"

    def __init__(self, request: ExportRequest, slots: list[list[int]],
                 on_started: Callable[[str], None] | None = None) -> None:
        self.request, self.slots, self.on_started = request, slots, on_started

    def run(self, names: list[str], context: ExportContext) -> Iterator[Artifact]:
        """Yield one manifest row per backend as each finishes (in completion order)."""
        model_dir = context.model_dir
        todo: queue.Queue[str] = queue.Queue()
        for name in names:
            todo.put(name)
        done: queue.Queue[Artifact | EdgeqError] = queue.Queue()
        mp_context = multiprocessing.get_context("spawn")
        _quiet_resource_tracker()
        stop = threading.Event()
        pools: list[ProcessPoolExecutor] = []

        def start(cores: list[int]) -> ProcessPoolExecutor:
            pool = ProcessPoolExecutor(1, mp_context=mp_context, initializer=_pin_worker, initargs=(cores,))
            pools.append(pool)
            return pool

        def serve(cores: list[int]) -> None:
            if hasattr(signal, "pthread_sigmask"):  # workers started from here inherit it: Ctrl-C reaches the parent
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            pool = start(cores)
            try:
                while not stop.is_set():
                    try:
                        name = todo.get_nowait()
                    except queue.Empty:
                        return
                    if self.on_started is not None:
                        self.on_started(name)
                    job = RemoteJob(self.request, name, model_dir, context.references, context.evaluation)
                    try:
                        row: Artifact | EdgeqError = pool.submit(export_remote, job).result()
                    except BrokenProcessPool:  # the worker died (signal, OOM): report it, start a fresh one
                        pool.shutdown(cancel_futures=True)
                        if stop.is_set():
                            return
                        pool = start(cores)
                        row = _failed_row(name, "export worker process died (killed by a signal or out of memory) "
                                                f"(details: {backend_log(model_dir, name)})")
                    except DiskFull as exc:  # stops the whole export, like the sequential path
                        row = exc
                    except Exception as exc:  # noqa: BLE001 - e.g. the model cannot be loaded in the worker
                        row = _failed_row(name, f"{failure_reason(exc)} "
                                                f"(details: {log_failure(model_dir, name, exc)})")
                    if not isinstance(row, EdgeqError) and row.status == "failed":
                        _show_worker_traceback(model_dir, name)
                    done.put(row)
            finally:
                pool.shutdown(wait=not stop.is_set(), cancel_futures=True)

        workers = [threading.Thread(target=serve, args=(cores,), daemon=True) for cores in self.slots]
        try:
            for worker in workers:
                worker.start()
            for _ in names:
                row = done.get()
                if isinstance(row, EdgeqError):
                    raise row
                yield row
        except BaseException:  # Ctrl-C or disk full: stop every worker now; the caller cleans their build folders
            stop.set()
            _stop_workers(pools)
            for worker in workers:
                worker.join(timeout=10)
            raise
        for worker in workers:
            worker.join()


def _quiet_resource_tracker() -> None:
    """Workers killed on Ctrl-C leave their pool's semaphores to multiprocessing's resource tracker, which frees
    them and prints a "leaked semaphore" warning meant for library authors; keep it off the user's terminal. The
    tracker is a separate process that takes its warning filters from ``sys.warnoptions`` when it starts."""
    if _TRACKER_FILTER not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_FILTER)


_TRACKER_FILTER = "ignore:resource_tracker:UserWarning"


def _stop_workers(pools: list[ProcessPoolExecutor]) -> None:
    """Kill the worker processes and wait until they are gone (their build folders are then stale)."""
    processes = [p for pool in pools for p in (getattr(pool, "_processes", None) or {}).values()]
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)
    for pool in pools:  # releases the pool's queues and their semaphores (no resource_tracker warning)
        with contextlib.suppress(Exception):
            pool.shutdown(wait=True, cancel_futures=True)


def _show_worker_traceback(model_dir: Path, name: str) -> None:
    """``--debug``: the worker wrote a failed backend's traceback into its log (its stderr is that log); show it."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    log = backend_log(model_dir, name)
    text = log.read_text(errors="replace") if log.is_file() else ""
    marker = failure_marker(name)
    if marker in text:
        logger.debug("%s failed in its export worker:\n%s", name, text.rsplit(marker, 1)[1].strip())


def _failed_row(name: str, error: str) -> Artifact:
    cls = get_backend(name)
    return Artifact(backend=name, runtime=cls.runtime, precision=cls.precision, status="failed", error=error)
