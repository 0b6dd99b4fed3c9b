"""Terminal output shared by the commands: one rich console, a status line for long steps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console

console = Console(highlight=False)


@contextlib.contextmanager
def status() -> Iterator[Callable[[str], None]]:
    """A spinner with the current step; each new step is also logged with its elapsed time."""
    import time

    started = time.perf_counter()
    with console.status("starting") as spinner:
        def show(message: str) -> None:
            console.log(f"{message} [dim](+{time.perf_counter() - started:.1f}s)[/dim]")
            spinner.update(message)

        yield show
