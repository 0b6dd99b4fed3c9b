"""The self-contained on-device runner (``runner.py``: stdlib + numpy + a runtime, Python >= 3.8). Devices run
the file itself, copied over once; on the host it is also importable as ``edgeq.targets.runner``."""
