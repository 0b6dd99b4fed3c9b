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


def test_runner_ships_inside_the_package() -> None:
    """The on-device runner is a real subpackage (no package_dir mapping), found the same way in every install."""
    from edgeq.devices.base import runner_path
    from edgeq.targets import runner

    package = Path(edgeq.__file__).parent
    assert runner_path() == package / "targets" / "runner.py" == Path(runner.__file__)
    assert not (ROOT / "setup.py").exists() and not (ROOT / "targets").exists()
