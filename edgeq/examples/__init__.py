"""edgeq.examples."""
