"""Self-contained on-device runner (importable on the host as ``edgeq.targets``)."""
