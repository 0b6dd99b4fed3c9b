"""Terminal output shared by the commands: one rich console, a status line for long steps."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console

console = Console(highlight=False)


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
