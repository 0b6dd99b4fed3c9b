"""CLI command implementations, one module per command group (registered in edgeq/cli.py)."""
