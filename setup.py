"""Package discovery: every package under edgeq/, plus the self-contained on-device runner in targets/, which
is installed as ``edgeq.targets`` (the rest of the metadata is in pyproject.toml)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["edgeq", "edgeq.*"]), "edgeq.targets"],
    package_dir={"edgeq": "edgeq", "edgeq.targets": "targets"},
)
