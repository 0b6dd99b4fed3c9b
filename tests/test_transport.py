"""The device transport (edgeq/devices/transport.py): a new kind is a Transport + a few lines of Device; the cell
logic (push runner/artifact/eval once, exec, pull outputs, clean the scratch dir) comes from Device.run_cell."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import make_export_dir

from edgeq.devices import ArtifactFiles, RunSettings, make_device
from edgeq.devices.base import Device, runner_sha256
from edgeq.devices.config import LocalDeviceConfig
from edgeq.devices.transport import HostTransport, run_process
from edgeq.digest import files_sha256, sha256_file
from edgeq.manifest import Manifest


class FolderTransport(HostTransport):
    """A "remote" device whose file system is a folder: push copies in, pull copies out (as adb or scp would)."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(name)
        self.root = root
        self.log: list[tuple[str, str]] = []

    def push(self, local: Path, remote: str) -> str:
        target = self.root / remote
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            self.log.append(("push", remote))
        return str(target)

    def push_tree(self, root: Path, files: Sequence[str], remote: str) -> str:
        target = self.root / remote
        if not target.exists():
            for rel in files:
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(root) / rel, target / rel)
            self.log.append(("push_tree", remote))
        return str(target)

    def pull(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)
        self.log.append(("pull", Path(remote).name))

    def make_run_dir(self) -> str:
        run_dir = self.root / "runs" / uuid.uuid4().hex
        run_dir.mkdir(parents=True)
        return str(run_dir)


class FolderDevice(Device):
    kind = "folder"

    def __init__(self, config: LocalDeviceConfig, root: Path) -> None:
        super().__init__(config)
        self.python = sys.executable
        self.transport = FolderTransport(self.name, root)

    def prepare(self) -> None:
        """Nothing to reach."""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ArtifactFiles:
    manifest_dir = make_export_dir(tmp_path_factory.mktemp("export")) / "tiny"
    return ArtifactFiles.from_manifest(manifest_dir, Manifest.read(manifest_dir / "manifest.json").artifact("onnx-qdq"))


def test_a_new_transport_gets_the_cell_logic(artifact: ArtifactFiles, tmp_path: Path) -> None:
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, x=np.random.default_rng(0).standard_normal((4, 1, 3, 8, 8)).astype(np.float32))
    settings = RunSettings(timing=False)
    device_root = tmp_path / "device"
    with FolderDevice(LocalDeviceConfig(name="folder", kind="local"), device_root) as device:
        first = device.run_cell(artifact, 1, None, settings, eval_npz, 60, outputs_path=tmp_path / "a.npz")
        second = device.run_cell(artifact, 1, None, settings, eval_npz, 60)
        assert first["ok"] and second["ok"], (first, second)
        # the runner, the artifact and the eval inputs went over once; outputs came back twice
        pushed = sorted(remote for kind, remote in device.transport.log if kind.startswith("push"))
        assert pushed == sorted([f"art/{artifact.sha256}", f"eval/{sha256_file(eval_npz)}.npz",
                                 f"runner-{runner_sha256()[:12]}.py"]), device.transport.log
        assert [kind for kind, _ in device.transport.log].count("pull") == 2
        assert first["artifact"].startswith(str(device_root))  # the runner opened the device's copy
        assert first["outputs_path"] == str(tmp_path / "a.npz")
        assert not list((device_root / "runs").iterdir())  # scratch dirs removed after each cell
        np.testing.assert_array_equal(np.load(second["outputs_path"])["out_0"], np.load(first["outputs_path"])["out_0"])
    with make_device(LocalDeviceConfig(name="host", kind="local")) as local:
        reference = np.load(local.run_cell(artifact, 1, None, settings, eval_npz, 60)["outputs_path"])["out_0"]
    assert reference.shape == (4, 1, 5)
    np.testing.assert_array_equal(np.load(first["outputs_path"])["out_0"], reference)


def test_artifact_digest_is_the_manifests(artifact: ArtifactFiles) -> None:
    """Devices cache uploads under the manifest's digest; recomputing it from the files gives the same value."""
    assert files_sha256(artifact.root, artifact.files) == artifact.sha256


def test_exec_reports_signal_and_timeout(tmp_path: Path) -> None:
    transport = HostTransport("host")
    crashed = transport.exec([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], 30)
    assert crashed.signal == 11 and not crashed.timed_out
    slow = run_process([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert slow.timed_out and slow.signal is None
    done = transport.exec([sys.executable, "-c", "import os; print(os.environ['EDGEQ_T'])"], 30, env={"EDGEQ_T": "7"})
    assert (done.stdout.strip(), done.returncode) == ("7", 0)
