"""kdnas.latency."""
