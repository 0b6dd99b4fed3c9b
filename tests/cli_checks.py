"""Assertions shared by the CLI tests."""

from __future__ import annotations

from edgeq.cli import main


def fails_in_one_line(capsys, args: list[str], expect: str) -> None:
    """``edgeq ARGS`` exits non-zero with exactly one line on stderr, no traceback, mentioning ``expect``."""
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert expect.lower() in err.lower(), err
