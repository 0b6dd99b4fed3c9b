"""kind: ssh — any OpenSSH destination, through the system ``ssh`` client (so ~/.ssh/config, the agent and
known_hosts apply). Every remote command is built from ``shlex.quote``d parts; ssh itself gets an argument
list, never a local shell string.

Layout on the device (``workdir``, default ``~/.cache/edgeq``)::

    runner-<sha12>.py          the runner, uploaded once per runner version
    art/<artifact sha256>/     the artifact's files, uploaded once (``.edgeq-complete`` marks a full upload)
    eval/<sha256>.npz          eval inputs, uploaded once
    runs/<uuid>/outputs.npz    one cell's eval outputs, fetched back and deleted
    venv/                      optional, made by ``edgeq devices check --provision``; used when present
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

from edgeq.devices.base import (
    ArtifactFiles,
    Device,
    RunSettings,
    failure,
    interpret_runner,
    last_line,
    runner_path,
    runner_run_args,
    runner_sha256,
)
from edgeq.devices.local import run_process, runner_info
from edgeq.errors import DeviceError

_MARKER = re.compile(r"^EDGEQ_(PID|EXIT|HOME|VENV|PY|OK):(.*)$")
_EXTRACT = ("import sys, tarfile; t = tarfile.open(fileobj=sys.stdin.buffer, mode='r|'); "
            "kw = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}; t.extractall(sys.argv[1], **kw)")
_SSH_FAILED = 255
_CONTROL_TIMEOUT_S = 60.0


def q(value: str | Path) -> str:
    return shlex.quote(str(value))


def _markers(stderr: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        match = _MARKER.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _strip_markers(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not _MARKER.match(line.strip()))


class SshDevice(Device):
    """A board reached with ``ssh``; the runner, artifacts and eval inputs are uploaded once and cached."""

    kind = "ssh"
    emulated = False

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.python: str = config.python
        self.workdir: str | None = None  # absolute on the device, known after prepare()
        self._remote_runner: str | None = None
        self._uploaded: set[str] = set()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- ssh plumbing ------------------------------------------------------------------------------
    def ssh_argv(self, remote_command: str) -> list[str]:
        """``ssh [options] DESTINATION REMOTE_COMMAND`` as an argument list."""
        cfg = self.config
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, math.ceil(cfg.connect_timeout))}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if cfg.port:
            argv += ["-p", str(cfg.port)]
        if cfg.identity_file:
            argv += ["-i", str(Path(cfg.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        for option in cfg.ssh_options:
            argv += ["-o", option]
        return [*argv, cfg.host, remote_command]

    def _ssh(self, remote_command: str, timeout_s: float, stdin_path: Path | None = None,
             stdout_path: Path | None = None) -> tuple[str, str, int | None, int | None, bool]:
        return run_process(self.ssh_argv(remote_command), timeout_s, stdin_path=stdin_path, stdout_path=stdout_path)

    def _check(self, remote_command: str, what: str, timeout_s: float = _CONTROL_TIMEOUT_S,
               stdin_path: Path | None = None, stdout_path: Path | None = None) -> str:
        """Run a control command; ``DeviceError`` with the ssh/remote reason when it fails."""
        stdout, stderr, code, _sig, timed_out = self._ssh(remote_command, timeout_s, stdin_path, stdout_path)
        if timed_out:
            raise DeviceError(f"device {self.name!r}: {what} timed out after {timeout_s:g} s")
        if code != 0:
            raise DeviceError(f"device {self.name!r}: {what} failed: {self._reason(code, stderr)}")
        return stdout

    def _reason(self, code: int | None, stderr: str) -> str:
        detail = last_line(_strip_markers(stderr))
        if code == _SSH_FAILED:
            return f"ssh: {detail.removeprefix('ssh: ')}" if detail else "ssh failed (exit 255)"
        return f"status {code}: {detail or 'no output'}"

    def _scratch(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"edgeq-{self.name}-")
        return Path(self._tmp.name)

    # -- Device -------------------------------------------------------------------------------------
    def prepare(self) -> None:
        if self.workdir is not None:
            return
        workdir = self.config.workdir
        script = (f'printf "EDGEQ_HOME:%s\\n" "$HOME" >&2; '
                  f'{q(self.python)} -c "import sys; sys.stderr.write(\'EDGEQ_PY:%d.%d\\n\' % sys.version_info[:2])"')
        _out, stderr, code, _sig, timed_out = self._ssh(script, self.config.connect_timeout + 30)
        if timed_out:
            raise DeviceError(f"device {self.name!r}: ssh {self.config.host} timed out")
        markers = _markers(stderr)
        if "HOME" not in markers:
            raise DeviceError(f"device {self.name!r}: cannot connect: {self._reason(code, stderr)}")
        if "PY" not in markers:
            raise DeviceError(f"device {self.name!r}: python {self.python!r} does not run on the device "
                              f"({last_line(_strip_markers(stderr)) or f'status {code}'})")
        major, minor = (int(part) for part in markers["PY"].split("."))
        if (major, minor) < (3, 8):
            raise DeviceError(f"device {self.name!r}: the runner needs Python >= 3.8, device has {major}.{minor}")
        home = markers["HOME"].rstrip("/")
        if workdir == "~" or workdir.startswith("~/"):
            workdir = home + workdir[1:]
        elif not workdir.startswith("/"):
            workdir = f"{home}/{workdir}"
        self.workdir = workdir.rstrip("/")
        venv_python = f"{self.workdir}/venv/bin/python"
        if self.config.python == "python3":
            venv = self._ssh(f"test -x {q(venv_python)} && echo EDGEQ_VENV:1 >&2", 30)
            if "VENV" in _markers(venv[1]):
                self.python = venv_python
        self._remote_runner = f"{self.workdir}/runner-{runner_sha256()[:12]}.py"
        self._upload_file(runner_path(), self._remote_runner)

    def _exists(self, remote_path: str) -> bool:
        _out, stderr, code, _sig, timed_out = self._ssh(f"test -e {q(remote_path)} && echo EDGEQ_OK:1 >&2",
                                                        _CONTROL_TIMEOUT_S)
        if timed_out or (code == _SSH_FAILED and "OK" not in _markers(stderr)):
            raise DeviceError(f"device {self.name!r}: {self._reason(code, stderr)}")
        return "OK" in _markers(stderr)

    def _upload_file(self, local: Path, remote: str) -> None:
        """Copy one file (``ssh cat >``) unless it is already there; temp name + rename on the device."""
        if remote in self._uploaded or self._exists(remote):
            self._uploaded.add(remote)
            return
        parent, tmp = remote.rsplit("/", 1)[0], f"{remote}.tmp-{uuid.uuid4().hex[:8]}"
        self._check(f"mkdir -p {q(parent)} && cat > {q(tmp)} && mv -f {q(tmp)} {q(remote)}",
                    f"upload of {local.name}", timeout_s=600, stdin_path=local)
        self._uploaded.add(remote)

    def _upload_tree(self, artifact: ArtifactFiles) -> str:
        """Copy the artifact's files once into ``workdir/art/<sha256>/`` (one tar stream, unpacked by Python)."""
        assert self.workdir is not None
        remote_dir = f"{self.workdir}/art/{artifact.sha256}"
        complete = f"{remote_dir}/.edgeq-complete"
        if remote_dir in self._uploaded or self._exists(complete):
            self._uploaded.add(remote_dir)
            return remote_dir
        bundle = self._scratch() / f"{artifact.sha256}.tar"
        with tarfile.open(bundle, "w") as tar:
            for rel in artifact.files:
                tar.add(artifact.root / rel, arcname=rel)
        staging = f"{self.workdir}/art/.up-{uuid.uuid4().hex[:8]}"
        script = (f"mkdir -p {q(staging)} && {q(self.python)} -c {q(_EXTRACT)} {q(staging)} && "
                  f"touch {q(staging + '/.edgeq-complete')} && "
                  f"if [ -e {q(complete)} ]; then rm -rf {q(staging)}; "
                  f"else rm -rf {q(remote_dir)} && mv {q(staging)} {q(remote_dir)}; fi")
        try:
            self._check(script, f"upload of {artifact.main}", timeout_s=1800, stdin_path=bundle)
        finally:
            bundle.unlink(missing_ok=True)
        self._uploaded.add(remote_dir)
        return remote_dir

    def _remote_eval(self, eval_npz: Path) -> str:
        assert self.workdir is not None
        digest = hashlib.sha256(eval_npz.read_bytes()).hexdigest()
        remote = f"{self.workdir}/eval/{digest}.npz"
        self._upload_file(eval_npz, remote)
        return remote

    def _run_runner(self, args: list[str], timeout_s: float, cwd: str | None = None
                    ) -> tuple[str, str, int | None, int | None, bool]:
        """Run the runner remotely; like ``run_process`` (a remote signal is reported as the signal).

        The remote shell reports the runner's PID and exit status on stderr, so a crash is told apart from a
        lost connection, and a timed-out runner is killed on the device too."""
        assert self._remote_runner is not None
        command = " ".join(q(part) for part in [self.python, self._remote_runner, *args])
        prefix = f"cd {q(cwd)} && " if cwd else ""
        script = (f'{prefix}{{ {command} & pid=$!; echo "EDGEQ_PID:$pid" >&2; wait "$pid"; '
                  f'echo "EDGEQ_EXIT:$?" >&2; }}')
        stdout, stderr, code, _sig, timed_out = self._ssh(script, timeout_s)
        markers = _markers(stderr)
        if timed_out:
            if markers.get("PID", "").isdigit():
                self._ssh(f"kill -9 {int(markers['PID'])} 2>/dev/null", 20)
            return stdout, stderr, code, None, True
        if "EXIT" not in markers:
            if "PID" in markers:
                raise DeviceError(f"connection lost while the runner ran: {self._reason(code, stderr)}")
            raise DeviceError(self._reason(code, stderr))
        status = int(markers["EXIT"])
        if status > 128:
            return stdout, stderr, status, status - 128, False
        return stdout, _strip_markers(stderr), status, None, False

    def run_cell(self, artifact: ArtifactFiles, threads: int, cpus: list[int] | None, settings: RunSettings,
                 eval_npz: Path | None, timeout_s: float, outputs_path: Path | None = None) -> dict[str, Any]:
        try:
            self.prepare()
            assert self.workdir is not None
            remote_dir = self._upload_tree(artifact)
            remote_eval = self._remote_eval(eval_npz) if eval_npz is not None else None
            run_dir = f"{self.workdir}/runs/{uuid.uuid4().hex}"
            remote_outputs = f"{run_dir}/outputs.npz" if remote_eval else None
            if remote_outputs:
                self._check(f"mkdir -p {q(run_dir)}", "mkdir")
            args = runner_run_args(artifact.main, threads, cpus, settings, remote_eval, remote_outputs)
            stdout, stderr, code, sig, timed_out = self._run_runner(args, timeout_s, cwd=remote_dir)
            if timed_out:
                return failure(f"timeout after {timeout_s:g} s (runner killed)")
            result = interpret_runner(stdout, stderr, code, sig)
            if remote_outputs:
                if result.get("ok"):
                    local = outputs_path or Path(tempfile.mkstemp(dir=self._scratch(), suffix=".npz")[1])
                    self._check(f"cat {q(remote_outputs)}", "fetching outputs", timeout_s=600, stdout_path=local)
                    result["outputs_path"] = str(local)
                self._ssh(f"rm -rf {q(run_dir)}", 30)
            return result
        except DeviceError as exc:
            return failure(str(exc).removeprefix(f"device {self.name!r}: "))

    def info(self) -> dict[str, Any]:
        self.prepare()

        def run(argv: list[str]) -> tuple[str, str, int | None, int | None, bool]:
            return self._run_runner(argv[1:], 180)

        document = runner_info(["runner"], run=run, where=f"device {self.name!r}")
        document["python_path"] = self.python
        return document

    def provision(self, packages: list[str]) -> str:
        """``python -m venv --system-site-packages workdir/venv`` + ``pip install`` the packages there."""
        self.prepare()
        assert self.workdir is not None
        venv = f"{self.workdir}/venv"
        base_python = self.config.python
        script = (f"test -x {q(venv + '/bin/python')} || {q(base_python)} -m venv --system-site-packages {q(venv)}"
                  + (f" && {q(venv + '/bin/python')} -m pip install -q --disable-pip-version-check "
                     + " ".join(q(p) for p in packages) if packages else ""))
        self._check(script, "provisioning (venv + pip install)", timeout_s=1800)
        self.python = f"{venv}/bin/python"
        return f"venv {venv}" + (f": installed {', '.join(packages)}" if packages else "")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
