"""The ``edgeq`` command line. Start-up imports only light modules; each command imports what it needs.

Commands live in ``edgeq/commands/<group>.py``; this file only registers them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from edgeq.commands import bench as bench_cmd
from edgeq.commands import compress as compress_cmd
from edgeq.commands import explain as explain_cmd
from edgeq.commands import export as export_cmd
from edgeq.commands import package as package_cmd
from edgeq.commands import report as report_cmd
from edgeq.commands import tune as tune_cmd
from edgeq.commands.devices import devices_app
from edgeq.commands.tools import tools_app
from edgeq.errors import EdgeqError

app = typer.Typer(
    name="edgeq",
    help="Calibrate, quantize, verify and benchmark neural networks for edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state: dict[str, Any] = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (also of failed backends) and the "
                               "edgeq logger's debug messages on stderr."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from edgeq._version import __version__

        typer.echo(f"edgeq {__version__}")
        raise typer.Exit()
    _state["debug"] = debug
    set_debug_logging(debug)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a backend's log file while its converters run)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def set_debug_logging(debug: bool) -> None:
    """``--debug``: the ``edgeq`` logger (every edgeq module's) prints DEBUG and up on stderr; off again without."""
    logger = logging.getLogger("edgeq")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if debug:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.NOTSET)


app.command("export")(export_cmd.export)
app.command("backends")(export_cmd.backends)
app.command("manifest-schema")(export_cmd.manifest_schema)
app.command("explain")(explain_cmd.explain)
app.command("bench")(bench_cmd.bench)
app.command("report")(report_cmd.report)
app.command("package")(package_cmd.package)
app.command("compress")(compress_cmd.compress)
app.command("tune")(tune_cmd.tune)
app.add_typer(devices_app, name="devices")
app.add_typer(tools_app, name="tools")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one line (no traceback unless --debug) and exit non-zero."""
    args = tune_cmd.fill_optional_ray(sys.argv[1:] if argv is None else argv)
    _state["debug"] = False
    try:
        code = app(args=args, standalone_mode=False)  # click returns typer.Exit's code here
        if isinstance(code, int) and code:
            return code
    except typer.Exit as exc:
        if exc.exit_code == 130 and isinstance(exc.__cause__, KeyboardInterrupt):  # typer's form of Ctrl-C
            typer.secho("interrupted", err=True)
        return exc.exit_code
    except EdgeqError as exc:
        if _state["debug"]:
            raise
        text = str(exc) if exc.exit_code == 130 else f"error: {exc}"  # Ctrl-C says how far it got, not "error"
        typer.secho(text, err=True, fg=None if exc.exit_code == 130 else typer.colors.RED)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    except typer.Abort:
        return 1
    except Exception as exc:  # usage errors: typer >= 0.2x raises its vendored click's (typer._click), older typer click's
        import click

        usage_errors = (click.ClickException, getattr(typer, "TyperException", click.ClickException))
        if isinstance(exc, usage_errors) and hasattr(exc, "show"):
            exc.show()
            return int(getattr(exc, "exit_code", 2))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
