"""kdnas.report."""
