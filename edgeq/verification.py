"""Verification in child processes: the FP32 reference and every artifact run outside the ``edgeq export`` process.

A runtime that aborts, segfaults or exits (``LLVM ERROR`` on a full disk) then takes down a child, not the export:
the artifact's child is ``edgeq/targets/runner.py run --no-timing --eval SAMPLES.npz`` (the same runner and crash reading
as ``edgeq bench`` on the local device), one per built artifact, running the held-out samples and the eval samples
in one go; the FP32 reference is ``python -m edgeq.verification reference`` (the source model loaded again, with
the exact weights of the one being exported). What a child prints (C++ logs, the abort message) is appended to the
backend's log file; a crash becomes a one-line reason with the signal and the last line the child printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BackendError, EdgeqError, failure_reason
from edgeq.types import Feeds

CHILD_TIMEOUT_S = 6 * 3600.0
"""A verification child that runs longer than this is killed (a hung runtime must not hang the export forever)."""


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from edgeq.targets.runner import save_npz_atomic

    save_npz_atomic(str(path), arrays)


def _stack(samples: list[Feeds]) -> dict[str, np.ndarray]:
    """Batch-1 samples stacked per input name: (N, *shape), the runner's ``--eval`` layout."""
    names = list(samples[0])
    return {name: np.stack([np.asarray(s[name], dtype=np.asarray(samples[0][name]).dtype) for s in samples])
            for name in names}


def _unstack(path: Path) -> list[list[np.ndarray]]:
    """``out_0, out_1, …`` stacked over samples → per sample, the list of its outputs."""
    with np.load(path, allow_pickle=False) as data:
        keys = sorted((k for k in data.files if k.startswith("out_")), key=lambda k: int(k[4:]))
        stacked = [np.asarray(data[k]) for k in keys]
    count = len(stacked[0]) if stacked else 0
    return [[out[i] for out in stacked] for i in range(count)]


@dataclass
class SampleFiles:
    """The held-out samples and the eval samples in one npz (written once per process, on first use)."""

    holdout: list[Feeds]
    eval_samples: list[Feeds] = field(default_factory=list)
    _tmp: Any = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return len(self.holdout) + len(self.eval_samples)

    def paths(self) -> tuple[Path, Path] | None:
        """(all samples stacked, the first sample alone — the runner's untimed first inference); None if none."""
        if self._tmp is None:
            from edgeq.workdirs import TMP_PREFIX, owned

            self._tmp = tempfile.TemporaryDirectory(prefix=owned(f"{TMP_PREFIX}verify-"))  # a killed run's: removed later
            samples = self.holdout + self.eval_samples
            if samples:
                folder = Path(self._tmp.name)
                _save_npz(folder / "samples.npz", _stack(samples))
                _save_npz(folder / "first.npz", {k: np.asarray(v) for k, v in samples[0].items()})
        if not self.count:
            return None
        folder = Path(self._tmp.name)
        return folder / "samples.npz", folder / "first.npz"

    def scratch(self) -> Path:
        self.paths()
        return Path(self._tmp.name)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tmp": None}  # another process writes its own copy


def _append_log(log: Path, title: str, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"\n--- {title} ---\n{text}")
        if text and not text.endswith("\n"):
            handle.write("\n")


def _run_child(argv: list[str], log: Path, title: str, outputs: Path | None) -> dict[str, Any]:
    """Run a child that follows the runner's protocol (one JSON line on stdout, chatter on stderr, ``out_j`` npz).

    Its stderr is appended to ``log``; returns the JSON, or ``{"ok": False, "error": one line}`` for any failure
    (crash with signal + last stderr line, timeout, error reported by the child)."""
    from edgeq.devices.base import interpret_runner
    from edgeq.devices.transport import run_process

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if outputs is not None:
        outputs.unlink(missing_ok=True)
    try:
        done = run_process(argv, CHILD_TIMEOUT_S, env=env)
    except EdgeqError as exc:
        return {"ok": False, "error": str(exc)}
    _append_log(log, title, done.stderr)
    if done.timed_out:
        return {"ok": False, "error": f"timeout after {CHILD_TIMEOUT_S:g} s (killed)"}
    result = interpret_runner(done.stdout, done.stderr, done.returncode, done.signal)
    if result.get("ok") and outputs is not None and not outputs.is_file():
        return {"ok": False, "error": "runner reported success but wrote no outputs npz"}
    return result


