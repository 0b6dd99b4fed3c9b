"""``edgeq package``: bundle artifacts, manifests, reports and a model card into one verified tar.gz."""

from __future__ import annotations

from pathlib import Path

import typer


def package(
    artifacts_dir: Path | None = typer.Argument(None, help="An `edgeq export` output directory."),
    results: Path | None = typer.Option(None, "--results", "-r", help="An `edgeq bench` results directory: "
                                        "adds reports (md, html, json) and per-device metrics."),
    out: Path | None = typer.Option(None, "--out", "-o", help="NAME.tar.gz to write (atomically)."),
    verify: Path | None = typer.Option(None, "--verify", help="Check every checksum of NAME.tar.gz instead."),
) -> None:
    """Write NAME.tar.gz with artifacts + manifests, SHA256SUMS, reports and MODEL_CARD.md (or --verify one)."""
    from edgeq.errors import EdgeqError
    from edgeq.report.package import build_package, verify_package
    from edgeq.ui import console

    if verify is not None:
        if artifacts_dir is not None or out is not None or results is not None:
            raise EdgeqError("--verify takes only the package: edgeq package --verify NAME.tar.gz")
        problems, checked = verify_package(verify)
        for problem in problems:
            typer.echo(f"{verify.name}: {problem}", err=True)
        if problems:
            typer.secho(f"FAILED: {len(problems)} problem(s) in {verify}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        typer.echo(f"OK: {checked} files match SHA256SUMS in {verify}")
        return
    if artifacts_dir is None or out is None:
        raise EdgeqError("usage: edgeq package ARTIFACTS_DIR [--results RESULTS_DIR] --out NAME.tar.gz "
                         "(or edgeq package --verify NAME.tar.gz)")
    summary = build_package(artifacts_dir, out, results_dir=results)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"package: {summary.path} ({summary.files} files, {summary.size_bytes / 1e6:.2f} MB; models: "
                  f"{', '.join(summary.models)}{'; reports: ' + ', '.join(summary.reports) if summary.reports else ''})")
