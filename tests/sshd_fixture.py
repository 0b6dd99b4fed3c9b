"""A real OpenSSH server on 127.0.0.1 for tests: own host key, own user key, own sshd_config, current user."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    port: int
    user: str
    identity: Path
    wrong_identity: Path
    ssh_options: list[str]
    process: subprocess.Popen[bytes]

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(directory: Path) -> Sshd:
    """Start sshd in the foreground (-D) on a free port; raise RuntimeError if it does not accept logins."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key, user_key, wrong_key = directory / "host_ed25519", directory / "user_ed25519", directory / "wrong_ed25519"
    for key in (host_key, user_key, wrong_key):
        _keygen(key)
    authorized = directory / "authorized_keys"
    shutil.copy(user_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    known_hosts = directory / "known_hosts"
    port = free_port()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.with_suffix('.pub').read_text()}")
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin yes",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
    ]))
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory sshd insists on
    with open(directory / "sshd.log", "wb") as log:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    options = [f"UserKnownHostsFile={known_hosts}", "StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null"]
    sshd = Sshd(port=port, user=getpass.getuser(), identity=user_key, wrong_identity=wrong_key,
                ssh_options=options, process=process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(directory / 'sshd.log').read_text()[-500:]}")
        probe = subprocess.run(["ssh", "-o", "BatchMode=yes", "-p", str(port), "-i", str(user_key),
                                "-o", "IdentitiesOnly=yes", *sum((["-o", o] for o in options), []),
                                sshd.destination, "true"], capture_output=True, timeout=20)
        if probe.returncode == 0:
            return sshd
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"sshd did not accept the test key: {probe.stderr.decode(errors='replace')[-300:]}")


def stop_sshd(sshd: Sshd) -> None:
    sshd.process.terminate()
    try:
        sshd.process.wait(5)
    except subprocess.TimeoutExpired:
        sshd.process.kill()
