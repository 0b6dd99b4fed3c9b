"""devices.yaml validation: one-line ConfigErrors that point at the YAML line; the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeq.cli import main
from edgeq.devices import make_device
from edgeq.devices.config import (
    LocalDeviceConfig,
    QemuDeviceConfig,
    SshDeviceConfig,
    load_devices,
    parse_devices,
)
from edgeq.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repo_devices_yaml_is_valid() -> None:
    config = load_devices(REPO / "devices.yaml")
    assert [(d.name, d.kind, d.threads) for d in config.devices] == [("host", "local", [1, 2])]


def test_kinds_and_defaults() -> None:
    config = parse_devices(
        "devices:\n"
        "  - {name: host, kind: local}\n"
        "  - name: pi5\n    kind: ssh\n    host: pi@192.168.1.50\n    threads: [1, 4]\n    cpus: [0, 1, 2, 3]\n"
        "  - {name: arm64-emu, kind: qemu, root: ~/.cache/edgeq/arm64-root}\n")
    host, pi5, emu = config.devices
    assert isinstance(host, LocalDeviceConfig) and host.threads == [1] and host.python is None
    assert isinstance(pi5, SshDeviceConfig) and pi5.python == "python3" and pi5.workdir == "~/.cache/edgeq"
    assert pi5.port is None and pi5.cpus == [0, 1, 2, 3] and pi5.connect_timeout > 0
    assert isinstance(emu, QemuDeviceConfig) and emu.site is None
    assert make_device(host).kind == "local" and make_device(pi5).kind == "ssh"
    assert [d.name for d in config.select(["pi5"])] == ["pi5"]
    with pytest.raises(ConfigError, match="unknown device 'pi4'; devices.yaml has: host, pi5, arm64-emu"):
        config.select(["pi4"])


@pytest.mark.parametrize(("text", "message"), [
    ("devices:\n  - name: host\n    kind: local\n\n  - name: pi5\n    kind: ssh\n    python: /usr/bin/python3\n",
     "devices.yaml:5: device 'pi5': field 'host' required"),
    ("devices:\n  - name: host\n    kind: lokal\n", "devices.yaml:3: device 'host': kind must be one of local, ssh, qemu"),
    ("devices:\n  - name: host\n", "devices.yaml:2: device 'host': field 'kind' required (local, ssh or qemu)"),
    ("devices:\n  - name: host\n    kind: local\n    threads: [1, 0]\n",
     "devices.yaml:4: device 'host': threads: thread counts must be >= 1"),
    ("devices:\n  - name: host\n    kind: local\n    thread: [1]\n", "devices.yaml:4: device 'host': unknown field 'thread'"),
    ("devices:\n  - name: a\n    kind: local\n  - name: a\n    kind: local\n",
     "devices.yaml:4: device name 'a' is used twice (names must be unique)"),
    ("devices:\n  - name: b\n    kind: ssh\n    host: pi@x\n    port: 99999\n",
     "devices.yaml:5: device 'b': port: Input should be less than or equal to 65535"),
    ("devices:\n  - name: b\n    kind: ssh\n    host: -oProxyCommand=x\n",
     "devices.yaml:4: device 'b': host: host must be an OpenSSH destination"),
    ("devices: [\n", "devices.yaml:2: invalid YAML"),
    ("- name: a\n", "devices.yaml:1: expected a mapping with a 'devices:' list"),
    ("devices: []\n", "devices.yaml:1: no devices listed under 'devices:'"),
])
def test_errors_are_one_line_with_line_numbers(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_devices(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_missing_file_and_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="devices file not found"):
        load_devices(tmp_path / "nope.yaml")
    bad = tmp_path / "devices.yaml"
    bad.write_text("devices:\n  - name: pi5\n    kind: ssh\n")
    assert main(["devices", "check", "--devices", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}:2: device 'pi5': field 'host' required"


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    kinds = {name: spec["properties"]["kind"]["const"] for name, spec in schema["$defs"].items()}
    assert sorted(kinds.values()) == ["local", "qemu", "ssh"]
    assert "host" in schema["$defs"]["SshDeviceConfig"]["required"]
