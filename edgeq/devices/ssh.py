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

import contextlib
import math
import re
import shlex
import tarfile
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeq.devices.base import Device, last_line
from edgeq.devices.transport import ExecResult, run_process
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


class SshTransport:
    """push / exec / pull over the system ``ssh`` client; uploads are cached under ``workdir`` on the device.

    ``workdir`` (absolute on the device) and ``python`` (used to unpack uploads) are set by ``SshDevice.prepare``.
    """

    def __init__(self, config: Any, name: str) -> None:
        self.config = config
        self.where = f"device {name!r}"
        self.workdir: str | None = None
        self.python: str = config.python
        self._uploaded: set[str] = set()

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

    def shell(self, remote_command: str, timeout_s: float, stdin_path: Path | None = None,
              stdout_path: Path | None = None) -> ExecResult:
        """Run a remote shell command line (built from ``q``-quoted parts)."""
        return run_process(self.ssh_argv(remote_command), timeout_s, stdin_path=stdin_path, stdout_path=stdout_path)

    def check(self, remote_command: str, what: str, timeout_s: float = _CONTROL_TIMEOUT_S,
              stdin_path: Path | None = None, stdout_path: Path | None = None) -> str:
        """Run a control command; ``DeviceError`` with the ssh/remote reason when it fails."""
        done = self.shell(remote_command, timeout_s, stdin_path, stdout_path)
        if done.timed_out:
            raise DeviceError(f"{self.where}: {what} timed out after {timeout_s:g} s")
        if done.returncode != 0:
            raise DeviceError(f"{self.where}: {what} failed: {self.reason(done)}")
        return done.stdout

    def reason(self, done: ExecResult) -> str:
        detail = last_line(_strip_markers(done.stderr))
        if done.returncode == _SSH_FAILED:
            return f"ssh: {detail.removeprefix('ssh: ')}" if detail else "ssh failed (exit 255)"
        return f"status {done.returncode}: {detail or 'no output'}"

    def _exists(self, remote_path: str) -> bool:
        done = self.shell(f"test -e {q(remote_path)} && echo EDGEQ_OK:1 >&2", _CONTROL_TIMEOUT_S)
        found = "OK" in _markers(done.stderr)
        if done.timed_out or (done.returncode == _SSH_FAILED and not found):
            raise DeviceError(f"{self.where}: {self.reason(done)}")
        return found

    def _path(self, remote: str) -> str:
        assert self.workdir is not None, "SshDevice.prepare() sets the workdir"
        return f"{self.workdir}/{remote}"

    # -- Transport ---------------------------------------------------------------------------------
    def push(self, local: Path, remote: str) -> str:
        """Copy one file (``ssh cat >``) unless it is already there; temp name + rename on the device."""
        target = self._path(remote)
        if target in self._uploaded or self._exists(target):
            self._uploaded.add(target)
            return target
        parent, tmp = target.rsplit("/", 1)[0], f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        self.check(f"mkdir -p {q(parent)} && cat > {q(tmp)} && mv -f {q(tmp)} {q(target)}",
                   f"upload of {Path(local).name}", timeout_s=600, stdin_path=Path(local))
        self._uploaded.add(target)
        return target

    def push_tree(self, root: Path, files: Sequence[str], remote: str) -> str:
        """Copy the files once into ``workdir/REMOTE/`` (one tar stream, unpacked by Python, then renamed)."""
        remote_dir = self._path(remote)
        complete = f"{remote_dir}/.edgeq-complete"
        if remote_dir in self._uploaded or self._exists(complete):
            self._uploaded.add(remote_dir)
            return remote_dir
        staging = f"{remote_dir.rsplit('/', 1)[0]}/.up-{uuid.uuid4().hex[:8]}"
        script = (f"mkdir -p {q(staging)} && {q(self.python)} -c {q(_EXTRACT)} {q(staging)} && "
                  f"touch {q(staging + '/.edgeq-complete')} && "
                  f"if [ -e {q(complete)} ]; then rm -rf {q(staging)}; "
                  f"else rm -rf {q(remote_dir)} && mv {q(staging)} {q(remote_dir)}; fi")
        with tempfile.TemporaryDirectory(prefix="edgeq-ssh-") as tmp:
            bundle = Path(tmp) / "upload.tar"
            with tarfile.open(bundle, "w") as tar:
                for rel in files:
                    tar.add(Path(root) / rel, arcname=rel)
            self.check(script, f"upload of {remote}", timeout_s=1800, stdin_path=bundle)
        self._uploaded.add(remote_dir)
        return remote_dir

    def exec(self, argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> ExecResult:
        """Run ``argv`` remotely (a remote signal is reported as the signal).

        The remote shell reports the command's PID and exit status on stderr, so a crash is told apart from a
        lost connection, and a timed-out command is killed on the device too."""
        command = " ".join(q(part) for part in argv)
        if env:
            command = "env " + " ".join(q(f"{key}={value}") for key, value in env.items()) + " " + command
        script = f'{{ {command} & pid=$!; echo "EDGEQ_PID:$pid" >&2; wait "$pid"; echo "EDGEQ_EXIT:$?" >&2; }}'
        done = self.shell(script, timeout_s)
        markers = _markers(done.stderr)
        if done.timed_out:
            if markers.get("PID", "").isdigit():
                self.shell(f"kill -9 {int(markers['PID'])} 2>/dev/null", 20)
            return done
        if "EXIT" not in markers:
            if "PID" in markers:
                raise DeviceError(f"connection lost while the runner ran: {self.reason(done)}")
            raise DeviceError(self.reason(done))
        status = int(markers["EXIT"])
        if status > 128:
            return ExecResult(done.stdout, done.stderr, status, status - 128)
        return ExecResult(done.stdout, _strip_markers(done.stderr), status)

    def pull(self, remote: str, local: Path) -> None:
        self.check(f"cat {q(remote)}", "fetching outputs", timeout_s=600, stdout_path=Path(local))

    def make_run_dir(self) -> str:
        run_dir = self._path(f"runs/{uuid.uuid4().hex}")
        self.check(f"mkdir -p {q(run_dir)}", "mkdir")
        return run_dir

    def remove(self, remote: str) -> None:
        with contextlib.suppress(DeviceError):
            self.shell(f"rm -rf {q(remote)}", 30)

    def close(self) -> None:
        """Nothing to release: every command is its own ssh connection."""


class SshDevice(Device):
    """A board reached with ``ssh``; the runner, artifacts and eval inputs are uploaded once and cached."""

    kind = "ssh"
    emulated = False
    info_timeout_s = 180.0

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.python: str = config.python
        self.transport = SshTransport(config, self.name)

    @property
    def workdir(self) -> str | None:
        """Absolute on the device, known after prepare()."""
        return self.transport.workdir

    def ready(self) -> None:
        self.prepare()

    def prepare(self) -> None:
        if self.workdir is not None:
            return
        transport = self.transport
        workdir = self.config.workdir
        script = (f'printf "EDGEQ_HOME:%s\\n" "$HOME" >&2; '
                  f'{q(self.python)} -c "import sys; sys.stderr.write(\'EDGEQ_PY:%d.%d\\n\' % sys.version_info[:2])"')
        done = transport.shell(script, self.config.connect_timeout + 30)
        if done.timed_out:
            raise DeviceError(f"device {self.name!r}: ssh {self.config.host} timed out")
        markers = _markers(done.stderr)
        if "HOME" not in markers:
            raise DeviceError(f"device {self.name!r}: cannot connect: {transport.reason(done)}")
        if "PY" not in markers:
            raise DeviceError(f"device {self.name!r}: python {self.python!r} does not run on the device "
                              f"({last_line(_strip_markers(done.stderr)) or f'status {done.returncode}'})")
        major, minor = (int(part) for part in markers["PY"].split("."))
        if (major, minor) < (3, 8):
            raise DeviceError(f"device {self.name!r}: the runner needs Python >= 3.8, device has {major}.{minor}")
        home = markers["HOME"].rstrip("/")
        if workdir == "~" or workdir.startswith("~/"):
            workdir = home + workdir[1:]
        elif not workdir.startswith("/"):
            workdir = f"{home}/{workdir}"
        transport.workdir = workdir.rstrip("/")
        venv_python = f"{transport.workdir}/venv/bin/python"
        if self.config.python == "python3":
            venv = transport.shell(f"test -x {q(venv_python)} && echo EDGEQ_VENV:1 >&2", 30)
            if "VENV" in _markers(venv.stderr):
                self._use_python(venv_python)
        self.runner_argv()  # uploads the runner

    def _use_python(self, python: str) -> None:
        self.python = python
        self.transport.python = python

    def info(self) -> dict[str, Any]:
        document = super().info()
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
        self.transport.check(script, "provisioning (venv + pip install)", timeout_s=1800)
        self._use_python(f"{venv}/bin/python")
        return f"venv {venv}" + (f": installed {', '.join(packages)}" if packages else "")
