"""``edgeq tools setup NAME``: isolated, pinned tool environments (a typer sub-app registered in edgeq/cli.py)."""

from __future__ import annotations

import typer

tools_app = typer.Typer(help="Isolated tool environments edgeq runs as subprocesses (onnx2tf).", no_args_is_help=True)


@tools_app.command("setup")
def setup_command(
    name: str = typer.Argument(..., help="Tool to set up: onnx2tf"),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the environment is complete."),
) -> None:
    """Create the tool's pinned venv under ~/.cache/edgeq/tools/NAME (EDGEQ_TOOLS_DIR overrides), from PyPI only.
    edgeq also does this on first use."""
    from edgeq.tools import installed, setup, tool_python, tools_root
    from edgeq.ui import console, status

    cached = installed(name) if not force else None
    with status() as show:
        stamp = cached or setup(name, force=force, progress=show)
    if cached is not None:
        console.print(f"{name} environment at {tools_root() / name} is complete; nothing to do")
    else:
        console.print(f"[green]{name} ready[/green] at {tools_root() / name} in {stamp['seconds']} s")
    pinned = [r for r in stamp["requirements"] if r.split("==")[0].lower() in ("onnx2tf", "tensorflow", "onnx",
                                                                              "onnxruntime", "numpy")]
    console.print("  " + ", ".join(pinned) + f"; python: {tool_python(name)}")