def run_artifact(main: Path, samples: SampleFiles, log: Path) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Open ``main`` in a fresh runner process and run every sample; (runner JSON, outputs per sample).

    Raises ``BackendError`` with one line (signal and last stderr line for a crash) when the child fails."""
    from edgeq.devices.base import RunSettings, runner_path, runner_run_args

    files = samples.paths()
    outputs = samples.scratch() / f"outputs-{main.parent.name}.npz"
    argv = [sys.executable, str(runner_path())]
    if files is None:  # no samples: the child only opens the artifact and reads its I/O details
        argv += runner_run_args(str(main), 1, None, RunSettings(timing=False))
    else:
        argv += [*runner_run_args(str(main), 1, None, RunSettings(timing=False), str(files[0]), str(outputs)),
                 "--inputs", str(files[1])]
    result = _run_child(argv, log, f"verification: runner.py run {main.name}", outputs if files else None)
    if not result.get("ok"):
        raise BackendError(f"verification {result.get('error')}")
    if files is None:
        return result, []
    try:
        return result, _unstack(outputs)
    finally:
        outputs.unlink(missing_ok=True)


def run_reference(model: str, weights: str | Path | None, input_shapes: list[str] | None, samples: SampleFiles,
                  log: Path, trust_model: bool = False) -> list[list[np.ndarray]]:
    """The FP32 source model's outputs for every sample, computed in a child process (``EdgeqError`` if it fails)."""
    files = samples.paths()
    if files is None:
        return []
    outputs = samples.scratch() / "reference.npz"
    argv = [sys.executable, "-m", "edgeq.verification", "reference", "--model", model,
            "--samples", str(files[0]), "--outputs", str(outputs)]
    if weights:
        argv += ["--weights", str(weights)]
    for shape in input_shapes or []:
        argv += ["--input-shape", shape]
    if trust_model:  # the user's --trust-model, for the same model loaded again
        argv.append("--trust-model")
    result = _run_child(argv, log, "FP32 reference", outputs)
    if not result.get("ok"):
        reason = str(result.get("error")).replace("runner", "reference process", 1)
        raise EdgeqError(f"the FP32 reference failed: {reason} (log: {log})")
    try:
        return _unstack(outputs)
    finally:
        outputs.unlink(missing_ok=True)


def reference_weights(source: Any, spec: str, weights: str | Path | None, folder: Path) -> str | Path | None:
    """Weights the reference child must load to rebuild *this* model: a ``file.py:Class`` without ``--weights``
    was initialised in this process (maybe randomly), so its state dict is handed over."""
    if weights or ".py:" not in spec:
        return weights
    import torch

    path = folder / "reference-weights.pt"
    torch.save(source.torch_module().state_dict(), path)
    return path


def match_outputs(names: list[str], shapes: list[list[int]], artifact_outputs: list[dict[str, Any]]) -> list[int]:
    """For each source output, the index of the artifact output that holds it: same name, else the same position
    when its size fits, else the first unused output of the same size (runtimes may reorder outputs)."""
    sizes = [int(np.prod(s)) for s in shapes]
    artifact_sizes = [int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in o.get("shape", [])]))
                      for o in artifact_outputs]
    by_name = {o.get("name"): i for i, o in enumerate(artifact_outputs)}
    chosen: list[int] = []
    for j, (name, size) in enumerate(zip(names, sizes)):
        index = by_name.get(name)
        if index is None or artifact_sizes[index] != size:
            index = j if j < len(artifact_outputs) and artifact_sizes[j] == size and j not in chosen else None
        if index is None:
            index = next((i for i, s in enumerate(artifact_sizes) if s == size and i not in chosen), None)
        if index is None:
            raise BackendError(f"verification: no artifact output matches source output {name!r} "
                               f"({size} values per sample)")
        chosen.append(index)
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# The reference child: python -m edgeq.verification reference --model SPEC --samples S.npz --outputs O.npz
# ---------------------------------------------------------------------------------------------------------------
def _reference_main(args: argparse.Namespace) -> dict[str, Any]:
    from edgeq.models import load_model
    from edgeq.targets.runner import load_npz, save_npz_atomic

    arrays = load_npz(args.samples)
    count = len(next(iter(arrays.values())))
    source = load_model(args.model, args.weights, args.input_shape or None, args.trust_model)
    try:
        collected: list[list[np.ndarray]] = []
        for k in range(count):
            outs = source.reference({name: array[k] for name, array in arrays.items()})
            for j, out in enumerate(outs):
                if j == len(collected):
                    collected.append([])
                collected[j].append(np.asarray(out))
        save_npz_atomic(args.outputs, {f"out_{j}": np.stack(v) for j, v in enumerate(collected)})
        return {"ok": True, "output_names": list(source.output_names), "samples": count}
    finally:
        source.close()


def main(argv: list[str] | None = None) -> int:
    """One JSON line on stdout; whatever the frameworks print goes to stderr (like the runner)."""
    parser = argparse.ArgumentParser(prog="python -m edgeq.verification")
    sub = parser.add_subparsers(dest="command", required=True)
    ref = sub.add_parser("reference")
    ref.add_argument("--model", required=True)
    ref.add_argument("--weights", default=None)
    ref.add_argument("--input-shape", action="append", default=[])
    ref.add_argument("--trust-model", action="store_true")
    ref.add_argument("--samples", required=True)
    ref.add_argument("--outputs", required=True)
    args = parser.parse_args(argv)
    from edgeq.targets.runner import stdout_to_stderr

    with stdout_to_stderr():
        try:
            result = _reference_main(args)
            code = 0
        except Exception as exc:  # noqa: BLE001 - reported as the child's one-line error
            import traceback

            traceback.print_exc()
            result, code = {"ok": False, "error": failure_reason(exc)}, 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
