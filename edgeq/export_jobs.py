"""Export independent backends at the same time without oversubscribing the CPU.

Each job slot is one worker process pinned (``sched_setaffinity``) to its own disjoint set of cores, with the
thread pools of torch/OpenMP sized to that set, so the jobs together never use more cores than the machine (or the
process's own affinity mask) has. A worker loads the model and the seeded calibration split itself (both are
deterministic), exports one backend at a time with the same ``export_one`` as the sequential path, and sends back
the manifest row. One backend's failure, even a crashed worker, never stops the others.
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
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.errors import EdgeqError, failure_reason
from edgeq.workdirs import DiskFull

if TYPE_CHECKING:
    from edgeq.manifest import Artifact
    from edgeq.pipeline import ExportRequest

logger = logging.getLogger(__name__)

DEFAULT_THREADS_PER_JOB = 2
"""Cores per export job when ``--jobs auto``: calibration (ORT, NNCF) runs models and gains from two threads."""


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
class _Job:
    request: ExportRequest
    backend: str
    model_dir: Path
    references: list[list[Any]]
    evaluation: Any


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


def _export_in_worker(job: _Job) -> Artifact:
    from edgeq.calibration import prepare_calibration
    from edgeq.models import load_model
    from edgeq.pipeline import LOG_DIR, export_one
    from edgeq.types import ExportOptions

    try:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    except ImportError:
        pass
    from edgeq.ui import native_output_to

    request = job.request
    with native_output_to(job.model_dir / LOG_DIR / f"{job.backend}.log"):  # import-time chatter too
        source = load_model(request.model, request.weights, request.input_shapes, request.trust_model)
        try:
            data = prepare_calibration(request.calib, source.inputs, source.layout, samples=request.calib_samples,
                                       seed=request.seed, holdout=request.holdout,
                                       holdout_samples=request.holdout_samples)
            return export_one(job.backend, source, data.calib, job.model_dir, request.options or ExportOptions(),
                              list(data.holdout), job.references, job.evaluation)
        finally:
            source.close()


def export_in_parallel(request: ExportRequest, names: list[str], model_dir: Path, references: list[list[Any]],
                       evaluation: Any, slots: list[list[int]],
                       on_started: Callable[[str], None] | None = None) -> Iterator[Artifact]:
    """Yield one manifest row per backend as each finishes (in completion order), exporting ``len(slots)`` at once."""

    todo: queue.Queue[str] = queue.Queue()
    for name in names:
        todo.put(name)
    done: queue.Queue[Artifact | EdgeqError] = queue.Queue()
    context = multiprocessing.get_context("spawn")
    _quiet_resource_tracker()
    stop = threading.Event()
    executors: list[ProcessPoolExecutor] = []

    def start(cores: list[int]) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(1, mp_context=context, initializer=_pin_worker, initargs=(cores,))
        executors.append(executor)
        return executor

    def serve(cores: list[int]) -> None:
        if hasattr(signal, "pthread_sigmask"):  # workers started from here inherit it: Ctrl-C reaches the parent only
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        executor = start(cores)
        try:
            while not stop.is_set():
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                if on_started is not None:
                    on_started(name)
                try:
                    row: Artifact | EdgeqError = executor.submit(
                        _export_in_worker, _Job(request, name, model_dir, references, evaluation)).result()
                except BrokenProcessPool:  # the worker died (signal, OOM): report it, start a fresh one
                    executor.shutdown(cancel_futures=True)
                    if stop.is_set():
                        return
                    executor = start(cores)
                    from edgeq.pipeline import backend_log

                    row = _failed_row(name, "export worker process died (killed by a signal or out of memory) "
                                            f"(details: {backend_log(model_dir, name)})")
                except DiskFull as exc:  # stops the whole export, like the sequential path
                    row = exc
                except Exception as exc:  # noqa: BLE001 - e.g. the model cannot be loaded in the worker
                    from edgeq.pipeline import log_failure

                    row = _failed_row(name, f"{failure_reason(exc)} (details: {log_failure(model_dir, name, exc)})")
                if not isinstance(row, EdgeqError) and row.status == "failed":
                    _show_worker_traceback(model_dir, name)
                done.put(row)
        finally:
            executor.shutdown(wait=not stop.is_set(), cancel_futures=True)

    workers = [threading.Thread(target=serve, args=(cores,), daemon=True) for cores in slots]
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
        _stop_workers(executors)
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


def _stop_workers(executors: list[ProcessPoolExecutor]) -> None:
    """Kill the worker processes and wait until they are gone (their build folders are then stale)."""
    processes = [p for executor in executors for p in (getattr(executor, "_processes", None) or {}).values()]
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)
    for executor in executors:  # releases the pool's queues and their semaphores (no resource_tracker warning)
        with contextlib.suppress(Exception):
            executor.shutdown(wait=True, cancel_futures=True)


def _show_worker_traceback(model_dir: Path, name: str) -> None:
    """``--debug``: the worker wrote a failed backend's traceback into its log (its stderr is that log); show it."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    from edgeq.pipeline import backend_log, failure_marker

    log = backend_log(model_dir, name)
    text = log.read_text(errors="replace") if log.is_file() else ""
    marker = failure_marker(name)
    if marker in text:
        logger.debug("%s failed in its export worker:\n%s", name, text.rsplit(marker, 1)[1].strip())


def _failed_row(name: str, error: str) -> Artifact:
    from edgeq.backends import get_backend
    from edgeq.manifest import Artifact

    cls = get_backend(name)
    return Artifact(backend=name, runtime=cls.runtime, precision=cls.precision, status="failed", error=error)
