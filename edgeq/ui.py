"""Terminal output shared by the commands: one rich console, a status line for long steps."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

console = Console(highlight=False)


@contextlib.contextmanager
def native_output_to(log: Path) -> Iterator[None]:
    """Send whatever converters and runtimes print (C++ logs on file descriptors 1/2, Python prints) to ``log``,
    while the rich console (progress bars, step lines) keeps writing where it wrote before."""
    log.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    own_file = console._file  # None: the console follows sys.stdout
    shown_on = console.file
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    sink = open(log, "a", buffering=1)  # noqa: SIM115 - closed in finally, after the descriptors are restored
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        console.file = terminal if _writes_to_fd(shown_on, 1) else shown_on
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for stream in (sys.stdout, sys.stderr, sink):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        console._file = own_file
        terminal.close()
        sink.close()


def _writes_to_fd(stream: object, fd: int) -> bool:
    try:
        return stream.fileno() == fd  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


@contextlib.contextmanager
def status() -> Iterator[Callable[[str], None]]:
    """A spinner with the current step; each new step is also logged with its elapsed time."""
    started = time.perf_counter()
    with console.status("starting") as spinner:
        def show(message: str) -> None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message} [dim](+{time.perf_counter() - started:.1f}s)[/dim]")
            spinner.update(message)

        yield show


class StepProgress:
    """A progress bar for a long job made of named steps (e.g. one per backend), plus one-line step logs."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> StepProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def log(self, message: str) -> None:
        self._progress.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")

    def advance(self, bar: str, label: str, total: int) -> None:
        """Move bar ``bar`` (created on first use with ``total``) one step, showing ``label``."""
        if bar not in self._tasks:
            self._tasks[bar] = self._progress.add_task(label, total=total)
        task = self._tasks[bar]
        self._progress.update(task, description=label, advance=1)
