"""edgeq.compress."""
