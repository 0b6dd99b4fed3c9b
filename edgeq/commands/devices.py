"""``edgeq devices check`` and ``edgeq devices schema`` (a typer sub-app registered in edgeq/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

devices_app = typer.Typer(help="Devices where benchmarks run (devices.yaml).", no_args_is_help=True)

# runtime (as the runner reports it) -> pip distribution installed by --provision
PROVISION_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert"}


def _int8_features(info: dict[str, Any]) -> str:
    flags = info.get("int8_flags") or {}
    shown = [f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve") if f in flags]
    text = " ".join(f"[green]{f}[/green]" if flags[f] else f"[dim]-{f}[/dim]" for f in shown)
    if info.get("cpuinfo_matches_machine") is False:
        text += " [yellow](host CPU flags: emulated)[/yellow]"
    return text


def _runtimes(info: dict[str, Any]) -> str:
    parts = []
    for name, entry in (info.get("runtimes") or {}).items():
        if not entry.get("available"):
            parts.append(f"[red]{name} missing[/red]")
        elif entry.get("imported") is False:
            parts.append(f"[red]{name} {entry.get('version') or ''} broken[/red]")
        else:
            parts.append(f"{name} {entry.get('version') or '?'}")
    return ", ".join(parts)


def _missing_packages(info: dict[str, Any]) -> list[str]:
    runtimes = info.get("runtimes") or {}
    missing = [pkg for rt, pkg in PROVISION_PACKAGES.items() if not (runtimes.get(rt) or {}).get("available")]
    return (["numpy"] if not info.get("numpy") else []) + missing


@devices_app.command("check")
def check(
    devices: Path = typer.Option(Path("devices.yaml"), "--devices", help="devices.yaml"),
    device: list[str] | None = typer.Option(None, "--device", "-d", help="Only this device (repeatable)."),
    provision: bool = typer.Option(False, "--provision",
                                   help="Create workdir/venv on the device and pip-install missing runtimes."),
) -> None:
    """Reach each device: arch, CPU model and INT8 features, Python, runtimes and versions."""
    from rich.table import Table

    from edgeq.devices import load_devices, make_device
    from edgeq.errors import DeviceError
    from edgeq.ui import console

    configs = load_devices(devices).select(device or [])
    table = Table(title=f"edgeq devices ({devices})")
    for column in ("device", "kind", "reachable", "arch", "CPU", "INT8 features", "python", "runtimes"):
        table.add_column(column)
    failures = 0
    for config in configs:
        dev = make_device(config)
        try:
            with console.status(f"checking {config.name}"):
                info = dev.info()
                if provision:
                    missing = _missing_packages(info)
                    if missing:
                        console.print(f"{config.name}: {dev.provision(missing)}")
                        info = dev.info()
                    else:
                        console.print(f"{config.name}: nothing to install")
        except DeviceError as exc:
            failures += 1
            table.add_row(config.name, config.kind, "[red]no[/red]", "", "", "", "", str(exc))
            continue
        finally:
            dev.close()
        kind = config.kind + (" (emulated)" if dev.emulated else "")
        cpu = f"{info.get('cpu_model') or '?'} ×{info.get('usable_cpus') or info.get('cpu_count') or '?'}"
        python = f"{info.get('python')} ({info.get('python_path')})" if info.get("python_path") else str(info.get("python"))
        table.add_row(config.name, kind, "[green]yes[/green]", str(info.get("machine")), cpu, _int8_features(info),
                      python, _runtimes(info))
    console.print(table)
    if failures:
        raise typer.Exit(1)


@devices_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of devices.yaml."""
    from edgeq.devices.config import devices_json_schema

    typer.echo(devices_json_schema())


@devices_app.command("setup-arm64")
def setup_arm64_command(
    root: Path = typer.Option(Path("~/.cache/edgeq/arm64-root"), "--root", help="Where the arm64 root is built."),
    runtime: list[str] | None = typer.Option(None, "--runtime", "-r",
                                             help="onnxruntime, ai-edge-litert (tflite), openvino; default all."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the root is complete."),
) -> None:
    """Build the arm64 root for `kind: qemu` devices (Debian arm64 .debs + aarch64 wheels; no chroot)."""
    from edgeq.devices.arm64_root import RUNTIME_PINS, setup_arm64
    from edgeq.ui import console, status

    with status() as show:
        stamp = setup_arm64(root, runtimes=runtime or list(RUNTIME_PINS), progress=show, force=force)
    where = stamp["root"]
    if stamp.get("reused"):
        console.print(f"arm64 root at {where} is complete (made {stamp.get('created')}); nothing to do")
    else:
        console.print(f"[green]arm64 root ready[/green] at {where}: {stamp['size_mb']} MB in "
                      f"{stamp['timings']['total_s']} s; {stamp['qemu']}")
    console.print("  " + ", ".join(stamp["pins"].values()))
    console.print(f"  devices.yaml:  - {{name: arm64-emu, kind: qemu, root: {where}}}")
