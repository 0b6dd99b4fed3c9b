"""edgeq.report."""
