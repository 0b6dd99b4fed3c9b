"""The version of edgeq, in one place (pyproject.toml reads it; ``edgeq.__version__`` re-exports it)."""

__version__ = "0.1.0"
