"""kdnas.evaluate."""
