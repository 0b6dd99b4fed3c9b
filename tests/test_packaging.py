"""Packaging facts a user relies on: one version, typed package marker, licence file."""

from importlib.metadata import metadata, version
from pathlib import Path

import edgeq

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_single_sourced() -> None:
    assert version("edgeq") == edgeq.__version__


def test_typed_marker_and_license_ship() -> None:
    assert (Path(edgeq.__file__).parent / "py.typed").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert metadata("edgeq")["License-Expression"] == "Apache-2.0"
